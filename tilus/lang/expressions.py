"""Evaluating expressions of a kernel: Python values fold, IR scalars build expressions, tensors
build elementwise instructions (``tilus.lang.transpiler.Frame`` mixes this in)."""
from __future__ import annotations

import ast
import builtins
import difflib
import inspect
import operator
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from tilus.errors import ScriptError, TilusError
from tilus.ir import expr as E
from tilus.ir.expr import Expr
from tilus.ir.types import GLOBAL, SHARED, Tensor
from tilus.lang.instructions import DSL_MARK, RangeSpec, instruction_names
from tilus.lang.instructions import item_ptr_of
from tilus.lang.source import method_signature

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


# methods of a tile in a kernel (``x.to(float32)``) and the instruction each one is
TENSOR_METHODS = {"to": "cast", "transpose": "transpose", "item_ptr": "item_ptr"}


@dataclass
class TensorMethod:
    """``x.to`` in a kernel: the instruction method ``method`` with ``x`` as its first argument."""
    method: Any
    tensor: Tensor


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


class KernelLambda:
    """A ``lambda`` written in a kernel (e.g. ``register_tensor(init=lambda i, j: ...)``): a call
    evaluates its body like the kernel's other expressions, with its parameters bound to the
    arguments on top of the names visible where it is called."""

    def __init__(self, frame: "ExpressionEvaluator", node: ast.Lambda):
        self.frame, self.node = frame, node
        self.params = [p.arg for p in node.args.args]
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in self.params])

    def __repr__(self) -> str:
        return f"<lambda {', '.join(self.params)} at line {self.node.lineno}>"

    def __call__(self, *args: Any) -> Any:
        frame = self.frame
        if len(args) != len(self.params):
            raise TilusError(f"{self!r} takes {len(self.params)} argument(s), got {len(args)}")
        saved = dict(frame.env)
        depth = frame.ctx.depth if frame.ctx is not None else 0
        try:
            for name, value in zip(self.params, args):
                frame.env[name] = Binding(value, depth)
            return frame.eval(self.node.body)
        finally:
            frame.env = saved


def describe(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"the {v.scope} tensor {v} ({v.dtype}{list(v.shape)})"
    if isinstance(v, Expr):
        return f"the {v.dtype} scalar {v}"
    return f"the Python {type(v).__name__} {v!r}"


def is_ir(v: Any) -> bool:
    return isinstance(v, (Expr, Tensor))


class ExpressionEvaluator:
    """Expression evaluation for a Frame (needs ``ctx``, ``env``, ``globals``, ``closure``,
    ``error``, ``unsupported``, ``inline``)."""

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
        if isinstance(obj, Tensor) and node.attr in TENSOR_METHODS and self.ctx is not None:
            return TensorMethod(getattr(self.ctx.script, TENSOR_METHODS[node.attr]), obj)
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

        if isinstance(func, TensorMethod):  # x.to(dtype) is self.cast(x, dtype)
            func, args = func.method, [func.tensor, *args]
        if inspect.ismethod(func) and isinstance(func.__self__, Script):
            fn = func.__func__
            if getattr(fn, DSL_MARK, False):
                sig = method_signature(fn)
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
        index = self.eval(node.slice)
        if isinstance(obj, Tensor) and obj.scope == GLOBAL:
            try:
                return item_ptr_of(obj, index if isinstance(index, tuple) else (index,), "g[...]")
            except TilusError as e:
                raise self.error(node, f"indexing the global tensor {obj} names one element "
                                       f"(for .item_ptr()): {e}") from None
        if isinstance(obj, Tensor):
            return self.index_tensor(obj, index, node)
        parts = index if isinstance(index, tuple) else (index,)
        if any(is_ir(p) for p in parts):
            raise self.error(node, "an index into a Python value must be known at build time")
        return obj[index]

    def index_tensor(self, t: Tensor, index: Any, node: ast.AST) -> Tensor:
        """``s[i]`` / ``s[i, j]`` on a shared tensor: the sub-tensor at those leading indices (a
        slice_shared spanning the remaining dimensions), e.g. one stage of a pipelined buffer."""
        parts = list(index) if isinstance(index, tuple) else [index]
        if t.scope != SHARED or any(isinstance(p, (slice, Tensor)) for p in parts) \
                or len(parts) >= len(t.shape):
            raise self.error(node, f"indexing {describe(t)} is not supported; s[i] selects the "
                                   f"leading indices of a shared tensor of higher rank (use "
                                   f"load_global, slice_shared or the reductions otherwise)")
        rank, n = len(t.shape), len(parts)
        return self.ctx.script.slice_shared(t, offsets=parts + [0] * (rank - n),
                                            shape=list(t.shape[n:]), dims=list(range(n, rank)))

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

    def expr_Lambda(self, node: ast.Lambda, hint) -> Any:
        a = node.args
        if a.posonlyargs or a.vararg or a.kwonlyargs or a.kwarg or a.defaults:
            raise self.error(node, "a lambda in a kernel takes plain positional parameters and no "
                                   "defaults (lambda i, j: ...)")
        return KernelLambda(self, node)

    def expr_Starred(self, node, hint) -> Any:
        raise self.error(node, "a starred expression is only allowed in calls, lists and tuples")
