"""Property tests: a tile copied between two global tensors at random offsets, for random types
(byte-sized and sub-byte), equals the same copy done on numpy code arrays."""
import numpy as np
from hypothesis import given, settings, strategies as st

import tilus
from tilus import dtypes
from tilus.ir.builder import ProgramBuilder

from tests.interpreter.oracles import pack_bits, unpack_bits

TYPES = [dtypes.uint1, dtypes.int2, dtypes.uint3, dtypes.int4, dtypes.float5_e2m2,
         dtypes.float6_e3m2, dtypes.uint7, dtypes.int8, dtypes.float16, dtypes.int32]


def copy_program(dtype, tile):
    b = ProgramBuilder("window_copy")
    m, n, r, c, r2, c2 = (b.param(x, dtypes.int32) for x in ("m", "n", "r", "c", "r2", "c2"))
    src, dst = b.param("src", ~dtypes.uint8), b.param("dst", ~dtypes.uint8)
    gs = b.global_view(src, dtype, [m, n])
    gd = b.global_view(dst, dtype, [m, n])
    b.store_global(gd, b.load_global(gs, [r, c], tile), [r2, c2])
    return b.finish()


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(TYPES), m=st.integers(1, 7), n=st.integers(1, 9),
       tm=st.integers(1, 4), tn=st.integers(1, 5),
       r=st.integers(-5, 8), c=st.integers(-6, 10), r2=st.integers(-5, 8), c2=st.integers(-6, 10),
       seed=st.integers(0, 2**16))
def test_window_copy_matches_numpy(dtype, m, n, tm, tn, r, c, r2, c2, seed):
    k = dtype.nbits
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << k, size=(m, n))
    if dtype is dtypes.float16:                 # keep NaN payloads out (registers hold values)
        codes[(codes & 0x7C00) == 0x7C00] = 0x3C00
    dst_codes = rng.integers(0, 1 << k, size=(m, n))
    if dtype is dtypes.float16:
        dst_codes[(dst_codes & 0x7C00) == 0x7C00] = 0x3C00
    src = pack_bits(codes, k)
    dst = np.concatenate([pack_bits(dst_codes, k), np.full(3, 0x5A, np.uint8)])
    tilus.interpret(copy_program(dtype, (tm, tn)), m, n, r, c, r2, c2, src, dst)
    want = dst_codes.copy()
    for i in range(tm):
        for j in range(tn):
            si, sj, di, dj = r + i, c + j, r2 + i, c2 + j
            if 0 <= di < m and 0 <= dj < n:
                want[di, dj] = codes[si, sj] if 0 <= si < m and 0 <= sj < n else 0
    np.testing.assert_array_equal(unpack_bits(dst, k, m * n).reshape(m, n), want)
    assert (dst[-3:] == 0x5A).all()
