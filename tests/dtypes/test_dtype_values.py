"""Value tables and limits of every type, against ml_dtypes / numpy and closed-form formulas."""
import math

import ml_dtypes
import numpy as np
import pytest

from tilus import dtypes
from tests.dtypes.oracles import ML_DTYPES, formula_table, int_value, ml_dtypes_table

LOWBIT_FLOATS = [t for t in dtypes.all_types() if t.is_float and t.nbits <= 8 and not t.unsigned]  # e8m0: test_e8m0.py
FINITE_FLOATS = [t for t in LOWBIT_FLOATS if t.finite_only]
LOWBIT_INTS = [t for t in dtypes.all_types() if t.is_integer and t.nbits <= 8]


def assert_same_values(got: np.ndarray, want: np.ndarray) -> None:
    """Equal as numbers, NaN where NaN, and the same sign on zeros."""
    with np.errstate(invalid="ignore"):          # signalling NaNs widened to float64
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(got[ok], want[ok])
    np.testing.assert_array_equal(np.signbit(got[ok]), np.signbit(want[ok]))


def test_every_lowbit_float_is_covered():
    assert {t.name for t in LOWBIT_FLOATS} == {t.name for t in FINITE_FLOATS} | {"float8_e4m3", "float8_e5m2"}
    assert len(FINITE_FLOATS) == sum(k - 1 for k in range(3, 9)) - 2


@pytest.mark.parametrize("name", sorted(ML_DTYPES))
def test_table_matches_ml_dtypes(name):
    t = dtypes.get(name)
    assert_same_values(t.value_table(), ml_dtypes_table(name))
    assert_same_values(t.decode(np.arange(1 << t.nbits, dtype=np.uint8)), ml_dtypes_table(name))


@pytest.mark.parametrize("t", FINITE_FLOATS, ids=str)
def test_table_matches_formula(t):
    want = formula_table(t.nbits, t.exponent_bits, t.mantissa_bits)
    assert_same_values(t.value_table(), want)
    assert t.decode(np.arange(1 << t.nbits)).dtype == np.float32


@pytest.mark.parametrize("t", LOWBIT_INTS, ids=str)
def test_integer_tables(t):
    want = [int_value(c, t.nbits, t.kind == "int") for c in range(1 << t.nbits)]
    np.testing.assert_array_equal(t.value_table(), want)
    assert t.min_value == min(want) and t.max_value == max(want)
    assert isinstance(t.max_value, int)


def test_a_few_tables_by_hand():
    np.testing.assert_array_equal(dtypes.uint3.value_table(), [0, 1, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(dtypes.int3.value_table(), [0, 1, 2, 3, -4, -3, -2, -1])
    np.testing.assert_array_equal(dtypes.int1.value_table(), [0, -1])
    assert_same_values(dtypes.float3_e1m1.value_table(), [0, 1, 2, 3, -0.0, -1, -2, -3])
    assert_same_values(dtypes.float3_e2m0.value_table(), [0, 1, 2, 4, -0.0, -1, -2, -4])
    assert_same_values(dtypes.float4_e3m0.value_table()[:8], [0, 0.25, 0.5, 1, 2, 4, 8, 16])
    np.testing.assert_array_equal(dtypes.bool.value_table(), [0, 1])


@pytest.mark.parametrize("t", LOWBIT_FLOATS, ids=str)
def test_float_limits_from_the_table(t):
    if t.name in ML_DTYPES:
        table = ml_dtypes_table(t.name).astype(np.float64)
    else:
        table = formula_table(t.nbits, t.exponent_bits, t.mantissa_bits)
    finite = table[np.isfinite(table)]
    assert t.max_value == finite.max() and t.min_value == finite.min()
    assert isinstance(t.max_value, float)
    assert t.eps == finite[finite > 1.0].min() - 1.0
    positive = finite[finite > 0]
    if t.mantissa_bits == 0:
        assert t.smallest_subnormal is None
        assert t.smallest_normal == positive.min()
    else:
        assert t.smallest_subnormal == positive.min()
        assert t.smallest_normal == positive[positive >= t.smallest_normal].min()
        assert t.smallest_normal == 2.0 ** (1 - (2 ** (t.exponent_bits - 1) - 1))


def test_e1_types_eps_is_subnormal_spacing():
    assert dtypes.float3_e1m1.eps == 1.0
    assert dtypes.float8_e1m6.eps == 2.0 ** -5


@pytest.mark.parametrize("name,finfo", [
    ("float16", np.finfo(np.float16)), ("float32", np.finfo(np.float32)),
    ("float64", np.finfo(np.float64)), ("bfloat16", ml_dtypes.finfo(ml_dtypes.bfloat16)),
    ("float8_e4m3", ml_dtypes.finfo(ml_dtypes.float8_e4m3fn)),
    ("float8_e5m2", ml_dtypes.finfo(ml_dtypes.float8_e5m2)),
    ("float6_e2m3", ml_dtypes.finfo(ml_dtypes.float6_e2m3fn)),
    ("float4_e2m1", ml_dtypes.finfo(ml_dtypes.float4_e2m1fn)),
])
def test_float_limits_match_finfo(name, finfo):
    t = dtypes.get(name)
    assert t.max_value == float(finfo.max) and t.min_value == float(finfo.min)
    assert t.eps == float(finfo.eps)
    assert t.smallest_normal == float(finfo.smallest_normal)
    assert t.smallest_subnormal == float(finfo.smallest_subnormal)


@pytest.mark.parametrize("name", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_integer_limits_match_iinfo(name):
    info = np.iinfo(np.dtype(name))
    t = dtypes.get(name)
    assert (t.min_value, t.max_value) == (int(info.min), int(info.max))


def test_special_values():
    assert dtypes.float8_e4m3.has_nan and not dtypes.float8_e4m3.has_inf
    assert dtypes.float8_e5m2.has_nan and dtypes.float8_e5m2.has_inf
    assert not dtypes.float6_e3m2.has_nan and not dtypes.float6_e3m2.has_inf
    assert not dtypes.int4.has_nan
    assert dtypes.uint3.code_dtype == np.uint8 and dtypes.bfloat16.code_dtype == np.uint16
    assert dtypes.float32.code_dtype == np.uint32 and dtypes.int64.code_dtype == np.uint64


def test_sixteen_bit_floats_decode_like_numpy_and_ml_dtypes():
    codes = np.arange(1 << 16, dtype=np.uint16)
    assert_same_values(dtypes.float16.decode(codes), codes.view(np.float16).astype(np.float32))
    assert_same_values(dtypes.bfloat16.decode(codes), codes.view(ml_dtypes.bfloat16).astype(np.float32))
    assert dtypes.float16.decode(codes).dtype == np.float32
    assert_same_values(dtypes.float16.value_table(), codes.view(np.float16).astype(np.float32))


def test_wide_decode():
    bits = np.array([0x3F800000, 0xC0490FDB, 0x7F800000, 0x00000001], np.uint32)
    assert_same_values(dtypes.float32.decode(bits), bits.view(np.float32))
    assert dtypes.float32.decode(bits).dtype == np.float32
    b64 = np.array([1.5, -2.25, 5e-324]).view(np.uint64)
    assert_same_values(dtypes.float64.decode(b64), [1.5, -2.25, 5e-324])
    assert dtypes.float64.decode(b64).dtype == np.float64
    assert dtypes.int32.decode(np.array([0xFFFFFFFF, 5], np.uint32)).tolist() == [-1.0, 5.0]
    assert dtypes.int32.decode([0xFFFFFFFF]).dtype == np.float64
    assert dtypes.uint64.decode(np.array([2**64 - 1], np.uint64))[0] == 2.0 ** 64
    assert dtypes.int64.decode(np.array([2**63], np.uint64))[0] == -(2.0 ** 63)
    assert dtypes.int16.decode([0x8000, 0x7FFF]).tolist() == [-32768.0, 32767.0]
    assert dtypes.int16.decode([1]).dtype == np.float32


def test_format_value_table():
    text = dtypes.format_value_table("uint3")
    assert text.splitlines()[0].startswith("uint3: 8 codes")
    assert "111: 7" in text and "000: 0" in text
    text = dtypes.float4_e2m1.format_value_table(columns=4)
    assert "0111: 6" in text and "1000: -0" in text and len(text.splitlines()) == 5
    assert "nan" in dtypes.float8_e4m3.format_value_table()
    assert math.isclose(dtypes.float6_e3m2.value_table()[0b011111], 28.0)
