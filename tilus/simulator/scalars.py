"""Scalar types and arithmetic on thread vectors: the numpy dtype of each TVM dtype, casts with
C semantics, integer division and shifts as CUDA does them (``_BINARY``: one function per TIR
binary node)."""
from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

from tilus.backend.tvm_shim import tirx
from tilus.simulator.errors import SimulationError, UnsupportedError

_SCALARS = {
    "bool": np.dtype(np.bool_), "float16": np.dtype(np.float16), "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64), "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn), "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}
for _b in (8, 16, 32, 64):
    _SCALARS[f"int{_b}"] = np.dtype(f"int{_b}")
    _SCALARS[f"uint{_b}"] = np.dtype(f"uint{_b}")


@functools.lru_cache(maxsize=None)
def _np_dtype_str(s: str, lanes: int):
    base = s
    if lanes > 1 and s.endswith(f"x{lanes}"):
        base = s[: -len(f"x{lanes}")]
    if base not in _SCALARS:
        raise UnsupportedError(f"data type {s}")
    return _SCALARS[base], lanes


def np_dtype(dt):
    """(numpy scalar dtype, lanes) of a TVM dtype."""
    return _np_dtype_str(str(dt), int(getattr(dt, "lanes", 1)))


def _expr_dtype(e):
    ty = e.ty
    return getattr(ty, "dtype", None)


# ---------------------------------------------------------------------- helpers

def _var_np(var):
    dt = _expr_dtype(var)
    try:
        return np_dtype(dt)[0]
    except Exception:
        return np.dtype(np.int32)


_ML_FLOATS = (_SCALARS["bfloat16"], _SCALARS["float8_e4m3fn"], _SCALARS["float8_e5m2"])


def _is_float(dt) -> bool:
    return dt.kind == "f" or dt in _ML_FLOATS


def _cast(v, npdt):
    """C / PTX conversion: float -> int truncates toward zero and saturates, NaN -> 0 (cvt.rzi);
    int -> int wraps (two's complement); -> float rounds to nearest even; -> bool is != 0."""
    v = np.asarray(v)
    if v.dtype == npdt:
        return v
    if npdt == np.bool_:
        return v != 0
    if npdt.kind in "iu":
        if _is_float(v.dtype):
            f = np.trunc(np.nan_to_num(v.astype(np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf))
            info = np.iinfo(npdt)
            return np.clip(f, info.min, info.max).astype(npdt)
        return v.astype(npdt)
    if v.dtype.kind in "iub" and npdt in _ML_FLOATS:
        return v.astype(np.float64).astype(npdt)
    return v.astype(npdt)


def _as_bytes(a, name):
    """The caller's array as a flat uint8 view sharing its memory (writes land in place)."""
    mod = type(a).__module__
    if mod.startswith("torch"):
        t = a.detach()
        if t.device.type != "cpu":
            raise SimulationError(f"argument {name}: the simulator runs on CPU tensors (got {t.device})")
        if not t.is_contiguous():
            raise SimulationError(f"argument {name}: tensor is not contiguous")
        import torch

        return t.reshape(-1).view(torch.uint8).numpy()
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise SimulationError(f"argument {name}: array is not C-contiguous")
        return a.reshape(-1).view(np.uint8)
    raise SimulationError(f"argument {name}: expected a numpy array or torch CPU tensor, got {type(a).__name__}")


def _safe_divisor(m, b, what: str):
    """``b`` with zeros replaced by 1, after reporting a zero divisor in an active thread."""
    zero = (b == 0)
    bad = m.mask.reshape((-1,) + (1,) * (np.ndim(b) - 1)) & zero
    if np.any(bad):
        raise m._err(SimulationError, f"integer {what} by zero", m._threads_of(bad))
    return np.where(zero, 1, b)


def _int_div(m, a, b, npdt):
    if _is_float(npdt):
        return (a / b).astype(npdt)
    b = _safe_divisor(m, b, "division")
    r = np.fmod(a, b)
    return ((a - r) // b).astype(npdt)


def _int_mod(m, a, b, npdt):
    if _is_float(npdt):
        return np.fmod(a, b).astype(npdt)
    return np.fmod(a, _safe_divisor(m, b, "modulo")).astype(npdt)


def _floordiv(m, a, b, npdt):
    if _is_float(npdt):
        return np.floor(a / b).astype(npdt)
    return np.floor_divide(a, _safe_divisor(m, b, "division")).astype(npdt)


def _floormod(m, a, b, npdt):
    if _is_float(npdt):
        return (a - np.floor(a / b) * b).astype(npdt)
    return np.mod(a, _safe_divisor(m, b, "modulo")).astype(npdt)


def _shift(left):
    def fn(m, a, b, npdt):
        b = np.asarray(b).astype(a.dtype)
        return (np.left_shift(a, b) if left else np.right_shift(a, b)).astype(npdt)
    return fn


def _arith(f):
    return lambda m, a, b, npdt: np.asarray(f(a, b)).astype(npdt, copy=False)


_BINARY = {
    tirx.Add: _arith(np.add), tirx.Sub: _arith(np.subtract), tirx.Mul: _arith(np.multiply),
    tirx.Div: _int_div, tirx.Mod: _int_mod, tirx.FloorDiv: _floordiv, tirx.FloorMod: _floormod,
    tirx.Min: _arith(np.minimum), tirx.Max: _arith(np.maximum),
    tirx.LShift: _shift(True), tirx.RShift: _shift(False),
    tirx.BitwiseAnd: _arith(np.bitwise_and), tirx.BitwiseOr: _arith(np.bitwise_or),
    tirx.BitwiseXor: _arith(np.bitwise_xor),
    tirx.EQ: _arith(np.equal), tirx.NE: _arith(np.not_equal), tirx.LT: _arith(np.less),
    tirx.LE: _arith(np.less_equal), tirx.GT: _arith(np.greater), tirx.GE: _arith(np.greater_equal),
}
