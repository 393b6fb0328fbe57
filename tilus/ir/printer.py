"""The IR's text form, printing side. ``tilus.ir.parser`` reads exactly what this writes."""
from __future__ import annotations

import math

from tilus import dtypes
from tilus.ir.expr import (AXIS_NAMES, INFIX, BinaryOp, BlockIdx, Cast, Const, Expr, Select,
                           UnaryOp, Var)

# Binding strength of infix operators (higher binds tighter), C-like.
PRECEDENCE = {"or": 1, "and": 2, "bitor": 3, "bitxor": 4, "bitand": 5, "eq": 6, "ne": 6,
              "lt": 7, "le": 7, "gt": 7, "ge": 7, "shl": 8, "shr": 8, "add": 9, "sub": 9,
              "mul": 10, "div": 10, "floordiv": 10, "mod": 10}
UNARY_PRECEDENCE = 11
UNARY_SYMBOL = {"neg": "-", "not": "!", "bitnot": "~"}
FUNCTION_OPS = ("min", "max", "cdiv")


def format_float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(float(value))
    return text if any(c in text for c in ".en") else text + ".0"


def format_const(c: Const) -> str:
    if c.dtype.is_bool:
        return "true" if c.value else "false"
    if c.dtype is dtypes.int32:
        return str(c.value)
    if c.dtype is dtypes.float32:
        return format_float(c.value)
    return f"{c.dtype.name}({format_float(c.value) if c.dtype.is_float else c.value})"


def _prec(e: Expr) -> int:
    if isinstance(e, BinaryOp) and e.op in PRECEDENCE:
        return PRECEDENCE[e.op]
    if isinstance(e, UnaryOp) or (isinstance(e, Const) and not e.dtype.is_bool
                                  and e.dtype in (dtypes.int32, dtypes.float32) and e.value < 0):
        return UNARY_PRECEDENCE
    return 100


def format_expr(e: Expr) -> str:
    """One expression as text, with the fewest parentheses that keep its tree."""
    if isinstance(e, Const):
        return format_const(e)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, BlockIdx):
        return f"blockIdx.{AXIS_NAMES[e.axis]}"
    if isinstance(e, BinaryOp):
        if e.op in FUNCTION_OPS:
            return f"{e.op}({format_expr(e.a)}, {format_expr(e.b)})"
        p = PRECEDENCE[e.op]
        left = format_expr(e.a)
        right = format_expr(e.b)
        if _prec(e.a) < p:
            left = f"({left})"
        if _prec(e.b) <= p:
            right = f"({right})"
        return f"{left} {INFIX[e.op]} {right}"
    if isinstance(e, UnaryOp):
        inner = format_expr(e.a)
        if _prec(e.a) < UNARY_PRECEDENCE or (isinstance(e.a, UnaryOp)) or inner.startswith("-"):
            inner = f"({inner})"
        return f"{UNARY_SYMBOL[e.op]}{inner}"
    if isinstance(e, Cast):
        return f"cast({format_expr(e.a)}, {e.dtype.name})"
    if isinstance(e, Select):
        return f"select({format_expr(e.cond)}, {format_expr(e.a)}, {format_expr(e.b)})"
    raise TypeError(f"cannot print {type(e).__name__}")
