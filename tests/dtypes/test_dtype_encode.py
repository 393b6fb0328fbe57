"""encode: round trips, agreement with ml_dtypes / numpy, ties to even, saturation, integers, -0."""
import math

import ml_dtypes
import numpy as np
import pytest
import torch

from tilus import dtypes
from tests.dtypes.oracles import (
    ML_DTYPES, formula_table, int_value, ml_dtypes_table, nearest_code,
)

LOWBIT = [t for t in dtypes.all_types() if t.nbits <= 8]
LOWBIT_FLOATS = [t for t in LOWBIT if t.is_float and not t.unsigned]   # e8m0: test_e8m0.py


def oracle_table(t) -> np.ndarray:
    if t.name in ML_DTYPES:
        return ml_dtypes_table(t.name).astype(np.float64)
    return formula_table(t.nbits, t.exponent_bits, t.mantissa_bits)


@pytest.mark.parametrize("t", LOWBIT, ids=str)
def test_every_code_round_trips(t):
    n = 2 if t.is_bool else 1 << t.nbits
    codes = np.arange(n, dtype=np.uint8)
    values = t.decode(codes)
    keep = ~np.isnan(values)
    assert keep.sum() >= n - 6                      # only e4m3 (2) and e5m2 (6) have NaN codes
    back = t.encode(values[keep])
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, codes[keep])


def sample_values(t, rng, n=400) -> np.ndarray:
    """Random float32 values within +-max: uniform, log-uniform down to below the subnormals, the
    exact midpoints between neighbouring values, and a hair either side of them."""
    table = oracle_table(t)
    mags = np.unique(np.abs(table[np.isfinite(table)]))
    mids = (mags[:-1] + mags[1:]) / 2
    top = mags[-1]
    uniform = rng.uniform(-top, top, n)
    lo = math.log2(mags[1]) - 3
    logu = np.exp2(rng.uniform(lo, math.log2(top), n)) * rng.choice([-1, 1], n)
    hair = np.concatenate([mids * (1 + 2.0 ** -20), mids * (1 - 2.0 ** -20)])
    vals = np.concatenate([uniform, logu, mids, -mids, hair, -hair, [0.0, -0.0, top, -top]])
    return vals.astype(np.float32)


@pytest.mark.parametrize("name", sorted(ML_DTYPES))
def test_encode_agrees_with_ml_dtypes_in_range(name):
    t = dtypes.get(name)
    x = sample_values(t, np.random.default_rng(1))
    want = x.astype(ML_DTYPES[name]).view(np.uint8)
    if t.nbits < 8:
        want = want & ((1 << t.nbits) - 1)
    np.testing.assert_array_equal(t.encode(x), want)


@pytest.mark.parametrize("t", [t for t in LOWBIT_FLOATS if t.name not in ML_DTYPES], ids=str)
def test_encode_agrees_with_brute_force_nearest(t):
    table = oracle_table(t)
    x = sample_values(t, np.random.default_rng(2), n=60)
    x = np.concatenate([x, np.float32([1e9, -1e9, np.inf, -np.inf, 1e-30, -1e-30])])
    want = [nearest_code(float(v), table, t.nbits) for v in x]
    np.testing.assert_array_equal(t.encode(x), want)


def test_ties_to_even_by_hand():
    f4 = dtypes.float4_e2m1                         # 0 .5 1 1.5 2 3 4 6 at codes 0..7
    assert f4.encode([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]).tolist() == [0, 2, 2, 4, 4, 6, 6]
    assert f4.encode([-0.75, -5.0]).tolist() == [0b1010, 0b1110]
    f3 = dtypes.float3_e2m0                         # 0 1 2 4: ties go to the even code
    assert f3.encode([0.5, 1.5, 3.0]).tolist() == [0, 2, 2]
    e4m3 = dtypes.float8_e4m3                       # 1.0 = 0x38, 1.125 = 0x39, 1.25 = 0x3a
    assert e4m3.encode([1 + 1 / 16, 1 + 3 / 16]).tolist() == [0x38, 0x3A]
    assert e4m3.encode([2.0 ** -10]).tolist() == [0]       # half the smallest subnormal 2^-9
    assert e4m3.encode([3 * 2.0 ** -10]).tolist() == [2]   # 1.5 subnormal steps -> 2 (even)
    f6 = dtypes.float6_e3m2                         # 16 20 24 28 at codes 0x1c..0x1f
    assert f6.encode([26.0, 22.0, 18.0]).tolist() == [0x1E, 0x1E, 0x1C]


def test_saturation():
    f6 = dtypes.float6_e3m2
    assert f6.encode([1e6, -1e6, np.inf, -np.inf, 30.0]).tolist() == [0x1F, 0x3F, 0x1F, 0x3F, 0x1F]
    e4m3 = dtypes.float8_e4m3                       # ml_dtypes would give NaN for these
    assert e4m3.encode([449.0, 464.0, 1e9, np.inf, -np.inf]).tolist() == [0x7E, 0x7E, 0x7E, 0x7E, 0xFE]
    e5m2 = dtypes.float8_e5m2                       # ml_dtypes would give inf for the finite ones
    assert e5m2.encode([61440.0, 1e9, -1e9]).tolist() == [0x7B, 0x7B, 0xFB]
    assert e5m2.encode([np.inf, -np.inf]).tolist() == [0x7C, 0xFC]
    assert dtypes.float16.encode([1e6, -1e6, np.inf]).tolist() == [0x7BFF, 0xFBFF, 0x7C00]
    assert dtypes.bfloat16.decode(dtypes.bfloat16.encode([1e300]))[0] == dtypes.bfloat16.max_value
    assert dtypes.float32.encode([1e300]).view(np.float32)[0] == np.finfo(np.float32).max


def test_nan_codes_of_the_ocp_types():
    assert dtypes.float8_e4m3.encode([np.nan, -np.nan]).tolist() == [0x7F, 0xFF]
    assert dtypes.float8_e5m2.encode([np.nan, -np.nan]).tolist() == [0x7E, 0xFE]
    assert np.isnan(dtypes.float8_e5m2.decode([0x7E, 0x7D, 0xFF])).all()
    assert np.isnan(dtypes.float16.decode(dtypes.float16.encode([np.nan])))[0]


@pytest.mark.parametrize("t", LOWBIT_FLOATS + [dtypes.float16, dtypes.bfloat16, dtypes.float32], ids=str)
def test_negative_zero_keeps_its_sign(t):
    sign = 1 << (t.nbits - 1)
    assert t.encode(-0.0) == sign and t.encode(0.0) == 0
    tiny = t.smallest_subnormal or t.smallest_normal
    assert t.encode(-tiny / 4) == sign                  # rounds to zero, stays negative
    back = t.decode(np.array([sign]))[0]
    assert back == 0 and np.signbit(back)


def test_integers_round_half_even_clamp_and_twos_complement():
    for t in [t for t in LOWBIT if t.is_integer] + [dtypes.int16, dtypes.uint16]:
        k, signed = t.nbits, t.kind == "int"
        xs = [-300.5, -9.5, -8.5, -4.5, -3.5, -2.5, -1.5, -1.0, -0.5, -0.4, 0.0, 0.5, 0.6, 1.5, 2.5,
              3.5, 6.5, 7.5, 100.2, 1e30, -1e30, np.inf, -np.inf]
        lo, hi = (-(1 << (k - 1)), (1 << (k - 1)) - 1) if signed else (0, (1 << k) - 1)
        want = []
        for x in xs:
            v = x if math.isinf(x) else round(x)        # Python's round: half to even
            v = min(max(v, lo), hi)
            want.append(int(v) & ((1 << k) - 1))
        assert t.encode(xs).tolist() == want, t
        assert [int_value(c, k, signed) for c in want] == t.decode(np.array(want)).tolist()
    assert dtypes.int3.encode([-1, -4, 3, 5]).tolist() == [0b111, 0b100, 0b011, 0b011]
    assert dtypes.int1.encode([-1, 0, 1, -7]).tolist() == [1, 0, 0, 1]
    assert dtypes.uint3.encode([-5, 2.5, 3.5, 7.5]).tolist() == [0, 2, 4, 7]


def test_wide_integers():
    assert dtypes.int64.encode([2.0 ** 70, -2.0 ** 70]).tolist() == [2**63 - 1, 2**63]
    assert dtypes.uint64.encode([2.0 ** 70, -1.0, 2.5]).tolist() == [2**64 - 1, 0, 2]
    big = np.array([2**62 + 1, -(2**62) - 1], np.int64)    # exact: integer input skips floats
    assert dtypes.int64.encode(big).tolist() == [2**62 + 1, 2**64 - 2**62 - 1]
    assert dtypes.int32.encode(np.array([2**40, -1], np.int64)).tolist() == [2**31 - 1, 2**32 - 1]
    assert dtypes.uint8.encode(np.array([300, -2], np.int16)).tolist() == [255, 0]
    assert dtypes.int32.encode([1]).dtype == np.uint32


def test_sixteen_bit_floats_are_raw_bits():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 100, 2000), rng.normal(0, 1e-5, 500)]).astype(np.float32)
    np.testing.assert_array_equal(dtypes.float16.encode(x), x.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(dtypes.bfloat16.encode(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))
    np.testing.assert_array_equal(dtypes.float32.encode(x), x.view(np.uint32))
    assert dtypes.float16.encode(x).dtype == np.uint16
    x64 = rng.normal(0, 1, 100)
    np.testing.assert_array_equal(dtypes.float64.encode(x64), x64.view(np.uint64))
    np.testing.assert_array_equal(dtypes.float32.encode(x64), x64.astype(np.float32).view(np.uint32))


def test_bfloat16_rounds_float64_once():
    # 1 + 2^-8 + 2^-30 is just above the midpoint of 1 and 1 + 2^-7: rounds up. Going through
    # float32 first would land on the midpoint and round to even (down).
    assert dtypes.bfloat16.encode(np.float64(1 + 2.0 ** -8 + 2.0 ** -30)) == 0x3F81
    assert dtypes.bfloat16.encode(np.float64(1 + 2.0 ** -8)) == 0x3F80
    assert dtypes.bfloat16.encode(np.float64(-(1 + 2.0 ** -8 + 2.0 ** -30))) == 0xBF81
    assert dtypes.float8_e4m3.encode(np.float64(1 + 2.0 ** -4 + 2.0 ** -40)) == 0x39


def test_shapes_scalars_lists_and_torch():
    t = dtypes.float4_e2m1
    x = np.array([[0.5, -1.0, 3.0], [6.0, 0.0, -6.0]])
    c = t.encode(x)
    assert c.shape == (2, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(t.decode(c), x)
    assert t.encode(1.5).shape == () and int(t.encode(1.5)) == 3
    assert t.encode([[1.0], [2.0]]).shape == (2, 1)
    assert t.encode([]).shape == (0,)
    assert t.decode([]).shape == (0,)
    tc = t.encode(torch.tensor([[0.5, 6.0]]))
    assert isinstance(tc, torch.Tensor) and tc.dtype == torch.uint8 and tc.tolist() == [[1, 7]]
    tv = t.decode(tc)
    assert isinstance(tv, torch.Tensor) and tv.dtype == torch.float32 and tv.tolist() == [[0.5, 6.0]]
    assert dtypes.float8_e4m3.encode(torch.tensor([1.0], dtype=torch.bfloat16)).tolist() == [0x38]
    assert dtypes.uint3.encode(np.array([True, False])).tolist() == [1, 0]
    assert dtypes.float4_e2m1.encode(np.array([1.0], ml_dtypes.bfloat16)).tolist() == [2]


def test_bool():
    assert dtypes.bool.encode([0.0, -0.0, 1.0, -3.0, 0.1]).tolist() == [0, 0, 1, 1, 1]
    assert dtypes.bool.decode([0, 1]).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("t", LOWBIT_FLOATS, ids=str)
def test_any_float_bits(t):
    """Random float32 bit patterns (tiny, huge, subnormal) and random float64 values: the float32 and
    float64 paths agree, ml_dtypes agrees in range, and a brute-force search agrees on a sample."""
    rng = np.random.default_rng(t.nbits * 100 + t.exponent_bits)
    x = rng.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = x[~np.isnan(x)]
    codes = t.encode(x)
    np.testing.assert_array_equal(codes, t.encode(x.astype(np.float64)))
    if t.name in ML_DTYPES:
        ok = np.abs(x) <= t.max_value
        want = x[ok].astype(ML_DTYPES[t.name]).view(np.uint8) & ((1 << t.nbits) - 1)
        np.testing.assert_array_equal(codes[ok], want)
    table = oracle_table(t)
    x64 = rng.normal(0, 1, 100) * np.exp2(rng.uniform(-12, 12, 100)) * t.max_value / 8
    sample = np.concatenate([x[:100].astype(np.float64), x64])
    want = [nearest_code(float(v), table, t.nbits) for v in sample]
    np.testing.assert_array_equal(t.encode(sample), want)
