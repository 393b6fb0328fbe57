"""Two independent readings of the PTX ISA agree: the simulator's fragment/ldmatrix maps
(tilus.simulator.ptx) and the register layouts the compiler uses (tilus.ir.layout.mma)."""
import pytest

from tilus.ir.layout import mma as L
from tilus.simulator import ptx


@pytest.mark.parametrize("shape,ty,which,layout", [
    ("m16n8k16", "f16", "a", L.mma_m16n8k16_f16_a()), ("m16n8k16", "f16", "b", L.mma_m16n8k16_f16_b()),
    ("m16n8k16", "f32", "c", L.mma_m16n8k16_f16_c()), ("m16n8k32", "s8", "a", L.mma_m16n8k32_s8_a()),
    ("m16n8k32", "s8", "b", L.mma_m16n8k32_s8_b()), ("m16n8k32", "s32", "c", L.mma_m16n8k32_s8_c()),
    *[(s, ty, w, f) for s, ty in [("m16n8k32", "e4m3"), ("m16n8k64", "s4")]
      for w, f in zip("abc", L.mma_fragments(s, ty))],
])
def test_mma_fragments_agree(shape, ty, which, layout):
    rows, cols = ptx.mma_fragment(which, shape, ty)
    nregs, e = rows.shape[1:]
    assert layout.num_threads == 32 and layout.local_size == nregs * e
    for lane in range(32):
        for r in range(nregs):
            for s in range(e):
                assert tuple(layout.index(lane, r * e + s)) == (rows[lane, r, s], cols[lane, r, s])


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_maps_agree(num, trans):
    frag = L.ldmatrix_fragment(num, trans)
    addrs = L.ldmatrix_addresses(num)
    src, off = ptx.ldmatrix_sources(num, trans, 32)
    for t in range(32):
        for j in range(num):
            for h in range(2):
                matrix, row, col = frag.index(t, 2 * j + h)
                assert matrix == j
                # the row address comes from the lane that the address layout gives for (j, row)
                # (non-trans), and the byte offset within it is 2 * col
                lane_of_row = [l for l in range(addrs.num_threads) if tuple(addrs.index(l, 0)) == (j, row)]
                assert src[t, j, h] in lane_of_row and off[t, j, h] == 2 * col


@pytest.mark.parametrize("which,layout", [("a", L.mma_m16n8k8_tf32_a()), ("b", L.mma_m16n8k8_tf32_b()),
                                          ("c", L.mma_m16n8k8_tf32_c())])
def test_tf32_fragments_agree(which, layout):
    test_mma_fragments_agree("m16n8k8", "f32" if which == "c" else "tf32", which, layout)
