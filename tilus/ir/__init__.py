"""The Tilus IR: scalar expressions, tensors, instructions, statements and programs."""
from tilus.ir.expr import (  # noqa: F401
    BinaryOp, BlockIdx, Cast, Const, Expr, Select, UnaryOp, Var, as_expr, cast, cdiv, const,
    evaluate, maximum, minimum, select,
)
from tilus.ir.types import PointerType, Tensor, TensorType  # noqa: F401
from tilus.ir.program import Program  # noqa: F401
from tilus.ir.builder import ProgramBuilder  # noqa: F401
from tilus.ir.parser import parse  # noqa: F401
from tilus.ir.verifier import verify  # noqa: F401
