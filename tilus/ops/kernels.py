"""The quantized matmul kernel in the Tilus DSL: ``C[M, N] = A[M, K] @ dequant(W)[K, N] (+ bias)``.

One Script serves every weight type of 1-8 bits, fp16 and bf16 activations, fp16 and bf16 scales,
per-group offsets (or the constant zero point's ``-zp * s``, or uint8 integer zero points z:
``(v - z) * s``, ``zero_mode="int"``), an optional bias, and split-k. The
weight is read in packed format 3 (``tilus.ops.packing``): 32 x 128 (k, n) units, each thread's
``4 * B`` bytes of a unit holding exactly the codes of its mma B fragments.

Pointers: ``a``, ``w``, ``scales``, ``offsets``, ``bias`` and ``c`` are raw byte pointers
(``tilus.void_p``), viewed (``global_view``) with the instance's compile-time dtypes: the
activation dtype (``a``, ``bias``, ``c``), ``uint8`` (``w``), the scale dtype (``scales``;
``offsets``, or ``uint8`` integer zero points). So one class serves every (act, scale) pair and
zero mode. A direct launch accepts any contiguous buffer for those six (their byte size is still
checked); ``tilus.ops.matmul`` checks the tensors' dtypes before it launches
(``tilus.ops.validation.check_quant_operands``). ``workspace`` (float32) and ``sema`` (int32)
stay typed. ``global_scale`` (float32) is the nvfp4 per-tensor scale; the other schemes do not
read it (pass 1.0).

Per unit (the dequantization is ``QuantizedWeight.dequantize``, ``v * s + b`` rounded once):
the unit's bytes are loaded with the layout ``unit_bytes_layout`` (one vector load per thread),
``view(..., layout=weight_stream_layout)`` reinterprets each thread's bytes as its codes (free),
``cast`` to the activation dtype runs the packed lop3/prmt program on whole words and writes
whole mma registers (the output is annotated ``weight_fragment_layout``: the cast reorders the
thread's slots for free), and one ``fma`` (HFMA2 per two weights) applies scale and offset
(integer zero points: ``(v - z) * s``, a subtract and a multiply, HADD2 + HMUL2, ``v - z`` exact;
each zero row is converted to the scale dtype once when it is loaded). When
a type's values are not exact in the activation dtype, or scales have another dtype, the tile
is computed in float32 instead (cast, fma, one rounding to the activation dtype).

Float weight types (``fold_scale``): the packed cast of ``floatK_eXmY`` ends with a multiply by
2^(bias_act - bias_type) that fixes the exponent bias. With ``fold_scale`` the cast leaves it out
(``cast(..., exponent=-bias_shift)``, exact) and the scale row is multiplied by that power of
two (and by ``2^-exponent``) once per group instead of once per two weights. The caller
(``tilus.ops.matmul``) sets it only when every scale times the power of two is exact and finite
(``scale_fold_exponent``).

Block-scaled weights (``scheme``, ``tilus.ops.blockscale``): **mx** (E8M0 scale per 32 k, a
power of two in 2^-127..2^127, beyond float16 and bfloat16) is applied after the mma, in float32:
each unit's grid values (exact in the activation dtype) go through their own mma into a zeroed
float32 tile, which is added to the accumulator times the unit's scale row (the E8M0 codes
decoded to float32: exact, every E8M0 value is a float32 number). So no weight is ever rounded to
the activation dtype and the full E8M0 range is exact up to float32's. **nvfp4** (E4M3 scale per
16 k, a float32 scale per tensor): the E4M3 scale times an e2m1 value has at most 6 significant
bits between 2^-10 and 2688, exact in float16 and bfloat16, so the scales are applied to the
weights (two rows per unit: the unit viewed as [2, 16, 128]) and the per-tensor scale (a
run-time float32 parameter) multiplies the float32 accumulator in the epilogue.

Masks: loads past M, N or K read 0 and stores past M, N are dropped, so any M, N, K work. A
k-tile lies inside one scale group (``group_size % block_k == 0``) or spans whole groups
(``block_k % group_size == 0``), or there is a single group.
``block_n`` is the unit's 128; ``warps`` 4 (one warp per 32 columns) or 8 (two warp rows).

Pipelining (``stages`` >= 2): the [block_m, block_k] activation tile and the k-tile's packed
units go through a ``stages``-deep ring of shared-memory buffers filled with ``copy_async``
(cp.async), so loads of later k-tiles overlap the current one's work; the scale (and offset) rows
of the next k-tile (one per scale group it spans) are loaded into registers one iteration ahead
(4 values per thread and row, consumed after a whole iteration of work). Each unit's bytes and
activations are read from shared memory just before its dot, which keeps few registers live
(80-255 per thread across the types at the decode schedule). ``stages=1`` loads straight from
global memory.

Split-k (grid z): block z sums k-tiles [z*per, (z+1)*per); the partial sums of one output tile are
added in split order through a float32 workspace, serialized by one int32 semaphore per tile
(block z waits for ``sema == z``; the last split adds bias, casts and stores C, and resets the
semaphore to 0), so results are deterministic.
"""
import functools

import numpy as np

import tilus
from tilus import dtypes
from tilus.autotune import autotune
from tilus.errors import TilusError
from tilus.ops import blockscale
from tilus.ir.layout.packed import (UNIT_K, UNIT_N, pair_stride, unit_bytes_layout,
                                    weight_fragment_layout, weight_stream_layout)

ACT_DTYPES = ("float16", "bfloat16")
#: none: w = v * s; const: v * s - zp * s; tensor: v * s + b (float offsets b in the scale
#: dtype); int: (v - z) * s (uint8 zero points z: v - z is exact, one rounding).
ZERO_MODES = ("none", "const", "tensor", "int")


@functools.lru_cache(maxsize=None)
def _values_exact_in(wtype: str, act: str, exponent: int) -> bool:
    """``values_exact_in`` on hashable arguments."""
    import ml_dtypes

    t = dtypes.get(wtype)
    codes = np.arange(2 ** t.nbits, dtype=np.uint8)
    v = t.decode(codes).astype(np.float64)
    v = v[np.isfinite(v)]
    npt = np.float16 if act == "float16" else ml_dtypes.bfloat16
    for x in (v, v * 2.0 ** -exponent):
        with np.errstate(all="ignore"):
            y = x.astype(npt).astype(np.float64)
        if not np.array_equal(x, y):
            return False
    return True


def values_exact_in(wtype, act: str, exponent: int) -> bool:
    """Whether decode(q) and decode(q) * 2^-exponent are exact, finite values of ``act`` for every
    code q of ``wtype`` (so the tile can be dequantized in the activation dtype). Cached: the
    dispatch asks on every call."""
    return _values_exact_in(dtypes.get(wtype).name, str(act), int(exponent))


def bias_shift(wtype, act: str) -> int:
    """log2 of the multiply that fixes a float type's exponent bias in ``act``:
    ``bias(act) - bias(wtype)`` (the packed cast at ``exponent=-bias_shift`` has none)."""
    return dtypes.get(act).exponent_bias - dtypes.get(wtype).exponent_bias


def scale_fold_exponent(wtype, act: str, exponent: int) -> int:
    """j such that, with the scale rows multiplied by 2^j, the weights' cast needs no multiply:
    ``bias_shift(wtype, act) - exponent`` for float types; 0 for integer types."""
    if not dtypes.get(wtype).is_float:
        return 0
    return bias_shift(wtype, act) - int(exponent)


@autotune("block_m", [16, 32, 64, 128])
@autotune("block_n", [UNIT_N])
@autotune("block_k", [32, 64, 128, 256, 512])
@autotune("split_k", [1, 2, 4, 8])
@autotune("warps", [4, 8])
@autotune("stages", [1, 2, 3, 4])
class QuantMatmul(tilus.Script):
    """C = A @ dequant(W) (+ bias); see the module docstring. Schedule parameters: ``block_m``,
    ``block_n`` (128, the packed unit), ``block_k`` (a multiple of 32), ``split_k``, ``warps``
    (4 or 8), ``stages`` (the autotuner's space; its shape-dependent pruning is
    ``tilus.ops.tuning.prune_matmul``)."""

    def __init__(self, wtype, group_size: int, act: str = "float16", scale: str = "float16",
                 zero_mode: str = "none", zero_point: float = 0.0, has_bias: bool = False,
                 single_group: bool = False, exponent: int = 0, fold_scale: bool = False,
                 scheme: str = "group", block_m: int = 16,
                 block_n: int = UNIT_N,
                 block_k: int = 32, split_k: int = 1, warps: int = 4, stages: int = 1):
        super().__init__()
        self.wtype = dtypes.get(wtype)
        self.act = dtypes.get(act)
        self.scale = dtypes.get(scale)
        self.scheme = scheme
        self.block_scaled = scheme != "group"
        want_scale = ACT_DTYPES if not self.block_scaled else (
            blockscale.scale_type(scheme).name,) if scheme in blockscale.SCHEMES else ()
        if self.act.name not in ACT_DTYPES or self.scale.name not in want_scale:
            raise TilusError(f"QuantMatmul: scheme {scheme!r} takes float16/bfloat16 activations "
                             f"and {' or '.join(want_scale) or 'no'} scales, got "
                             f"{self.act.name} and {self.scale.name}")
        if self.block_scaled and (zero_mode != "none" or fold_scale or single_group
                                  or group_size != blockscale.block_size(scheme)):
            raise TilusError(f"QuantMatmul: {scheme} weights have blocks of "
                             f"{blockscale.block_size(scheme)} k, no zero points and no "
                             f"fold_scale, got group_size {group_size}, zero_mode "
                             f"{zero_mode!r}, fold_scale={fold_scale}, "
                             f"single_group={single_group}")
        if zero_mode not in ZERO_MODES:
            raise TilusError(f"QuantMatmul: zero_mode must be one of {', '.join(ZERO_MODES)}, "
                             f"got {zero_mode!r}")
        if zero_mode == "int" and not (dtypes.get(wtype).is_integer
                                       and not dtypes.get(wtype).is_signed):
            raise TilusError(f"QuantMatmul: integer zero points (zero_mode='int') need an "
                             f"unsigned integer weight type, got {dtypes.get(wtype).name}")
        if block_n != UNIT_N:
            raise TilusError(f"QuantMatmul: block_n must be {UNIT_N} (the packed format's unit), "
                             f"got {block_n}")
        if block_k % UNIT_K:
            raise TilusError(f"QuantMatmul: block_k={block_k} must be a multiple of {UNIT_K}")
        if not single_group and group_size % block_k and block_k % group_size:
            raise TilusError(f"QuantMatmul: block_k={block_k} must divide group_size={group_size}"
                             f" or be a multiple of it (a k-tile spans part of one scale group "
                             f"or whole groups)")
        if warps not in (4, 8) or block_m % (16 * (warps // 4)):
            raise TilusError(f"QuantMatmul: warps must be 4 or 8 with block_m a multiple of "
                             f"{16 * (warps // 4)}, got warps={warps}, block_m={block_m}")
        if split_k < 1:
            raise TilusError(f"QuantMatmul: split_k must be >= 1, got {split_k}")
        if stages < 1:
            raise TilusError(f"QuantMatmul: stages must be >= 1, got {stages}")
        self.group_size = group_size
        self.zero_mode = zero_mode
        self.zero_point = float(zero_point)
        self.has_bias = bool(has_bias)
        self.single_group = bool(single_group)
        self.block_m, self.block_n, self.block_k = block_m, block_n, block_k
        self.split_k, self.warps, self.stages = split_k, warps, stages
        self.warps_m = warps // 4
        self.units = block_k // UNIT_K
        self.tile_groups = 1 if single_group or block_k <= group_size else block_k // group_size
        self.unit_bytes = UNIT_K * UNIT_N * self.wtype.nbits // 8
        self.exponent = int(exponent)
        self.norm = 2.0 ** -self.exponent
        self.fast = ((self.block_scaled or self.scale.name == self.act.name)
                     and values_exact_in(self.wtype, self.act.name, self.exponent))
        self.fold_scale = bool(fold_scale)
        if self.fold_scale and not (self.fast and self.wtype.is_float
                                    and self.zero_mode != "const"):
            raise TilusError(f"QuantMatmul: fold_scale needs a float weight type whose values are "
                             f"exact in {self.act.name}, scales in {self.act.name} and no constant "
                             f"zero point, got {self.wtype.name} with {self.scale.name} scales")
        self.fold = 2.0 ** scale_fold_exponent(self.wtype, self.act.name, self.exponent)
        target = "float16" if self.block_scaled else self.scale.name   # the codes' order
        self.stream = weight_stream_layout(pair_stride(self.wtype.name, target), self.warps_m)
        self.fragment = weight_fragment_layout(self.warps_m)
        self.bytes_layout = unit_bytes_layout(self.wtype.nbits, self.warps_m)

    @staticmethod
    def _nbits(wtype) -> int:
        return dtypes.get(wtype).nbits

    @staticmethod
    def schedule_names() -> tuple:
        return ("block_m", "block_n", "block_k", "split_k", "warps", "stages")

    def unit_values(self, raw):
        """The [32, 128] grid values ``decode(q) * 2^-exponent`` of one unit in the activation
        dtype (mma B layout; exact: the block-scaled schemes' element values all are)."""
        self.annotate_layout(raw, self.bytes_layout)
        codes = self.view(raw, dtype=self.wtype, layout=self.stream)
        if self.fast:
            wf = self.cast(codes, dtype=self.act)
            self.annotate_layout(wf, self.fragment)
            return wf * self.norm if self.norm != 1.0 else wf
        wf = self.cast(self.cast(codes, dtype=tilus.float32) * self.norm, dtype=self.act)
        self.annotate_layout(wf, self.fragment)
        return wf

    def unit_dot(self, ta, raw, params, u, acc):
        """acc += ta @ (unit u's weights), with the unit's scales (see the module docstring)."""
        if self.scheme == "mx":
            s, _ = params[u if self.tile_groups > 1 else 0]
            part = self.register_tensor(dtype=tilus.float32, shape=[self.block_m, UNIT_N],
                                        init=0.0)
            self.dot(ta, self.unit_values(raw), part, out=part)
            acc += part * s
        elif self.scheme == "nvfp4":
            w3 = self.view(self.unit_values(raw), shape=[2, UNIT_K // 2, UNIT_N])
            s2, _ = params[u]
            ws = self.view(w3 * self.unsqueeze(s2, dim=1), shape=[UNIT_K, UNIT_N])
            self.annotate_layout(ws, self.fragment)
            self.dot(ta, ws, acc, out=acc)
        else:
            s, b = self.unit_params(params, u)
            self.dot(ta, self.unit_weights(raw, s, b), acc, out=acc)

    def unit_weights(self, raw, s, b):
        """The [32, 128] dequantized weights (activation dtype, mma B layout) of one unit."""
        self.annotate_layout(raw, self.bytes_layout)
        codes = self.view(raw, dtype=self.wtype, layout=self.stream)
        if self.fold_scale:
            wf = self.cast(codes, dtype=self.act, exponent=-bias_shift(self.wtype, self.act.name))
            self.annotate_layout(wf, self.fragment)
            return self.fma(wf, s, b) if b is not None else wf * s
        if self.fast:
            wf = self.cast(codes, dtype=self.act)
            self.annotate_layout(wf, self.fragment)
            if self.zero_mode == "int":
                return (wf - b) * s
            if self.norm != 1.0:
                wf = wf * self.norm
            return self.fma(wf, s, b) if b is not None else wf * s
        v = self.cast(codes, dtype=tilus.float32)
        if self.norm != 1.0:
            v = v * self.norm
        s32 = self.cast(s, dtype=tilus.float32)
        if self.zero_mode == "int":
            w32 = (v - self.cast(b, dtype=tilus.float32)) * s32
        elif b is not None:
            w32 = self.fma(v, s32, self.cast(b, dtype=tilus.float32))
        else:
            w32 = v * s32
        wf = self.cast(w32, dtype=self.act)
        self.annotate_layout(wf, self.fragment)
        return wf

    def folded(self, params):
        """``group_params``' rows with the scale rows multiplied by 2^scale_fold_exponent (with
        ``fold_scale``; exact, the caller checked), or decoded to float32 (mx) or to the
        activation dtype (nvfp4; exact). Applied where the rows are used, a whole iteration
        after their load was issued."""
        if self.scheme == "mx":
            return [(self.cast(s, dtype=tilus.float32), z) for s, z in params]
        if self.scheme == "nvfp4":
            return [(self.cast(s, dtype=self.act), z) for s, z in params]
        if not self.fold_scale:
            return params
        return [(s * self.fold, z) for s, z in params]

    def offsets_of(self, s, offsets):
        """The group's offset row: the stored one (or its integer zero points, in the scale
        dtype), ``-zp * s`` (exact), or None (no offset)."""
        if self.zero_mode in ("tensor", "int"):
            return offsets
        if self.zero_mode == "const":
            return s * (-self.zero_point)
        return None

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: tilus.void_p,
                 w: tilus.void_p, scales: tilus.void_p, offsets: tilus.void_p,
                 bias: tilus.void_p, c: tilus.void_p, workspace: ~tilus.float32,
                 sema: ~tilus.int32, global_scale: tilus.float32):
        bm = self.block_m
        tiles_n = tilus.cdiv(n, UNIT_N)
        self.attrs.blocks = [tilus.cdiv(m, bm), tiles_n, self.split_k]
        self.attrs.warps = self.warps
        ga = self.global_view(a, dtype=self.act, shape=[m, k])
        gw = self.weight_view(w, tiles_n, k)
        num_groups = 1
        if not self.single_group:
            num_groups = k // self.group_size
        gs = self.global_view(scales, dtype=self.scale, shape=[num_groups, n])
        gz = gs
        if self.zero_mode in ("tensor", "int"):
            gz = self.global_view(offsets, dtype=tilus.uint8 if self.zero_mode == "int"
                                  else self.scale, shape=[num_groups, n])
        gc = self.global_view(c, dtype=self.act, shape=[m, n])
        m0 = self.blockIdx.x * bm
        n0 = self.blockIdx.y * UNIT_N
        split = self.blockIdx.z
        k_tiles = tilus.cdiv(k, self.block_k)
        per_split = tilus.cdiv(k_tiles, self.split_k)
        first = split * per_split
        last = min(first + per_split, k_tiles)
        acc = self.register_tensor(dtype=tilus.float32, shape=[bm, UNIT_N], init=0.0)
        if self.stages == 1:
            for kt in self.range(first, last):
                self.direct_tile(ga, gw, gs, gz, m0, kt, acc)
        else:
            self.pipelined_loop(ga, gw, gs, gz, m0, first, last, acc)
        if self.split_k == 1:
            self.epilogue(acc, bias, gc, m0, n0, n, global_scale)
        else:
            gws = self.global_view(workspace, dtype=tilus.float32, shape=[m, n])
            gsema = self.global_view(sema, dtype=tilus.int32, shape=[tilus.cdiv(m, bm) * tiles_n])
            tile = self.blockIdx.x * tiles_n + self.blockIdx.y
            self.lock_semaphore(gsema, index=[tile], value=split)
            if split > 0:
                acc += self.load_global(gws, offsets=[m0, n0], shape=[bm, UNIT_N])
            if split == self.split_k - 1:
                self.epilogue(acc, bias, gc, m0, n0, n, global_scale)
            else:
                self.store_global(gws, acc, offsets=[m0, n0])
            self.release_semaphore(gsema, index=[tile], value=(split + 1) % self.split_k)

    # ---- the packed weights' traffic (tilus.ops.sliced_kernels.SlicedMatmul overrides it) ----
    def weight_view(self, w, tiles_n, k):
        """The packed weights in global memory: one row of units per column tile."""
        gw = self.global_view(w, dtype=tilus.uint8,
                              shape=[tiles_n, tilus.cdiv(k, UNIT_K) * self.unit_bytes])
        return gw

    def load_unit(self, gw, kt, u):
        """Unit u of k-tile kt of this block's column tile, from global memory."""
        raw = self.load_global(gw, offsets=[self.blockIdx.y,
                                            (kt * self.units + u) * self.unit_bytes],
                               shape=[1, self.unit_bytes])
        return raw

    def weight_buffer(self):
        """The shared-memory ring of the k-tiles' packed units (``stages`` slots)."""
        sw = self.shared_tensor(dtype=tilus.uint8,
                                shape=[self.stages, 1, self.units * self.unit_bytes])
        return sw

    def issue_weights(self, gw, sw, slot, kt):
        """copy_async of k-tile kt's units into ring slot ``slot``."""
        self.copy_async(src=gw, dst=self.slice_shared(sw, offsets=[slot, 0, 0],
                                                      shape=[1, self.units * self.unit_bytes]),
                        offsets=[self.blockIdx.y, kt * self.units * self.unit_bytes])

    def shared_unit(self, sw, slot, u):
        """Unit u of the k-tile in ring slot ``slot``, from shared memory."""
        raw = self.load_shared(self.slice_shared(
            sw, offsets=[slot, 0, u * self.unit_bytes], shape=[1, self.unit_bytes]))
        return raw

    def group_of(self, kt):
        """The (first) scale group of k-tile kt."""
        if self.single_group:
            return 0
        return kt * self.block_k // self.group_size

    def unit_params(self, params, u):
        """(scale row, offset) for unit u of a k-tile from ``group_params``' rows."""
        s, z = params[u * UNIT_K // self.group_size if self.tile_groups > 1 else 0]
        return s, self.offsets_of(s, z)

    def direct_tile(self, ga, gw, gs, gz, m0, kt, acc):
        """acc += A[:, k-tile kt] @ dequant(W[k-tile kt]), loading straight from global memory."""
        params = self.folded(self.group_params(gs, gz, kt))
        for u in range(self.units):
            raw = self.load_unit(gw, kt, u)
            ta = self.load_global(ga, offsets=[m0, kt * self.block_k + u * UNIT_K],
                                  shape=[self.block_m, UNIT_K])
            self.unit_dot(ta, raw, params, u, acc)

    def issue_stage(self, ga, gw, sa, sw, slot, kt, m0):
        """copy_async of k-tile kt (activations and packed units) into ring slot ``slot``."""
        bm, bk = self.block_m, self.block_k
        self.copy_async(src=ga, dst=self.slice_shared(sa, offsets=[slot, 0, 0], shape=[bm, bk]),
                        offsets=[m0, kt * bk])
        self.issue_weights(gw, sw, slot, kt)

    def group_params(self, gs, gz, kt):
        """[(scale row, stored-offset row)] ([1, 128] each) of the scale groups k-tile kt spans
        (the offset row is the scale row itself when no offsets are stored; integer zero points
        are cast to the scale dtype here, exactly, once per row)."""
        n0 = self.blockIdx.y * UNIT_N
        g = self.group_of(kt)
        params = []
        if self.scheme == "nvfp4":      # per unit: its two rows, [2, 128]
            for u in range(self.units):
                s = self.load_global(gs, offsets=[g + 2 * u, n0], shape=[2, UNIT_N])
                params.append((s, s))
            return params
        for i in range(self.tile_groups):
            s = self.load_global(gs, offsets=[g + i, n0], shape=[1, UNIT_N])
            z = s
            if self.zero_mode == "tensor":
                z = self.load_global(gz, offsets=[g + i, n0], shape=[1, UNIT_N])
            elif self.zero_mode == "int":
                z = self.cast(self.load_global(gz, offsets=[g + i, n0], shape=[1, UNIT_N]),
                              dtype=self.scale)
            params.append((s, z))
        return params

    def pipelined_loop(self, ga, gw, gs, gz, m0, first, last, acc):
        """The k loop with a ``stages``-deep ring of shared-memory buffers filled by copy_async:
        tile kt + stages - 1 is in flight while tile kt is computed (one commit group per
        iteration, waiting until at most stages - 2 groups are pending; the next tile's copy is
        issued first: its slot was last read in the previous iteration, before this one's
        barrier). The scale/offset rows of tile kt + 1 are loaded into registers during tile kt
        (one iteration ahead) and copied into the current ones at the end (``assign``)."""
        st, bm, bk = self.stages, self.block_m, self.block_k
        sa = self.shared_tensor(dtype=self.act, shape=[st, bm, bk])
        sw = self.weight_buffer()
        for i in range(st - 1):
            if first + i < last:
                self.issue_stage(ga, gw, sa, sw, i, first + i, m0)
            self.copy_async_commit_group()
        params = self.folded(self.group_params(gs, gz, first))
        for kt in self.range(first, last):
            slot = (kt - first) % st
            self.copy_async_wait_group(st - 2)
            self.sync()
            if kt + st - 1 < last:
                self.issue_stage(ga, gw, sa, sw, (kt - first + st - 1) % st, kt + st - 1, m0)
            self.copy_async_commit_group()
            following = self.group_params(gs, gz, kt + 1)
            for u in range(self.units):
                raw = self.shared_unit(sw, slot, u)
                ta = self.load_shared(self.slice_shared(sa, offsets=[slot, 0, u * UNIT_K],
                                                        shape=[bm, UNIT_K]))
                self.unit_dot(ta, raw, params, u, acc)
            for (s, z), (sn, zn) in zip(params, self.folded(following)):
                self.assign(s, sn)
                if self.zero_mode in ("tensor", "int"):
                    self.assign(z, zn)
        self.copy_async_wait_group(0)
        self.free_shared(sa)
        self.free_shared(sw)

    def epilogue(self, acc, bias, gc, m0, n0, n, global_scale):
        out = acc
        if self.scheme == "nvfp4":
            out = acc * global_scale
        if self.has_bias:
            gb = self.global_view(bias, dtype=self.act, shape=[1, n])
            b = self.load_global(gb, offsets=[0, n0], shape=[1, UNIT_N])
            out = out + self.cast(b, dtype=tilus.float32)
        self.store_global(gc, self.cast(out, dtype=self.act), offsets=[m0, n0])
