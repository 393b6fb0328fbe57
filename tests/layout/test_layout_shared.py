import numpy as np
import pytest

from tilus import dtypes
from tilus.errors import LayoutError
from tilus.ir.expr import Var, evaluate
from tilus.ir.layout import (bank_conflicts, column_major, parse_layout, row_major, strided,
                             swizzle, swizzle_128b, wavefronts)

ROWS, COLS = 64, 64                       # a 64x64 fp16 tile: one row is 128 bytes
PLAIN = row_major(ROWS, COLS)
SWIZZLED = swizzle_128b(PLAIN, dtypes.float16)


def test_strided_offsets_and_sizes():
    assert PLAIN.offset((3, 5)) == 3 * 64 + 5 and PLAIN.size == 4096
    assert PLAIN.nbytes(dtypes.float16) == 8192 and PLAIN.nbytes(dtypes.uint4) == 2048
    padded = row_major(64, 64, pad=8)
    assert padded.offset((1, 0)) == 72 and padded.size == 63 * 72 + 64
    assert column_major(4, 8).offset((1, 2)) == 9
    assert row_major(1, 64, pad=8) == row_major(1, 64)      # a size-1 dim's stride is unused


def test_swizzle_is_cute_swizzle_3_4_3_on_bytes():
    assert SWIZZLED == swizzle(PLAIN, 3, 3, 3)
    for r in range(ROWS):
        for c in range(COLS):
            byte = (r * COLS + c) * 2
            cute = byte ^ ((byte & (0b111 << 7)) >> 3)          # Swizzle<3,4,3> on byte offsets
            assert SWIZZLED.offset((r, c)) * 2 == cute
    offsets = {SWIZZLED.offset((r, c)) for r in range(ROWS) for c in range(COLS)}
    assert offsets == set(range(ROWS * COLS)) and SWIZZLED.size == 4096


def test_offsets_work_on_numpy_and_expressions():
    r, c = Var("r", dtypes.int32), Var("c", dtypes.int32)
    expr = SWIZZLED.offset((r, c))
    rows, cols = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
    table = SWIZZLED.offset((rows, cols))
    assert np.array_equal(evaluate(expr, {r: rows, c: cols}), table)
    assert evaluate(expr, {r: 5, c: 17}) == SWIZZLED.offset((5, 17))


def ldmatrix_x4_addresses(layout):
    """Byte addresses of ldmatrix.x4 loading the A fragment at (0, 0): lane l gives row l % 8 of
    matrix l // 8, matrices at (0, 0), (8, 0), (0, 8), (8, 8); each phase is one matrix's 8 rows."""
    return [layout.offset(((l // 8) % 2 * 8 + l % 8, (l // 16) * 8)) * 2 for l in range(32)]


def test_ldmatrix_bank_conflicts():
    # Unswizzled: the 8 rows of a matrix are 128 bytes apart, so all 8 16-byte reads of a phase
    # fall on the same 4 banks: 8 wavefronts instead of 1 per phase, 4 phases -> 4 * 7 = 28 extra.
    assert bank_conflicts(ldmatrix_x4_addresses(PLAIN), 16) == 28
    assert wavefronts(ldmatrix_x4_addresses(PLAIN), 16) == (32, 4)
    # Swizzled: row r's chunk c moves to c ^ (r % 8), 8 distinct chunks = all 32 banks.
    assert bank_conflicts(ldmatrix_x4_addresses(SWIZZLED), 16) == 0
    # Padding each row by 16 bytes also spreads the rows over the banks.
    assert bank_conflicts(ldmatrix_x4_addresses(row_major(ROWS, COLS, pad=8)), 16) == 0


def test_cp_async_bank_conflicts():
    # A warp writes 16 bytes per lane. Row-wise (lane l: row l // 8, chunk l % 8) a phase is
    # one whole 128-byte row: conflict-free with or without the swizzle.
    rows = [(l // 8, (l % 8) * 8) for l in range(32)]
    for layout in (PLAIN, SWIZZLED):
        assert bank_conflicts([layout.offset(i) * 2 for i in rows], 16) == 0
    # Column-wise (lane l: row l, chunk 0, a tile 8 elements wide): a phase is 8 rows of one
    # chunk: unswizzled 8 wavefronts per phase, 4 phases -> 28 extra; swizzled 0.
    cols = [(l, 0) for l in range(32)]
    assert bank_conflicts([PLAIN.offset(i) * 2 for i in cols], 16) == 28
    assert bank_conflicts([SWIZZLED.offset(i) * 2 for i in cols], 16) == 0


def test_bank_model_for_words():
    # 32 lanes read one column of a 32x32 fp32 tile: every address in bank 0 -> 32 wavefronts.
    column = [row_major(32, 32).offset((l, 0)) * 4 for l in range(32)]
    assert bank_conflicts(column, 4) == 31
    assert bank_conflicts([row_major(32, 32, pad=1).offset((l, 0)) * 4 for l in range(32)], 4) == 0
    assert bank_conflicts([0] * 32, 4) == 0                 # one word: broadcast
    assert bank_conflicts([0, 128, None] + [None] * 29, 4) == 1
    with pytest.raises(LayoutError, match="aligned"):
        bank_conflicts([2], 4)


def test_text_round_trip():
    for layout in (PLAIN, SWIZZLED, row_major(64, 64, pad=8), column_major(16, 8, pad=2),
                   strided([4, 4], [5, 2]), row_major(8)):
        assert parse_layout(str(layout)) == layout and hash(parse_layout(str(layout))) == hash(layout)
    assert str(SWIZZLED) == "swizzle(row_major(64,64),3,3,3)"


def test_bad_swizzle():
    with pytest.raises(LayoutError, match="shift >= bits"):
        swizzle(PLAIN, 3, 3, 2)
