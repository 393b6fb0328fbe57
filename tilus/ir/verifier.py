"""Checks that a Program is well formed, beyond what each instruction's ``check`` sees alone:
scopes of tensors and scalars, unique names, control flow, the grid and the parameters, the
lifetimes of shared tensors, what a thread block's registers can hold, constants that fit their
types, divisions by a divisor that is always zero, and how deep the program nests.

It is the one judge of what is a valid program: the DSL runs it when a kernel is defined, the
parser after reading, the pass manager before and after each pass; the interpreter and the
backend accept every program it accepts.

``verify(program)`` raises ``VerificationError`` naming the offending statement by its text line;
the error's ``node`` attribute is that statement (or the Program, a parameter, "blocks", "warps"),
which the parser uses to point at the line it came from.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, NoReturn, Optional

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import IRError, VerificationError
from tilus.ir.expr import BinaryOp, BlockIdx, Cast, Const, Expr, Select, UnaryOp, Var, fits
from tilus.ir.inst import (AllocateSharedInst, AssignInst, BinaryInst, FreeSharedInst,
                           GlobalViewInst, Instruction, SliceSharedInst)
from tilus.ir.printer import IDENTIFIER, RESERVED, format_expr, format_stmt_head
from tilus.ir.program import Program
from tilus.ir.scopes import NameScopes
from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt, SeqStmt,
                           Stmt, WhileStmt)
from tilus.ir.types import GLOBAL, RAW_POINTEE, REGISTER, SHARED, PointerType, Tensor

__all__ = ["verify", "MAX_DEPTH", "MAX_REGISTERS", "GRID_LIMITS", "RAW_POINTEE"]

MAX_WARPS = 32
# Nesting levels a program may have along any path: loop and branch bodies plus expression
# operators inside them. The parser, the DSL (through this verifier) and every later stage agree
# on it; it keeps printing, comparing, hashing and lowering programs far from Python's recursion
# limit.
MAX_DEPTH = 256
# 32-bit registers one thread may hold (the CUDA limit); a register tile must fit in them.
MAX_REGISTERS = 255
# The largest grid CUDA launches, along x, y and z.
GRID_LIMITS = (2**31 - 1, 65535, 65535)
# Instruction fields that are element indices, sizes or strides: int32 on the GPU.
INDEX_FIELDS = ("offsets", "strides", "index")


def verify(program: Program) -> None:
    """Raise VerificationError at the first problem found in ``program``."""
    _Verifier(program).run()


def _children(x: Expr) -> tuple[Expr, ...]:
    if isinstance(x, BinaryOp):
        return x.a, x.b
    if isinstance(x, (UnaryOp, Cast)):
        return (x.a,)
    if isinstance(x, Select):
        return x.cond, x.a, x.b
    return ()


def sub_exprs(e: Expr) -> Iterator[Expr]:
    """Every sub-expression of ``e`` (``e`` included), without recursion."""
    stack = [e]
    while stack:
        x = stack.pop()
        yield x
        stack += _children(x)


def expr_depth(e: Expr) -> int:
    """Levels of ``e``: 1 for a leaf, one more per operator above it (no recursion)."""
    deepest, stack = 0, [(e, 1)]
    while stack:
        x, depth = stack.pop()
        deepest = max(deepest, depth)
        stack += [(c, depth + 1) for c in _children(x)]
    return deepest


def _linear(e: Expr) -> dict[Any, int]:
    """An integer expression of depth <= MAX_DEPTH as {term: coefficient} (the constant under
    None, zero coefficients dropped), through + - * by constants and negation; any other
    sub-expression is a term of its own."""
    if isinstance(e, Const):
        return {None: e.value} if e.value else {}
    if isinstance(e, Cast) and e.a.dtype.is_integer:
        return _linear(e.a)
    if isinstance(e, UnaryOp) and e.op == "neg":
        return {k: -v for k, v in _linear(e.a).items()}
    if isinstance(e, BinaryOp) and e.op in ("add", "sub", "mul"):
        a, b = _linear(e.a), _linear(e.b)
        if e.op == "mul":
            if set(a) <= {None}:
                a, b = b, a
            if not set(b) <= {None}:
                return {e: 1}
            factor = b.get(None, 0)
            return {k: v * factor for k, v in a.items() if v * factor}
        sign = 1 if e.op == "add" else -1
        out = dict(a)
        for k, v in b.items():
            out[k] = out.get(k, 0) + sign * v
        return {k: v for k, v in out.items() if v}
    return {e: 1}


def is_static_zero(e: Expr) -> bool:
    """Whether the integer expression ``e`` is 0 whatever its variables hold (``n - n``)."""
    return e.dtype.is_integer and not _linear(e)


def shift_limit(dtype: DataType) -> int:
    """Shift amounts of ``dtype`` values are below this: the width they are computed in."""
    return 64 if dtype.nbits == 64 else 32


def register_bits(dtype: DataType) -> int:
    """Bits one element of ``dtype`` takes in registers: low-bit elements take a byte each."""
    return max(8, dtype.nbits)


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
        self.depth = 0  # loop and branch bodies around the statement being checked
        self.shared_roots: dict[str, str] = {}  # shared tensor -> the shared_tensor it lives in
        self.shared_levels: dict[str, int] = {}  # shared_tensor -> scope level it was made at
        self.freed: dict[str, Stmt] = {}  # shared_tensor -> the free_shared that ended it

    # -- errors
    def fail(self, node: Any, message: str, layout_of: Optional[str] = None) -> NoReturn:
        """Raise the error; ``layout_of`` names the tensor whose layout is at fault (front ends
        point at the line that gave it that layout)."""
        if isinstance(node, Stmt):
            defined = {name for scope in self.tensors for name in scope}
            message = f"{message}\n    in: {format_stmt_head(node, defined)}"
        elif isinstance(node, str):
            message = f"{message}\n    in: the kernel's {node}"
        err = VerificationError(message)
        err.node = node  # type: ignore[attr-defined]
        err.layout_of = layout_of  # type: ignore[attr-defined]
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

    def check_values(self, e: Expr, node: Any, what: str) -> None:
        """Depth, constants that fit their types, and no division by a divisor always 0."""
        depth = self.depth + expr_depth(e)
        if depth > MAX_DEPTH:
            self.fail(node, f"{what} nests {depth} levels deep (with the loops and branches "
                            f"around it); programs nest at most {MAX_DEPTH} levels: split the "
                            f"expression with let variables")
        for x in sub_exprs(e):
            if isinstance(x, Const) and x.dtype.is_integer and not fits(x.value, x.dtype):
                self.fail(node, f"the constant {x.value} in {what} does not fit {x.dtype} "
                                f"({x.dtype.min_value}..{x.dtype.max_value})")
            value = x.a if isinstance(x, Cast) else x
            if isinstance(value, Const) and isinstance(value.value, float) \
                    and math.isnan(value.value) and x.dtype.is_float and x.dtype.finite_only:
                self.fail(node, f"NaN in {what} has no code in {x.dtype}, whose every code is a "
                                f"finite number")
            if isinstance(x, BinaryOp) and x.op in ("floordiv", "mod", "cdiv") \
                    and is_static_zero(x.b):
                self.fail(node, f"division by zero in {what}: the divisor {format_expr(x.b)} of "
                                f"{format_expr(x)} is always 0")
            if isinstance(x, BinaryOp) and x.op in ("shl", "shr"):
                self.check_shift(x.b, x.dtype, node, f"{what} {format_expr(x)}")

    def check_shift(self, amount: Expr, dtype: DataType, node: Any, what: str) -> None:
        """A constant shift amount is in 0..width-1 of the type the shift is computed in."""
        limit = shift_limit(dtype)
        if isinstance(amount, Const) and not 0 <= amount.value < limit:
            self.fail(node, f"the shift amount {amount.value} in {what} is outside 0..{limit - 1}")

    def check_index(self, e: Expr, node: Any, what: str, dtype: DataType = dtypes.int32) -> None:
        """Constants in an expression computed in ``dtype`` on the GPU (indices, loop bounds)."""
        for x in sub_exprs(e):
            if isinstance(x, Const) and x.dtype.is_integer and not fits(x.value, dtype):
                self.fail(node, f"the constant {x.value} in {what} {format_expr(e)} does not fit "
                                f"{dtype}, which {what} is computed in on the GPU")

    def check_expr(self, e: Any, node: Any, what: str, pointer_ok: bool = False) -> None:
        if not isinstance(e, Expr):
            self.fail(node, f"{what} must be an expression, got {e!r}")
        self.check_values(e, node, what)
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
        root = self.shared_roots.get(t.name)
        if root in self.freed:
            freed = format_stmt_head(self.freed[root])
            if isinstance(node, FreeSharedInst):
                self.fail(node, f"%{t.name} is freed twice (first by {freed})")
            part = "" if root == t.name else f", which lives in %{root},"
            self.fail(node, f"%{t.name}{part} is used after {freed}; its memory may already hold "
                            f"another tensor")

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
            self.check_values(b, "blocks", "the grid size")
        for axis, b in enumerate(p.blocks):
            if isinstance(b, Const) and not 1 <= b.value <= GRID_LIMITS[axis]:
                self.fail("blocks", f"the grid has {b.value} blocks along {'xyz'[axis]}; CUDA "
                                    f"launches 1 to {GRID_LIMITS[axis]} along {'xyz'[axis]}")
        w = p.warps
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WARPS:
            self.fail("warps", f"warps must be an integer from 1 to {MAX_WARPS}, got {w!r}")
        self.push()
        self.stmt(p.body)
        self.pop()
        self.pop()

    def body(self, s: Stmt) -> None:
        """A loop or branch body: one level deeper (a body is only reached through a loop's bounds
        or a condition, whose depth check bounds the nesting of bodies too)."""
        self.push()
        self.depth += 1
        try:
            self.stmt(s)
        finally:
            self.depth -= 1
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
                if isinstance(s.var, Var) and isinstance(s.var.dtype, DataType):
                    self.check_index(e, s, what, s.var.dtype)
            if is_static_zero(s.step):
                self.fail(s, f"the loop step {format_expr(s.step)} is always 0: the loop would "
                             f"never end")
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
        self.push()   # the scalars the instruction binds (BINDS) are seen by its own fields only
        for name in inst.BINDS:
            for var in _values(getattr(inst, name)):
                if var is not None:
                    self.declare_scalar(var, inst, f"{name} variable")
        for f in dataclasses.fields(inst):
            if f.name == "output" or f.name in inst.BINDS or f.name in inst.DEFINES:
                continue
            pointer_ok = isinstance(inst, GlobalViewInst) and f.name == "ptr"
            for v in _values(getattr(inst, f.name)):
                if isinstance(v, Tensor):
                    self.check_tensor_use(v, inst, "tensor")
                elif isinstance(v, Expr):
                    self.check_expr(v, inst, f.name, pointer_ok)
                    if f.name in INDEX_FIELDS:
                        self.check_index(v, inst, f.name)
        self.pop()
        for name in inst.DEFINES:   # declared like a let: seen after the instruction
            self.declare_scalar(getattr(inst, name), inst, "variable")
        if isinstance(inst, GlobalViewInst):
            ptr = inst.ptr
            if not isinstance(ptr, Var) or not isinstance(ptr.dtype, PointerType) \
                    or ptr not in self.program.params:
                self.fail(inst, f"global_view needs a pointer parameter as ptr, got {ptr}")
            view = inst.output.dtype
            if ptr.dtype.dtype is not view and ptr.dtype.dtype is not RAW_POINTEE:
                self.fail(inst, f"the pointer {ptr.name} is {ptr.dtype} but the view is "
                                f"{view}; a typed pointer is viewed as its own type (declare "
                                f"the parameter ~{view}), only a raw byte pointer "
                                f"(~{RAW_POINTEE}) may be viewed as another type")
        if isinstance(inst, BinaryInst) and inst.op in ("mod", "div") and isinstance(inst.b, Expr) \
                and is_static_zero(inst.b):
            self.fail(inst, f"division by zero: the divisor {format_expr(inst.b)} is always 0")
        if isinstance(inst, BinaryInst) and inst.op in ("shl", "shr") and isinstance(inst.b, Expr):
            self.check_shift(inst.b, inst.a.dtype, inst, inst.op)
        if isinstance(inst, FreeSharedInst):
            self.free_shared(inst)
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
                self.check_index(s, inst, "the shape")
        if out.scope != GLOBAL and out.layout is not None:
            self.check_layout(inst, out)
        if out.scope == REGISTER:
            self.check_registers(inst, out)
        if isinstance(inst, AllocateSharedInst):
            self.shared_levels[out.name] = len(self.tensors)
        if out.scope == SHARED:
            src = inst.src.name if isinstance(inst, SliceSharedInst) else out.name
            self.shared_roots[out.name] = self.shared_roots.get(src, src)
        self.tensor_names.add(out.name)
        self.tensors[-1][out.name] = out

    # -- shared memory lifetimes, register budget, layouts
    def free_shared(self, inst: FreeSharedInst) -> None:
        """Only a whole shared tensor, once, in the body that made it."""
        name = inst.tensor.name
        root = self.shared_roots.get(name, name)
        if root != name:
            self.fail(inst, f"free_shared takes a tensor made by shared_tensor; %{name} is a slice "
                            f"of %{root} (free %{root} instead)")
        if self.shared_levels.get(name) != len(self.tensors):
            self.fail(inst, f"free_shared(%{name}) is inside a loop or branch that %{name} was not "
                            f"made in, so it would run conditionally or more than once; free it in "
                            f"the body that made it")
        self.freed[name] = inst

    def check_registers(self, inst: Instruction, out: Tensor) -> None:
        """The tile fits the 32-bit registers of the block's threads (its layout's share each)."""
        threads = self.program.warps * 32
        layout = out.layout
        slots = layout.local_size if getattr(layout, "num_threads", None) == threads \
            else -(-out.type.size // threads)
        bits = register_bits(out.dtype)
        registers = -(-slots * bits // 32)
        if registers > MAX_REGISTERS:
            most = MAX_REGISTERS * 32 // bits * threads
            self.fail(inst, f"the register tile %{out.name} ({out.dtype}{list(out.shape)}, "
                            f"{out.type.size} elements) needs {registers} 32-bit registers per "
                            f"thread ({slots} elements of {bits} bits each for each of the block's "
                            f"{threads} threads); a thread has at most {MAX_REGISTERS}, so with "
                            f"{self.program.warps} warps a {out.dtype} tile holds at most {most} "
                            f"elements: use smaller tiles or more warps")

    def check_layout(self, inst: Instruction, out: Tensor) -> None:
        """A layout has the tensor's shape and, for registers, the block's thread count."""
        layout = out.layout
        shape = getattr(layout, "shape", None)
        if shape is not None and tuple(shape) != tuple(out.shape):
            self.fail(inst, f"%{out.name} has shape {list(out.shape)} but its layout {layout} has "
                            f"shape {list(shape)}", layout_of=out.name)
        threads = getattr(layout, "num_threads", None)
        if out.scope == REGISTER and threads is not None and threads != self.program.num_threads:
            self.fail(inst, f"%{out.name} has the layout {layout}, which uses {threads} threads, but "
                            f"the kernel has {self.program.num_threads} ({self.program.warps} "
                            f"warps)", layout_of=out.name)
