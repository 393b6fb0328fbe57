"""W4A4: int4 weights per output channel or group, int4 activations per row, int32 accumulation.

``quantize_weight_int4(w, group_size=None)``: ``w [N, K]`` (nn.Linear) -> :class:`Int4Weight`:
per output channel (or per ``group_size`` k of a channel, e.g. 128) ``s = absmax / 7``, codes
``rne(w * (7 / absmax))`` in [-7, 7] (float32 arithmetic), packed two per byte along K as Tilus
bit streams are (``data`` uint8 [N, K / 2]: row n holds its K codes, even k in the low nibble).
``matmul_w4a4(x, w4)``: ``x [M, K]`` float16/bfloat16 quantized per row the same way
(``tilus.ops.rowquant``, packed alike), ``sum_g (q_x @ q_w)_g * s_w[g, n] * s_x[m] (+ bias)``
-> ``[M, N]`` in x's dtype: exact int32 products within a group (one group per channel), the scaling
in float32, one rounding.

The kernel ``MatmulW4A4`` loads both operands' packed bytes (a thread's eight k of an s4
fragment are one 32-bit load) and views them as int4. On sm_80/sm_86/sm_89 (``S4_ARCHES``) it
runs ``mma.m16n8k64.s4.s4.s32`` on them; sm_90 has no int4 tensor cores, so there the codes are
widened to int8 in registers for ``mma.m16n8k32.s8.s8.s32``. ``matmul_w4a4`` picks by the
GPU's architecture.

Engines: ``"interpreter"`` (the DSL kernels on the CPU), ``"fallback"`` (torch, the reference),
``"auto"``: the compiled kernels on CUDA tensors, the fallback elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import tilus
from tilus import dtypes
from tilus.errors import ArgumentError
from tilus.jit import device_arch
from tilus.ops.rowquant import (ACTS, RescaledStore, SplitKSum, check_2d, check_activations,
                               quantize_rows,
                                rows_reference, split_k_buffers)

BLOCK_M, BLOCK_N, BLOCK_K = 16, 64, 64
#: Architectures with int4 tensor cores (mma.m16n8k64.s4); sm_90 has none.
S4_ARCHES = ("sm_80", "sm_86", "sm_89")


class MatmulW4A4(RescaledStore, SplitKSum, tilus.Script):
    """C [M, N] = sum_g (A_q @ B_q^T over group g's k) * s_b[g, n] * s_a[m] (+ bias), int32
    accumulation within a group; one group of all K when ``group_size`` is 0 (per channel). A
    [M, K] and B [N, K] are int4 bit streams (k contiguous), loaded as bytes and viewed as int4.
    ``s4_mma``: a dot of the int4 tiles (``mma.m16n8k64.s4``, sm_80/sm_89); else the codes
    widened to int8 (``mma.m16n8k32.s8``). Scales ``s_b``: float32 [K / group_size, N]."""

    def __init__(self, has_bias: bool = False, s4_mma: bool = False, group_size: int = 0,
                 act: str = "float16", split_k: int = 1):
        super().__init__()
        self.has_bias = bool(has_bias)
        self.act = tilus.dtypes.get(act)
        self.s4_mma = bool(s4_mma)
        if group_size % BLOCK_K:
            raise ArgumentError(f"MatmulW4A4: group_size must be 0 (per channel) or a multiple "
                                f"of {BLOCK_K}, got {group_size}")
        if group_size and split_k != 1:
            raise ArgumentError(f"MatmulW4A4: split_k must be 1 with group_size {group_size} "
                                f"(the float32 group sums would change order), got {split_k}")
        self.group_size = group_size
        self.split_k = int(split_k)

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: tilus.void_p,
                 b: tilus.void_p, sa: ~tilus.float32, sb: ~tilus.float32, bias: tilus.void_p,
                 c: tilus.void_p, workspace: ~tilus.int32, sema: ~tilus.int32):
        self.attrs.blocks = [tilus.cdiv(m, BLOCK_M), tilus.cdiv(n, BLOCK_N), self.split_k]
        self.attrs.warps = 4
        ga = self.global_view(a, dtype=tilus.uint8, shape=[m, k // 2])
        gb = self.global_view(b, dtype=tilus.uint8, shape=[n, k // 2])
        gc = self.global_view(c, dtype=self.act, shape=[m, n])
        m0, n0 = self.blockIdx.x * BLOCK_M, self.blockIdx.y * BLOCK_N
        if self.group_size:
            groups, steps = k // self.group_size, self.group_size // BLOCK_K
            gsa = self.global_view(sa, dtype=tilus.float32, shape=[m, 1])
            gsb = self.global_view(sb, dtype=tilus.float32, shape=[groups, n])
            out = self.register_tensor(dtype=tilus.float32, shape=[BLOCK_M, BLOCK_N], init=0.0)
            for g in self.range(0, groups):
                acc = self.register_tensor(dtype=tilus.int32, shape=[BLOCK_M, BLOCK_N], init=0)
                for j in self.range(0, steps):
                    self.k_step(ga, gb, m0, n0, g * steps + j, acc)
                out = out + self.cast(acc, dtype=tilus.float32) \
                    * self.load_global(gsb, offsets=[g, n0], shape=[1, BLOCK_N])
            out = out * self.load_global(gsa, offsets=[m0, 0], shape=[BLOCK_M, 1])
            self.store_rescaled(out, bias, gc, n, m0, n0, BLOCK_N)
        else:
            k_tiles = tilus.cdiv(k, BLOCK_K)
            per_split = tilus.cdiv(k_tiles, self.split_k)
            first = self.blockIdx.z * per_split
            last = min(first + per_split, k_tiles)
            acc = self.register_tensor(dtype=tilus.int32, shape=[BLOCK_M, BLOCK_N], init=0)
            for kt in self.range(first, last):
                self.k_step(ga, gb, m0, n0, kt, acc)
            if self.split_k == 1:
                self.rescale_store(acc, sa, sb, bias, gc, m, n, m0, n0)
            else:
                self.sum_splits(acc, sa, sb, bias, gc, workspace, sema, m, n, m0, n0, BLOCK_M,
                                BLOCK_N)

    def k_step(self, ga, gb, m0, n0, kt, acc) -> None:
        """acc += A_q @ B_q^T over k-tile ``kt`` (int4 mma, or the codes widened to int8)."""
        half = kt * (BLOCK_K // 2)
        ta = self.view(self.load_global(ga, offsets=[m0, half], shape=[BLOCK_M, BLOCK_K // 2]),
                       dtype=tilus.int4)
        tb = self.view(self.load_global(gb, offsets=[n0, half], shape=[BLOCK_N, BLOCK_K // 2]),
                       dtype=tilus.int4)
        if self.s4_mma:
            self.dot(ta, self.transpose(tb), acc, out=acc)
        else:
            self.dot(self.cast(ta, dtype=tilus.int8),
                     self.transpose(self.cast(tb, dtype=tilus.int8)), acc, out=acc)

    def rescale_store(self, acc, sa, sb, bias, gc, m, n, m0, n0) -> None:
        """Per channel: the tile's int32 sums times the column then the row scale (as the grouped
        path with one group), stored (+ bias) at [m0, n0]."""
        gsa = self.global_view(sa, dtype=tilus.float32, shape=[m, 1])
        gsb = self.global_view(sb, dtype=tilus.float32, shape=[1, n])
        out = self.register_tensor(dtype=tilus.float32, shape=[BLOCK_M, BLOCK_N], init=0.0)
        out = out + self.cast(acc, dtype=tilus.float32) \
            * self.load_global(gsb, offsets=[0, n0], shape=[1, BLOCK_N])
        out = out * self.load_global(gsa, offsets=[m0, 0], shape=[BLOCK_M, 1])
        self.store_rescaled(out, bias, gc, n, m0, n0, BLOCK_N)


def split_for(m: int, n: int, k: int, group_size: int = 0) -> int:
    """The split-k of ``matmul_w4a4``: per channel at M <= 16, K split in two (when it has two
    k-tiles), as ``w8a8.split_for``; grouped weights are not split (float32 group sums)."""
    return 2 if not group_size and m <= BLOCK_M and -(-k // BLOCK_K) >= 2 else 1


@dataclass(eq=False)
class Int4Weight:
    """A symmetric int4 weight: ``data`` uint8 [N, K / 2] (packed codes, see the module
    docstring); ``scales`` float32 [N] (per output channel, ``group_size`` 0) or
    [K / group_size, N] (per group of ``group_size`` k of a channel). The weight is the codes
    times their scale."""

    data: torch.Tensor
    scales: torch.Tensor
    group_size: int = 0

    @property
    def shape(self) -> tuple:
        return (self.data.shape[0], 2 * self.data.shape[1])

    def codes(self) -> torch.Tensor:
        """[N, K] int8 in [-8, 7] (the quantizer writes [-7, 7])."""
        return unpack_int4(self.data)

    def scales_nk(self) -> torch.Tensor:
        """float32 [N, K]: each weight's scale."""
        if not self.group_size:
            return self.scales[:, None].expand(*self.shape)
        return self.scales.t().repeat_interleave(self.group_size, dim=1)

    def dequantize(self) -> torch.Tensor:
        """[N, K] float32."""
        return self.codes().float() * self.scales_nk()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [R, C] of packed int4 rows -> int8 [R, 2 C] (low nibble first, sign-extended)."""
    rows = packed.shape[0]
    codes = dtypes.unpack(packed.reshape(-1), dtypes.int4, packed.numel() * 2)
    return ((codes.to(torch.int16) ^ 8) - 8).to(torch.int8).reshape(rows, -1)


def quantize_weight_int4(w: torch.Tensor, group_size: Optional[int] = None) -> Int4Weight:
    """``w [N, K]`` (K even) -> symmetric int4 packed along K, one scale per output channel
    (``group_size`` None) or per ``group_size`` consecutive k of a channel (a multiple of 64
    dividing K), each group by the rule of the module docstring."""
    check_2d(w, "w", "quantize_weight_int4")
    if not group_size:
        q, s = rows_reference(w.detach(), "int4")
        return Int4Weight(q.contiguous(), s.contiguous())
    n, k = w.shape
    if group_size % BLOCK_K or k % group_size:
        raise ArgumentError(f"quantize_weight_int4: group_size must be a multiple of {BLOCK_K} "
                            f"dividing K = {k}, got {group_size}")
    q, s = rows_reference(w.detach().reshape(-1, group_size), "int4")
    return Int4Weight(q.reshape(n, k // 2).contiguous(), s.reshape(n, -1).t().contiguous(),
                      group_size)


def matmul_w4a4(x: torch.Tensor, w4: Int4Weight, bias: Optional[torch.Tensor] = None,
                engine: str = "auto") -> torch.Tensor:
    """``x [M, K]`` float16/bfloat16 quantized per row to int4, times ``w4``: ``[M, N]`` in x's
    dtype."""
    n, k = w4.shape
    check_activations(x, k, "matmul_w4a4")
    if engine == "fallback" or (engine == "auto" and x.device.type != "cuda"):
        return matmul_w4a4_reference(x, w4, bias)
    qx, sx = quantize_rows(x, engine, "int4")
    m = x.shape[0]
    c = torch.empty(m, n, dtype=x.dtype, device=x.device)
    b = torch.zeros(1, dtype=x.dtype, device=x.device) if bias is None else bias.to(x.dtype)
    s4 = x.device.type == "cuda" and device_arch(x) in S4_ARCHES
    split = split_for(m, n, k, w4.group_size)
    ws, sema = split_k_buffers(m, n, split, x.device)
    MatmulW4A4(has_bias=bias is not None, s4_mma=s4, group_size=w4.group_size,
               act=ACTS[x.dtype], split_k=split)(
        m, n, k, qx, w4.data, sx, w4.scales, b, c, ws, sema)
    return c


def matmul_w4a4_reference(x: torch.Tensor, w4: Int4Weight,
                          bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The rule of ``matmul_w4a4`` in torch for any float ``x [M, K]``: the int products of each
    group summed exactly, times the group's scale, summed over groups and times the row's scale
    in float64, (+ bias) in float32 (float64 for float64 x), one rounding to x's dtype."""
    check_2d(x, "x", "matmul_w4a4_reference")
    if not x.dtype.is_floating_point or x.shape[1] != w4.shape[1]:
        raise ArgumentError(f"matmul_w4a4_reference: x must be a float tensor "
                            f"[M, {w4.shape[1]}], got {x.dtype} {list(x.shape)}")
    qx, sx = rows_reference(x, "int4")
    n, k = w4.shape
    g = w4.group_size or k
    a = unpack_int4(qx).double().reshape(x.shape[0], k // g, g)
    acc = torch.einsum("mgk,ngk->mng", a, w4.codes().double().reshape(n, k // g, g))
    sw = w4.scales.double().reshape(-1, n).t()                   # [N, groups]
    out = (acc * sw).sum(dim=2) * sx.double()[:, None]
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = out.to(wide) if bias is None else out.to(wide) + bias.to(wide)
    return out.to(x.dtype)
