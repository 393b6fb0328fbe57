"""Building Programs from Python: one method per instruction that works out the output's type,
checks the typing rule and appends the instruction to the current body.

The DSL transpiler (``tilus.lang``) drives this builder; tests and passes may use it directly.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import replace
from typing import Any, Callable, Iterator, Optional, Sequence

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import IRError
from tilus.ir import inst as I
from tilus.ir.expr import Expr, ExprLike, Var, as_expr, cast, const
from tilus.ir.program import Program
from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt, Stmt,
                           WhileStmt, seq)
from tilus.ir.types import GLOBAL, REGISTER, SHARED, PointerType, Tensor, TensorType

Shape = Sequence[int]


def _exprs(values: Sequence[ExprLike], what: str) -> tuple[Expr, ...]:
    if isinstance(values, (int, Expr)):
        raise IRError(f"{what} must be a list, got {values}")
    return tuple(as_expr(v) for v in values)


def _ints(values: Sequence[int], what: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, Expr) or not isinstance(v, int) or isinstance(v, bool):
            raise IRError(f"{what} must be compile-time integers, got {v}")
        out.append(int(v))
    return tuple(out)


def _broadcast(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return I.broadcast_shapes(*shapes)
    except IRError as e:
        raise IRError(f"{op}: {e}") from None


def row_major_strides(shape: Sequence[ExprLike]) -> tuple[Expr, ...]:
    strides: list[ExprLike] = []
    acc: ExprLike = 1
    for s in reversed(list(shape)):
        strides.append(acc)
        acc = acc * s
    return tuple(as_expr(s) for s in reversed(strides))


class ProgramBuilder:
    """Accumulates a kernel body statement by statement; nested bodies through context managers."""

    def __init__(self, name: str):
        self.name = name
        self.params: list[Var] = []
        self.blocks: tuple[Expr, ...] = (const(1),)
        self.warps: int = 1
        self.consts: list[tuple[str, Any]] = []
        self._bodies: list[list[Stmt]] = [[]]
        self._names: dict[str, int] = {}
        # set by a front end to where the statement being built is ("file:line: source")
        self.location: Optional[str] = None
        self._sources: dict[str, str] = {}
        # set by a front end to where the statement being built is, in its own terms; every
        # emitted statement records it: id(statement) -> (statement, origin)
        self.origin: Any = None
        self.origins: dict[int, tuple[Stmt, Any]] = {}

    # ----- names, parameters, statements ---------------------------------------------------
    def fresh_name(self, hint: str) -> str:
        """A name unique in this program: ``hint``, then ``hint_1``, ``hint_2``, ..."""
        hint = hint or "t"
        n = self._names.get(hint, 0)
        self._names[hint] = n + 1
        name = hint if n == 0 else f"{hint}_{n}"
        if name in self._names and n != 0:
            return self.fresh_name(hint)
        self._names.setdefault(name, 1)
        return name

    def param(self, name: str, type_: DataType | PointerType) -> Var:
        if any(p.name == name for p in self.params):
            raise IRError(f"parameter {name!r} declared twice")
        self._names[name] = self._names.get(name, 0) + 1
        v = Var(name, type_)
        self.params.append(v)
        return v

    def emit(self, stmt: Stmt, origin: Any = None) -> None:
        """Append ``stmt`` (checking an instruction's rule); ``origin`` overrides ``self.origin``."""
        if isinstance(stmt, I.Instruction):
            stmt.check()
            out = getattr(stmt, "output", None)
            if self.location is not None and out is not None:
                self._sources.setdefault(out.name, self.location)
        self.origins[id(stmt)] = (stmt, self.origin if origin is None else origin)
        self._bodies[-1].append(stmt)

    def origin_of(self, stmt: Stmt) -> Any:
        """The origin recorded when ``stmt`` was emitted (None when it was not emitted here)."""
        entry = self.origins.get(id(stmt))
        return entry[1] if entry is not None and entry[0] is stmt else None

    @contextlib.contextmanager
    def _body(self) -> Iterator[list[Stmt]]:
        self._bodies.append([])
        try:
            yield self._bodies[-1]
        finally:
            self._bodies.pop()

    @contextlib.contextmanager
    def for_range(self, start: ExprLike, stop: ExprLike, step: ExprLike = 1, name: str = "i",
                  unroll: int | bool | None = None) -> Iterator[Var]:
        var = Var(self.fresh_name(name), dtypes.int32)
        origin = self.origin
        with self._body() as body:
            yield var
        self.emit(ForStmt(var, as_expr(start), as_expr(stop), as_expr(step), seq(body), unroll),
                  origin)

    @contextlib.contextmanager
    def if_then(self, cond: ExprLike) -> Iterator[None]:
        origin = self.origin
        with self._body() as body:
            yield
        self.emit(IfStmt(as_expr(cond), seq(body), None), origin)

    @contextlib.contextmanager
    def otherwise(self) -> Iterator[None]:
        """The else branch of the IfStmt emitted just before."""
        current = self._bodies[-1]
        if not current or not isinstance(current[-1], IfStmt) or current[-1].else_body is not None:
            raise IRError("'else' without a preceding 'if'")
        branch = current[-1]
        with self._body() as body:
            yield
        current[-1] = replace(branch, else_body=seq(body))
        self.origins[id(current[-1])] = (current[-1], self.origin_of(branch))

    @contextlib.contextmanager
    def while_loop(self, cond: ExprLike) -> Iterator[None]:
        origin = self.origin
        with self._body() as body:
            yield
        self.emit(WhileStmt(as_expr(cond), seq(body)), origin)

    def break_(self) -> None:
        self.emit(BreakStmt())

    def continue_(self) -> None:
        self.emit(ContinueStmt())

    def let(self, name: str, value: ExprLike, dtype: DataType | None = None) -> Var:
        value = as_expr(value)
        if dtype is not None:
            value = cast(value, dtype)
        var = Var(self.fresh_name(name), value.dtype)
        self.emit(LetStmt(var, value))
        return var

    def assign_scalar(self, var: Var, value: ExprLike) -> None:
        self.emit(AssignStmt(var, cast(as_expr(value), var.dtype)))

    def finish(self) -> Program:
        if len(self._bodies) != 1:
            raise IRError("finish() inside an unfinished loop or branch")
        return Program(self.name, tuple(self.params), self.blocks, self.warps, seq(self._bodies[0]),
                       tuple(self.consts), tuple(self._sources.items()))

    # ----- instructions ---------------------------------------------------------------------
    def _out(self, name: str, dtype: DataType | str, shape: Sequence[Any], scope: str, layout=None) -> Tensor:
        return Tensor(self.fresh_name(name), TensorType(dtypes.get(dtype), tuple(shape), scope, layout))

    def _emit_out(self, inst: I.Instruction) -> Tensor:
        self.emit(inst)
        return inst.output  # type: ignore[attr-defined]

    def global_view(self, ptr: Var, dtype: DataType | str, shape: Sequence[ExprLike],
                    strides: Optional[Sequence[ExprLike]] = None, name: str = "g") -> Tensor:
        if not isinstance(ptr, Var) or not isinstance(ptr.dtype, PointerType):
            raise IRError(f"global_view needs a pointer parameter, got {ptr}")
        shape = _exprs(shape, "shape")
        strides = row_major_strides(shape) if strides is None else _exprs(strides, "strides")
        out = Tensor(self.fresh_name(name), TensorType(dtypes.get(dtype), shape, GLOBAL))
        return self._emit_out(I.GlobalViewInst(out, ptr, strides))

    def global_tensor(self, dtype: DataType | str, shape: Sequence[ExprLike], requires_clean: bool,
                      name: str = "ws") -> Tensor:
        """A row-major global workspace owned by the kernel (see ``AllocateGlobalInst``)."""
        out = Tensor(self.fresh_name(name), TensorType(dtypes.get(dtype), _exprs(shape, "shape"), GLOBAL))
        return self._emit_out(I.AllocateGlobalInst(out, requires_clean))

    def register_tensor(self, dtype: DataType | str, shape: Shape,
                        init: ExprLike | Callable[..., ExprLike] | None = None,
                        name: str = "r", layout=None) -> Tensor:
        """A register tile; ``init`` is a scalar, or a function of one int32 index per dimension
        (``lambda i, j: i * 16 + j``) whose scalar expression gives each element its value."""
        dtype = dtypes.get(dtype)
        shape = _ints(shape, "shape")
        axes = None
        if callable(init):
            axes, init = self._index_init(init, shape)
        out = self._out(name, dtype, shape, REGISTER, layout)
        return self._emit_out(I.AllocateRegisterInst(out, None if init is None else cast(init, dtype),
                                                     axes))

    def _index_init(self, fn: Callable[..., Any], shape: tuple[int, ...]) -> tuple[tuple[Var, ...], Expr]:
        """``fn`` called with a fresh int32 Var per dimension (named after its parameters): the
        Vars and the scalar expression it returns."""
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(names) != len(shape) or len(params) != len(names):
            raise IRError(f"register_tensor: init takes {len(params)} parameter(s) "
                          f"({', '.join(str(p) for p in params) or 'none'}) but the tile "
                          f"{list(shape)} has rank {len(shape)}: give one index parameter per "
                          f"dimension, e.g. init=lambda {', '.join('ijklmnop'[:len(shape)])}: ...")
        axes = tuple(Var(self.fresh_name(n), dtypes.int32) for n in names)
        value = fn(*axes)
        if isinstance(value, Tensor) or not isinstance(value, (Expr, bool, int, float)) \
                or (isinstance(value, Expr) and not isinstance(value.dtype, DataType)):
            what = f"the {value.scope} tensor {value}" if isinstance(value, Tensor) \
                else f"{type(value).__name__} {value!r}"
            raise IRError(f"register_tensor: init must return a scalar expression of the indices "
                          f"({', '.join(names)}), got {what}")
        return axes, as_expr(value)

    def shared_tensor(self, dtype: DataType | str, shape: Shape, name: str = "s", layout=None) -> Tensor:
        out = self._out(name, dtype, _ints(shape, "shape"), SHARED, layout)
        return self._emit_out(I.AllocateSharedInst(out))

    def free_shared(self, tensor: Tensor) -> None:
        self.emit(I.FreeSharedInst(tensor))

    def slice_shared(self, src: Tensor, offsets: Sequence[ExprLike], shape: Shape,
                     dims: Optional[Sequence[int]] = None, name: str = "s") -> Tensor:
        out = self._out(name, src.dtype, _ints(shape, "shape"), SHARED)
        return self._emit_out(I.SliceSharedInst(out, src, _exprs(offsets, "offsets"),
                                                None if dims is None else _ints(dims, "dims")))

    def load_global(self, src: Tensor, offsets: Sequence[ExprLike], shape: Shape,
                    dims: Optional[Sequence[int]] = None, other: ExprLike | None = None,
                    name: str = "x", layout=None) -> Tensor:
        out = self._out(name, src.dtype, _ints(shape, "shape"), REGISTER, layout)
        other_e = None if other is None else cast(other, src.dtype) if not src.dtype.is_lowbit \
            else as_expr(other)
        return self._emit_out(I.LoadGlobalInst(out, src, _exprs(offsets, "offsets"),
                                               None if dims is None else _ints(dims, "dims"), other_e))

    def load_scalar(self, src: Tensor, offsets: Sequence[ExprLike], name: str = "s") -> Var:
        """A new scalar Var holding ``src[offsets]`` (a global tensor's element)."""
        var = Var(self.fresh_name(name), src.dtype)
        self.emit(I.LoadScalarInst(var, src, _exprs(offsets, "offsets")))
        return var

    def store_global(self, dst: Tensor, src: Tensor, offsets: Sequence[ExprLike],
                     dims: Optional[Sequence[int]] = None) -> None:
        self.emit(I.StoreGlobalInst(dst, src, _exprs(offsets, "offsets"),
                                    None if dims is None else _ints(dims, "dims")))

    def copy_async(self, src: Tensor, dst: Tensor, offsets: Sequence[ExprLike],
                   dims: Optional[Sequence[int]] = None) -> None:
        self.emit(I.CopyAsyncInst(dst, src, _exprs(offsets, "offsets"),
                                  None if dims is None else _ints(dims, "dims")))

    def copy_async_commit_group(self) -> None:
        self.emit(I.CopyAsyncCommitGroupInst())

    def copy_async_wait_group(self, n: int = 0) -> None:
        self.emit(I.CopyAsyncWaitGroupInst(n))

    def load_shared(self, src: Tensor, name: str = "x", layout=None) -> Tensor:
        return self._emit_out(I.LoadSharedInst(self._out(name, src.dtype, src.shape, REGISTER, layout),
                                               src))

    def store_shared(self, dst: Tensor, src: Tensor) -> None:
        self.emit(I.StoreSharedInst(dst, src))

    def view(self, x: Tensor, dtype: DataType | str | None = None, shape: Optional[Shape] = None,
             name: str = "v") -> Tensor:
        dtype = x.dtype if dtype is None else dtypes.get(dtype)
        if shape is None:
            bits = x.shape[-1] * x.dtype.nbits if x.shape else x.dtype.nbits
            if bits % dtype.nbits:
                raise IRError(f"view: the last dimension of {x} holds {bits} bits, not a multiple of "
                              f"{dtype.nbits} ({dtype}); give shape=")
            shape = (*x.shape[:-1], bits // dtype.nbits)
        return self._emit_out(I.ViewInst(self._out(name, dtype, _ints(shape, "shape"), REGISTER), x))

    def reinterpret(self, x: Tensor, dtype: DataType | str, shape: Sequence[int], layout,
                    name: str = "v") -> Tensor:
        """Thread-wise reinterpretation of ``x`` (which must carry its layout) as ``dtype[shape]``
        in ``layout``."""
        out = self._out(name, dtypes.get(dtype), _ints(shape, "shape"), REGISTER, layout)
        return self._emit_out(I.ReinterpretInst(out, x))

    def convert_layout(self, x: Tensor, layout, name: str = "cl") -> Tensor:
        """``x`` in the register layout ``layout`` (same values)."""
        out = self._out(name, x.dtype, x.shape, REGISTER, layout)
        return self._emit_out(I.ConvertLayoutInst(out, x))

    def fma(self, a: Tensor, b: Tensor | ExprLike, c: Tensor | ExprLike, name: str = "f") -> Tensor:
        a, b, c = self._elementwise_operands(a, b, c)  # type: ignore[assignment]  # a stays a Tensor
        shape = _broadcast("fma", *(I.operand_shape(x) for x in (a, b, c)))
        return self._emit_out(I.FmaInst(self._out(name, a.dtype, shape, REGISTER), a, b, c))

    def lookup(self, table: Tensor, index: Tensor, name: str = "l") -> Tensor:
        return self._emit_out(I.LookupInst(self._out(name, table.dtype, index.shape, REGISTER),
                                           table, index))

    def cast(self, x: Tensor, dtype: DataType | str, name: str = "c", exponent: int = 0) -> Tensor:
        return self._emit_out(I.CastInst(self._out(name, dtype, x.shape, REGISTER), x, exponent))

    def assign(self, output: Tensor | Var, x: Tensor | ExprLike) -> None:
        """``output = x``: a register tile copy (AssignInst), or for a scalar declared by ``let``
        an AssignStmt."""
        if isinstance(output, Var):
            self.assign_scalar(output, x)  # type: ignore[arg-type]  # as_expr refuses a Tensor
        else:
            self.emit(I.AssignInst(output, x))  # type: ignore[arg-type]  # the verifier judges x

    def unary(self, op: str, x: Tensor, name: str = "u") -> Tensor:
        dtype = dtypes.bool if op == "not" else x.dtype
        return self._emit_out(I.UnaryInst(self._out(name, dtype, x.shape, REGISTER), x, op))

    def binary(self, op: str, a: Tensor | ExprLike, b: Tensor | ExprLike, name: str = "t",
               out: Optional[Tensor] = None) -> Tensor:
        a, b = self._elementwise_operands(a, b)
        dtype = next(x.dtype for x in (a, b) if isinstance(x, Tensor))
        if op in I.COMPARE_ELEMENTWISE:
            dtype = dtypes.bool
        if out is None:
            shape = _broadcast(op, I.operand_shape(a), I.operand_shape(b))
            out = self._out(name, dtype, shape, REGISTER)
        return self._emit_out(I.BinaryInst(out, a, b, op))

    def _elementwise_operands(self, *xs: Tensor | ExprLike) -> list[Tensor | Expr]:
        tensors = [x for x in xs if isinstance(x, Tensor)]
        if not tensors:
            raise IRError("an elementwise instruction needs at least one tensor operand")
        dtype = tensors[0].dtype
        return [x if isinstance(x, Tensor) else cast(as_expr(x), dtype) for x in xs]

    def where(self, cond: Tensor | ExprLike, a: Tensor | ExprLike, b: Tensor | ExprLike,
              name: str = "w") -> Tensor:
        values = [x for x in (a, b) if isinstance(x, Tensor)]
        if not values:
            raise IRError("where needs a tensor for x or y")
        a, b = self._elementwise_operands(a, b)
        cond = cond if isinstance(cond, Tensor) else as_expr(cond)
        shape = _broadcast("where", *(I.operand_shape(x) for x in (cond, a, b)))
        return self._emit_out(I.WhereInst(self._out(name, values[0].dtype, shape, REGISTER),
                                          cond, a, b))

    def reduce(self, op: str, x: Tensor, dim: int, keepdim: bool = False, name: str = "red") -> Tensor:
        if not isinstance(dim, int):
            raise IRError(f"{op}: dim must be a compile-time integer, got {dim}")
        rank = len(x.shape)
        d = dim + rank if dim < 0 else dim
        shape = list(x.shape)
        if 0 <= d < rank:
            if keepdim:
                shape[d] = 1
            else:
                del shape[d]
        return self._emit_out(I.ReduceInst(self._out(name, x.dtype, shape, REGISTER), x, op, d, keepdim))

    def dot(self, a: Tensor, b: Tensor, c: Tensor, out: Optional[Tensor] = None,
            name: str = "acc") -> Tensor:
        if out is None:
            out = self._out(name, c.dtype, c.shape, REGISTER)
        return self._emit_out(I.DotInst(out, a, b, c))

    def transpose(self, x: Tensor, name: str = "tr") -> Tensor:
        return self._emit_out(I.TransposeInst(self._out(name, x.dtype, tuple(reversed(x.shape)),
                                                        REGISTER), x))

    def squeeze(self, x: Tensor, dim: int, name: str = "sq") -> Tensor:
        shape = tuple(s for i, s in enumerate(x.shape) if i != dim)
        return self._emit_out(I.SqueezeInst(self._out(name, x.dtype, shape, REGISTER), x, dim))

    def unsqueeze(self, x: Tensor, dim: int, name: str = "usq") -> Tensor:
        shape = list(x.shape)
        shape.insert(dim, 1)
        return self._emit_out(I.UnsqueezeInst(self._out(name, x.dtype, shape, REGISTER), x, dim))

    def repeat(self, x: Tensor, repeats: Sequence[int], name: str = "rep") -> Tensor:
        repeats = _ints(repeats, "repeats")
        shape = tuple(s * r for s, r in zip(x.shape, repeats))
        return self._emit_out(I.RepeatInst(self._out(name, x.dtype, shape, REGISTER), x, repeats))

    def broadcast(self, x: Tensor, shape: Shape, name: str = "bc") -> Tensor:
        return self._emit_out(I.BroadcastInst(self._out(name, x.dtype, _ints(shape, "shape"), REGISTER), x))

    def sync(self) -> None:
        self.emit(I.SyncInst())

    def lock_semaphore(self, sema: Tensor, index: Sequence[ExprLike], value: ExprLike) -> None:
        self.emit(I.LockSemaphoreInst(sema, _exprs(index, "index"), cast(value, dtypes.int32)))

    def release_semaphore(self, sema: Tensor, index: Sequence[ExprLike], value: ExprLike) -> None:
        self.emit(I.ReleaseSemaphoreInst(sema, _exprs(index, "index"), cast(value, dtypes.int32)))

    def print_tensor(self, x: Tensor, message: str = "") -> None:
        self.emit(I.PrintTensorInst(x, message))
