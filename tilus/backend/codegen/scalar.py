"""Per-element value conversions in TIR: storage <-> compute values and ``cast`` between types.

``load(dtype, x)`` turns a stored element (see dtypes_map) into its compute value, ``store(dtype,
v)`` rounds/wraps a compute value back into storage, ``convert(src, dst, x)`` is the ``cast``
instruction on one stored element (interpreter semantics: float->int truncates toward zero then
saturates; int->int keeps the low bits; ->float rounds to nearest even, low-bit floats saturate;
->bool is != 0).

Low-bit floats (sign, X exponent bits with bias 2^(X-1)-1, Y mantissa bits, subnormals) decode
with integer ops and one multiply by a power of two built from float32 bits; encode rounds with
``nearbyint`` (the current rounding mode, nearest-even) after scaling by a power of two, so both
directions are exact. float8_e4m3/e5m2 keep their NaN (and e5m2's inf) codes on decode; encode
saturates like the other low-bit floats and sends NaN to the canonical NaN code (0x7f/0x7e).
"""
from __future__ import annotations

from tilus.backend.codegen.dtypes_map import compute, is_native, storage
from tilus.backend.tvm_shim import tirx, dt
from tilus.dtypes import DataType


def const(value, dtype: str):
    return tirx.const(value, dtype)


def _u32(x):
    return x if dt(x) == "uint32" else tirx.Cast("uint32", x)


def _i32(x):
    return x if dt(x) == "int32" else tirx.Cast("int32", x)


def pow2(e):
    """2.0**e as float32 for an int32 expression e in [-126, 127] (built from the exponent bits)."""
    bits = tirx.shift_left(tirx.Cast("uint32", e + 127), const(23, "uint32"))
    return tirx.reinterpret("float32", bits)


def _decode_exponent_only(dtype: DataType, c):
    """float8_e8m0 (bias 127 = float32's): code e is the float32 exponent field; code 0 (2^-127)
    is the float32 subnormal 0x400000, the larger of the two; the all-ones code is NaN."""
    assert (dtype.exponent_bits, dtype.exponent_bias) == (8, 127), dtype
    bits = tirx.max(tirx.shift_left(c, const(23, "int32")), const(0x400000, "int32"))
    return tirx.Select(c == 255, const(float("nan"), "float32"), tirx.reinterpret("float32", bits))


def _encode_exponent_only(dtype: DataType, v):
    """float8_e8m0 code of float32 ``v`` (tilus.dtypes.codec's rule): the exponent field, plus
    one when the mantissa is above 1.5 (or at 1.5 with an odd field); float32 subnormals above
    1.5 * 2^-127 give 1, else 0; zero and negatives 0, +inf 0xFE, NaN 0xFF."""
    top = (1 << dtype.exponent_bits) - 1
    bits = tirx.reinterpret("uint32", v)
    e = tirx.Cast("int32", tirx.bitwise_and(tirx.shift_right(bits, const(23, "uint32")),
                                            const(0xFF, "uint32")))
    m = tirx.Cast("int32", tirx.bitwise_and(bits, const(0x7FFFFF, "uint32")))
    half = const(0x400000, "int32")
    up = tirx.Or(m > half, tirx.And(m == half, tirx.bitwise_and(e, const(1, "int32")) == 1))
    normal = tirx.min(e + tirx.Select(up, const(1, "int32"), const(0, "int32")),
                      const(top - 1, "int32"))
    sub = tirx.Select(m > const(0x600000, "int32"), const(1, "int32"), const(0, "int32"))
    code = tirx.Select(e == 0, sub, normal)
    code = tirx.Select(tirx.shift_right(bits, const(31, "uint32")) == const(1, "uint32"),
                       const(0, "int32"), code)
    code = tirx.Select(v != v, const(top, "int32"), code)
    return tirx.Cast("uint8", code)


def decode_float(dtype: DataType, code):
    """float32 value of a low-bit float code (uint8 expression)."""
    if dtype.unsigned:
        return _decode_exponent_only(dtype, _i32(code))
    x, y = dtype.exponent_bits, dtype.mantissa_bits
    bias = (1 << (x - 1)) - 1
    c = _i32(code)
    k = dtype.nbits
    sign = tirx.bitwise_and(tirx.shift_right(c, const(k - 1, "int32")), const(1, "int32"))
    e = tirx.bitwise_and(tirx.shift_right(c, const(y, "int32")), const((1 << x) - 1, "int32"))
    m = tirx.bitwise_and(c, const((1 << y) - 1, "int32"))
    # value = (e ? 2^Y + m : m) * 2^(max(e,1) - bias - Y)
    sig = tirx.Select(e == 0, m, m + (1 << y))
    mag = tirx.Cast("float32", sig) * pow2(tirx.max(e, const(1, "int32")) - (bias + y))
    if dtype.name == "float8_e4m3":
        mag = tirx.Select(tirx.And(e == 15, m == 7), const(float("nan"), "float32"), mag)
    elif dtype.name == "float8_e5m2":
        mag = tirx.Select(e == 31, tirx.Select(m == 0, const(float("inf"), "float32"),
                                               const(float("nan"), "float32")), mag)
    # the sign goes in as a bit (a NaN keeps its sign; 0 - x would not)
    bits = tirx.bitwise_or(tirx.reinterpret("uint32", mag),
                           tirx.shift_left(tirx.Cast("uint32", sign), const(31, "uint32")))
    return tirx.reinterpret("float32", bits)


def encode_float(dtype: DataType, v):
    """The code (uint8) of float32 ``v`` rounded to nearest even, saturated."""
    if dtype.unsigned:
        return _encode_exponent_only(dtype, v)
    x, y = dtype.exponent_bits, dtype.mantissa_bits
    bias = (1 << (x - 1)) - 1
    k = dtype.nbits
    if dtype.name == "float8_e4m3":
        max_code = 0x7E
    else:
        max_code = ((1 << (k - 1)) - 1) if dtype.finite_only or dtype.name != "float8_e5m2" else 0x7B
    bits = tirx.reinterpret("uint32", v)
    sign = tirx.Cast("int32", tirx.shift_right(bits, const(31, "uint32")))
    a = tirx.reinterpret("float32", tirx.bitwise_and(bits, const(0x7FFFFFFF, "uint32")))
    u = tirx.Cast("int32", tirx.shift_right(tirx.bitwise_and(bits, const(0x7F800000, "uint32")),
                                            const(23, "uint32"))) - 127
    ue = tirx.max(u, const(1 - bias, "int32"))
    ue = tirx.min(ue, const(bias + 2, "int32"))        # beyond the range: saturates anyway
    q = tirx.Cast("int32", tirx.nearbyint(a * pow2(const(y, "int32") - ue)))
    code = tirx.shift_left(ue + (bias - 1), const(y, "int32")) + q
    code = tirx.min(code, const(max_code, "int32"))
    nan_code = {"float8_e4m3": 0x7F, "float8_e5m2": 0x7E}.get(dtype.name)
    if nan_code is not None:
        code = tirx.Select(a != a, const(nan_code, "int32"), code)
    else:
        code = tirx.Select(a != a, const(0, "int32"), code)
    code = tirx.bitwise_or(code, tirx.shift_left(sign, const(k - 1, "int32")))
    return tirx.Cast("uint8", code)


def load(dtype: DataType, x):
    """Compute value of a stored element."""
    if is_native(dtype):
        c = compute(dtype)
        return x if dt(x) == c else tirx.Cast(c, x)
    if dtype.is_float:
        return decode_float(dtype, x)
    k = dtype.nbits
    c = _i32(x)
    if dtype.is_signed:  # sign-extend with (c ^ m) - m: no shift out of int32 for constant codes
        m = const(1 << (k - 1), "int32")
        return tirx.bitwise_xor(c, m) - m
    return c


def store(dtype: DataType, v):
    """Stored element of compute value ``v`` (already of compute(dtype))."""
    s = storage(dtype)
    if is_native(dtype):
        return v if dt(v) == s else tirx.Cast(s, v)
    if dtype.is_float:
        return encode_float(dtype, v)
    return tirx.Cast("uint8", tirx.bitwise_and(_i32(v), const((1 << dtype.nbits) - 1, "int32")))


def _saturating_float_to_int(v, dst: DataType):
    lo, hi = dst.min_value, dst.max_value
    f = "float64" if dst.nbits > 24 else "float32"
    w = v if dt(v) == f else tirx.Cast(f, v)
    w = tirx.Select(w != w, const(0.0, f), w)
    w = tirx.max(tirx.min(w, const(float(hi), f)), const(float(lo), f))
    ct = compute(dst)
    if dst.nbits >= 32:
        ct = dst.name
    return tirx.Cast(ct, w)   # C conversion truncates toward zero


def convert(src: DataType, dst: DataType, x, exponent: int = 0):
    """``cast`` of one stored element of ``src`` to the stored form of ``dst``; with ``exponent``
    e (float ``dst``), ``x * 2^e``: exact in float64 (x has at most 16 bits), then rounded."""
    if src is dst and not exponent:
        return x
    v = load(src, x)
    if dst.is_bool:
        zero = const(0, dt(v)) if dt(v) != "bool" else None
        return v if zero is None else v != zero
    if dst.is_float:
        if dt(v) == "bool":
            v = tirx.Cast("float32", v)
        elif not dt(v).startswith("float"):
            v = tirx.Cast("float64" if dst.nbits == 64 else "float32", v)
        if exponent:
            v = tirx.Cast("float64", v) * const(2.0 ** exponent, "float64")
        c = compute(dst)
        v = v if dt(v) == c else tirx.Cast(c, v)
        return store(dst, v)
    # integer destination
    if dt(v).startswith("float"):
        iv = _saturating_float_to_int(v, dst)
    elif dt(v) == "bool":
        iv = tirx.Cast(compute(dst), v)
    else:
        iv = v
    c = compute(dst)
    if dt(iv) != c:
        iv = tirx.Cast(c, iv)
    return store(dst, iv)
