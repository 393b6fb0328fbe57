"""The mixed-bit MoE grouped GEMM in the Tilus DSL: one launch for every expert, whatever its
weight type.

The host (``tilus.ops.moe``) sorts the (token, k) pairs by expert, gathers their activation rows
(``xs [P, K]``, P = tokens * top_k) and cuts each expert's run of rows into tiles of ``block_m``
rows. Block (t, j) reads row t of the tile table (``tiles [T, 3]`` int32: expert, first row, end
row; expert -1 for the spare tiles of the grid's upper bound) and row ``e`` of the expert table
(``experts [E, 4]`` int64: variant, byte offset of the expert's units in each row of ``w``, its
first scale row, its first offset row), both with ``load_scalar``, and computes the rows' product
with column tile j of expert e's weight:

    acc[r, :] = xs[r] @ dequant(W_e)[:, 128 j : 128 (j + 1)]      r in [first, first + block_m)
    out[r, :] = acc[r, :] * rw[r]                                 (rows >= end: not stored)

The experts' packed weights (format 3, ``tilus.ops.packing``) are concatenated along each row of
128 columns: ``w`` is ``uint8 [ceil(N / 128), sum_e ceil(K / 32) * 512 * B_e]``, so an expert's
unit u of column tile j is at ``[j, base_e + u * 512 * B_e]`` (``base_e`` a multiple of 512 bytes:
the 16-byte vector loads stay aligned). Scales (and float offsets) are concatenated along the
groups: expert e's group g is row ``first_e + g`` of ``scales [sum_e K / group_size, N]``.

The expert's type picks the dequantization: one branch per *variant* (weight type, zero mode, zero
point, exponent) present among the experts, each the static path of ``QuantMatmul`` for that type
(``QuantMatmul.unit_weights``: vector load, free view, packed lop3/prmt cast, HFMA2 with scale and
offset), compiled into the one kernel; a block runs the branch its expert's variant selects. The
view of ``xs`` and of the output is cut at the tile's end row, so rows of the next expert read 0
and are not written.

The routing weight multiplies the float32 accumulator in the epilogue and the kernel writes one
float32 row per (token, k) pair; the host sums each token's top_k rows (``tilus.ops.moe``: the IR
has no atomic add, and a fixed-order sum is deterministic).

Schedule: ``block_k`` (a multiple of 32 dividing the group size: one scale row per k-step) and
``stages``: 1 loads straight from global memory (the interpreter's), >= 2 runs each branch's k
loop through a ``stages``-deep ring of shared buffers filled by copy_async, allocated inside the
branch and sized for its type (``pipelined_loop``; CUDA's default: block_k 128, 3 stages).
"""
import tilus
from tilus import dtypes
from tilus.errors import TilusError
from tilus.ir.expr import cast
from tilus.ir.layout.packed import UNIT_K, UNIT_N
from tilus.ops.kernels import ACT_DTYPES, QuantMatmul

#: The zero modes a variant (weight type, zero mode, zero point, exponent) may have.
MOE_ZERO_MODES = ("none", "const", "tensor")


class MoEQuantMatmul(tilus.Script):
    """out[r] = rw[r] * (xs[r] @ dequant(W_expert(r))) for every sorted pair row r, one launch
    (see the module docstring). ``variants``: a tuple of (wtype, zero_mode, zero_point, exponent),
    the static set of expert types; ``group_size``, ``act``, ``scale`` and ``single_group`` are
    common to every expert."""

    def __init__(self, variants: tuple, group_size: int, act: str = "float16",
                 scale: str = "float16", single_group: bool = False, block_m: int = 16,
                 block_k: int = UNIT_K, stages: int = 1):
        super().__init__()
        if not variants:
            raise TilusError("MoEQuantMatmul: needs at least one expert variant")
        if str(act) not in ACT_DTYPES:
            raise TilusError(f"MoEQuantMatmul: act must be float16 or bfloat16, got {act}")
        for v in variants:
            if len(v) != 4 or v[1] not in MOE_ZERO_MODES:
                raise TilusError(f"MoEQuantMatmul: a variant is (wtype, zero_mode in "
                                 f"{MOE_ZERO_MODES}, zero_point, exponent), got {v!r}")
        if block_m % 16:
            raise TilusError(f"MoEQuantMatmul: block_m must be a multiple of 16, got {block_m}")
        if block_k % UNIT_K or (not single_group and group_size % block_k):
            raise TilusError(f"MoEQuantMatmul: block_k must be a multiple of {UNIT_K} dividing "
                             f"group_size={group_size} (one scale row per k-step), got {block_k}")
        self.variants = tuple((dtypes.get(w).name, z, float(zp), int(e))
                              for w, z, zp, e in variants)
        self.group_size = int(group_size)
        self.act = dtypes.get(act)
        self.scale = dtypes.get(scale)
        self.single_group = bool(single_group)
        if stages < 1:
            raise TilusError(f"MoEQuantMatmul: stages must be >= 1, got {stages}")
        self.block_m, self.block_k, self.stages = block_m, block_k, stages
        self.paths = [QuantMatmul(w, self.group_size, self.act.name, self.scale.name, zero_mode=z,
                                  zero_point=zp, single_group=self.single_group, exponent=e,
                                  block_m=block_m, block_k=UNIT_K)
                      for w, z, zp, e in self.variants]
        self.unit_bytes = [p.unit_bytes for p in self.paths]

    def __call__(self, n: tilus.int32, k: tilus.int32, num_tiles: tilus.int32,
                 num_experts: tilus.int32, row_bytes: tilus.int32, scale_rows: tilus.int32,
                 offset_rows: tilus.int32, xs: tilus.void_p,
                 w: tilus.void_p, scales: tilus.void_p, offsets: tilus.void_p,
                 experts: ~tilus.int64, tiles: ~tilus.int32, rw: ~tilus.float32,
                 out: ~tilus.float32):
        bm = self.block_m
        tiles_n = tilus.cdiv(n, UNIT_N)
        self.attrs.blocks = [num_tiles, tiles_n]
        self.attrs.warps = 4
        gtiles = self.global_view(tiles, dtype=tilus.int32, shape=[num_tiles, 3])
        gexp = self.global_view(experts, dtype=tilus.int64, shape=[num_experts, 4])
        gw = self.global_view(w, dtype=tilus.uint8, shape=[tiles_n, row_bytes])
        gs = self.global_view(scales, dtype=self.scale, shape=[scale_rows, n])
        gz = self.global_view(offsets, dtype=self.scale, shape=[offset_rows, n])
        expert = self.load_scalar(gtiles, offsets=[self.blockIdx.x, 0])
        if expert >= 0:
            first = self.load_scalar(gtiles, offsets=[self.blockIdx.x, 1])
            end = self.load_scalar(gtiles, offsets=[self.blockIdx.x, 2])
            variant = self.load_scalar(gexp, offsets=[expert, 0])
            base = cast(self.load_scalar(gexp, offsets=[expert, 1]), tilus.int32)
            srow = cast(self.load_scalar(gexp, offsets=[expert, 2]), tilus.int32)
            zrow = cast(self.load_scalar(gexp, offsets=[expert, 3]), tilus.int32)
            ga = self.global_view(xs, dtype=self.act, shape=[end, k])
            acc = self.register_tensor(dtype=tilus.float32, shape=[bm, UNIT_N], init=0.0)
            for i in range(len(self.paths)):
                if variant == i:
                    if self.stages == 1:
                        self.expert_loop(i, ga, gw, gs, gz, first, base, srow, zrow, k, acc)
                    else:
                        self.pipelined_loop(i, ga, gw, gs, gz, first, base, srow, zrow, k, acc)
            grw = self.global_view(rw, dtype=tilus.float32, shape=[end])
            r = self.load_global(grw, offsets=[first], shape=[bm])
            gout = self.global_view(out, dtype=tilus.float32, shape=[end, n])
            self.store_global(gout, acc * self.unsqueeze(r, dim=1),
                              offsets=[first, self.blockIdx.y * UNIT_N])

    def expert_loop(self, i, ga, gw, gs, gz, first, base, srow, zrow, k, acc):
        """acc += xs[first:first+bm] @ dequant(W)[:, column tile] through variant i's path."""
        path = self.paths[i]
        ub = self.unit_bytes[i]
        units = self.block_k // UNIT_K
        for kt in self.range(0, tilus.cdiv(k, self.block_k)):
            s, z = self.group_rows(i, gs, gz, srow, zrow, kt)
            b = path.offsets_of(s, z)
            for u in range(units):
                unit = kt * units + u
                raw = self.load_global(gw, offsets=[self.blockIdx.y, base + unit * ub],
                                       shape=[1, ub])
                ta = self.load_global(ga, offsets=[first, unit * UNIT_K],
                                      shape=[self.block_m, UNIT_K])
                self.dot(ta, path.unit_weights(raw, s, b), acc, out=acc)

    def group_rows(self, i, gs, gz, srow, zrow, kt):
        """(scale row, offset) of k-tile kt for variant i: rows ``srow + g`` (and ``zrow + g``)."""
        path = self.paths[i]
        n0 = self.blockIdx.y * UNIT_N
        g = 0
        if not self.single_group:
            g = kt * self.block_k // self.group_size
        s = self.load_global(gs, offsets=[srow + g, n0], shape=[1, UNIT_N])
        z = s
        if path.zero_mode == "tensor":
            z = self.load_global(gz, offsets=[zrow + g, n0], shape=[1, UNIT_N])
        return s, z

    def issue_stage(self, i, ga, gw, sa, sw, slot, kt, first, base):
        """copy_async of k-tile kt (activation rows and variant i's packed units) into ``slot``."""
        bm, bk = self.block_m, self.block_k
        row = bk // UNIT_K * self.unit_bytes[i]
        self.copy_async(src=ga, dst=self.slice_shared(sa, offsets=[slot, 0, 0], shape=[bm, bk]),
                        offsets=[first, kt * bk])
        self.copy_async(src=gw, dst=self.slice_shared(sw, offsets=[slot, 0, 0], shape=[1, row]),
                        offsets=[self.blockIdx.y, base + kt * row])

    def pipelined_loop(self, i, ga, gw, gs, gz, first, base, srow, zrow, k, acc):
        """The k loop of variant i with a ``stages``-deep ring of shared buffers filled by
        copy_async (as ``QuantMatmul.pipelined_loop``): tile kt + stages - 1 is in flight while
        tile kt is computed; the scale (and offset) row of tile kt + 1 is loaded during tile kt.
        The ring is allocated inside the variant's branch, sized for its type."""
        path = self.paths[i]
        st, bm, bk = self.stages, self.block_m, self.block_k
        ub = self.unit_bytes[i]
        units = bk // UNIT_K
        k_tiles = tilus.cdiv(k, bk)
        sa = self.shared_tensor(dtype=self.act, shape=[st, bm, bk])
        sw = self.shared_tensor(dtype=tilus.uint8, shape=[st, 1, units * ub])
        for j in range(st - 1):
            if j < k_tiles:
                self.issue_stage(i, ga, gw, sa, sw, j, j, first, base)
            self.copy_async_commit_group()
        s, z = self.group_rows(i, gs, gz, srow, zrow, 0)
        for kt in self.range(0, k_tiles):
            slot = kt % st
            self.copy_async_wait_group(st - 2)
            self.sync()
            if kt + st - 1 < k_tiles:
                self.issue_stage(i, ga, gw, sa, sw, (kt + st - 1) % st, kt + st - 1, first, base)
            self.copy_async_commit_group()
            sn, zn = self.group_rows(i, gs, gz, srow, zrow, kt + 1)
            b = path.offsets_of(s, z)
            for u in range(units):
                raw = self.load_shared(self.slice_shared(sw, offsets=[slot, 0, u * ub],
                                                         shape=[1, ub]))
                ta = self.load_shared(self.slice_shared(sa, offsets=[slot, 0, u * UNIT_K],
                                                        shape=[bm, UNIT_K]))
                self.dot(ta, path.unit_weights(raw, s, b), acc, out=acc)
            self.assign(s, sn)
            if path.zero_mode == "tensor":
                self.assign(z, zn)
        self.copy_async_wait_group(0)
        self.free_shared(sa)
        self.free_shared(sw)
