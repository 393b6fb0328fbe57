"""The AST transpiler: turns a Script's ``__call__`` (and the Script methods it calls) into IR.

The body is never executed by Python. Statements are walked one by one and expressions evaluated
here: values known at build time (compile-time parameters, ``self.*`` attributes, Python numbers)
stay Python values, so arithmetic on them folds; IR scalars (parameters, loop variables, block
indices) build scalar expressions; tensors build instructions through the ProgramBuilder.

Control flow: ``for i in self.range(...)`` is an IR loop, and so is ``for i in range(...)`` when a
bound is a run-time value; ``for x in <python iterable>`` is unrolled;
``if``/``while`` on an IR condition are IR statements, on a Python value they are decided now.

Rebinding (see README of tilus.lang in tilus/lang/__init__.py):
- first binding of a name to an IR scalar emits a LetStmt; rebinding it at the same body level to
  a value of the same dtype emits an AssignStmt;
- inside a run-time body (IR loop/branch), assigning to a name bound outside updates it in place:
  an AssignStmt for scalars, an ``assign`` instruction for register tensors (same dtype and shape);
  a Python number or a non-variable expression that a run-time body assigns to becomes a scalar
  variable just before that body, so loop-carried values work (``s = 0`` ... ``s = s + i``);
- outside run-time bodies, rebinding a tensor name just renames (no copy);
- names first bound inside a run-time body are not visible after it.
"""
from __future__ import annotations

import ast
import contextlib
from typing import Any, Iterator, Optional

import numpy as np

from tilus.dtypes import DataType
from tilus.errors import ScriptError, TilusError
from tilus.ir import expr as E
from tilus.ir import inst as I
from tilus.ir.expr import Expr, Var
from tilus.ir.types import REGISTER, Tensor
from tilus.lang.context import Attributes, BuildContext
from tilus.lang.expressions import (BINOPS, PY_NUMBER, _CONTROL, Binding, ExpressionEvaluator,
                                    OutOfScope, _Break, _Continue, _Return, describe, is_ir)
from tilus.lang.instructions import RangeSpec
from tilus.lang.source import FunctionSource, function_source, method_signature

UNSUPPORTED = {
    "Try": "try statements", "TryStar": "try statements",
    "With": "with statements", "AsyncWith": "with statements", "AsyncFor": "async for",
    "FunctionDef": "nested function definitions", "AsyncFunctionDef": "nested functions",
    "ClassDef": "class definitions", "Import": "import statements", "ImportFrom": "import statements",
    "Global": "global statements", "Nonlocal": "nonlocal statements", "Delete": "del statements",
    "Yield": "yield", "YieldFrom": "yield", "Await": "await", "NamedExpr": "the := operator",
    "SetComp": "set comprehensions", "DictComp": "dict comprehensions", "Match": "match statements",
}
MAX_PY_WHILE = 100_000


def _assigned_names(stmts: list[ast.stmt]) -> list[str]:
    """Names a block of statements may assign (not looking inside comprehensions)."""
    out: list[str] = []

    def visit(node):
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp, ast.Lambda,
                             ast.FunctionDef, ast.ClassDef)):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in out:
            out.append(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for s in stmts:
        visit(s)
    return out


class Frame(ExpressionEvaluator):
    """Transpiles one function (the kernel's ``__call__`` or a Script method it calls)."""

    def __init__(self, ctx: Optional[BuildContext], src: FunctionSource):
        self.ctx = ctx
        self.src = src
        self.env: dict[str, Any] = {}
        self.owned_vars: set[str] = set()  # let-variables this frame may assign to
        self.owned_tensors: set[str] = set()  # register tensors this frame may assign in place
        self.loops: list[tuple[str, int]] = []  # ("ir" | "py", depth at the loop)
        func = src.func
        self.globals = func.__globals__
        self.closure = {}
        if func.__closure__:
            for name, cell in zip(func.__code__.co_freevars, func.__closure__):
                try:
                    self.closure[name] = cell.cell_contents
                except ValueError:
                    pass
        self.base_depth = ctx.depth if ctx is not None else 0
        self.is_kernel = False

    @property
    def builder(self):
        return self.ctx.builder

    # ----- errors -------------------------------------------------------------------------------
    def error(self, node: ast.AST, message: str) -> ScriptError:
        filename, lineno, line = self.src.location(node)
        return ScriptError(message, filename, lineno, line)

    @staticmethod
    def _message(e: BaseException) -> str:
        if isinstance(e, TilusError):
            return str(e)
        return f"{type(e).__name__}: {e}"

    # ----- running a function -------------------------------------------------------------------
    def run_body(self) -> Any:
        try:
            self.exec_block(self.src.tree.body)
        except _Return as r:
            return r.value
        return None

    def exec_block(self, stmts: list[ast.stmt]) -> None:
        for s in stmts:
            self.exec_stmt(s)

    def exec_stmt(self, node: ast.stmt) -> None:
        method = getattr(self, "stmt_" + type(node).__name__, None)
        if self.ctx is not None:
            self.ctx.location = self.src.location(node)
            filename, lineno, line = self.ctx.location
            self.ctx.builder.location = f"{filename}:{lineno}: {line.strip()}"
            self.ctx.builder.origin = self.ctx.location
        try:
            if method is None:
                raise self.unsupported(node)
            method(node)
        except (ScriptError, *_CONTROL):
            raise
        except Exception as e:
            raise self.error(node, self._message(e)) from e

    def unsupported(self, node: ast.AST) -> ScriptError:
        kind = type(node).__name__
        return self.error(node, f"unsupported syntax in a Tilus kernel: "
                                f"{UNSUPPORTED.get(kind, kind)}")

    # ----- statements ---------------------------------------------------------------------------
    def stmt_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # docstring
        self.eval(node.value)

    def stmt_Pass(self, node) -> None:
        pass

    def stmt_Assign(self, node: ast.Assign) -> None:
        hint = node.targets[0].id if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
            else None
        value = self.eval(node.value, hint)
        for target in node.targets:
            self.assign_target(target, value)

    def stmt_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is None:
            raise self.error(node, "a declaration needs a value: write `x: tilus.int32 = 0`")
        if not isinstance(node.target, ast.Name):
            raise self.unsupported(node)
        ann = self.eval(node.annotation)
        value = self.eval(node.value, node.target.id)
        if isinstance(ann, DataType):
            if isinstance(value, Tensor):
                raise self.error(node, f"{node.target.id} is declared as a {ann} scalar but the "
                                       f"value is {describe(value)}")
            value = E.cast(value, ann)
        self.bind(node.target.id, value, node)

    def stmt_AugAssign(self, node: ast.AugAssign) -> None:
        op = BINOPS[type(node.op)]
        value = self.eval(node.value)
        target = node.target
        if isinstance(target, ast.Name):
            old = self.lookup(target.id, target)
            if isinstance(old, Tensor) and old.scope == REGISTER and op not in ("pow", "matmul"):
                tensor_op = self._tensor_op(op, old, value)
                shape = I.broadcast_shapes(old.shape, I.operand_shape(value)
                                           if isinstance(value, (Tensor, Expr)) else ())
                if tuple(shape) == tuple(old.shape):
                    self.builder.binary(tensor_op, old, value, out=old)
                    return
            self.bind(target.id, self.binop(op, old, value), node)
        elif isinstance(target, ast.Attribute):
            obj = self.eval(target.value)
            setattr(obj, target.attr, self.binop(op, getattr(obj, target.attr), value))
        else:
            raise self.error(node, "item assignment is not supported; tiles are written with "
                                   "store_global / store_shared")

    def assign_target(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, value, target)
        elif isinstance(target, (ast.Tuple, ast.List)):
            if is_ir(value) or isinstance(value, RangeSpec):
                raise self.error(target, f"cannot unpack {describe(value)}")
            items = list(value)
            starred = [i for i, t in enumerate(target.elts) if isinstance(t, ast.Starred)]
            if starred:
                k = starred[0]
                n_after = len(target.elts) - k - 1
                if len(items) < len(target.elts) - 1:
                    raise self.error(target, f"not enough values to unpack ({len(items)})")
                parts = items[:k] + [list(items[k:len(items) - n_after])] + items[len(items) - n_after:]
                for t, v in zip(target.elts, parts):
                    self.assign_target(t.value if isinstance(t, ast.Starred) else t, v)
                return
            if len(items) != len(target.elts):
                raise self.error(target, f"cannot unpack {len(items)} values into "
                                         f"{len(target.elts)} names")
            for t, v in zip(target.elts, items):
                self.assign_target(t, v)
        elif isinstance(target, ast.Attribute):
            obj = self.eval(target.value)
            if self.ctx is not None and obj is self.ctx.script:
                raise self.error(target, f"cannot set self.{target.attr} inside the kernel: "
                                         f"compile-time parameters are set in __init__ (launch "
                                         f"attributes go to self.attrs.blocks / self.attrs.warps)")
            if isinstance(obj, Attributes) and target.attr == "blocks":
                if self.ctx.depth > 0:
                    raise self.error(target, "set self.attrs.blocks outside loops and branches")
                items = value if isinstance(value, (list, tuple)) else [value]
                value = [self.in_parameters(v, "attrs.blocks") for v in items]
            setattr(obj, target.attr, value)
            if isinstance(obj, Attributes):
                self.ctx.attr_locations[target.attr] = self.src.location(target)
        elif isinstance(target, ast.Subscript):
            raise self.error(target, "item assignment is not supported; tiles are written with "
                                     "store_global / store_shared")
        else:
            raise self.unsupported(target)

    def bind(self, name: str, value: Any, node: ast.AST) -> None:
        """Give ``name`` a new value under the rebinding rules of the module docstring."""
        if isinstance(value, RangeSpec):
            raise self.error(node, "self.range(...) can only be iterated by a for statement")
        if isinstance(value, np.generic):
            value = value.item()
        depth = self.ctx.depth if self.ctx is not None else 0
        b = self.env.get(name)
        if isinstance(b, Binding) and b.level < depth:
            old = b.value
            if isinstance(old, Var) and old.name in self.owned_vars:
                if isinstance(value, Tensor) or not isinstance(value, (Expr, *PY_NUMBER)):
                    raise self.error(node, f"cannot assign {describe(value)} to the scalar "
                                           f"variable {name} ({old.dtype})")
                self.assign_scalar(old, value)
                return
            if isinstance(old, Tensor) and old.scope == REGISTER and old.name in self.owned_tensors:
                if not isinstance(value, Tensor):
                    raise self.error(node, f"cannot assign {describe(value)} to the tensor {name}; "
                                           f"inside a loop or branch {name} keeps its type "
                                           f"{old.dtype}{list(old.shape)}")
                if value.name == old.name:
                    return
                if value.dtype is not old.dtype or tuple(value.shape) != tuple(old.shape):
                    raise self.error(node, f"cannot rebind {name} ({old.dtype}{list(old.shape)}) to "
                                           f"{describe(value)} inside a run-time loop or branch: "
                                           f"it is updated in place, so dtype and shape must stay")
                if value.scope != REGISTER:
                    raise self.error(node, f"cannot assign {describe(value)} to the register "
                                           f"tensor {name}")
                self.builder.assign(old, value)
                return
            raise self.error(node, f"cannot rebind {name!r} inside a run-time loop or branch: it "
                                   f"holds {describe(old)}, bound outside; only scalars and "
                                   f"register tensors can change under run-time control flow")
        if isinstance(value, Expr):
            if isinstance(b, Binding) and isinstance(b.value, Var) \
                    and b.value.name in self.owned_vars and b.value.dtype is value.dtype:
                self.assign_scalar(b.value, value)
                return
            self.env[name] = Binding(self.let(name, value), depth)
            return
        if isinstance(value, Tensor) and value.scope == REGISTER:
            self.owned_tensors.add(value.name)
        self.env[name] = Binding(value, depth)

    def assign_scalar(self, var: Var, value: Any) -> None:
        self.ctx.let_values.pop(var, None)
        self.builder.assign_scalar(var, value)

    def let(self, name: str, value: Any) -> Var:
        var = self.builder.let(name, value)
        self.owned_vars.add(var.name)
        self.ctx.let_values[var] = E.as_expr(value)
        return var

    def in_parameters(self, e: Any, what: str) -> Any:
        """``e`` with let-variables replaced by their values, so that it only reads parameters."""
        if not isinstance(e, Expr):
            return e
        params = set(self.builder.params)
        for _ in range(1000):
            free = E.free_vars(e) - params
            if not free:
                return e
            stuck = [v for v in free if v not in self.ctx.let_values]
            if stuck:
                raise TilusError(f"{what} must be computed from the kernel's parameters, but "
                                 f"{stuck[0].name} is a variable that changes (or a loop "
                                 f"variable)")
            e = E.substitute(e, {v: self.ctx.let_values[v] for v in free})
        raise TilusError(f"{what}: cannot resolve {e}")

    def prepare_body(self, stmts: list[ast.stmt], exclude: tuple[str, ...] = ()) -> None:
        """Before a run-time body: names it assigns that hold Python numbers, non-variable
        expressions or foreign register tensors become variables of this frame."""
        for name in _assigned_names(stmts):
            if name in exclude:
                continue
            b = self.env.get(name)
            if not isinstance(b, Binding):
                continue
            v = b.value
            if isinstance(v, Var) and v.name in self.owned_vars:
                continue
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, (Expr, *PY_NUMBER)):
                self.env[name] = Binding(self.let(name, v), self.ctx.depth)
            elif isinstance(v, Tensor) and v.scope == REGISTER and v.name not in self.owned_tensors:
                t = self.builder.register_tensor(v.dtype, v.shape, name=name)
                self.builder.assign(t, v)
                self.owned_tensors.add(t.name)
                self.env[name] = Binding(t, self.ctx.depth)

    @contextlib.contextmanager
    def nested(self, where: str) -> Iterator[None]:
        """A run-time body: one level deeper; names first bound inside are dropped after it."""
        snapshot = dict(self.env)
        self.ctx.depth += 1
        try:
            yield
        finally:
            self.ctx.depth -= 1
            for name in list(self.env):
                if name in snapshot:
                    self.env[name] = snapshot[name]
                else:
                    self.env[name] = OutOfScope(where)

    def _condition(self, node: ast.expr, cond: Any, what: str) -> Any:
        if isinstance(cond, Tensor):
            raise self.error(node, f"the condition of {what} must be a scalar, got {describe(cond)}")
        if isinstance(cond, RangeSpec):
            raise self.error(node, f"self.range(...) used as the condition of {what}")
        if isinstance(cond, Expr) and not cond.dtype.is_bool:
            cond = E.ne(cond, 0)
        return cond

    def stmt_If(self, node: ast.If) -> None:
        cond = self._condition(node.test, self.eval(node.test), "if")
        if not isinstance(cond, Expr):
            self.exec_block(node.body if cond else node.orelse)
            return
        line = self.src.location(node)[1]
        self.prepare_body(node.body + node.orelse)
        with self.builder.if_then(cond), self.nested(f"the if at line {line}"):
            self.exec_block(node.body)
        if node.orelse:
            with self.builder.otherwise(), self.nested(f"the else at line {line}"):
                self.exec_block(node.orelse)

    def stmt_For(self, node: ast.For) -> None:
        if node.orelse:
            raise self.error(node, "unsupported syntax in a Tilus kernel: for ... else")
        if isinstance(node.iter, ast.Call) and self._is_builtin(node.iter.func, "range"):
            args = [self.eval(a) for a in node.iter.args]
            # run-time bounds make a run-time loop, as self.range(...) does
            it: Any = self.ctx.script.range(*args) if any(is_ir(a) for a in args) else range(*args)
        else:
            it = self.eval(node.iter)
        if isinstance(it, RangeSpec):
            if not isinstance(node.target, ast.Name):
                raise self.error(node.target, "the variable of a self.range loop must be a name")
            name = node.target.id
            line = self.src.location(node)[1]
            self.prepare_body(node.body, exclude=(name,))
            with self.builder.for_range(it.start, it.stop, it.step, name=name, unroll=it.unroll) \
                    as var, self.nested(f"the loop at line {line}"):
                self.env[name] = Binding(var, self.ctx.depth)
                self.loops.append(("ir", self.ctx.depth))
                try:
                    self.exec_block(node.body)
                finally:
                    self.loops.pop()
            return
        if is_ir(it):
            raise self.error(node.iter, f"cannot iterate over {describe(it)}; use self.range(...) "
                                        f"for a run-time loop")
        self.loops.append(("py", self.ctx.depth if self.ctx else 0))
        try:
            for item in it:
                self.assign_target(node.target, item)
                try:
                    self.exec_block(node.body)
                except _Break:
                    break
                except _Continue:
                    continue
        finally:
            self.loops.pop()

    def stmt_While(self, node: ast.While) -> None:
        if node.orelse:
            raise self.error(node, "unsupported syntax in a Tilus kernel: while ... else")
        cond = self._condition(node.test, self.eval(node.test), "while")
        if isinstance(cond, Expr):
            self.prepare_body(node.body)
            cond = self._condition(node.test, self.eval(node.test), "while")
            line = self.src.location(node)[1]
            with self.builder.while_loop(cond), self.nested(f"the while loop at line {line}"):
                self.loops.append(("ir", self.ctx.depth))
                try:
                    self.exec_block(node.body)
                finally:
                    self.loops.pop()
            return
        self.loops.append(("py", self.ctx.depth))
        try:
            count = 0
            while cond:
                count += 1
                if count > MAX_PY_WHILE:
                    raise self.error(node, f"this compile-time while loop ran {MAX_PY_WHILE} times; "
                                           f"is its condition meant to be a run-time value?")
                try:
                    self.exec_block(node.body)
                except _Break:
                    break
                except _Continue:
                    pass
                cond = self._condition(node.test, self.eval(node.test), "while")
                if isinstance(cond, Expr):
                    raise self.error(node.test, "the condition of this while loop became a "
                                                "run-time value after its first iteration")
        finally:
            self.loops.pop()

    def _loop_exit(self, node: ast.stmt, what: str) -> None:
        if not self.loops:
            raise self.error(node, f"'{what}' outside a loop")
        kind, depth = self.loops[-1]
        if kind == "ir":
            (self.builder.break_ if what == "break" else self.builder.continue_)()
            return
        if self.ctx.depth != depth:
            raise self.error(node, f"'{what}' of a compile-time (unrolled) loop cannot be under a "
                                   f"run-time if; use self.range(...) for the loop")
        raise _Break() if what == "break" else _Continue()

    def stmt_Break(self, node) -> None:
        self._loop_exit(node, "break")

    def stmt_Continue(self, node) -> None:
        self._loop_exit(node, "continue")

    def stmt_Return(self, node: ast.Return) -> None:
        if self.ctx.depth != self.base_depth:
            raise self.error(node, "return inside a run-time loop or branch is not supported")
        if self.is_kernel and node.value is not None:
            raise self.error(node, "a kernel returns nothing; write results with store_global")
        value = None if node.value is None else self.eval(node.value)
        raise _Return(value)

    def stmt_Assert(self, node: ast.Assert) -> None:
        cond = self.eval(node.test)
        if is_ir(cond):
            raise self.error(node, "assert needs a condition known at build time, got "
                                   f"{describe(cond)}")
        if not cond:
            msg = "" if node.msg is None else str(self.eval(node.msg))
            raise self.error(node, f"assertion failed{': ' + msg if msg else ''}")

    def stmt_Raise(self, node: ast.Raise) -> None:
        exc = None if node.exc is None else self.eval(node.exc)
        raise self.error(node, self._message(exc) if isinstance(exc, BaseException) else str(exc))

    def inline(self, method, args, kwargs, node) -> Any:
        """Transpiles a method of the user's Script called from the kernel, in a frame of its own."""
        try:
            bound = method_signature(method.__func__).bind(*args, **kwargs)
        except TypeError as e:
            raise self.error(node, f"self.{method.__name__}: {e}") from None
        bound.apply_defaults()
        frame = Frame(self.ctx, function_source(method.__func__))
        depth = self.ctx.depth
        params = frame.src.tree.args
        names = [a.arg for a in params.posonlyargs + params.args]
        if names:
            frame.env[names[0]] = Binding(method.__self__, depth)
        for name, value in bound.arguments.items():
            frame.env[name] = Binding(value, depth)
        return frame.run_body()


def transpile_kernel(ctx: BuildContext, func, self_obj, arg_values: dict[str, Any]) -> Any:
    """Transpiles the kernel function ``func`` with its parameters bound to ``arg_values``."""
    frame = Frame(ctx, function_source(func))
    frame.is_kernel = True
    params = frame.src.tree.args
    names = [a.arg for a in params.posonlyargs + params.args]
    frame.env[names[0]] = Binding(self_obj, 0)
    for name, value in arg_values.items():
        frame.env[name] = Binding(value, 0)
    frame.run_body()
    return frame


__all__ = ["Frame", "FunctionSource", "function_source", "transpile_kernel", "Attributes"]
