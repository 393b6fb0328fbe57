"""Checks that a Program is well formed, beyond what each instruction's ``check`` sees alone:
scopes of tensors and scalars, unique names, control flow, the grid and the parameters.

``verify(program)`` raises ``VerificationError`` naming the offending statement by its text line;
the error's ``node`` attribute is that statement (or the Program, a parameter, "blocks", "warps"),
which the parser uses to point at the line it came from.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from tilus.dtypes import DataType
from tilus.errors import IRError, VerificationError
from tilus.ir.expr import BinaryOp, BlockIdx, Cast, Expr, Select, UnaryOp, Var
from tilus.ir.inst import AssignInst, GlobalViewInst, Instruction
from tilus.ir.printer import IDENTIFIER, RESERVED, format_expr, format_stmt_head
from tilus.ir.program import Program
from tilus.ir.scopes import NameScopes
from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt, SeqStmt,
                           Stmt, WhileStmt)
from tilus.ir.types import PointerType, Tensor

__all__ = ["verify"]

MAX_WARPS = 32


def verify(program: Program) -> None:
    """Raise VerificationError at the first problem found in ``program``."""
    _Verifier(program).run()


def sub_exprs(e: Expr) -> Iterator[Expr]:
    stack = [e]
    while stack:
        x = stack.pop()
        yield x
        if isinstance(x, BinaryOp):
            stack += [x.a, x.b]
        elif isinstance(x, (UnaryOp, Cast)):
            stack.append(x.a)
        elif isinstance(x, Select):
            stack += [x.cond, x.a, x.b]


def _values(value: Any) -> Iterator[Any]:
    """Tensors and expressions inside a field value (looking into tuples)."""
    if isinstance(value, (tuple, list)):
        for v in value:
            yield from _values(v)
    else:
        yield value


class _Verifier(NameScopes):
    def __init__(self, program: Program):
        super().__init__()
        self.program = program
        self.lets: set[Var] = set()
        self.scalar_names: set[str] = set()
        self.tensor_names: set[str] = set()
        self.loops = 0

    # -- errors
    def fail(self, node: Any, message: str) -> None:
        if isinstance(node, Stmt):
            defined = {name for scope in self.tensors for name in scope}
            message = f"{message}\n    in: {format_stmt_head(node, defined)}"
        elif isinstance(node, str):
            message = f"{message}\n    in: the kernel's {node}"
        err = VerificationError(message)
        err.node = node  # type: ignore[attr-defined]
        raise err

    # -- names and scopes
    def declare_scalar(self, var: Any, node: Any, what: str) -> None:
        if not isinstance(var, Var):
            self.fail(node, f"a {what} must be a Var, got {var!r}")
        if not IDENTIFIER.match(var.name) or var.name in RESERVED:
            self.fail(node, f"{what} name {var.name!r} is not an identifier or is a reserved word "
                            f"of the text form")
        if var.name in self.scalar_names:
            self.fail(node, f"{what} {var.name!r} defined twice (scalar names are unique in a program)")
        self.scalar_names.add(var.name)
        self.scalars[-1][var.name] = var


    def check_expr(self, e: Any, node: Any, what: str, pointer_ok: bool = False) -> None:
        if not isinstance(e, Expr):
            self.fail(node, f"{what} must be an expression, got {e!r}")
        for x in sub_exprs(e):
            if not isinstance(x, Var):
                continue
            if isinstance(x.dtype, PointerType) and not (pointer_ok and x is e):
                self.fail(node, f"the pointer parameter {x.name} is used in {what} {format_expr(e)}; "
                                f"a pointer can only be the ptr of a global_view")
            seen = self.find_scalar(x.name)
            if seen is None:
                where = "outside the scope that defines it" if x.name in self.scalar_names \
                    else "but never defined (not a parameter, loop variable or let)"
                self.fail(node, f"variable {x.name} used in {what} {format_expr(e)} {where}")
            if seen != x:
                self.fail(node, f"variable {x.name} is used as {x.dtype} but defined as {seen.dtype}")

    def check_tensor_use(self, t: Tensor, node: Any, what: str) -> None:
        seen = self.find_tensor(t.name)
        if seen is None:
            where = "outside the loop or branch that defines it" if t.name in self.tensor_names \
                else "before its definition"
            self.fail(node, f"{what} %{t.name} is used {where}")
        if seen != t:
            self.fail(node, f"{what} %{t.name} has type {t.type} here but was defined as {seen.type}")

    # -- the program
    def run(self) -> None:
        p = self.program
        self.push()
        if not IDENTIFIER.match(p.name) or p.name in RESERVED:
            self.fail(p, f"the kernel name {p.name!r} is not an identifier or is a reserved word")
        for v in p.params:
            self.declare_scalar(v, v, "parameter")
            if not isinstance(v.dtype, (DataType, PointerType)):
                self.fail(v, f"parameter {v.name} has type {v.dtype!r}; expected a data type or ~dtype")
        if not isinstance(p.blocks, tuple) or not 1 <= len(p.blocks) <= 3:
            self.fail("blocks", f"blocks must be 1 to 3 expressions, got {len(p.blocks)}")
        params = {v.name: v for v in p.params if isinstance(v.dtype, DataType)}
        for b in p.blocks:
            if not isinstance(b, Expr) or not isinstance(b.dtype, DataType) or not b.dtype.is_integer:
                self.fail("blocks", f"the grid size {b} must be an integer expression")
            for x in sub_exprs(b):
                if isinstance(x, BlockIdx):
                    self.fail("blocks", f"the grid size {format_expr(b)} cannot use blockIdx")
                if isinstance(x, Var) and params.get(x.name) != x:
                    self.fail("blocks", f"the grid size {format_expr(b)} uses {x.name}, which is not "
                                        f"a scalar parameter")
        w = p.warps
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WARPS:
            self.fail("warps", f"warps must be an integer from 1 to {MAX_WARPS}, got {w!r}")
        self.push()
        self.stmt(p.body)
        self.pop()
        self.pop()

    def body(self, s: Stmt) -> None:
        self.push()
        try:
            self.stmt(s)
        finally:
            self.pop()

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, SeqStmt):
            for x in s.stmts:
                self.stmt(x)
        elif isinstance(s, Instruction):
            self.instruction(s)
        elif isinstance(s, ForStmt):
            for what, e in (("the loop start", s.start), ("the loop stop", s.stop),
                            ("the loop step", s.step)):
                self.check_expr(e, s, what)
                if not e.dtype.is_integer:
                    self.fail(s, f"{what} {format_expr(e)} must be an integer, it is {e.dtype}")
            if not isinstance(s.var, Var) or not isinstance(s.var.dtype, DataType) \
                    or not s.var.dtype.is_integer:
                self.fail(s, f"the loop variable {s.var} must be an integer")
            self.push()
            self.declare_scalar(s.var, s, "loop variable")
            self.loops += 1
            self.body(s.body)
            self.loops -= 1
            self.pop()
        elif isinstance(s, (IfStmt, WhileStmt)):
            self.check_expr(s.cond, s, "the condition")
            if not s.cond.dtype.is_bool:
                self.fail(s, f"the condition {format_expr(s.cond)} must be bool, it is {s.cond.dtype}")
            if isinstance(s, IfStmt):
                self.body(s.then_body)
                if s.else_body is not None:
                    self.body(s.else_body)
            else:
                self.loops += 1
                self.body(s.body)
                self.loops -= 1
        elif isinstance(s, (BreakStmt, ContinueStmt)):
            if self.loops == 0:
                self.fail(s, f"{format_stmt_head(s)} outside a loop")
        elif isinstance(s, LetStmt):
            self.check_expr(s.value, s, "the value")
            self.declare_scalar(s.var, s, "variable")
            if s.value.dtype is not s.var.dtype:
                self.fail(s, f"{s.var.name} is {s.var.dtype} but its value is {s.value.dtype}")
            self.lets.add(s.var)
        elif isinstance(s, AssignStmt):
            self.check_expr(s.value, s, "the value")
            seen = self.find_scalar(s.var.name)
            if seen is None or seen != s.var or s.var not in self.lets:
                kind = "undefined" if seen is None else "not declared by let (parameters and " \
                                                         "loop variables are read-only)"
                self.fail(s, f"assignment to {s.var.name}, which is {kind}")
            if s.value.dtype is not s.var.dtype:
                self.fail(s, f"{s.var.name} is {s.var.dtype} but the value is {s.value.dtype}")
        else:
            self.fail(s, f"unknown statement {type(s).__name__}")

    def instruction(self, inst: Instruction) -> None:
        try:
            inst.check()
        except IRError as e:
            self.fail(inst, str(e))
        except Exception as e:  # a malformed field that check() trips over
            self.fail(inst, f"{inst.display_name()}: {type(e).__name__}: {e}")
        out = getattr(inst, "output", None) if inst.HAS_OUTPUT else None
        for f in dataclasses.fields(inst):
            if f.name == "output":
                continue
            pointer_ok = isinstance(inst, GlobalViewInst) and f.name == "ptr"
            for v in _values(getattr(inst, f.name)):
                if isinstance(v, Tensor):
                    self.check_tensor_use(v, inst, "tensor")
                elif isinstance(v, Expr):
                    self.check_expr(v, inst, f.name, pointer_ok)
        if isinstance(inst, GlobalViewInst):
            ptr = inst.ptr
            if not isinstance(ptr, Var) or not isinstance(ptr.dtype, PointerType) \
                    or ptr not in self.program.params:
                self.fail(inst, f"global_view needs a pointer parameter as ptr, got {ptr}")
            if ptr.dtype.dtype is not out.dtype:
                self.fail(inst, f"the pointer {ptr.name} is {ptr.dtype} but the view is "
                                f"{out.dtype}; they must agree (a sub-byte view takes ~{out.dtype})")
        if out is None:
            return
        seen = self.find_tensor(out.name)
        if seen is not None:
            if seen != out:
                self.fail(inst, f"tensor %{out.name} defined twice (as {seen.type} and {out.type})")
            return
        if out.name in self.tensor_names:
            self.fail(inst, f"tensor %{out.name} defined twice (names are unique in a program, and "
                            f"the first is out of scope here)")
        if isinstance(inst, AssignInst):
            self.fail(inst, f"assign writes into an existing tensor, but %{out.name} is not defined")
        if not IDENTIFIER.match(out.name):
            self.fail(inst, f"tensor name {out.name!r} is not an identifier")
        for s in out.shape:
            if isinstance(s, Expr):
                self.check_expr(s, inst, "the shape")
        self.tensor_names.add(out.name)
        self.tensors[-1][out.name] = out
