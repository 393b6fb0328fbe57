"""How the interpreter holds the values of register and shared tensors, and the conversions
between those values, their codes (bit patterns) and other types.

The representation rules (every handler keeps them):

* **Floats** are numpy ``float32`` arrays holding exactly the values of their type (``float64``
  tiles are ``float64``). ``float16``, ``bfloat16`` and every low-bit float (``float8_e4m3``,
  ``float4_e2m1``, ``float6_e3m2``, ...) hold decoded values: each arithmetic result is computed in
  float32 and rounded back to the tile's type at once (per-operation rounding, as the GPU does;
  float32 is wide enough that this double rounding is innocuous for + - * / and sqrt).
  ``float16``/``bfloat16`` round like IEEE (ties to even, overflow to inf); the 8-bit and narrower
  floats round to nearest even and **saturate** (``tilus.dtypes.encode``, like PTX ``satfinite``).
* **Integers** of every width (``int1`` .. ``int64``, ``uint1`` .. ``uint32``) are numpy ``int64``
  arrays holding the exact value; after every arithmetic operation the result wraps to the type's
  width (two's complement for signed types), like C/PTX integer arithmetic. ``uint64`` tiles are
  numpy ``uint64``.
* **bool** tiles are numpy ``bool`` arrays.

A code is the unsigned bit pattern of a value (``tilus.dtypes``): what memory holds. Value <->
code conversions are exact for every value; the one thing registers do not keep is a NaN's
payload: a NaN is just a NaN of some sign, and re-encoding it (a store, a ``view``) may give the
type's canonical NaN code (float8_e5m2: 0x7e/0xfe) instead of the code it was loaded from.
"""
from __future__ import annotations

import numpy as np

from tilus.dtypes import DataType
from tilus.errors import DataTypeError, InterpreterError


def storage_dtype(dtype: DataType) -> np.dtype:
    """The numpy dtype of a tile of ``dtype`` (see the module docstring)."""
    if dtype.is_bool:
        return np.dtype(np.bool_)
    if dtype.is_float:
        return np.dtype(np.float64 if dtype.nbits == 64 else np.float32)
    if dtype.kind == "uint" and dtype.nbits == 64:
        return np.dtype(np.uint64)
    return np.dtype(np.int64)


def zeros(dtype: DataType, shape) -> np.ndarray:
    return np.zeros(tuple(shape), storage_dtype(dtype))


# ------------------------------------------------------------------------------------ integers
def wrap(dtype: DataType, values) -> np.ndarray:
    """Integer values reduced to ``dtype``'s width: modulo 2^K, two's complement when signed."""
    v = np.asarray(values)
    if dtype.nbits >= 64:
        return v.astype(storage_dtype(dtype))
    v = v.astype(np.int64)
    k = dtype.nbits
    mask = np.int64((1 << k) - 1)
    if dtype.is_signed:
        half = np.int64(1 << (k - 1))
        return ((v + half) & mask) - half
    return v & mask


def saturate_int(dtype: DataType, values) -> np.ndarray:
    """Float values truncated toward zero, then clamped to ``dtype``'s range; NaN gives 0."""
    x = np.asarray(values, dtype=np.float64)
    x = np.where(np.isnan(x), 0.0, np.trunc(x))
    lo, hi = dtype.min_value, dtype.max_value
    big, small = x >= float(hi), x <= float(lo)
    safe = np.where(big | small, 0.0, x)
    out = safe.astype(storage_dtype(dtype))
    out = np.where(big, np.asarray(hi, out.dtype), np.where(small, np.asarray(lo, out.dtype), out))
    return out.astype(storage_dtype(dtype))


# -------------------------------------------------------------------------------------- floats
def _round_to_odd_float32(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd, so that a second rounding to a narrower type (bfloat16)
    equals rounding ``x`` directly."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = x.astype(np.float32)
    back = f.astype(np.float64)
    inexact = np.isfinite(x) & np.isfinite(back) & (back != x)
    bits = f.view(np.uint32)
    bits = bits - (inexact & (np.abs(back) > np.abs(x))).astype(np.uint32)
    bits = bits | inexact.astype(np.uint32)
    return bits.view(np.float32)


def _encode(dtype: DataType, values) -> np.ndarray:
    try:
        return dtype.encode(values)
    except DataTypeError as e:
        raise InterpreterError(f"a value has no {dtype.name} representation: {e}") from None


def round_float(dtype: DataType, values) -> np.ndarray:
    """Real values rounded to the float type ``dtype`` (IEEE for float16/bfloat16/float32, RNE with
    saturation for the 8-bit and narrower floats), as the tile representation."""
    x = np.asarray(values)
    if x.dtype.kind not in "f":
        x = x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype.nbits == 64:
            return x.astype(np.float64)
        if dtype.nbits == 32:
            return x.astype(np.float32)
        if dtype.name == "float16":
            return x.astype(np.float16).astype(np.float32)
        if dtype.name == "bfloat16":
            import ml_dtypes

            if x.dtype == np.float64:
                x = _round_to_odd_float32(x)
            return x.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)
    return dtype.decode(_encode(dtype, x)).astype(np.float32)


# ----------------------------------------------------------------------------------- generally
def round_result(dtype: DataType, values) -> np.ndarray:
    """An arithmetic result brought back to ``dtype``: floats rounded, integers wrapped, bools kept."""
    if dtype.is_bool:
        return np.asarray(values).astype(bool)
    if dtype.is_float:
        return round_float(dtype, values)
    return wrap(dtype, values)


def from_python(dtype: DataType, value) -> np.ndarray:
    """A scalar (Python number, numpy scalar or array) as ``dtype``'s tile representation; integers
    given for a float type are converted, floats given for an integer type truncated+saturated."""
    v = np.asarray(value)
    if dtype.is_integer and v.dtype.kind == "f":
        return saturate_int(dtype, v)
    return round_result(dtype, v)


def cast(src: DataType, dst: DataType, values: np.ndarray) -> np.ndarray:
    """Cast semantics (the reference for the compiler):

    * to ``bool``: nonzero is true;
    * float -> integer: truncate toward zero, then saturate to the target's range (NaN -> 0, as
      PTX ``cvt.rzi.sat``);
    * integer/bool -> integer: keep the low K bits (C semantics: wrap, two's complement);
    * -> float: round to nearest even; float16/bfloat16/float32 overflow to inf like IEEE, the
      8-bit and narrower floats saturate at their largest finite value (NaN into a type without
      NaN is an InterpreterError).
    """
    v = np.asarray(values)
    if dst.is_bool:
        return v != 0
    if dst.is_integer:
        if src.is_float:
            return saturate_int(dst, v)
        return wrap(dst, v)
    if v.dtype.kind in "iub":
        v = v.astype(np.float64)
    return round_float(dst, v)


# ---------------------------------------------------------------------------------- codes
def code_dtype(dtype: DataType) -> np.dtype:
    """numpy dtype of ``dtype``'s codes: uint8 up to 8 bits, else uint16/uint32/uint64."""
    return np.dtype({8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[max(8, dtype.nbits)])


def to_codes(dtype: DataType, values: np.ndarray) -> np.ndarray:
    """The bit patterns (unsigned, numpy uint8/16/32/64) of values already in ``dtype``'s
    representation. Exact: no rounding happens here."""
    v = np.asarray(values)
    cd = code_dtype(dtype)
    if dtype.is_bool:
        return (v != 0).astype(cd)
    if dtype.is_integer:
        if dtype.nbits == 64:
            return v.astype(np.int64 if dtype.is_signed else np.uint64).view(np.uint64)
        return (v.astype(np.int64) & np.int64((1 << dtype.nbits) - 1)).astype(cd)
    if dtype.nbits == 32:
        return np.ascontiguousarray(v, dtype=np.float32).view(np.uint32)
    if dtype.nbits == 64:
        return np.ascontiguousarray(v, dtype=np.float64).view(np.uint64)
    if dtype.name == "float16":
        return np.ascontiguousarray(v.astype(np.float16)).view(np.uint16)
    if dtype.name == "bfloat16":      # a bfloat16 value is a float32 whose low 16 bits are zero
        return (np.ascontiguousarray(v, dtype=np.float32).view(np.uint32) >> np.uint32(16)).astype(cd)
    return np.asarray(_encode(dtype, v), dtype=cd)


def from_codes(dtype: DataType, codes: np.ndarray) -> np.ndarray:
    """Values (the tile representation) of bit patterns of ``dtype``."""
    c = np.asarray(codes)
    if dtype.is_bool:
        return c != 0
    if dtype.is_integer:
        k = dtype.nbits
        if k == 64:
            return c.astype(np.uint64).view(np.int64 if dtype.is_signed else np.uint64)
        u = c.astype(np.int64) & np.int64((1 << k) - 1)
        if dtype.is_signed:
            u = u - ((u >> np.int64(k - 1)) << np.int64(k))
        return u
    if dtype.nbits == 32:
        return c.astype(np.uint32).view(np.float32)
    if dtype.nbits == 64:
        return c.astype(np.uint64).view(np.float64)
    return dtype.decode(c.astype(code_dtype(dtype))).astype(np.float32)
