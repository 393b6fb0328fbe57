"""Statements of the IR: sequences, loops, branches, scalar variables. Instructions are statements too
(``tilus.ir.inst``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from tilus.ir.expr import Expr, Var


class Stmt:
    """Base class of statements."""

    __slots__ = ()

    def __str__(self) -> str:
        from tilus.ir.printer import format_stmt

        return format_stmt(self)


@dataclass(frozen=True, repr=False)
class SeqStmt(Stmt):
    stmts: tuple[Stmt, ...]


@dataclass(frozen=True, repr=False)
class ForStmt(Stmt):
    """``for var in range(start, stop, step)``; ``unroll`` is None, a factor, or True for full."""

    var: Var
    start: Expr
    stop: Expr
    step: Expr
    body: Stmt
    unroll: Union[int, bool, None] = None


@dataclass(frozen=True, repr=False)
class IfStmt(Stmt):
    cond: Expr
    then_body: Stmt
    else_body: Optional[Stmt] = None


@dataclass(frozen=True, repr=False)
class WhileStmt(Stmt):
    cond: Expr
    body: Stmt


@dataclass(frozen=True, repr=False)
class BreakStmt(Stmt):
    pass


@dataclass(frozen=True, repr=False)
class ContinueStmt(Stmt):
    pass


@dataclass(frozen=True, repr=False)
class LetStmt(Stmt):
    """Declares the scalar ``var`` with an initial value (visible to the end of the enclosing body)."""

    var: Var
    value: Expr


@dataclass(frozen=True, repr=False)
class AssignStmt(Stmt):
    """Overwrites a scalar declared earlier by a LetStmt."""

    var: Var
    value: Expr


def seq(stmts: list[Stmt] | tuple[Stmt, ...]) -> Stmt:
    """A SeqStmt, flattening nested sequences (a single statement stays itself)."""
    flat: list[Stmt] = []
    for s in stmts:
        if isinstance(s, SeqStmt):
            flat.extend(s.stmts)
        else:
            flat.append(s)
    return flat[0] if len(flat) == 1 else SeqStmt(tuple(flat))
