"""Fragments against the PTX ISA's formulas, written out here independently of the layouts."""
import pytest

from tilus.errors import LayoutError
from tilus.ir.layout import (ldmatrix_addresses, ldmatrix_fragment, mma_fragments, mma_m16n8k8_tf32_a,
                             mma_m16n8k8_tf32_b, mma_m16n8k8_tf32_c, mma_m16n8k16_f16_a,
                             mma_m16n8k16_f16_b, mma_m16n8k16_f16_c, mma_m16n8k32_s8_a,
                             mma_m16n8k32_s8_b, mma_m16n8k32_s8_c)


def group(lane):
    return lane >> 2


def tig(lane):
    return lane % 4


# PTX ISA 9.7.14.5.8, mma.m16n8k16 .f16/.bf16
def f16_a(lane, i):
    row = group(lane) if (0 <= i < 2 or 4 <= i < 6) else group(lane) + 8
    col = tig(lane) * 2 + (i & 1) + (8 if i >= 4 else 0)
    return row, col


def f16_b(lane, i):
    return tig(lane) * 2 + (i & 1) + (8 if i >= 2 else 0), group(lane)


def c_16x8(lane, i):  # the C/D fragment of m16n8k16, m16n8k32 and m16n8k8 (f16, f32, s32)
    return group(lane) + (8 if i >= 2 else 0), tig(lane) * 2 + (i & 1)


# PTX ISA 9.7.14.5.10, mma.m16n8k32 .s8/.u8
def s8_a(lane, i):
    row = group(lane) if (0 <= i < 4 or 8 <= i < 12) else group(lane) + 8
    col = tig(lane) * 4 + (i & 3) + (16 if i >= 8 else 0)
    return row, col


def s8_b(lane, i):
    return tig(lane) * 4 + (i & 3) + (16 if i >= 4 else 0), group(lane)


# PTX ISA 9.7.14.5.7, mma.m16n8k8 .tf32
def tf32_a(lane, i):
    row = group(lane) if i in (0, 2) else group(lane) + 8
    col = tig(lane) if i in (0, 1) else tig(lane) + 4
    return row, col


def tf32_b(lane, i):
    return tig(lane) if i == 0 else tig(lane) + 4, group(lane)


CASES = [
    (mma_m16n8k16_f16_a, (16, 16), 8, f16_a), (mma_m16n8k16_f16_b, (16, 8), 4, f16_b),
    (mma_m16n8k16_f16_c, (16, 8), 4, c_16x8),
    (mma_m16n8k32_s8_a, (16, 32), 16, s8_a), (mma_m16n8k32_s8_b, (32, 8), 8, s8_b),
    (mma_m16n8k32_s8_c, (16, 8), 4, c_16x8),
    (mma_m16n8k8_tf32_a, (16, 8), 4, tf32_a), (mma_m16n8k8_tf32_b, (8, 8), 2, tf32_b),
    (mma_m16n8k8_tf32_c, (16, 8), 4, c_16x8),
]


@pytest.mark.parametrize("ctor, shape, regs, formula", CASES, ids=[c[0].__name__ for c in CASES])
def test_fragment_matches_ptx(ctor, shape, regs, formula):
    layout = ctor()
    assert layout.shape == shape and layout.num_threads == 32 and layout.local_size == regs
    for lane in range(32):
        for i in range(regs):
            assert layout.index(lane, i) == formula(lane, i), (lane, i)
            assert layout.owners(formula(lane, i)) == [(lane, i)]


def test_fragments_are_products_of_primitives():
    assert str(mma_m16n8k16_f16_c()) == "local(2,1)*spatial(8,4)*local(1,2)"
    assert str(mma_m16n8k16_f16_a()) == "column_local(2,2)*spatial(8,4)*local(1,2)"
    assert str(mma_m16n8k16_f16_b()) == "local(2,1)*column_spatial(4,8)*local(2,1)"
    a, b, c = mma_fragments("m16n8k16", "bf16")
    assert (a, b, c) == (mma_m16n8k16_f16_a(), mma_m16n8k16_f16_b(), mma_m16n8k16_f16_c())
    with pytest.raises(LayoutError, match="m16n8k4"):
        mma_fragments("m16n8k4", "f16")


@pytest.mark.parametrize("num", [1, 2, 4])
def test_ldmatrix_addresses(num):
    layout = ldmatrix_addresses(num)
    assert layout.shape == (num, 8) and layout.num_threads == 8 * num
    for lane in range(8 * num):
        assert layout.index(lane, 0) == (lane // 8, lane % 8)   # row lane % 8 of matrix lane // 8


@pytest.mark.parametrize("num", [1, 2, 4])
@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_fragment(num, trans):
    layout = ldmatrix_fragment(num, trans)
    assert layout.shape == (num, 8, 8) and layout.num_threads == 32 and layout.local_size == 2 * num
    for t in range(32):
        for m in range(num):
            for j in range(2):
                r, c = t // 4, 2 * (t % 4) + j
                assert layout.index(t, 2 * m + j) == ((m, c, r) if trans else (m, r, c))


def test_ldmatrix_x4_loads_the_a_fragment():
    # matrices 0..3 of x4 are A's (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (0-7, 8-15), (8-15, 8-15)
    tiles = ldmatrix_fragment(4).reshape([2, 2, 8, 8])            # (col half, row half, r, c)
    assert tiles.permute([1, 2, 0, 3]).reshape([16, 16]) == mma_m16n8k16_f16_a()
    # .trans of two 8x8 matrices of B (16x8, stored row-major: rows are k) gives the B fragment
    b_tiles = ldmatrix_fragment(2, trans=True).reshape([2, 8, 8])  # (k half, k, n) as stored
    assert b_tiles.reshape([16, 8]) == mma_m16n8k16_f16_b()


def test_ldmatrix_bad_count():
    with pytest.raises(LayoutError, match="1, 2 or 4"):
        ldmatrix_fragment(3)
