"""Computing instructions: cast, assign, unary/binary elementwise, where, reduce, dot.

Values follow ``tilus.interpreter.values``: floats are computed in float32 (float64 for float64
tiles) and rounded to the tile's type after every operation; integers are computed exactly in
int64 and wrapped to the type's width.
"""
from __future__ import annotations

import numpy as np

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import InterpreterError
from tilus.interpreter import values as V
from tilus.interpreter.registry import register
from tilus.interpreter.state import BlockState
from tilus.ir import inst as I
from tilus.ir.inst import operand_dtype


@register(I.CastInst)
def cast(state: BlockState, inst: I.CastInst) -> None:
    """Every element converted to the output's dtype (``tilus.interpreter.values.cast``):
    float->int truncates toward zero then saturates (NaN -> 0); int->int keeps the low bits (C
    wrap-around); ->float rounds to nearest even, saturating for the 8-bit and narrower floats and
    overflowing to inf for float16/bfloat16/float32; ->bool is ``!= 0``. With ``exponent`` e the
    value is ``x * 2^e``, exact in float64 (x has at most 16 bits), rounded once."""
    x = state.get(inst.x)
    if inst.exponent:
        x = np.ldexp(np.asarray(x, dtype=np.float64), inst.exponent)
    state.set(inst.output, V.cast(inst.x.dtype, inst.output.dtype, x))


@register(I.AssignInst)
def assign(state: BlockState, inst: I.AssignInst) -> None:
    """output = a copy of x (same dtype and shape)."""
    state.set(inst.output, np.array(state.get(inst.x), copy=True))


@register(I.ConvertLayoutInst)
def convert_layout(state: BlockState, inst: I.ConvertLayoutInst) -> None:
    """The identity on the logical tile (a layout says where elements live, not what they are)."""
    state.set(inst.output, np.array(state.get(inst.x), copy=True))


def _compute_dtype(dtype: DataType):
    return np.float64 if dtype.nbits == 64 else np.float32


def _as_float(dtype: DataType, x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(_compute_dtype(dtype))


@register(I.UnaryInst)
def unary(state: BlockState, inst: I.UnaryInst) -> None:
    """Elementwise ``op(x)``. neg/abs wrap for integers (abs(INT_MIN) == INT_MIN); exp, log, sqrt
    and rsqrt are computed in float32 and rounded to the type; ``not`` is logical (bool result);
    bitnot flips the K bits."""
    x = state.get(inst.x)
    dtype = inst.x.dtype
    op = inst.op
    with np.errstate(all="ignore"):
        if op == "not":
            out = np.logical_not(x)
        elif op == "bitnot":
            out = np.logical_not(x) if dtype.is_bool else V.wrap(dtype, ~x.astype(np.int64))
        elif op in ("neg", "abs"):
            if dtype.is_integer:
                y = x.astype(np.int64)
                out = V.wrap(dtype, -y if op == "neg" else np.abs(y))
            elif dtype.is_bool:
                out = x                      # -true == true in one bit; abs is the identity
            else:
                out = V.round_float(dtype, -x if op == "neg" else np.abs(x))
        else:
            f = _as_float(dtype, x)
            fn = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt,
                  "rsqrt": lambda v: 1 / np.sqrt(v)}[op]
            out = V.round_float(dtype, fn(f))
    state.set(inst.output, out)


def _int_div(a: np.ndarray, b: np.ndarray, op: str) -> np.ndarray:
    if np.any(b == 0):
        raise InterpreterError(f"integer {'division' if op == 'div' else 'remainder'} by zero "
                               f"(undefined on a GPU)")
    r = np.fmod(a, b)                       # C remainder: sign of the dividend
    return r if op == "mod" else (a - r) // b


def _shift_amount(b: np.ndarray) -> np.ndarray:
    # shift counts are unsigned: a negative count is a huge one; clamp to 64 (shl/shr by >= K
    # give 0 or the sign fill, as PTX's clamped shifts do)
    return np.where(b < 0, 64, np.minimum(b, 64)).astype(np.int64)


def binary_values(dtype: DataType, op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a op b`` on two arrays of ``dtype``'s representation (broadcasting)."""
    if op in ("lt", "le", "gt", "ge", "eq", "ne"):
        return getattr(np, {"lt": "less", "le": "less_equal", "gt": "greater",
                            "ge": "greater_equal", "eq": "equal", "ne": "not_equal"}[op])(a, b)
    if op in ("and", "or"):
        return (np.logical_and if op == "and" else np.logical_or)(a != 0, b != 0)
    if dtype.is_bool:
        a, b = a.astype(bool), b.astype(bool)
        table = {"bitand": np.logical_and, "bitor": np.logical_or, "bitxor": np.logical_xor,
                 "maximum": np.logical_or, "minimum": np.logical_and}
        if op in table:
            return table[op](a, b)
        ai, bi = a.astype(np.int64), b.astype(np.int64)
        return binary_values(dtypes.uint1, op, ai, bi) != 0
    if dtype.is_float:
        cd = _compute_dtype(dtype)
        x, y = a.astype(cd), b.astype(cd)
        fn = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide,
              "mod": np.fmod, "maximum": np.fmax, "minimum": np.fmin}.get(op)
        if fn is None:
            raise InterpreterError(f"'{op}' is not defined on {dtype} tiles")
        return V.round_float(dtype, fn(x, y))
    x = a.astype(np.int64) if dtype.nbits < 64 or dtype.is_signed else a.astype(np.uint64)
    y = b.astype(x.dtype)
    if op in ("add", "sub", "mul", "bitand", "bitor", "bitxor"):
        out = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "bitand": np.bitwise_and,
               "bitor": np.bitwise_or, "bitxor": np.bitwise_xor}[op](x, y)
    elif op in ("div", "mod"):
        out = _int_div(x, y, op)
    elif op == "maximum":
        out = np.maximum(x, y)
    elif op == "minimum":
        out = np.minimum(x, y)
    elif op in ("shl", "shr"):
        amount = _shift_amount(y)
        inside = np.minimum(amount, dtype.nbits - 1).astype(x.dtype)
        shifted = np.left_shift(x, inside) if op == "shl" else np.right_shift(x, inside)
        past = np.zeros_like(x) if op == "shl" or not dtype.is_signed else np.where(x < 0, -1, 0)
        out = np.where(amount >= dtype.nbits, past, shifted)
    else:
        raise InterpreterError(f"'{op}' is not defined on {dtype} tiles")
    return V.wrap(dtype, out)


@register(I.BinaryInst)
def binary(state: BlockState, inst: I.BinaryInst) -> None:
    """Elementwise ``a op b`` with numpy broadcasting; a scalar-expression operand is evaluated now
    and converted to the tile's dtype. Comparisons and and/or give bool. Integer ``div`` truncates
    toward zero and ``mod`` is C's remainder (sign of the dividend); division by zero is an
    InterpreterError. Float ``mod`` is fmod; float maximum/minimum ignore a NaN operand (CUDA
    fmaxf/fminf). ``shl``/``shr`` by K or more bits give 0 (shr of a negative: -1); shr of a signed
    type is arithmetic. Results round/wrap to the operands' dtype."""
    dtype = next(operand_dtype(x) for x in (inst.a, inst.b) if isinstance(x, I.Tensor))
    a = state.value(inst.a, dtype)
    b = state.value(inst.b, dtype)
    with np.errstate(all="ignore"):
        state.set(inst.output, binary_values(dtype, inst.op, a, b))


@register(I.WhereInst)
def where(state: BlockState, inst: I.WhereInst) -> None:
    """``cond ? a : b`` elementwise with broadcasting; scalar operands are evaluated now."""
    dtype = inst.output.dtype
    cond = state.value(inst.cond, inst.cond.dtype).astype(bool)
    state.set(inst.output, np.where(cond, state.value(inst.a, dtype), state.value(inst.b, dtype)))


def _fma_round_to_odd(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a*b + c in float64 rounded to odd (a*b is exact for operands of <= 26 significand bits;
    the sum's error comes from TwoSum), so one more rounding to a type of <= 51 bits is the
    correctly rounded fma."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c = c.astype(np.float64)
    s = p + c
    bp = s - c
    e = (p - (s - bp)) + (c - bp)
    inexact = (e != 0) & np.isfinite(s)
    toward_zero = inexact & (np.signbit(e) != np.signbit(s))
    bits = s.view(np.uint64) - toward_zero.astype(np.uint64)
    return (bits | inexact.astype(np.uint64)).view(np.float64)


@register(I.FmaInst)
def fma(state: BlockState, inst: I.FmaInst) -> None:
    """``a * b + c`` with one rounding to the tile's float type (``fma.rn``)."""
    dtype = inst.output.dtype
    if dtype.nbits > 32:
        raise InterpreterError(f"fma on {dtype.name}: only float types of up to 32 bits")
    a, b, c = (np.asarray(state.value(x, dtype), dtype=np.float64) for x in (inst.a, inst.b, inst.c))
    a, b, c = np.broadcast_arrays(a, b, c)
    with np.errstate(all="ignore"):
        state.set(inst.output, V.round_float(dtype, _fma_round_to_odd(a, b, c)))


@register(I.ReduceInst)
def reduce(state: BlockState, inst: I.ReduceInst) -> None:
    """sum/max/min of x along ``dim`` (kept with size 1 when keepdim). Float sums accumulate in
    float32 (float64 for float64) and round to the type once at the end; integer sums are exact
    then wrap; float max/min ignore NaNs unless all are NaN."""
    x = state.get(inst.x)
    dtype = inst.x.dtype
    with np.errstate(all="ignore"):
        if inst.op == "sum":
            if dtype.is_float:
                out = V.round_float(dtype, np.sum(_as_float(dtype, x), axis=inst.dim,
                                                  keepdims=inst.keepdim))
            elif dtype.is_bool:
                out = np.any(x, axis=inst.dim, keepdims=inst.keepdim)
            else:
                out = V.wrap(dtype, np.sum(x, axis=inst.dim, keepdims=inst.keepdim, dtype=x.dtype))
        else:
            fn = {"max": np.fmax, "min": np.fmin}[inst.op]
            out = fn.reduce(x, axis=inst.dim, keepdims=inst.keepdim)
    state.set(inst.output, out)


@register(I.DotInst)
def dot(state: BlockState, inst: I.DotInst) -> None:
    """output = a @ b + c, with the products accumulated in c's dtype: for float c the products
    and sums are taken in float64 and rounded to c's type once (the GPU's float32 accumulation
    differs only by its summation order); for integer c exactly, then wrapped to c's width
    (int8 x int8 -> int32 is exact)."""
    a, b, c = state.get(inst.a), state.get(inst.b), state.get(inst.c)
    out_dtype = inst.c.dtype
    if out_dtype.is_float:
        acc = a.astype(np.float64) @ b.astype(np.float64) + c.astype(np.float64)
        out = V.round_float(out_dtype, acc)
    elif inst.a.dtype.is_float:
        out = V.saturate_int(out_dtype, a.astype(np.float64) @ b.astype(np.float64) + c)
    else:
        out = V.wrap(out_dtype, a.astype(np.int64) @ b.astype(np.int64) + c.astype(np.int64))
    state.set(inst.output, out)
