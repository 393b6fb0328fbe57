"""Scalar expressions of the Tilus IR: constants, variables, block indices and operations on them.

Expressions are immutable and compare structurally (``==`` is structural equality, never an IR
comparison: use ``eq``/``ne`` for those). Python operators build expressions, folding constants and
the trivial identities, so layout index maps written with ``+ - * // %`` work unchanged on ints,
numpy arrays and expressions alike. Integer ``//`` and ``%`` are floor division and floor modulo.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import numpy as np

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import IRError

ExprLike = Union["Expr", int, float, bool]

BINARY_OPS = ("add", "sub", "mul", "div", "floordiv", "mod", "cdiv", "min", "max",
              "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "bitand", "bitor", "bitxor",
              "shl", "shr")
UNARY_OPS = ("neg", "not", "bitnot")
COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")
# Infix spellings used by the printer (and parser) for the operators that have one.
INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
         "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
         "and": "&&", "or": "||", "bitand": "&", "bitor": "|", "bitxor": "^",
         "shl": "<<", "shr": ">>"}


class Expr:
    """Base class of scalar expressions; every subclass has a ``dtype``."""

    dtype: DataType
    __slots__ = ()

    def __add__(self, o): return binary("add", self, o)
    def __radd__(self, o): return binary("add", o, self)
    def __sub__(self, o): return binary("sub", self, o)
    def __rsub__(self, o): return binary("sub", o, self)
    def __mul__(self, o): return binary("mul", self, o)
    def __rmul__(self, o): return binary("mul", o, self)
    def __truediv__(self, o): return binary("div", self, o)
    def __rtruediv__(self, o): return binary("div", o, self)
    def __floordiv__(self, o): return binary("floordiv", self, o)
    def __rfloordiv__(self, o): return binary("floordiv", o, self)
    def __mod__(self, o): return binary("mod", self, o)
    def __rmod__(self, o): return binary("mod", o, self)
    def __lt__(self, o): return binary("lt", self, o)
    def __le__(self, o): return binary("le", self, o)
    def __gt__(self, o): return binary("gt", self, o)
    def __ge__(self, o): return binary("ge", self, o)
    def __and__(self, o): return binary("bitand", self, o)
    def __rand__(self, o): return binary("bitand", o, self)
    def __or__(self, o): return binary("bitor", self, o)
    def __ror__(self, o): return binary("bitor", o, self)
    def __xor__(self, o): return binary("bitxor", self, o)
    def __rxor__(self, o): return binary("bitxor", o, self)
    def __lshift__(self, o): return binary("shl", self, o)
    def __rlshift__(self, o): return binary("shl", o, self)
    def __rshift__(self, o): return binary("shr", self, o)
    def __rrshift__(self, o): return binary("shr", o, self)
    def __neg__(self): return unary("neg", self)
    def __invert__(self): return unary("bitnot", self)

    def __bool__(self):
        raise IRError(f"the truth value of the IR expression {self} is only known at run time; "
                      f"use IR control flow (if/while on it inside a kernel), not Python's")

    def __str__(self) -> str:
        from tilus.ir.printer import format_expr

        return format_expr(self)


@dataclass(frozen=True, slots=True, repr=False)
class Const(Expr):
    """A constant; structural equality treats every NaN as equal and tells 0.0 from -0.0, so that a
    constant equals what its text form reads back as."""

    value: Any
    dtype: DataType

    def _key(self) -> tuple:
        v = self.value
        if isinstance(v, float):
            return ("nan",) if math.isnan(v) else (v, math.copysign(1.0, v))
        return (v,)

    def __eq__(self, other: object) -> bool:
        return type(other) is Const and self.dtype == other.dtype and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.dtype, self._key()))

    def __repr__(self) -> str:
        return f"Const({self.value!r}, {self.dtype.name})"


@dataclass(frozen=True, slots=True, repr=False)
class Var(Expr):
    """A named scalar: a kernel parameter, a loop variable or a local scalar."""

    name: str
    dtype: Any   # a DataType; a pointer parameter's is a tilus.ir.types.PointerType

    def __repr__(self) -> str:
        return f"Var({self.name!r}, {self.dtype})"


@dataclass(frozen=True, slots=True, repr=False)
class BlockIdx(Expr):
    """The index of the running thread block along grid axis 0, 1 or 2 (``blockIdx.x/y/z``)."""

    axis: int
    dtype: DataType = dtypes.int32

    def __repr__(self) -> str:
        return f"BlockIdx({self.axis})"


@dataclass(frozen=True, slots=True, repr=False)
class BinaryOp(Expr):
    op: str
    a: Expr
    b: Expr
    dtype: DataType

    def __repr__(self) -> str:
        return f"BinaryOp({self.op!r}, {self.a!r}, {self.b!r})"


@dataclass(frozen=True, slots=True, repr=False)
class UnaryOp(Expr):
    op: str
    a: Expr
    dtype: DataType

    def __repr__(self) -> str:
        return f"UnaryOp({self.op!r}, {self.a!r})"


@dataclass(frozen=True, slots=True, repr=False)
class Cast(Expr):
    a: Expr
    dtype: DataType

    def __repr__(self) -> str:
        return f"Cast({self.a!r}, {self.dtype.name})"


@dataclass(frozen=True, slots=True, repr=False)
class Select(Expr):
    """``cond ? a : b``."""

    cond: Expr
    a: Expr
    b: Expr
    dtype: DataType

    def __repr__(self) -> str:
        return f"Select({self.cond!r}, {self.a!r}, {self.b!r})"


AXIS_NAMES = ("x", "y", "z")


def const(value: Any, dtype: DataType | str | None = None) -> Const:
    """A constant; the dtype defaults to bool, int32 or float32 after the Python type."""
    if dtype is None and type(value) is int and -(2**31) <= value < 2**31:
        return Const(value, dtypes.int32)   # the common case (index arithmetic), in range
    if dtype is None:
        if isinstance(value, (bool, np.bool_)):
            dtype = dtypes.bool
        elif isinstance(value, (int, np.integer)):
            dtype = dtypes.int32 if -(2**31) <= int(value) < 2**31 else dtypes.int64
        elif isinstance(value, (float, np.floating)):
            dtype = dtypes.float32
        else:
            raise IRError(f"cannot make an IR constant of {type(value).__name__}: {value!r}")
    dtype = dtypes.get(dtype)
    if dtype.is_bool:
        value = bool(value)
    elif dtype.is_float:
        value = float(value)
    else:
        value = int(value)
        if not fits(value, dtype):
            raise IRError(f"the constant {value} does not fit {dtype} "
                          f"({dtype.min_value}..{dtype.max_value})")
    return Const(value, dtype)


def fits(value: int, dtype: DataType) -> bool:
    """Whether the integer ``value`` is in the range of the integer type ``dtype``."""
    return dtype.min_value <= value <= dtype.max_value


def as_expr(x: ExprLike) -> Expr:
    """Turn a Python number into a Const; pass an Expr through."""
    if isinstance(x, Expr):
        return x
    if isinstance(x, (bool, int, float, np.bool_, np.integer, np.floating)):
        return const(x)
    raise IRError(f"expected a scalar expression or a Python number, got {type(x).__name__}: {x!r}")


def promote(a: DataType, b: DataType) -> DataType:
    """The type of ``a op b`` for arithmetic: floats win, then the wider integer, signed on a tie."""
    if a is b:
        return a
    if a.is_float or b.is_float:
        if a.is_float and b.is_float:
            return a if a.nbits >= b.nbits else b
        return a if a.is_float else b
    if a.is_bool:
        return b
    if b.is_bool:
        return a
    if a.nbits != b.nbits:
        return a if a.nbits > b.nbits else b
    return a if a.is_signed else b


_PY_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul,
    "floordiv": operator.floordiv, "mod": operator.mod,
    "min": min, "max": max, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge, "eq": operator.eq, "ne": operator.ne,
    "and": lambda x, y: bool(x) and bool(y), "or": lambda x, y: bool(x) or bool(y),
    "bitand": operator.and_, "bitor": operator.or_, "bitxor": operator.xor,
    "shl": operator.lshift, "shr": operator.rshift,
    "cdiv": lambda x, y: -((-x) // y),
}


def _result_dtype(op: str, a: Expr, b: Expr) -> DataType:
    if op in COMPARISONS or op in ("and", "or"):
        return dtypes.bool
    dtype = promote(a.dtype, b.dtype)
    if op == "div" and not dtype.is_float:
        raise IRError(f"'/' on integers {a} and {b}: use '//' for floor division or tilus.cdiv")
    if op in ("floordiv", "mod", "cdiv", "bitand", "bitor", "bitxor", "shl", "shr") \
            and dtype.is_float and op not in ("floordiv", "mod"):
        raise IRError(f"{op} needs integer operands, got {a.dtype} and {b.dtype}")
    return dtype


def _is_const(e: Expr, value: Any) -> bool:
    return isinstance(e, Const) and not e.dtype.is_bool and e.value == value


def _is_multiple_of(a: Expr, b: Expr) -> bool:
    return (isinstance(b, Const) and b.dtype.is_integer and b.value > 0 and isinstance(a, BinaryOp)
            and a.op == "mul" and any(isinstance(x, Const) and x.dtype.is_integer
                                      and x.value % b.value == 0 for x in (a.a, a.b)))


def _quotient(a: BinaryOp, c: int) -> Expr:
    """``a // c`` for a product ``a`` with a constant factor that ``c`` divides."""
    factor, other = (a.a, a.b) if isinstance(a.a, Const) and a.a.value % c == 0 else (a.b, a.a)
    assert isinstance(factor, Const)
    return binary("mul", other, factor.value // c)


def binary(op: str, a: ExprLike, b: ExprLike) -> Expr:
    """Build ``a op b``, folding constants and the identities x+0, x*1, x*0, x//1, x%1."""
    if op not in BINARY_OPS:
        raise IRError(f"unknown binary operator {op!r}")
    a, b = as_expr(a), as_expr(b)
    dtype = _result_dtype(op, a, b)
    if isinstance(a, Const) and isinstance(b, Const):
        if op == "div":
            return const(a.value / b.value, dtype)
        if op in ("floordiv", "mod", "cdiv") and b.value == 0:
            raise IRError(f"division by zero in constant expression {a.value} {op} 0")
        value = _PY_BINARY[op](a.value, b.value)
        if dtype.is_integer and not fits(value, dtype):
            raise IRError(f"the constant expression {a.value} {INFIX.get(op, op)} {b.value} = "
                          f"{value} overflows {dtype} ({dtype.min_value}..{dtype.max_value})")
        return const(value, dtype)
    if dtype.is_integer:
        if op == "add":
            if _is_const(a, 0):
                return _retype(b, dtype)
            if _is_const(b, 0):
                return _retype(a, dtype)
        elif op == "sub" and _is_const(b, 0):
            return _retype(a, dtype)
        elif op == "mul":
            if _is_const(a, 0) or _is_const(b, 0):
                return const(0, dtype)
            if _is_const(a, 1):
                return _retype(b, dtype)
            if _is_const(b, 1):
                return _retype(a, dtype)
        elif op in ("floordiv", "cdiv") and _is_const(b, 1):
            return _retype(a, dtype)
        elif op == "mod" and _is_const(b, 1):
            return const(0, dtype)
        elif op in ("floordiv", "cdiv", "mod") and _is_multiple_of(a, b):
            # (x * c) // c == x and (x * c) % c == 0 for every integer x when c > 0
            assert isinstance(a, BinaryOp) and isinstance(b, Const)
            return const(0, dtype) if op == "mod" else _retype(_quotient(a, b.value), dtype)
    return BinaryOp(op, a, b, dtype)


def _retype(e: Expr, dtype: DataType) -> Expr:
    return e if e.dtype is dtype else cast(e, dtype)


def unary(op: str, a: ExprLike) -> Expr:
    if op not in UNARY_OPS:
        raise IRError(f"unknown unary operator {op!r}")
    a = as_expr(a)
    dtype = dtypes.bool if op == "not" else a.dtype
    if isinstance(a, Const):
        fns: dict[str, Callable[[Any], Any]] = {"neg": operator.neg, "not": operator.not_,
                                                "bitnot": operator.invert}
        value = fns[op](a.value)
        if op == "bitnot" and dtype.is_integer and not dtype.is_signed:
            value &= (1 << dtype.nbits) - 1
        return const(value, dtype)
    return UnaryOp(op, a, dtype)


def cast(a: ExprLike, dtype: DataType | str) -> Expr:
    dtype = dtypes.get(dtype)
    a = as_expr(a)
    if a.dtype is dtype:
        return a
    if isinstance(a, Const) and not dtype.is_lowbit:
        value = a.value
        if dtype.is_integer and isinstance(value, float):
            if not math.isfinite(value):
                return Cast(a, dtype)
            value = int(value)
        if not dtype.is_integer or fits(value, dtype):
            return const(value, dtype)
    return Cast(a, dtype)


def select(cond: ExprLike, a: ExprLike, b: ExprLike) -> Expr:
    cond, a, b = as_expr(cond), as_expr(a), as_expr(b)
    dtype = promote(a.dtype, b.dtype)
    if isinstance(cond, Const):
        return _retype(a if cond.value else b, dtype)
    return Select(cond, _retype(a, dtype), _retype(b, dtype), dtype)


def cdiv(a: ExprLike, b: ExprLike) -> ExprLike:
    """Ceiling division ``(a + b - 1) // b`` for non-negative integers; plain ints stay ints."""
    if not isinstance(a, Expr) and not isinstance(b, Expr):
        return -((-int(a)) // int(b))
    return binary("cdiv", a, b)


def minimum(a: ExprLike, b: ExprLike) -> ExprLike:
    if not isinstance(a, Expr) and not isinstance(b, Expr):
        return min(a, b)
    return binary("min", a, b)


def maximum(a: ExprLike, b: ExprLike) -> ExprLike:
    if not isinstance(a, Expr) and not isinstance(b, Expr):
        return max(a, b)
    return binary("max", a, b)


def eq(a: ExprLike, b: ExprLike) -> Expr:
    return binary("eq", a, b)


def ne(a: ExprLike, b: ExprLike) -> Expr:
    return binary("ne", a, b)


def logical_and(a: ExprLike, b: ExprLike) -> Expr:
    return binary("and", a, b)


def logical_or(a: ExprLike, b: ExprLike) -> Expr:
    return binary("or", a, b)


def logical_not(a: ExprLike) -> Expr:
    return unary("not", a)


def free_vars(e: Expr) -> set[Var]:
    """The variables an expression reads."""
    out: set[Var] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Var):
            out.add(x)
        elif isinstance(x, BinaryOp):
            stack += [x.a, x.b]
        elif isinstance(x, (UnaryOp, Cast)):
            stack.append(x.a)
        elif isinstance(x, Select):
            stack += [x.cond, x.a, x.b]
    return out


def substitute(e: Expr, mapping: Mapping[Expr, ExprLike]) -> Expr:
    """Replace sub-expressions (typically Vars) by others, re-folding constants on the way."""
    if e in mapping:
        return as_expr(mapping[e])
    if isinstance(e, BinaryOp):
        return binary(e.op, substitute(e.a, mapping), substitute(e.b, mapping))
    if isinstance(e, UnaryOp):
        return unary(e.op, substitute(e.a, mapping))
    if isinstance(e, Cast):
        return cast(substitute(e.a, mapping), e.dtype)
    if isinstance(e, Select):
        return select(substitute(e.cond, mapping), substitute(e.a, mapping), substitute(e.b, mapping))
    return e


def _np_floordiv(x, y):
    return np.floor_divide(x, y) if isinstance(x, np.ndarray) or isinstance(y, np.ndarray) else x // y


_EVAL_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    **_PY_BINARY,
    "div": operator.truediv,
    "min": np.minimum, "max": np.maximum,
    "and": np.logical_and, "or": np.logical_or,
    "cdiv": lambda x, y: -_np_floordiv(-x, y),
}


def evaluate(e: ExprLike, env: Mapping[Expr, Any] | None = None) -> Any:
    """Value of an expression with ``env`` giving Vars (and BlockIdx) their values.

    Values may be Python numbers or numpy arrays (then the result is computed elementwise), which
    is how the interpreter evaluates an index expression for a whole tile at once.
    """
    env = env or {}
    if not isinstance(e, Expr):
        return e
    if isinstance(e, Const):
        return e.value
    if isinstance(e, (Var, BlockIdx)):
        if e not in env:
            raise IRError(f"no value for {e} while evaluating an expression")
        return env[e]
    if isinstance(e, BinaryOp):
        a, b = evaluate(e.a, env), evaluate(e.b, env)
        if e.op == "div" and e.dtype.is_float:
            return np.true_divide(a, b)
        return _EVAL_BINARY[e.op](a, b)
    if isinstance(e, UnaryOp):
        a = evaluate(e.a, env)
        return {"neg": np.negative, "not": np.logical_not, "bitnot": np.invert}[e.op](a)
    if isinstance(e, Cast):
        a = evaluate(e.a, env)
        if e.dtype.is_integer:
            return np.trunc(a).astype(np.int64) if isinstance(a, np.ndarray) else int(a)
        if e.dtype.is_bool:
            return np.asarray(a).astype(bool) if isinstance(a, np.ndarray) else bool(a)
        return np.asarray(a, dtype=np.float64) if isinstance(a, np.ndarray) else float(a)
    if isinstance(e, Select):
        c = evaluate(e.cond, env)
        return np.where(c, evaluate(e.a, env), evaluate(e.b, env))
    raise IRError(f"cannot evaluate {type(e).__name__}")
