"""The Tilus IR: scalar expressions, tensors, instructions, statements and programs."""
from tilus.ir.expr import (  # noqa: F401
    BinaryOp, BlockIdx, Cast, Const, Expr, Select, UnaryOp, Var, as_expr, cast, cdiv, const,
    evaluate, maximum, minimum, select,
)
from tilus.ir.types import PointerType, Tensor, TensorType  # noqa: F401
from tilus.ir.program import Program  # noqa: F401
from tilus.ir.builder import ProgramBuilder  # noqa: F401
from tilus.ir.verifier import verify  # noqa: F401


def parse(text: str, **options) -> Program:
    """Read the IR text form back into a Program (see ``tilus.ir.parser.parse``).

    The parser (and lark) load on first use, so that importing tilus, as the runtime does on a
    GPU machine without lark, needs no parser."""
    from tilus.ir.parser import parse as _parse

    return _parse(text, **options)
