"""A LUT-GEMM kernel for 1- and 2-bit weights at decode (T-MAC / LUT Tensor Core idea), in the DSL.

``C[M, N] = A[M, K] @ dequant(W)[K, N]`` with ``w = q * s + b`` per group (asymmetric uintB,
``tilus.ops.quantize``), computed as

    C[m, n] = sum over groups g of  s[g, n] * (A[m, g] . q[g, n])  +  b[g, n] * sum(A[m, g])

and ``A . q`` through tables instead of dequantize + mma: per k-tile, for every chunk c of 4
consecutive activations of row m, the table ``T[m, c, j] = sum_i bit_i(j) * A[m, 4c + i]`` of all
16 unsigned partial sums (float32) goes to shared memory; the weights are stored as bit planes
(``tilus.ops.lut.LutWeight``: plane p holds bit p of every code, so a chunk's 4 codes give one
4-bit index per plane) and thread n sums ``T[m, c, index_p(n, c)]`` over the chunks with one
``lookup`` (a shared-memory load) per chunk and plane, ``A . q = sum_p 2^p * sum_c T[...]``.

One thread per output column (``block_n = 32 * warps``), ``block_m`` rows per block (each row
its own tables and lookups: the lookups grow with M, the mma's did not), k-tiles of
``block_k`` inside one scale group. Masks: activations and weights past M, N, K read 0.
"""
from __future__ import annotations

import math

import tilus
from tilus import dtypes
from tilus.errors import TilusError
from tilus.ir.layout import local, spatial

CHUNK = 4             # activations per table (2^CHUNK entries)
UNIT_K = 32           # k per 4-byte word of a plane


class LutMatmul(tilus.Script):
    """C = A @ dequant(W) for ``bits``-bit (1 or 2) asymmetric uint weights stored as bit planes
    (module doc). Schedule: ``block_m`` rows, ``block_k`` (a multiple of 32 dividing
    ``group_size``), ``warps`` (block_n = 32 * warps columns)."""

    def __init__(self, bits: int, group_size: int, act: str = "float16", block_m: int = 1,
                 block_k: int = 128, warps: int = 4):
        super().__init__()
        if bits not in (1, 2):
            raise TilusError(f"LutMatmul: bits must be 1 or 2, got {bits}")
        if block_k % UNIT_K or group_size % block_k:
            raise TilusError(f"LutMatmul: block_k={block_k} must be a multiple of {UNIT_K} "
                             f"dividing group_size={group_size}")
        if block_m < 1 or warps < 1:
            raise TilusError(f"LutMatmul: block_m and warps must be >= 1, got {block_m}, {warps}")
        self.bits, self.group_size = bits, group_size
        self.act = dtypes.get(act)
        self.block_m, self.block_k, self.warps = block_m, block_k, warps
        self.block_n = 32 * warps
        self.units = block_k // UNIT_K
        self.chunks = block_k // CHUNK
        self.table_size = block_m * self.chunks * 2 ** CHUNK
        # the table build: threads over (chunk, entry), each thread 4 entries' 4 products
        across = math.gcd(self.chunks, self.block_n)
        entries = self.block_n // across
        if (2 ** CHUNK) % entries:
            raise TilusError(f"LutMatmul: {self.block_n} threads cannot split the tables of "
                             f"{self.chunks} chunks x {2 ** CHUNK} entries (block_k={block_k}, "
                             f"warps={warps})")
        self.table_layout = local(block_m, 1, 1, 1) * spatial(1, across, entries, 1) \
            * local(1, self.chunks // across, 2 ** CHUNK // entries, CHUNK)

    def tables(self, x):
        """[block_m * chunks * 16] float32: T[m, c, j] = sum_i bit_i(j) * x[m, 4c + i]."""
        bm, cc = self.block_m, self.chunks
        pattern = self.register_tensor(dtype=tilus.float32, shape=[2 ** CHUNK, CHUNK],
                                       init=lambda j, i: (j >> i) & 1)
        xs = self.view(self.cast(x, dtype=tilus.float32), shape=[bm, cc, 1, CHUNK])
        prod = xs * pattern
        self.annotate_layout(prod, self.table_layout)
        t = self.sum(prod, dim=3)
        return self.view(t, shape=[self.table_size])

    def plane_index(self, gp, p, kt, n0, base):
        """[block_m, units, block_n, 8] int32: plane p's 4-bit chunk indices of the k-tile, plus
        each (row, chunk)'s table offset ``base``."""
        raw = self.load_global(gp, offsets=[p, kt * self.units, n0, 0],
                               shape=[self.units, self.block_n, 4])
        self.annotate_layout(raw, local(self.units, 1, 1) * spatial(1, self.block_n, 1)
                             * local(1, 1, 4))
        nib = self.cast(self.view(raw, dtype=tilus.uint4), dtype=tilus.int32)
        index = self.unsqueeze(nib, dim=0) + base
        self.annotate_layout(index, local(self.block_m, self.units, 1, 8)
                             * spatial(1, 1, self.block_n, 1))
        return index

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: tilus.void_p,
                 planes: tilus.void_p, scales: tilus.void_p, offsets: tilus.void_p,
                 c: tilus.void_p):
        bm, bn, bk = self.block_m, self.block_n, self.block_k
        self.attrs.blocks = [tilus.cdiv(m, bm), tilus.cdiv(n, bn)]
        self.attrs.warps = self.warps
        ga = self.global_view(a, dtype=self.act, shape=[m, k])
        gp = self.global_view(planes, dtype=tilus.uint8,
                              shape=[self.bits, tilus.cdiv(k, UNIT_K), n, 4])
        groups = k // self.group_size
        gs = self.global_view(scales, dtype=self.act, shape=[groups, n])
        gz = self.global_view(offsets, dtype=self.act, shape=[groups, n])
        gc = self.global_view(c, dtype=self.act, shape=[m, n])
        m0 = self.blockIdx.x * bm
        n0 = self.blockIdx.y * bn
        cc, size = self.chunks, 2 ** CHUNK
        base = self.register_tensor(dtype=tilus.int32, shape=[bm, self.units, 1, 8],
                                    init=lambda r, u, z, e: (r * cc + u * 8 + e) * size)
        table = self.shared_tensor(dtype=tilus.float32, shape=[self.table_size])
        acc = self.register_tensor(dtype=tilus.float32, shape=[bm, bn], init=0.0)
        for kt in self.range(0, tilus.cdiv(k, bk)):
            x = self.load_global(ga, offsets=[m0, kt * bk], shape=[bm, bk])
            self.store_shared(table, self.tables(x))
            xsum = self.sum(self.cast(x, dtype=tilus.float32), dim=1, keepdim=True)
            dotq = self.sum(self.sum(self.lookup(table, self.plane_index(gp, 0, kt, n0, base)),
                                     dim=3), dim=1)
            for p in range(1, self.bits):
                part = self.sum(self.sum(self.lookup(table, self.plane_index(gp, p, kt, n0,
                                                                            base)), dim=3),
                                dim=1)
                dotq = dotq + part * float(2 ** p)
            g = kt * bk // self.group_size
            s = self.cast(self.load_global(gs, offsets=[g, n0], shape=[1, bn]), dtype=tilus.float32)
            b = self.cast(self.load_global(gz, offsets=[g, n0], shape=[1, bn]), dtype=tilus.float32)
            acc += dotq * s + xsum * b
        self.free_shared(table)
        self.store_global(gc, self.cast(acc, dtype=self.act), offsets=[m0, n0])
