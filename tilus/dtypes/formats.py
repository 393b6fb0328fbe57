"""The value set of each data type: which numbers its codes stand for, and its limits.

Floats come in three flavours:

* ``finite``: every ``floatK_eXmY`` with 3 <= K <= 8 (other than the OCP 8-bit ones). Every code is a
  finite number; the all-ones exponent holds normals.
* ``fn``: ``float8_e4m3`` (OCP / ``ml_dtypes.float8_e4m3fn``): no inf, one NaN per sign (all-ones
  exponent and mantissa); every other code is finite.
* ``ieee``: ``float8_e5m2``, ``float16``, ``bfloat16``, ``float32``, ``float64``: the all-ones exponent
  holds inf (mantissa 0) and NaN (mantissa != 0).
* ``exponent``: ``float8_e8m0`` (OCP MX v1.0 scale, ``ml_dtypes.float8_e8m0fnu``): no sign, no
  mantissa, no zero, no subnormals: code ``e`` is ``2^(e - 127)`` (``2^-127 .. 2^127``), and the
  all-ones code 0xFF is NaN.

A float code is ``sign << (K-1) | e << Y | m``; its value is ``(-1)^s * 2^(e-bias) * (1 + m/2^Y)`` for
``e > 0`` and ``(-1)^s * 2^(1-bias) * m/2^Y`` (a subnormal, or zero) for ``e == 0``, with
``bias = 2^(X-1) - 1``.
"""
from __future__ import annotations

import math

import numpy as np

from tilus.dtypes.types import BOOL, FLOAT, INT, UINT, DataType, get
from tilus.errors import DataTypeError

FINITE = "finite"
FN = "fn"
IEEE = "ieee"
EXPONENT = "exponent"


def float_flavour(dtype: DataType) -> str:
    """``finite``, ``fn`` or ``ieee`` (see the module docstring)."""
    dtype = _float(dtype, "a float flavour")
    if dtype.unsigned:
        return EXPONENT
    if dtype.finite_only:
        return FINITE
    return FN if dtype.name == "float8_e4m3" else IEEE


def _float(dtype, what: str) -> DataType:
    dtype = get(dtype)
    if not dtype.is_float:
        raise DataTypeError(f"{dtype.name} is not a float type, so it has no {what}")
    return dtype


def _fields_value(dtype: DataType, e: int, m: int) -> float:
    """The magnitude of the code with exponent field ``e`` and mantissa field ``m`` (exact)."""
    y, bias = dtype.mantissa_bits, dtype.exponent_bias
    if e == 0:
        return math.ldexp(m, 1 - bias - y)
    return math.ldexp((1 << y) + m, e - bias - y)


def _largest_fields(dtype: DataType) -> tuple[int, int]:
    e_all, m_all = (1 << dtype.exponent_bits) - 1, (1 << dtype.mantissa_bits) - 1
    flavour = float_flavour(dtype)
    if flavour == FINITE:
        return e_all, m_all
    if flavour == FN:
        return e_all, m_all - 1
    return e_all - 1, m_all          # ieee; exponent (m_all = 0): 0xFE, the code below NaN


def max_value(dtype: "DataType | str") -> "int | float":
    """The largest finite value (a Python ``int`` for integer types and bool, ``float`` for floats)."""
    dtype = get(dtype)
    if dtype.kind == BOOL:
        return 1
    if dtype.kind == UINT:
        return (1 << dtype.nbits) - 1
    if dtype.kind == INT:
        return (1 << (dtype.nbits - 1)) - 1
    return _fields_value(dtype, *_largest_fields(dtype))


def min_value(dtype: "DataType | str") -> "int | float":
    """The smallest (most negative) finite value: ``-max_value`` for floats, ``-2^(K-1)`` for intK,
    ``2^-127`` for the unsigned ``float8_e8m0``."""
    dtype = get(dtype)
    if dtype.kind in (BOOL, UINT):
        return 0
    if dtype.kind == INT:
        return -(1 << (dtype.nbits - 1))
    if dtype.unsigned:
        return math.ldexp(1.0, -dtype.exponent_bias)      # float8_e8m0: code 0, 2^-127
    return -max_value(dtype)


def eps(dtype: "DataType | str") -> float:
    """The gap between 1.0 and the next larger value of the type.

    1.0 and a larger finite value exist in every Tilus float (the largest value is at least 2).
    Usually ``eps = 2^-Y``; in the ``floatK_e1mY`` types (bias 0) 1.0 is a subnormal, spaced
    ``2^(1-Y)`` apart from its neighbours, so ``eps = 2^(1-Y)`` there (``float3_e1m1``: values
    0, 1, 2, 3 and ``eps = 1``).
    """
    dtype = _float(dtype, "eps")
    y, bias = dtype.mantissa_bits, dtype.exponent_bias
    # 1.0 = 2^0 lies in the binade of exponent field e = bias when bias >= 1 (a normal number) and in
    # the subnormal range when bias == 0; the spacing there is 2^(max(e, 1) - bias - Y).
    return math.ldexp(1.0, max(bias, 1) - bias - y)


def smallest_normal(dtype: "DataType | str") -> float:
    """The smallest positive normal number, ``2^(1-bias)``."""
    dtype = _float(dtype, "smallest normal")
    if dtype.unsigned:
        return math.ldexp(1.0, -dtype.exponent_bias)      # every code is normal, code 0 too
    return math.ldexp(1.0, 1 - dtype.exponent_bias)


def smallest_subnormal(dtype: "DataType | str") -> "float | None":
    """The smallest positive subnormal ``2^(1-bias-Y)``, or ``None`` for types with no mantissa bits
    (``floatK_e{K-1}m0``): there the only codes with exponent field 0 are +0 and -0."""
    dtype = _float(dtype, "smallest subnormal")
    if dtype.mantissa_bits == 0:
        return None
    return math.ldexp(1.0, 1 - dtype.exponent_bias - dtype.mantissa_bits)


def code_numpy_dtype(dtype: "DataType | str") -> np.dtype:
    """The numpy dtype that holds this type's codes: uint8 up to 8 bits, else uint16/32/64."""
    dtype = get(dtype)
    for limit, nd in ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64)):
        if dtype.nbits <= limit:
            return np.dtype(nd)
    raise DataTypeError(f"{dtype.name} has {dtype.nbits} bits; codes hold at most 64")  # pragma: no cover


def values_of_codes(dtype: DataType, codes: np.ndarray) -> np.ndarray:
    """The float64 value of each code (a validated non-negative integer array), vectorized.

    This is the definition the value tables are built from; it does not check the code range.
    """
    codes = codes.astype(np.int64)
    k = dtype.nbits
    if dtype.kind == BOOL or dtype.kind == UINT:
        return codes.astype(np.float64)
    if dtype.kind == INT:
        return np.where(codes >= (1 << (k - 1)), codes - (1 << k), codes).astype(np.float64)
    assert dtype.kind == FLOAT
    if dtype.unsigned:                  # exponent only: 2^(e - bias), the all-ones code NaN
        e = codes & ((1 << dtype.exponent_bits) - 1)
        return np.where(e == (1 << dtype.exponent_bits) - 1, np.nan,
                        np.ldexp(1.0, (e - dtype.exponent_bias).astype(np.int32)))
    x, y, bias = dtype.exponent_bits, dtype.mantissa_bits, dtype.exponent_bias
    sign = (codes >> (k - 1)) & 1
    e = (codes >> y) & ((1 << x) - 1)
    m = codes & ((1 << y) - 1)
    significand = np.where(e > 0, m + (1 << y), m).astype(np.float64)
    mag = np.ldexp(significand, (np.maximum(e, 1) - bias - y).astype(np.int32))
    flavour = float_flavour(dtype)
    if flavour == FN:
        mag = np.where((e == (1 << x) - 1) & (m == (1 << y) - 1), np.nan, mag)
    elif flavour == IEEE:
        top = e == (1 << x) - 1
        mag = np.where(top, np.where(m == 0, np.inf, np.nan), mag)
    return np.where(sign == 1, -mag, mag)
