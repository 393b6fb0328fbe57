"""The quantized matmul kernel in the Tilus DSL: ``C[M, N] = A[M, K] @ dequant(W)[K, N] (+ bias)``.

One Script serves every weight type of 1-8 bits, fp16 and bf16 activations, fp16 and bf16 scales,
per-group zero points or a constant one, an optional bias, and split-k. The weight is read in the
packed format of ``tilus.ops.quantize`` (``[K, N_pad]`` row-major bit stream, rows of
``N_pad * B / 8`` bytes, ``N_pad`` a multiple of 128).

Pointers are typed: ``a``, ``bias`` and ``c`` by the activation dtype, ``scales``/``zeros`` by the
scale dtype, ``w`` is ``~uint8``. ``QuantMatmul(...)`` returns an instance of the subclass for its
(act, scale) pair (``QuantMatmul_float16_float16``, ...; four in all), whose ``__call__`` has
those annotations and inlines the shared body ``QuantMatmul.kernel``.

Dequantization of a [block_k, block_n] tile (exactly ``QuantizedWeight.dequantize``):
``w = round_act((decode(q) * 2^-e - z) * s)`` where the product is exact in float32. When every
value ``decode(q) * 2^-e`` is exact in the activation dtype and the scales have that dtype, the
tile is computed in the activation dtype (cast, subtract, multiply: one rounding, at the
multiply); otherwise in float32 and cast once (the wide float types, mixed scale dtypes).

Masks: loads past M, N or K read 0 and stores past M, N are dropped, so any M, N, K work. A k-tile
lies inside one scale group (``group_size % block_k == 0``), or there is a single group (per-
channel scales), in which case K need not be a multiple of block_k.

Pipelining (``stages`` >= 2): the [block_m, block_k] activation tile and the packed weight bytes go
through a ``stages``-deep ring of shared-memory buffers filled with ``copy_async`` (cp.async on the
GPU), so loads of later k-tiles overlap the dequantization and dot of the current one;
``stages=1`` loads straight from global memory into registers.

Split-k (grid z): block z sums k-tiles [z*per, (z+1)*per); the partial sums of one output tile are
added in split order through a float32 workspace, serialized by one int32 semaphore per tile
(block z waits for ``sema == z``; the last split adds bias, casts and stores C, and resets the
semaphore to 0), so results are deterministic.
"""
import numpy as np

import tilus
from tilus import dtypes
from tilus.autotune import autotune
from tilus.errors import TilusError
from tilus.ops.quantize import N_ALIGN, value_exponent

ACT_DTYPES = ("float16", "bfloat16")


def values_exact_in(wtype, act: str, exponent: int) -> bool:
    """Whether decode(q) and decode(q) * 2^-exponent are exact, finite values of ``act`` for every
    code q of ``wtype`` (so the tile can be dequantized in the activation dtype)."""
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


@autotune("block_m", [16, 32, 64, 128])
@autotune("block_n", [64, 128, 256])
@autotune("block_k", [32, 64, 128])
@autotune("split_k", [1, 2, 4, 8])
@autotune("warps", [4, 8])
@autotune("stages", [1, 2, 3, 4])
class QuantMatmul(tilus.Script):
    """C = A @ dequant(W) (+ bias); see the module docstring. Schedule parameters: ``block_m``,
    ``block_n`` (multiple of 8), ``block_k``, ``split_k``, ``warps``, ``stages`` (the autotuner's
    space; its shape-dependent pruning is ``tilus.ops.tuning.prune_matmul``).

    ``QuantMatmul(wtype, group_size, act=, scale=, ...)`` returns the instance of the variant class
    for (act, scale), e.g. ``QuantMatmul_bfloat16_float16``."""

    def __new__(cls, *args, **kwargs):
        if cls is QuantMatmul:
            act = str(kwargs.get("act", args[2] if len(args) > 2 else "float16"))
            scale = str(kwargs.get("scale", args[3] if len(args) > 3 else "float16"))
            if act not in ACT_DTYPES or scale not in ACT_DTYPES:
                raise TilusError(f"QuantMatmul: activations and scales must be float16 or "
                                 f"bfloat16, got {act} and {scale}")
            cls = _VARIANTS[(act, scale)]
        return super().__new__(cls)

    def __init__(self, wtype, group_size: int, act: str = "float16", scale: str = "float16",
                 zero_mode: str = "none", zero_point: float = 0.0, has_bias: bool = False,
                 single_group: bool = False, block_m: int = 16, block_n: int = 64,
                 block_k: int = 32, split_k: int = 1, warps: int = 4, stages: int = 1):
        super().__init__()
        self.wtype = dtypes.get(wtype)
        self.act = dtypes.get(act)
        self.scale = dtypes.get(scale)
        if self.act.name not in ACT_DTYPES or self.scale.name not in ACT_DTYPES:
            raise TilusError(f"QuantMatmul: activations and scales must be float16 or bfloat16, "
                             f"got {self.act.name} and {self.scale.name}")
        if zero_mode not in ("none", "const", "tensor"):
            raise TilusError(f"QuantMatmul: zero_mode must be none, const or tensor, "
                             f"got {zero_mode!r}")
        if block_n % 8:
            raise TilusError(f"QuantMatmul: block_n={block_n} must be a multiple of 8 (a tile's "
                             f"columns must start on a byte of the packed rows)")
        if not single_group and group_size % block_k:
            raise TilusError(f"QuantMatmul: block_k={block_k} must divide group_size={group_size}"
                             f" (a k-tile lies in one scale group)")
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
        self.exponent = value_exponent(self.wtype)
        self.norm = 2.0 ** -self.exponent
        self.fast = (self.scale.name == self.act.name
                     and values_exact_in(self.wtype, self.act.name, self.exponent))

    @staticmethod
    def _nbits(wtype) -> int:
        return dtypes.get(wtype).nbits

    @staticmethod
    def schedule_names() -> tuple:
        return ("block_m", "block_n", "block_k", "split_k", "warps", "stages")

    def dequant_tile(self, codes, gs, gz, g, n0):
        """The [block_k, block_n] tile of dequantized weights (activation dtype) of group g."""
        bn = self.block_n
        s = self.load_global(gs, offsets=[g, n0], shape=[1, bn])
        if self.fast:
            wf = self.cast(codes, dtype=self.act)
            if self.norm != 1.0:
                wf = wf * self.norm
            if self.zero_mode == "const":
                wf = wf - self.zero_point
            if self.zero_mode == "tensor":
                z = self.load_global(gz, offsets=[g, n0], shape=[1, bn])
                wf = wf - z
            wf = wf * s
        else:
            wf = self.cast(codes, dtype=tilus.float32)
            if self.norm != 1.0:
                wf = wf * self.norm
            if self.zero_mode == "const":
                wf = wf - self.zero_point
            if self.zero_mode == "tensor":
                z = self.load_global(gz, offsets=[g, n0], shape=[1, bn])
                wf = wf - self.cast(z, dtype=tilus.float32)
            wf = self.cast(wf * self.cast(s, dtype=tilus.float32), dtype=self.act)
        return wf

    def kernel(self, m, n, k, a, w, scales, zeros, bias, c, workspace, sema):
        bm, bn, bk = self.block_m, self.block_n, self.block_k
        nbits = self.wtype.nbits
        tiles_n = tilus.cdiv(n, bn)
        self.attrs.blocks = [tilus.cdiv(m, bm), tiles_n, self.split_k]
        self.attrs.warps = self.warps
        ga = self.global_view(a, dtype=self.act, shape=[m, k])
        gw = self.global_view(w, dtype=tilus.uint8,
                              shape=[k, tilus.cdiv(n, N_ALIGN) * (N_ALIGN * nbits // 8)])
        num_groups = 1
        if not self.single_group:
            num_groups = k // self.group_size
        gs = self.global_view(scales, dtype=self.scale, shape=[num_groups, n])
        gz = gs
        if self.zero_mode == "tensor":
            gz = self.global_view(zeros, dtype=self.scale, shape=[num_groups, n])
        gc = self.global_view(c, dtype=self.act, shape=[m, n])
        m0 = self.blockIdx.x * bm
        n0 = self.blockIdx.y * bn
        split = self.blockIdx.z
        k_tiles = tilus.cdiv(k, bk)
        per_split = tilus.cdiv(k_tiles, self.split_k)
        first = split * per_split
        last = min(first + per_split, k_tiles)
        acc = self.register_tensor(dtype=tilus.float32, shape=[bm, bn], init=0.0)
        if self.stages == 1:
            for kt in self.range(first, last):
                ta = self.load_global(ga, offsets=[m0, kt * bk], shape=[bm, bk])
                raw = self.load_global(gw, offsets=[kt * bk, n0 * nbits // 8],
                                       shape=[bk, bn * nbits // 8])
                self.mma_tile(ta, raw, kt, gs, gz, n0, acc)
        else:
            self.pipelined_loop(ga, gw, gs, gz, m0, n0, first, last, acc)
        if self.split_k == 1:
            self.epilogue(acc, bias, gc, m0, n0, n)
        else:
            gws = self.global_view(workspace, dtype=tilus.float32, shape=[m, n])
            gsema = self.global_view(sema, dtype=tilus.int32, shape=[tilus.cdiv(m, bm) * tiles_n])
            tile = self.blockIdx.x * tiles_n + self.blockIdx.y
            self.lock_semaphore(gsema, index=[tile], value=split)
            if split > 0:
                acc += self.load_global(gws, offsets=[m0, n0], shape=[bm, bn])
            if split == self.split_k - 1:
                self.epilogue(acc, bias, gc, m0, n0, n)
            else:
                self.store_global(gws, acc, offsets=[m0, n0])
            self.release_semaphore(gsema, index=[tile], value=(split + 1) % self.split_k)

    def mma_tile(self, ta, raw, kt, gs, gz, n0, acc):
        """acc += ta @ dequant(raw): one k-tile (raw: the [block_k, block_n * B / 8] bytes)."""
        codes = self.view(raw, dtype=self.wtype, shape=[self.block_k, self.block_n])
        g = 0
        if not self.single_group:
            g = kt * self.block_k // self.group_size
        wf = self.dequant_tile(codes, gs, gz, g, n0)
        self.dot(ta, wf, acc, out=acc)

    def issue_stage(self, ga, gw, sa, sw, slot, kt, m0, n0):
        """copy_async of k-tile kt (activations and packed weight bytes) into ring slot ``slot``."""
        bm, bk = self.block_m, self.block_k
        wb = self.block_n * self.wtype.nbits // 8
        self.copy_async(src=ga, dst=self.slice_shared(sa, offsets=[slot, 0, 0], shape=[bm, bk]),
                        offsets=[m0, kt * bk])
        self.copy_async(src=gw, dst=self.slice_shared(sw, offsets=[slot, 0, 0], shape=[bk, wb]),
                        offsets=[kt * bk, n0 * self.wtype.nbits // 8])

    def pipelined_loop(self, ga, gw, gs, gz, m0, n0, first, last, acc):
        """The k loop with a ``stages``-deep ring of shared-memory buffers filled by copy_async:
        tile kt + stages - 1 is in flight while tile kt is computed (one commit group per
        iteration, waiting until at most stages - 2 groups are pending)."""
        st, bm, bk = self.stages, self.block_m, self.block_k
        wb = self.block_n * self.wtype.nbits // 8
        sa = self.shared_tensor(dtype=self.act, shape=[st, bm, bk])
        sw = self.shared_tensor(dtype=tilus.uint8, shape=[st, bk, wb])
        for s in range(st - 1):
            if first + s < last:
                self.issue_stage(ga, gw, sa, sw, s, first + s, m0, n0)
            self.copy_async_commit_group()
        for kt in self.range(first, last):
            slot = (kt - first) % st
            self.copy_async_wait_group(st - 2)
            self.sync()
            ta = self.load_shared(self.slice_shared(sa, offsets=[slot, 0, 0], shape=[bm, bk]))
            raw = self.load_shared(self.slice_shared(sw, offsets=[slot, 0, 0], shape=[bk, wb]))
            if kt + st - 1 < last:
                self.issue_stage(ga, gw, sa, sw, (kt - first + st - 1) % st, kt + st - 1, m0, n0)
            self.copy_async_commit_group()
            self.mma_tile(ta, raw, kt, gs, gz, n0, acc)
        self.copy_async_wait_group(0)
        self.free_shared(sa)
        self.free_shared(sw)

    def epilogue(self, acc, bias, gc, m0, n0, n):
        out = acc
        if self.has_bias:
            gb = self.global_view(bias, dtype=self.act, shape=[1, n])
            b = self.load_global(gb, offsets=[0, n0], shape=[1, self.block_n])
            out = acc + self.cast(b, dtype=tilus.float32)
        self.store_global(gc, self.cast(out, dtype=self.act), offsets=[m0, n0])


_VARIANTS: dict = {}


def _variant(act: str, scale: str):
    A, S = dtypes.get(act), dtypes.get(scale)

    class Variant(QuantMatmul):
        def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: ~A,
                     w: ~tilus.uint8, scales: ~S, zeros: ~S, bias: ~A, c: ~A,
                     workspace: ~tilus.float32, sema: ~tilus.int32):
            self.kernel(m, n, k, a, w, scales, zeros, bias, c, workspace, sema)

    name = f"QuantMatmul_{act}_{scale}"
    Variant.__name__ = Variant.__qualname__ = name
    globals()[name] = Variant           # picklable by name (autotune worker processes)
    return Variant


for _act in ACT_DTYPES:
    for _scale in ACT_DTYPES:
        _VARIANTS[(_act, _scale)] = _variant(_act, _scale)
