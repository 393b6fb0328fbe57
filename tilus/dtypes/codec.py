"""Values <-> codes for every data type, vectorized with numpy.

``encode(dtype, values)`` turns numbers into codes (the type's bit patterns, as unsigned integers);
``decode(dtype, codes)`` turns codes back into numbers. The rules:

* Codes live in ``uint8`` for types of up to 8 bits, ``uint16``/``uint32``/``uint64`` for 16/32/64.
  A signed integer's code is its K-bit two's complement pattern (``int3`` -1 is ``0b111`` = 7).
* Rounding is to nearest, ties to even: for integers the even integer, for floats the even code
  (the one whose mantissa ends in 0; in the ``m0`` types, whose exponent ends in 0).
* Every finite value out of range saturates to the nearest end of the type (``max_value`` or
  ``min_value``); this holds for the OCP/IEEE floats too (``float8_e4m3``, ``float8_e5m2``,
  ``float16``, ...), which is where we leave ``ml_dtypes``/numpy (they give NaN or inf): quantized
  data should never overflow. ``+-inf`` saturates in the types without inf (integers, the
  ``finite`` floats, ``float8_e4m3``) and stays inf in those with it.
* ``float8_e8m0`` (unsigned, exponent only) rounds to the nearest power of two, ties (1.5 * 2^e)
  to the even code; below 2^-127, zero and negative values saturate to code 0 (2^-127), +inf and
  values beyond 2^127 to 0xFE (2^127), NaN is 0xFF. (``ml_dtypes.float8_e8m0fnu`` gives NaN for
  zero, negatives and overflow, rounds the ties 1.5 * 2^e up, and float32 subnormals on their
  bits; the MX quantizer never rounds to E8M0: it takes floor(log2(absmax)).)
* NaN has no code in integers, ``bool`` and the finite-only floats: encoding it raises
  ``DataTypeError``. ``float8_e4m3`` encodes NaN as 0x7f/0xff, ``float8_e5m2`` as 0x7e/0xfe (by sign,
  as ``ml_dtypes`` does), the wider floats as numpy/``ml_dtypes`` do.
* Floats keep the sign of zero: ``-0.0`` (and negative values that round to zero) encode to the
  code with only the sign bit set; that code decodes to ``-0.0``.
* ``decode`` returns ``float32`` for every type of up to 16 bits (exact: all their values are
  float32 numbers) and ``float64`` for ``float64`` and the 32/64-bit integers (64-bit integers beyond
  2^53 are rounded by that conversion).

Inputs may be numpy arrays of any shape, Python scalars or (nested) lists; a torch tensor in gives
a torch tensor out on the same device (the work itself is done on the host).
"""
from __future__ import annotations

import functools
import sys

import numpy as np

from tilus.dtypes import formats
from tilus.dtypes.types import BOOL, FLOAT, INT, UINT, DataType, get
from tilus.errors import DataTypeError


# --------------------------------------------------------------------------------------- plumbing
def _torch_tensor(obj):
    """``obj`` if it is a torch tensor (without importing torch when nobody has), else ``None``."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return obj
    return None


def _to_numpy(obj):
    """(numpy array, device or None): a torch tensor is copied to the host, its device remembered."""
    t = _torch_tensor(obj)
    if t is None:
        return np.asarray(obj), None
    import torch

    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        t = t.float()
    return t.cpu().numpy(), t.device


def _from_numpy(arr: np.ndarray, device):
    if device is None:
        return arr
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr)).to(device)


def _first(mask: np.ndarray) -> tuple:
    idx = np.unravel_index(int(np.argmax(mask)), mask.shape) if mask.ndim else ()
    return tuple(int(i) for i in idx)


def _where(idx: tuple) -> str:
    return f" at index {idx}" if idx else ""


# ---------------------------------------------------------------------------------------- tables
@functools.lru_cache(maxsize=None)
def _float_codes(name: str) -> tuple[int, "tuple[int, int] | None", "int | None"]:
    """(largest finite positive code, NaN codes for +/- sign or None, the +inf code or None)."""
    dtype = get(name)
    half = formats.values_of_codes(dtype, np.arange(1 << (dtype.nbits - 1)))   # sign bit 0
    finite = np.isfinite(half)
    n_finite = len(half) if finite.all() else int(np.argmin(finite))
    # the encoder relies on this: positive codes are consecutive integers in order of value
    assert finite[:n_finite].all() and np.all(np.diff(half[:n_finite]) > 0), name
    flavour = formats.float_flavour(dtype)
    nan_codes = {formats.FN: (0x7F, 0xFF), formats.IEEE: (0x7E, 0xFE)}.get(flavour)
    inf_code = 0x7C if flavour == formats.IEEE else None
    return n_finite - 1, nan_codes, inf_code


@functools.lru_cache(maxsize=None)
def _value_table64(name: str) -> np.ndarray:
    dtype = get(name)
    return formats.values_of_codes(dtype, np.arange(2 if dtype.kind == BOOL else 1 << dtype.nbits))


@functools.lru_cache(maxsize=None)
def _value_table32(name: str) -> np.ndarray:
    table = _value_table64(name).astype(np.float32)
    table.flags.writeable = False
    return table


# ------------------------------------------------------------------------------------------ encode
def _check_numbers(arr: np.ndarray, dtype: DataType) -> np.ndarray:
    if arr.dtype.kind in "biuf":
        return arr
    if arr.dtype.kind == "V":           # ml_dtypes floats (bfloat16, float8_*, ...)
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            pass
    if arr.dtype.kind == "O" or arr.size == 0:
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            pass
    raise DataTypeError(f"{dtype.name}.encode expects real numbers (a float/int array, list or "
                        f"scalar), got an array of dtype {arr.dtype}")


def _reject_nan(x: np.ndarray, dtype: DataType, why: str) -> None:
    nan = np.isnan(x)
    if nan.any():
        raise DataTypeError(f"cannot encode NaN{_where(_first(nan))} as {dtype.name}: {why}; "
                            f"replace NaNs first (e.g. numpy.nan_to_num)")


def _encode_integer(dtype: DataType, arr: np.ndarray) -> np.ndarray:
    lo, hi = formats.min_value(dtype), formats.max_value(dtype)
    out_dtype = formats.code_numpy_dtype(dtype)
    mask = np.uint64((1 << dtype.nbits) - 1)
    if arr.dtype.kind in "iub":                      # exact integer path, no float rounding
        if arr.dtype == np.uint64:
            v = np.minimum(arr, np.uint64(hi)) if hi < 2**64 - 1 else arr
            return v.astype(out_dtype)
        v = np.clip(arr.astype(np.int64), max(lo, -2**63), min(hi, 2**63 - 1))
        return (v.view(np.uint64) & mask).astype(out_dtype)
    x = arr.astype(np.float64)
    _reject_nan(x, dtype, "integers have no NaN")
    if dtype.nbits <= 32:                            # every bound is a float64 number
        v = np.clip(np.rint(x), lo, hi).astype(np.int64)
        return (v.view(np.uint64) & mask).astype(out_dtype)
    r = np.rint(x)                                   # round half to even
    big, small = r >= float(hi), r <= float(lo)      # float(2^63-1) == 2^63: compare, don't cast
    safe = np.where(big | small, 0.0, r)
    if dtype.kind == UINT:
        v = safe.astype(np.uint64)
        v = np.where(big, np.uint64(hi), np.where(small, np.uint64(lo), v))
    else:
        v = safe.astype(np.int64)
        v = np.where(big, np.int64(hi), np.where(small, np.int64(lo), v)).view(np.uint64)
    return (v & mask).astype(out_dtype)


def _encode_lowbit_float(dtype: DataType, arr: np.ndarray) -> np.ndarray:
    """Round to nearest even on the bits of the input float: the positive codes of a format are
    consecutive integers in the order of their values, so the K-bit code of a normal number is its
    float32/float64 bit pattern shifted right to Y mantissa bits (rounding on the dropped bits, a
    carry moving into the exponent) minus the difference of the exponent biases; below the smallest
    normal the code is ``rint(|x| / 2^(1-bias-Y))``. Saturation is a ``min`` with the largest
    finite code."""
    max_code, nan_codes, inf_code = _float_codes(dtype.name)
    # float32 holds float16 and small integers exactly; anything wider is rounded from float64.
    wide = not (arr.dtype.itemsize <= 2 or arr.dtype == np.float32)
    work, uint, nbits, mant, ebias = ((np.float64, np.uint64, 64, 52, 1023) if wide
                                      else (np.float32, np.uint32, 32, 23, 127))
    x = np.ascontiguousarray(arr, dtype=work).reshape(-1)
    if nan_codes is None:
        _reject_nan(x, dtype, f"{dtype.name} has no NaN code (every code is a finite number)")
    y, bias = dtype.mantissa_bits, dtype.exponent_bias
    bits = x.view(uint)
    sign = (bits >> uint(nbits - 1)).astype(np.uint8)
    mag = bits & uint((1 << (nbits - 1)) - 1)
    shift = mant - y
    trunc = mag >> uint(shift)
    rem = mag & uint((1 << shift) - 1)
    half = uint(1 << (shift - 1))
    up = (rem > half) | ((rem == half) & (trunc & uint(1)).astype(bool))
    normal = trunc + up - uint((ebias - bias) << y)          # wraps below the normals: unused there
    a = mag.view(work)
    smallest_normal = work(2.0 ** (1 - bias))
    tiny = a < smallest_normal
    subnormal = np.rint(np.minimum(a, smallest_normal) * work(2.0 ** (y + bias - 1)))  # exact; <= 2^Y
    code = np.where(tiny, subnormal.astype(uint), normal)
    np.minimum(code, uint(max_code), out=code)           # saturate (inf and NaN too, for now)
    code = code.astype(np.uint8)
    if inf_code is not None:
        code[np.isinf(x)] = inf_code
    code |= sign << np.uint8(dtype.nbits - 1)
    if nan_codes is not None:
        nan = np.isnan(x)
        code[nan] = np.where(sign[nan] == 1, nan_codes[1], nan_codes[0])
    return code.reshape(arr.shape)


def _encode_exponent_only(dtype: DataType, arr: np.ndarray) -> np.ndarray:
    """``float8_e8m0``: x = f * 2^E with f in [1, 2) (``frexp``, exact); the code is
    ``E + bias``, plus one when f > 1.5 or f == 1.5 and that code is odd; clamped to the finite
    codes (see the module docstring for zero, negatives, inf and NaN)."""
    x = np.asarray(arr, dtype=np.float64)
    finite_code = (1 << dtype.exponent_bits) - 2
    with np.errstate(invalid="ignore"):
        mant, ex = np.frexp(np.where(np.isfinite(x) & (x > 0), x, 1.0))
    f, code = mant * 2, ex.astype(np.int64) - 1 + dtype.exponent_bias
    up = (f > 1.5) | ((f == 1.5) & (code % 2 == 1))
    code = np.clip(code + up, 0, finite_code)
    code = np.where(np.isposinf(x), finite_code, np.where(x > 0, code, 0))
    return np.where(np.isnan(x), finite_code + 1, code).astype(np.uint8)


def _saturate(x: np.ndarray, limit: float) -> np.ndarray:
    return np.where(np.isfinite(x), np.clip(x, -limit, limit), x)


def _round_to_odd_float32(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd: the float32 truncation of ``x``, with its last bit set when
    inexact. Rounding that to nearest-even in a narrower format (bfloat16) equals rounding ``x``
    directly (float32 keeps 16 more bits), which a plain float64->float32->bfloat16 does not."""
    with np.errstate(over="ignore"):
        f = x.astype(np.float32)
    back = f.astype(np.float64)
    inexact = np.isfinite(x) & (back != x)
    bits = f.view(np.uint32)
    bits = bits - (inexact & (np.abs(back) > np.abs(x))).astype(np.uint32)   # toward zero
    bits = bits | inexact.astype(np.uint32)
    return bits.view(np.float32)


def _encode_wide_float(dtype: DataType, arr: np.ndarray) -> np.ndarray:
    x = _saturate(arr.astype(np.float64), formats.max_value(dtype))
    if dtype.name == "float16":
        return x.astype(np.float16).view(np.uint16)
    if dtype.name == "bfloat16":
        import ml_dtypes

        return _round_to_odd_float32(x).astype(ml_dtypes.bfloat16).view(np.uint16)
    if dtype.name == "float32":
        return x.astype(np.float32).view(np.uint32)
    if dtype.name == "float64":
        return np.ascontiguousarray(x).view(np.uint64)
    raise DataTypeError(f"no encoder for {dtype.name}")  # pragma: no cover


def encode(dtype: "DataType | str", values):
    """Codes of ``values`` in ``dtype`` (see the module docstring for rounding and saturation)."""
    dtype = get(dtype)
    arr, device = _to_numpy(values)
    arr = _check_numbers(arr, dtype)
    with np.errstate(invalid="ignore"):     # widening signalling NaNs warns; they stay NaN
        out = _encode(dtype, arr)
    return _from_numpy(np.asarray(out), device)


def _encode(dtype: DataType, arr: np.ndarray) -> np.ndarray:
    if dtype.kind == BOOL:
        x = arr.astype(np.float64)
        _reject_nan(x, dtype, "bool has no NaN (is NaN true or false?)")
        out = (x != 0).astype(np.uint8)
    elif dtype.kind in (INT, UINT):
        out = _encode_integer(dtype, arr)
    elif dtype.unsigned:
        out = _encode_exponent_only(dtype, arr)
    elif dtype.nbits <= 8:
        out = _encode_lowbit_float(dtype, arr)
    else:
        out = _encode_wide_float(dtype, arr)
    return out


# ------------------------------------------------------------------------------------------ decode
def _check_codes(dtype: DataType, codes) -> tuple[np.ndarray, object]:
    arr, device = _to_numpy(codes)
    if arr.size == 0 and arr.dtype.kind in "fO":
        arr = arr.astype(formats.code_numpy_dtype(dtype))
    if arr.dtype.kind not in "iu":
        raise DataTypeError(f"{dtype.name} codes must be integers (the type's bit patterns, e.g. "
                            f"from {dtype.name}.encode), got an array of dtype {arr.dtype}")
    n_codes = 2 if dtype.kind == BOOL else 1 << dtype.nbits
    if arr.size:
        bad = arr < 0 if arr.dtype.kind == "i" else np.zeros(arr.shape, bool)
        if n_codes <= np.iinfo(arr.dtype).max:
            bad = bad | (arr >= n_codes)
        if bad.any():
            idx = _first(bad)
            raise DataTypeError(f"{int(arr[idx])} is not a {dtype.name} code{_where(idx)}: "
                                f"{dtype.name} codes are 0..{n_codes - 1}"
                                + ("" if dtype.kind == BOOL else f" ({dtype.nbits} bits)"))
    return arr, device


def decode(dtype: "DataType | str", codes):
    """Values of ``codes`` (unsigned bit patterns) in ``dtype``: float32, or float64 for
    ``float64`` and the 32/64-bit integers. Codes outside the type raise ``DataTypeError``."""
    dtype = get(dtype)
    arr, device = _check_codes(dtype, codes)
    with np.errstate(invalid="ignore"):
        out = _decode(dtype, arr)
    return _from_numpy(np.asarray(out), device)


def _decode(dtype: DataType, arr: np.ndarray) -> np.ndarray:
    if dtype.nbits <= 16 and dtype.kind != FLOAT or dtype.nbits <= 8:
        out = _value_table32(dtype.name)[arr.astype(np.intp)]
    elif dtype.kind == FLOAT:
        if dtype.name == "float16":
            out = arr.astype(np.uint16).view(np.float16).astype(np.float32)
        elif dtype.name == "bfloat16":
            import ml_dtypes

            out = arr.astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
        elif dtype.name == "float32":
            out = arr.astype(np.uint32).view(np.float32)
        else:
            out = arr.astype(np.uint64).view(np.float64)
    else:                                             # 32/64-bit integers
        u = arr.astype(np.uint64)
        if dtype.kind == INT:
            k = dtype.nbits
            s = u.view(np.int64) if k == 64 else u.astype(np.int64) - ((u >> (k - 1)) << k).astype(np.int64)
            out = s.astype(np.float64)
        else:
            out = u.astype(np.float64)
    return out


# ------------------------------------------------------------------------------------ value tables
def value_table(dtype: "DataType | str") -> np.ndarray:
    """The value of every code, indexed by code: ``value_table(t)[c] == decode(t, c)``.

    Types of up to 16 bits (2^K entries; ``bool`` has the two codes 0 and 1), as ``float32``.
    """
    dtype = get(dtype)
    if dtype.nbits > 16:
        raise DataTypeError(f"{dtype.name} has 2^{dtype.nbits} codes, too many for a value table "
                            f"(tables exist for types of at most 16 bits)")
    if dtype.kind == FLOAT and dtype.nbits > 8:
        return decode(dtype, np.arange(1 << dtype.nbits, dtype=np.uint32))
    return _value_table32(dtype.name).copy()


def _fmt(v: float) -> str:
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "-inf" if v < 0 else "inf"
    if v == 0:
        return "-0" if np.signbit(v) else "0"
    return f"{v:.6g}"


def format_value_table(dtype: "DataType | str", columns: int | None = None) -> str:
    """A text grid of ``code -> value`` for a type of at most 8 bits, e.g. for ``uint3``::

        uint3: 8 codes, values 0 .. 7
          000: 0   001: 1   010: 2   011: 3   100: 4   101: 5   110: 6   111: 7
    """
    dtype = get(dtype)
    if dtype.nbits > 8:
        raise DataTypeError(f"format_value_table shows types of at most 8 bits, not {dtype.name}")
    table = value_table(dtype)
    n = len(table)
    width = 1 if dtype.kind == BOOL else dtype.nbits
    if columns is None:
        columns = min(n, 8)
    cells = [f"{c:0{width}b}: {_fmt(float(v))}" for c, v in enumerate(table)]
    cell_w = max(len(c) for c in cells) + 2
    lo, hi = formats.min_value(dtype), formats.max_value(dtype)
    head = f"{dtype.name}: {n} codes, values {_fmt(float(lo))} .. {_fmt(float(hi))}"
    if dtype.is_float and not dtype.unsigned:
        sub = formats.smallest_subnormal(dtype)
        head += f", eps {_fmt(formats.eps(dtype))}, smallest subnormal {_fmt(sub) if sub else 'none'}"
    rows = ["  " + "".join(c.ljust(cell_w) for c in cells[r:r + columns]).rstrip()
            for r in range(0, n, columns)]
    return "\n".join([head, *rows])
