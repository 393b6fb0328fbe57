"""The Tilus IR: scalar expressions, tensors, instructions, statements and programs."""
from tilus.ir.expr import (  # noqa: F401
    BinaryOp, BlockIdx, Cast, Const, Expr, Select, UnaryOp, Var, as_expr, cast, cdiv, const,
    evaluate, maximum, minimum, select,
)
