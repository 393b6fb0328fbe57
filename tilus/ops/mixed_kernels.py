"""The mixed-width quantized matmul in the Tilus DSL: one launch for a weight whose output
features are split between two types (``tilus.ops.mixed.MixedQuantizedWeight``).

``MixedQuantMatmul(wide, narrow, ...)`` holds two ``QuantMatmul`` configurations (the keyword
arguments ``tilus.ops.matmul.kernel_config`` gives for each part: weight type, group size, zero
mode, ...) and one schedule. The grid is ``[cdiv(M, block_m), T_wide + T_narrow, split_k]``
with ``T_part = cdiv(N_part, 128)`` column tiles: a block with ``blockIdx.y < T_wide`` runs the
wide part's k-loop on its tile ``blockIdx.y``, the others the narrow part's on tile
``blockIdx.y - T_wide``. The branch is on a value uniform over the block (no divergence), and
each side is a whole static dequantize path (``QuantMatmul.main_loop``: its own packed-unit
bytes, stream layout, packed cast and scale rows), so neither pays for the other beyond the
instruction cache. The activation tile loads, the accumulator, split-k and the epilogue are
shared (``QuantMatmul.finish``).

Output: ``c`` is ``[M, 128 * T_wide + N_narrow]``: the wide part's tiles (its last one padded),
then the narrow part's columns; block y writes tile y. The caller
(``tilus.ops.mixed_matmul``) gathers the original feature order with one ``index_select``
(``MixedQuantizedWeight.out_index``) and passes ``bias`` in the buffer's order. The kernel
does not scatter through the permutation itself: a Tilus ``store_global`` writes a tile at
affine offsets, and there is no scatter store instruction (it would need its IR node,
interpreter semantics, layout rule, emitter and simulator support). The gather moves
``2 * M * N`` half values, against the weight's ``K * N * B / 8`` bytes that the kernel
reads: below 1% at decode sizes (M <= 16, K >= 4096).
"""
import tilus
from tilus.errors import TilusError
from tilus.ir.layout.packed import UNIT_N
from tilus.ops.kernels import QuantMatmul


class MixedQuantMatmul(tilus.Script):
    """C = A @ dequant([W_wide; W_narrow]) (+ bias) in one launch; see the module docstring.
    ``wide`` and ``narrow``: QuantMatmul's compile-time parameters but the schedule (the same
    activation dtype and bias flag); schedule parameters as QuantMatmul's."""

    def __init__(self, wide: dict, narrow: dict, block_m: int = 16, block_n: int = UNIT_N,
                 block_k: int = 32, split_k: int = 1, warps: int = 4, stages: int = 1):
        super().__init__()
        schedule = dict(block_m=block_m, block_n=block_n, block_k=block_k, split_k=split_k,
                        warps=warps, stages=stages)
        for key in ("act", "has_bias"):
            if wide.get(key) != narrow.get(key):
                raise TilusError(f"MixedQuantMatmul: both parts need the same {key}, got "
                                 f"{wide.get(key)!r} and {narrow.get(key)!r}")
        self.wide = QuantMatmul(**wide, **schedule)
        self.narrow = QuantMatmul(**narrow, **schedule)
        for part in (self.wide, self.narrow):
            if part.block_scaled:
                raise TilusError(f"MixedQuantMatmul: the parts are group-scaled, got a "
                                 f"{part.scheme} part")
        self.act = self.wide.act
        self.block_m, self.block_k, self.split_k = block_m, block_k, split_k
        self.warps, self.stages = warps, stages

    @staticmethod
    def schedule_names() -> tuple:
        return QuantMatmul.schedule_names()

    def __call__(self, m: tilus.int32, n_wide: tilus.int32, n_narrow: tilus.int32,
                 k: tilus.int32, a: tilus.void_p, w_wide: tilus.void_p,
                 s_wide: tilus.void_p, o_wide: tilus.void_p, w_narrow: tilus.void_p,
                 s_narrow: tilus.void_p, o_narrow: tilus.void_p, bias: tilus.void_p,
                 c: tilus.void_p, workspace: ~tilus.float32, sema: ~tilus.int32):
        bm = self.block_m
        tiles_wide = tilus.cdiv(n_wide, UNIT_N)
        tiles_narrow = tilus.cdiv(n_narrow, UNIT_N)
        tiles_n = tiles_wide + tiles_narrow
        n = tiles_wide * UNIT_N + n_narrow
        self.attrs.blocks = [tilus.cdiv(m, bm), tiles_n, self.split_k]
        self.attrs.warps = self.warps
        ga = self.global_view(a, dtype=self.act, shape=[m, k])
        gww, gsw, gzw = self.wide.weight_views(w_wide, s_wide, o_wide, n_wide, k, tiles_wide)
        gwn, gsn, gzn = self.narrow.weight_views(w_narrow, s_narrow, o_narrow, n_narrow, k,
                                                 tiles_narrow)
        gc = self.global_view(c, dtype=self.act, shape=[m, n])
        m0 = self.blockIdx.x * bm
        split = self.blockIdx.z
        k_tiles = tilus.cdiv(k, self.block_k)
        per_split = tilus.cdiv(k_tiles, self.split_k)
        first = split * per_split
        last = min(first + per_split, k_tiles)
        acc = self.register_tensor(dtype=tilus.float32, shape=[bm, UNIT_N], init=0.0)
        if self.blockIdx.y < tiles_wide:
            self.wide.main_loop(ga, gww, gsw, gzw, m0, self.blockIdx.y, first, last, acc)
        else:
            self.narrow.main_loop(ga, gwn, gsn, gzn, m0, self.blockIdx.y - tiles_wide, first,
                                  last, acc)
        self.wide.finish(acc, bias, gc, workspace, sema, m, n, m0, split, tiles_n, 1.0)
