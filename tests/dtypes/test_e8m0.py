"""float8_e8m0, the OCP MX v1.0 scale type (unsigned, exponent only, bias 127, 0xFF NaN): values,
limits, rounding, against a closed form written from the spec and ml_dtypes' float8_e8m0fnu."""
import math

import ml_dtypes
import numpy as np
import pytest

from tilus import dtypes
from tilus.errors import DataTypeError

E8M0 = dtypes.float8_e8m0


def spec_value(code: int) -> float:
    """OCP MX v1.0, section 5.4.1: E8M0 code e is 2^(e-127); 0xFF is NaN."""
    return math.nan if code == 0xFF else math.ldexp(1.0, code - 127)


def nearest_power_code(x: float) -> int:
    """Brute force: the code of the power of two 2^-127..2^127 nearest to x > 0, ties to even."""
    best = min(range(255), key=lambda c: (abs(x - spec_value(c)), c % 2))
    return best


def test_values_match_the_spec_and_ml_dtypes():
    codes = np.arange(256, dtype=np.uint8)
    got = E8M0.decode(codes).astype(np.float64)
    want = np.array([spec_value(c) for c in range(256)])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[:255], want[:255])
    ml = codes.view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
    np.testing.assert_array_equal(got[:255], ml[:255])
    assert np.isnan(ml[255])


def test_limits_and_properties():
    fi = ml_dtypes.finfo(ml_dtypes.float8_e8m0fnu)
    assert E8M0.max_value == float(fi.max) == 2.0 ** 127
    assert E8M0.min_value == E8M0.smallest_normal == float(fi.tiny) == 2.0 ** -127
    assert E8M0.smallest_subnormal is None and E8M0.eps == 1.0
    assert E8M0.exponent_bias == 127 and E8M0.unsigned and not E8M0.is_signed
    assert E8M0.has_nan and not E8M0.has_inf
    assert E8M0 not in dtypes.lowbit_types() and E8M0 in dtypes.scale_types()
    assert dtypes.get("float8_e8m0fnu") is E8M0


def test_every_code_round_trips():
    codes = np.arange(255, dtype=np.uint8)
    np.testing.assert_array_equal(E8M0.encode(E8M0.decode(codes)), codes)
    assert int(E8M0.encode(np.nan)) == 0xFF


def test_encode_is_nearest_power_ties_to_even():
    rng = np.random.default_rng(0)
    x = np.ldexp(rng.uniform(1, 2, 300), rng.integers(-127, 127, 300))
    x = np.concatenate([x, np.ldexp(1.5, np.arange(-127, 127)), [3.0, 6.0, 0.75]])
    want = [nearest_power_code(float(v)) for v in x]
    np.testing.assert_array_equal(E8M0.encode(x), want)


def test_encode_agrees_with_ml_dtypes_on_float32_normals_off_ties():
    """ml_dtypes rounds the ties 1.5 * 2^e up (3.0 -> 4.0); Tilus to the even code (3.0 -> 2.0)."""
    rng = np.random.default_rng(1)
    x = np.ldexp(rng.uniform(1, 2, 500), rng.integers(-126, 127, 500)).astype(np.float32)
    x = np.concatenate([x, np.float32([1.25, 1.75, 0.7, 2.0 ** -126, 2.0 ** 127])])
    want = x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    np.testing.assert_array_equal(E8M0.encode(x), want)
    np.testing.assert_array_equal(E8M0.encode(np.float32([1.5, 3.0])), [128, 128])


def test_saturation_and_special_values():
    got = E8M0.encode([0.0, -0.0, -3.0, 2.0 ** -140, np.inf, -np.inf, 2.0 ** 127 * 1.6, np.nan])
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 0xFE, 0, 0xFE, 0xFF])
    with pytest.raises(DataTypeError):
        E8M0.decode([256])
