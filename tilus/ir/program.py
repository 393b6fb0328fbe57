"""A Program: one kernel of the Tilus VM (parameters, grid, warps per block, body)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tilus.ir.expr import Expr, Var
from tilus.ir.stmt import Stmt


@dataclass(frozen=True, repr=False)
class Program:
    """``params`` are run-time scalars (Var with a DataType) and pointers (Var with a PointerType);
    ``blocks`` gives the grid (1 to 3 expressions of the parameters); every block runs ``body``
    with ``warps * 32`` threads. ``consts`` records the compile-time parameters the kernel was
    instantiated with (for names and caching; their values are already folded into the body)."""

    name: str
    params: tuple[Var, ...]
    blocks: tuple[Expr, ...]
    warps: int
    body: Stmt
    consts: tuple[tuple[str, Any], ...] = field(default=())
    # tensor name -> "file:line: source" of the front-end statement that defined it (for errors
    # found after building, e.g. by layout inference); not part of the text form or of equality
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def source_of(self, tensor_name: str) -> str | None:
        """Where the front end defined a tensor, when it said so."""
        return dict(self.sources).get(tensor_name)

    @property
    def num_threads(self) -> int:
        return self.warps * 32

    def __str__(self) -> str:
        from tilus.ir.printer import format_program

        return format_program(self)


def as_program(kernel_or_program: Any, **consts) -> Program:
    """The Program of a tilus.Script (anything with ``program(**consts)``) or a Program itself;
    CompilationError for anything else."""
    from tilus.errors import CompilationError

    if isinstance(kernel_or_program, Program):
        if consts:
            raise CompilationError("compile-time constants are given to a Script, not a Program")
        return kernel_or_program
    program = getattr(kernel_or_program, "program", None)
    if callable(program):
        return program(**consts)
    raise CompilationError(f"tilus.build needs a tilus.Script or a tilus.ir.Program, got "
                           f"{type(kernel_or_program).__name__}")
