"""Generic traversal and rewriting of IR statements, so that passes only say what they change.

Both work from the dataclass fields of statements and instructions: a new node kind needs no
change here.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Iterator

from tilus.ir.expr import Expr
from tilus.ir.inst import Instruction
from tilus.ir.program import Program
from tilus.ir.stmt import ForStmt, IfStmt, SeqStmt, Stmt, WhileStmt, seq
from tilus.ir.types import Tensor


def child_stmts(s: Stmt) -> list[Stmt]:
    """The statements directly nested in ``s`` (bodies of loops and branches, items of a sequence)."""
    if isinstance(s, SeqStmt):
        return list(s.stmts)
    if isinstance(s, (ForStmt, WhileStmt)):
        return [s.body]
    if isinstance(s, IfStmt):
        return [s.then_body] + ([s.else_body] if s.else_body is not None else [])
    return []


def walk(s: Stmt | Program) -> Iterator[Stmt]:
    """Every statement in ``s``, in program (pre-)order."""
    stack = [s.body if isinstance(s, Program) else s]
    while stack:
        x = stack.pop()
        yield x
        stack.extend(reversed(child_stmts(x)))


def instructions(s: Stmt | Program) -> Iterator[Instruction]:
    return (x for x in walk(s) if isinstance(x, Instruction))


class IRRewriter:
    """Rebuilds a statement tree bottom-up. Override ``visit_<ClassName>`` for a node kind,
    ``rewrite_tensor`` / ``rewrite_expr`` for leaves; unchanged subtrees are returned as they are."""

    def __call__(self, node: Stmt | Program) -> Any:
        if isinstance(node, Program):
            return self.visit_program(node)
        return self.visit(node)

    def visit_program(self, p: Program) -> Program:
        body = self.visit(p.body)
        blocks = tuple(self.rewrite_expr(b) for b in p.blocks)
        return p if body is p.body and blocks == p.blocks else replace(p, body=body, blocks=blocks)

    def visit(self, s: Stmt) -> Stmt:
        method = getattr(self, "visit_" + type(s).__name__, None)
        return method(s) if method is not None else self.generic_visit(s)

    def visit_SeqStmt(self, s: SeqStmt) -> Stmt:
        items = [self.visit(x) for x in s.stmts]
        if all(a is b for a, b in zip(items, s.stmts)):
            return s
        return seq([x for x in items if x is not None])

    def generic_visit(self, s: Stmt) -> Stmt:
        node: Any = s   # every statement class is a dataclass
        changes = {}
        for f in fields(node):
            old = getattr(s, f.name)
            new = self.rewrite_value(old)
            if new is not old:
                changes[f.name] = new
        return replace(node, **changes) if changes else s

    def rewrite_value(self, value: Any) -> Any:
        if isinstance(value, Stmt):
            return self.visit(value)
        if isinstance(value, Tensor):
            return self.rewrite_tensor(value)
        if isinstance(value, Expr):
            return self.rewrite_expr(value)
        if isinstance(value, tuple):
            items = tuple(self.rewrite_value(v) for v in value)
            return value if all(a is b for a, b in zip(items, value)) else items
        return value

    def rewrite_tensor(self, t: Tensor) -> Tensor:
        return t

    def rewrite_expr(self, e: Expr) -> Expr:
        return e
