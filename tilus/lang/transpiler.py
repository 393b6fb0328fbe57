"""The AST transpiler: turns a Script's ``__call__`` (and the Script methods it calls) into IR.

The body is never executed by Python. Statements are walked one by one and expressions evaluated
here: values known at build time (compile-time parameters, ``self.*`` attributes, Python numbers)
stay Python values, so arithmetic on them folds; IR scalars (parameters, loop variables, block
indices) build scalar expressions; tensors build instructions through the ProgramBuilder.

Control flow: ``for i in self.range(...)`` is an IR loop, ``for x in <python iterable>`` is unrolled;
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
import builtins
import contextlib
import difflib
import inspect
import operator
import textwrap
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import ScriptError, TilusError
from tilus.ir import expr as E
from tilus.ir import inst as I
from tilus.ir.expr import Expr, Var
from tilus.ir.types import REGISTER, Tensor
from tilus.lang.context import Attributes, BuildContext
from tilus.lang.instructions import DSL_MARK, RangeSpec, instruction_names

PY_NUMBER = (bool, int, float, np.bool_, np.integer, np.floating)

BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.FloorDiv: "floordiv",
          ast.Mod: "mod", ast.BitAnd: "bitand", ast.BitOr: "bitor", ast.BitXor: "bitxor",
          ast.LShift: "shl", ast.RShift: "shr", ast.Pow: "pow", ast.MatMult: "matmul"}
PY_BINOPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
             "floordiv": operator.floordiv, "mod": operator.mod, "bitand": operator.and_,
             "bitor": operator.or_, "bitxor": operator.xor, "shl": operator.lshift,
             "shr": operator.rshift, "pow": operator.pow, "matmul": operator.matmul}
CMPOPS = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
PY_CMPOPS = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
             "eq": operator.eq, "ne": operator.ne}
SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
          "bitand": "&", "bitor": "|", "bitxor": "^", "shl": "<<", "shr": ">>", "pow": "**",
          "matmul": "@"}
UNSUPPORTED = {
    "Lambda": "lambda expressions", "Try": "try statements", "TryStar": "try statements",
    "With": "with statements", "AsyncWith": "with statements", "AsyncFor": "async for",
    "FunctionDef": "nested function definitions", "AsyncFunctionDef": "nested functions",
    "ClassDef": "class definitions", "Import": "import statements", "ImportFrom": "import statements",
    "Global": "global statements", "Nonlocal": "nonlocal statements", "Delete": "del statements",
    "Yield": "yield", "YieldFrom": "yield", "Await": "await", "NamedExpr": "the := operator",
    "SetComp": "set comprehensions", "DictComp": "dict comprehensions", "Match": "match statements",
}
MAX_PY_WHILE = 100_000


# ----- source of a function ---------------------------------------------------------------------
@dataclass
class FunctionSource:
    func: Any
    filename: str
    first_line: int
    lines: list[str]
    tree: ast.FunctionDef

    def location(self, node: ast.AST) -> tuple[str, int, str]:
        rel = getattr(node, "lineno", 1)
        line = self.lines[rel - 1] if 0 < rel <= len(self.lines) else ""
        return self.filename, self.first_line + rel - 1, line


_SOURCES: dict[Any, FunctionSource] = {}


def function_source(func) -> FunctionSource:
    func = inspect.unwrap(func)
    code = func.__code__
    if code not in _SOURCES:
        try:
            lines, first = inspect.getsourcelines(func)
        except (OSError, TypeError) as e:
            raise TilusError(f"cannot read the source of {func.__qualname__} ({e}); Tilus kernels "
                             f"must be defined in a file") from None
        text = textwrap.dedent("".join(lines))
        module = ast.parse(text)
        tree = module.body[0]
        if not isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef)):
            raise TilusError(f"{func.__qualname__}: expected a function definition")
        _SOURCES[code] = FunctionSource(func, code.co_filename, first, lines, tree)
    return _SOURCES[code]


# ----- environment -------------------------------------------------------------------------------
@dataclass
class Binding:
    value: Any
    level: int  # the depth of run-time bodies where the name was bound


@dataclass
class OutOfScope:
    where: str  # e.g. "the loop at line 12"


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _Return(Exception):
    def __init__(self, value):
        self.value = value


_CONTROL = (_Break, _Continue, _Return)


def describe(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"the {v.scope} tensor {v} ({v.dtype}{list(v.shape)})"
    if isinstance(v, Expr):
        return f"the {v.dtype} scalar {v}"
    return f"the Python {type(v).__name__} {v!r}"


def is_ir(v: Any) -> bool:
    return isinstance(v, (Expr, Tensor))


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


class Frame:
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
            if any(is_ir(a) for a in args):
                raise self.error(node.iter, "range() bounds must be known at build time; use "
                                            "self.range(...) for a run-time loop")
            it: Any = range(*args)
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

    # ----- expressions --------------------------------------------------------------------------
    def eval(self, node: ast.expr, hint: Optional[str] = None) -> Any:
        method = getattr(self, "expr_" + type(node).__name__, None)
        try:
            if method is None:
                raise self.unsupported(node)
            return method(node, hint)
        except (ScriptError, *_CONTROL):
            raise
        except Exception as e:
            raise self.error(node, self._message(e)) from e

    def expr_Constant(self, node: ast.Constant, hint) -> Any:
        return node.value

    def lookup(self, name: str, node: ast.AST) -> Any:
        b = self.env.get(name)
        if isinstance(b, Binding):
            return b.value
        if isinstance(b, OutOfScope):
            raise self.error(node, f"{name!r} is defined only inside {b.where}; bind it before "
                                   f"that to use it afterwards")
        if name in self.closure:
            return self.closure[name]
        if name in self.globals:
            return self.globals[name]
        if hasattr(builtins, name):
            return getattr(builtins, name)
        known = [n for n, v in self.env.items() if isinstance(v, Binding)] + list(self.globals)
        near = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise self.error(node, f"name {name!r} is not defined{hint}")

    def expr_Name(self, node: ast.Name, hint) -> Any:
        return self.lookup(node.id, node)

    def expr_Attribute(self, node: ast.Attribute, hint) -> Any:
        obj = self.eval(node.value)
        try:
            return getattr(obj, node.attr)
        except AttributeError:
            pass
        if self.ctx is not None and obj is self.ctx.script:
            known = instruction_names() + [n for n in vars(obj) if not n.startswith("_")] + \
                [n for n in dir(type(obj)) if not n.startswith("_")]
            near = difflib.get_close_matches(node.attr, sorted(set(known)), n=3)
            hint_ = f"; did you mean {', '.join('self.' + n for n in near)}?" if near else ""
            raise self.error(node, f"{type(obj).__name__} has no method or attribute "
                                   f"{node.attr!r}{hint_}")
        raise self.error(node, f"{describe(obj)} has no attribute {node.attr!r}")

    def _is_builtin(self, node: ast.expr, name: str) -> bool:
        return isinstance(node, ast.Name) and node.id == name and node.id not in self.env \
            and name not in self.globals and name not in self.closure

    def _args(self, nodes: list[ast.expr]) -> list[Any]:
        out = []
        for a in nodes:
            if isinstance(a, ast.Starred):
                out.extend(self.eval(a.value))
            else:
                out.append(self.eval(a))
        return out

    def expr_Call(self, node: ast.Call, hint) -> Any:
        func = self.eval(node.func)
        args = self._args(node.args)
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                kwargs.update(self.eval(kw.value))
            else:
                kwargs[kw.arg] = self.eval(kw.value)
        return self.call(func, args, kwargs, hint, node)

    def call(self, func, args, kwargs, hint, node) -> Any:
        from tilus.lang.script import Script

        if inspect.ismethod(func) and isinstance(func.__self__, Script):
            fn = func.__func__
            if getattr(fn, DSL_MARK, False):
                sig = inspect.signature(func).replace(return_annotation=inspect.Signature.empty)
                for k in kwargs:
                    if k not in sig.parameters:
                        near = difflib.get_close_matches(k, list(sig.parameters), n=1)
                        raise self.error(node, f"self.{fn.__name__}{sig}: unexpected keyword "
                                               f"argument {k!r}"
                                               + (f"; did you mean {near[0]}=?" if near else ""))
                try:
                    sig.bind(*args, **kwargs)
                except TypeError as e:
                    raise self.error(node, f"self.{fn.__name__}{sig}: {e}") from None
                self.ctx.hint = hint
                try:
                    return func(*args, **kwargs)
                finally:
                    self.ctx.hint = None
            if not hasattr(Script, fn.__name__):
                return self.inline(func, args, kwargs, node)
        if func in (builtins.min, builtins.max) and any(is_ir(a) for a in args):
            if kwargs or len(args) < 2 or any(isinstance(a, Tensor) for a in args):
                raise self.error(node, f"{func.__name__}() on IR values takes two or more scalars; "
                                       f"use self.{func.__name__}(x, dim=) / self.maximum/minimum "
                                       f"for tensors")
            combine = E.minimum if func is builtins.min else E.maximum
            result = args[0]
            for a in args[1:]:
                result = combine(result, a)
            return result
        if func is builtins.range and any(is_ir(a) for a in args):
            raise self.error(node, "range() bounds must be known at build time; use self.range(...) "
                                   "for a run-time loop")
        if func is builtins.len and args and isinstance(args[0], Tensor):
            return args[0].shape[0]
        return func(*args, **kwargs)

    def inline(self, method, args, kwargs, node) -> Any:
        """Transpiles a method of the user's Script called from the kernel, in a frame of its own."""
        try:
            bound = inspect.signature(method).bind(*args, **kwargs)
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

    def _tensor_op(self, op: str, a: Any, b: Any) -> str:
        tensor = a if isinstance(a, Tensor) else b
        other = b if tensor is a else a
        if op in ("pow", "matmul"):
            raise TilusError(f"'{SYMBOL[op]}' is not defined on tensors"
                             + ("; use self.dot(a, b, acc)" if op == "matmul" else ""))
        is_float = tensor.dtype.is_float
        if not isinstance(other, Tensor):
            other_float = isinstance(other, (float, np.floating)) or \
                (isinstance(other, Expr) and other.dtype.is_float)
            if other_float and not is_float:
                raise TilusError(f"{describe(tensor)} {SYMBOL[op]} the float {other}: cast the tile "
                                 f"to a float type first (self.cast(x, dtype=...))")
        if op == "div" and not is_float:
            raise TilusError(f"'/' on the integer tile {tensor} ({tensor.dtype}); use '//'")
        if op == "floordiv":
            if is_float:
                raise TilusError(f"'//' on the float tile {tensor} ({tensor.dtype}); use '/'")
            return "div"
        return op

    def _tensor_binary(self, op: str, symbol: str, a: Any, b: Any, hint: Optional[str]) -> Tensor:
        try:
            return self.builder.binary(op, a, b, name=hint or "t")
        except TilusError as e:
            raise TilusError(f"'{symbol}' of {describe(a)} and {describe(b)}: {e}") from None

    def binop(self, op: str, a: Any, b: Any, hint: Optional[str] = None) -> Any:
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            for x in (a, b):
                if not isinstance(x, (Tensor, Expr, *PY_NUMBER)):
                    raise TilusError(f"'{SYMBOL[op]}' between a tensor and {describe(x)}")
            tensor_op = self._tensor_op(op, a, b)
            return self._tensor_binary(tensor_op, SYMBOL[op], a, b, hint)
        if isinstance(a, Expr) or isinstance(b, Expr):
            for x in (a, b):
                if not isinstance(x, (Expr, *PY_NUMBER)):
                    raise TilusError(f"'{SYMBOL[op]}' between a scalar expression and {describe(x)}")
            if op in ("pow", "matmul"):
                raise TilusError(f"'{SYMBOL[op]}' is not defined on scalar expressions")
            if op == "div" and not (E.as_expr(a).dtype.is_float or E.as_expr(b).dtype.is_float):
                raise TilusError(f"'/' on integer scalars {a} and {b}: use '//' or tilus.cdiv")
            return E.binary(op, a, b)
        return PY_BINOPS[op](a, b)

    def expr_BinOp(self, node: ast.BinOp, hint) -> Any:
        a = self.eval(node.left)
        b = self.eval(node.right)
        return self.binop(BINOPS[type(node.op)], a, b, hint)

    def expr_UnaryOp(self, node: ast.UnaryOp, hint) -> Any:
        x = self.eval(node.operand)
        if isinstance(node.op, ast.UAdd):
            return x if is_ir(x) else +x
        if isinstance(x, Tensor):
            op = {ast.USub: "neg", ast.Invert: "bitnot", ast.Not: "not"}[type(node.op)]
            return self.builder.unary(op, x, name=hint or op)
        if isinstance(x, Expr):
            if isinstance(node.op, ast.Not):
                return E.logical_not(x if x.dtype.is_bool else E.ne(x, 0))
            return -x if isinstance(node.op, ast.USub) else ~x
        return {ast.USub: operator.neg, ast.Invert: operator.invert,
                ast.Not: operator.not_}[type(node.op)](x)

    def expr_BoolOp(self, node: ast.BoolOp, hint) -> Any:
        is_and = isinstance(node.op, ast.And)
        acc = self.eval(node.values[0])
        for v in node.values[1:]:
            if not is_ir(acc):
                if (not acc) if is_and else acc:
                    return acc  # Python short circuit
                acc = self.eval(v)
                continue
            nxt = self.eval(v)
            if isinstance(acc, Tensor) or isinstance(nxt, Tensor):
                acc = self.builder.binary("and" if is_and else "or", acc, nxt, name=hint or "t")
            else:
                a = acc if acc.dtype.is_bool else E.ne(acc, 0)
                b = E.as_expr(bool(nxt)) if not is_ir(nxt) else \
                    (nxt if nxt.dtype.is_bool else E.ne(nxt, 0))
                acc = E.logical_and(a, b) if is_and else E.logical_or(a, b)
        return acc

    def compare(self, op, a, b, hint):
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return self._tensor_binary(op, E.INFIX[op], a, b, hint or op)
        if isinstance(a, Expr) or isinstance(b, Expr):
            return E.binary(op, a, b)
        return PY_CMPOPS[op](a, b)

    def expr_Compare(self, node: ast.Compare, hint) -> Any:
        left = self.eval(node.left)
        result = None
        for op_node, right_node in zip(node.ops, node.comparators):
            right = self.eval(right_node)
            if type(op_node) in CMPOPS:
                r = self.compare(CMPOPS[type(op_node)], left, right, hint)
            else:
                if (is_ir(left) or is_ir(right)) and type(op_node) in (ast.In, ast.NotIn):
                    raise TilusError(f"'{type(op_node).__name__}' comparison of IR values is not "
                                     f"supported")
                r = {ast.Is: operator.is_, ast.IsNot: operator.is_not,
                     ast.In: lambda x, y: x in y, ast.NotIn: lambda x, y: x not in y}[type(op_node)](
                    left, right)
            if result is None:
                result = r
            elif is_ir(result) or is_ir(r):
                if isinstance(result, Tensor) or isinstance(r, Tensor):
                    result = self.builder.binary("and", result, r, name=hint or "t")
                else:
                    result = E.logical_and(result, r)
            else:
                result = result and r
                if not result:
                    return result
            left = right
        return result

    def expr_IfExp(self, node: ast.IfExp, hint) -> Any:
        cond = self.eval(node.test)
        if not is_ir(cond):
            return self.eval(node.body if cond else node.orelse, hint)
        a, b = self.eval(node.body), self.eval(node.orelse)
        if isinstance(cond, Tensor) or isinstance(a, Tensor) or isinstance(b, Tensor):
            return self.builder.where(cond, a, b, name=hint or "w")
        return E.select(cond if cond.dtype.is_bool else E.ne(cond, 0), a, b)

    def expr_Subscript(self, node: ast.Subscript, hint) -> Any:
        obj = self.eval(node.value)
        if isinstance(obj, Tensor):
            raise self.error(node, f"indexing {describe(obj)} is not supported; use load_global, "
                                   f"slice_shared or the reductions")
        index = self.eval(node.slice)
        parts = index if isinstance(index, tuple) else (index,)
        if any(is_ir(p) for p in parts):
            raise self.error(node, "an index into a Python value must be known at build time")
        return obj[index]

    def expr_Slice(self, node: ast.Slice, hint) -> Any:
        return slice(*(None if x is None else self.eval(x) for x in (node.lower, node.upper, node.step)))

    def expr_Tuple(self, node: ast.Tuple, hint) -> Any:
        return tuple(self._args(node.elts))

    def expr_List(self, node: ast.List, hint) -> Any:
        return self._args(node.elts)

    def expr_Set(self, node: ast.Set, hint) -> Any:
        return set(self._args(node.elts))

    def expr_Dict(self, node: ast.Dict, hint) -> Any:
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                out.update(self.eval(v))
            else:
                out[self.eval(k)] = self.eval(v)
        return out

    def expr_JoinedStr(self, node: ast.JoinedStr, hint) -> Any:
        return "".join(str(self.eval(v)) for v in node.values)

    def expr_FormattedValue(self, node: ast.FormattedValue, hint) -> Any:
        value = self.eval(node.value)
        if node.conversion == ord("r"):
            value = repr(value)
        elif node.conversion == ord("s"):
            value = str(value)
        spec = "" if node.format_spec is None else self.eval(node.format_spec)
        return format(value, spec) if not is_ir(value) else str(value)

    def _comprehension(self, node, hint) -> list:
        saved = dict(self.env)
        depth = self.ctx.depth if self.ctx is not None else 0
        out: list = []

        def gen(i):
            if i == len(node.generators):
                out.append(self.eval(node.elt))
                return
            g = node.generators[i]
            it = self.eval(g.iter)
            if is_ir(it) or isinstance(it, RangeSpec):
                raise self.error(g.iter, f"a comprehension cannot iterate over {describe(it)}: "
                                         f"only over Python values known at build time")
            for item in it:
                self._bind_python(g.target, item, depth)
                conds = [self.eval(c) for c in g.ifs]
                if any(is_ir(c) for c in conds):
                    raise self.error(g, "a comprehension's condition must be known at build time")
                if all(conds):
                    gen(i + 1)

        try:
            gen(0)
        finally:
            self.env = saved
        return out

    def _bind_python(self, target, value, depth):
        if isinstance(target, ast.Name):
            self.env[target.id] = Binding(value, depth)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t, v in zip(target.elts, value):
                self._bind_python(t, v, depth)
        else:
            raise self.unsupported(target)

    def expr_ListComp(self, node, hint) -> Any:
        return self._comprehension(node, hint)

    def expr_GeneratorExp(self, node, hint) -> Any:
        return iter(self._comprehension(node, hint))

    def expr_Starred(self, node, hint) -> Any:
        raise self.error(node, "a starred expression is only allowed in calls, lists and tuples")


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
