"""The instruction methods of a Script (``self.load_global(...)`` and friends).

Each one appends an instruction to the Program being built through the ProgramBuilder; names and
keywords follow the published Tilus API (see DESIGN.md, "Public surface"). They work in the
transpiled ``__call__`` and in any Python helper it calls while the program is being built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from tilus import dtypes
from tilus.errors import TilusError
from tilus.ir import expr as E
from tilus.ir.expr import Expr
from tilus.ir.types import GLOBAL, REGISTER, SHARED, PointerType, Tensor
from tilus.ir.layout import RegisterLayout
from tilus.lang.context import current

DSL_MARK = "_tilus_instruction"


def instruction(fn):
    """Marks a Script method as an instruction method (the transpiler names its output after the
    variable it is assigned to and checks the call's arguments against its signature)."""
    setattr(fn, DSL_MARK, True)
    return fn


def is_scalar(x: Any) -> bool:
    return isinstance(x, (Expr, bool, int, float, np.bool_, np.integer, np.floating))


def _scalar(x: Any, what: str) -> Any:
    if isinstance(x, Tensor):
        raise TilusError(f"{what} must be a scalar, got the {x.scope} tensor {x} "
                         f"({x.dtype}{list(x.shape)})")
    if not is_scalar(x):
        raise TilusError(f"{what} must be a scalar expression or a number, got "
                         f"{type(x).__name__}: {x!r}")
    return x


def _scalars(xs: Any, what: str, rank: Optional[int] = None) -> list:
    if is_scalar(xs) or isinstance(xs, Tensor):
        xs = [xs]
    if not isinstance(xs, (list, tuple)):
        raise TilusError(f"{what} must be a list of scalars, got {type(xs).__name__}: {xs!r}")
    return [_scalar(x, f"{what}[{i}]") for i, x in enumerate(xs)]


def _ints(xs: Any, what: str) -> list[int]:
    if isinstance(xs, (int, np.integer)):
        xs = [xs]
    if not isinstance(xs, (list, tuple)):
        raise TilusError(f"{what} must be a list of compile-time integers, got {xs!r}")
    out = []
    for x in xs:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise TilusError(f"{what} must be compile-time integers (Python ints, e.g. from "
                             f"self.<param> or int parameters), got {x} in {list(map(str, xs))}")
        out.append(int(x))
    return out


def _int(x: Any, what: str) -> int:
    return _ints([x], what)[0]


def _dtype(x: Any, what: str = "dtype"):
    if isinstance(x, PointerType):
        raise TilusError(f"{what} must be a data type, got the pointer type {x}")
    try:
        return dtypes.get(x)
    except TilusError as e:
        raise TilusError(f"{what}: {e}") from None


def _tensor(x: Any, what: str, scope: Optional[str] = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TilusError(f"{what} must be a {scope + ' ' if scope else ''}tensor, got "
                         f"{type(x).__name__}: {x}")
    if scope is not None and x.scope != scope:
        raise TilusError(f"{what} must be a {scope} tensor, {x} lives in {x.scope} memory")
    return x


def _scalar_dtype(*values: Any):
    """The dtype a tile made from scalars gets: an IR scalar's own, else float32 if any is a
    Python float, else int32 (bool for two bools)."""
    for v in values:
        if isinstance(v, Expr):
            return v.dtype
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return dtypes.bool
    if any(isinstance(v, (float, np.floating)) for v in values):
        return dtypes.float32
    return dtypes.int32


def _dims(dims: Any) -> Optional[list[int]]:
    return None if dims is None else _ints(dims, "dims")


@dataclass(frozen=True)
class ItemPtr:
    """What ``g.item_ptr(i, j)`` / ``g[i, j].item_ptr()`` returns for a global tensor ``g``: a
    pointer to the element ``g[i, j]``, which ``lock_semaphore``/``release_semaphore`` take in
    place of a tensor and an index (NVIDIA Tilus's ``~int32`` item pointer)."""

    tensor: Tensor
    index: tuple

    def item_ptr(self) -> "ItemPtr":
        return self


def item_ptr_of(t: Any, index: Any, what: str) -> ItemPtr:
    t = _tensor(t, what, GLOBAL)
    index = tuple(_scalars(list(index), "the element index"))
    if len(index) != t.type.rank:
        raise TilusError(f"{what}: {len(index)} indices for the rank-{t.type.rank} tensor {t}")
    return ItemPtr(t, index)


def _semaphore(sema: Any, index: Any, value: Any, what: str) -> tuple[Tensor, list, Any]:
    """(tensor, index, value) of a lock/release written ``(item_ptr, value)`` or
    ``(tensor, index, value)``."""
    if isinstance(sema, ItemPtr):
        if value is None and index is not None:
            index, value = None, index
        if index is not None:
            raise TilusError(f"{what}: an item pointer already names the element; pass only value=")
        sema, index = sema.tensor, list(sema.index)
    _tensor(sema, "the semaphore", GLOBAL)
    if index is None or value is None:
        raise TilusError(f"{what} needs (item_ptr, value) or (tensor, index, value)")
    return sema, _scalars(index, "index"), _scalar(value, "value")


class RangeSpec:
    """What ``self.range(...)`` returns: the transpiler turns ``for i in self.range(...)`` into an
    IR for-loop. It cannot be iterated in plain Python."""

    def __init__(self, start, stop, step, unroll):
        self.start, self.stop, self.step, self.unroll = start, stop, step, unroll

    def __repr__(self) -> str:
        return f"self.range({self.start}, {self.stop}, {self.step})"

    def __iter__(self):
        raise TilusError("self.range(...) is a run-time loop: use it as `for i in self.range(...)` "
                         "directly in __call__ or a method of the Script, not in a plain Python "
                         "function (use Python's range there for a compile-time loop)")


class InstructionMethods:
    """Mixed into tilus.Script: every instruction of the VM as a method."""

    # ----- loops ----------------------------------------------------------------------------
    @instruction
    def range(self, start, stop=None, step=1, unroll=None) -> RangeSpec:
        """A run-time loop ``for i in self.range(start, stop, step, unroll=None)`` (IR ForStmt);
        ``unroll`` is None, a factor, or True for full unrolling by the compiler."""
        if stop is None:
            start, stop = 0, start
        for what, v in (("start", start), ("stop", stop), ("step", step)):
            _scalar(v, f"self.range {what}")
        if unroll is not None and not isinstance(unroll, (bool, int)):
            raise TilusError(f"unroll must be None, True or an int, got {unroll!r}")
        return RangeSpec(start, stop, step, unroll)

    # ----- memory ---------------------------------------------------------------------------
    @instruction
    def global_tensor(self, dtype, shape, *, requires_clean: bool) -> Tensor:
        """A row-major global workspace the kernel owns, one per launch shared by all blocks
        (split-k semaphores, partial sums). ``requires_clean=True``: it starts all zeros and the
        kernel must leave it all zeros; False: its contents start undefined."""
        ctx = current("global_tensor")
        if not isinstance(requires_clean, (bool, np.bool_)):
            raise TilusError(f"global_tensor: requires_clean must be True or False, got {requires_clean!r}")
        return ctx.builder.global_tensor(_dtype(dtype), _scalars(shape, "shape"), bool(requires_clean),
                                         name=ctx.take_hint("ws"))

    @instruction
    def item_ptr(self, t, *index) -> ItemPtr:
        """A pointer to the element ``t[index]`` of the global tensor ``t`` (``t.item_ptr(i, j)``),
        for ``lock_semaphore``/``release_semaphore``."""
        current("item_ptr")
        return item_ptr_of(t, index, "item_ptr")

    @instruction
    def global_view(self, ptr, dtype=None, shape=None, strides=None) -> Tensor:
        ctx = current("global_view")
        if not isinstance(ptr, E.Var) or not isinstance(ptr.dtype, PointerType):
            raise TilusError(f"global_view needs a pointer parameter (annotated ~dtype), got {ptr}")
        dtype = ptr.dtype.dtype if dtype is None else _dtype(dtype)
        if shape is None:
            raise TilusError("global_view needs shape=[...]")
        shape = _scalars(shape, "shape")
        strides = None if strides is None else _scalars(strides, "strides")
        if strides is not None and len(strides) != len(shape):
            raise TilusError(f"global_view: {len(strides)} strides for a rank-{len(shape)} shape")
        return ctx.builder.global_view(ptr, dtype, shape, strides, name=ctx.take_hint("g"))

    @instruction
    def load_global(self, g, offsets, shape, dims=None, other=None) -> Tensor:
        ctx = current("load_global")
        _tensor(g, "load_global's source", GLOBAL)
        if other is not None:
            _scalar(other, "other")
        return ctx.builder.load_global(g, _scalars(offsets, "offsets"), _ints(shape, "shape"),
                                       _dims(dims), other, name=ctx.take_hint("x"))

    @instruction
    def load_scalar(self, g, offsets) -> E.Var:
        """The element ``g[offsets]`` of a global tensor as a run-time scalar (every thread reads
        it): a page id from a block table, a sequence length to end a loop at. 8-64-bit types;
        the element must lie inside ``g``."""
        ctx = current("load_scalar")
        g = _tensor(g, "load_scalar's source", GLOBAL)
        offsets = _scalars(offsets, "offsets")
        if len(offsets) != g.type.rank:
            raise TilusError(f"load_scalar: {len(offsets)} offsets for the rank-{g.type.rank} "
                             f"tensor {g}")
        return ctx.builder.load_scalar(g, offsets, name=ctx.take_hint("s"))

    @instruction
    def store_global(self, g, x, offsets, dims=None) -> None:
        ctx = current("store_global")
        _tensor(g, "store_global's destination", GLOBAL)
        _tensor(x, "store_global's value", REGISTER)
        ctx.builder.store_global(g, x, _scalars(offsets, "offsets"), _dims(dims))

    @instruction
    def register_tensor(self, dtype, shape, init=None) -> Tensor:
        """A register tile; ``init`` is a scalar for every element, or a function of the element's
        indices (``init=lambda i, j: self.where(i == j, 1.0, 0.0)``) returning a scalar expression."""
        ctx = current("register_tensor")
        if init is not None and not callable(init):
            _scalar(init, "init")
        return ctx.builder.register_tensor(_dtype(dtype), _ints(shape, "shape"), init,
                                           name=ctx.take_hint("r"))

    @instruction
    def shared_tensor(self, dtype, shape) -> Tensor:
        ctx = current("shared_tensor")
        return ctx.builder.shared_tensor(_dtype(dtype), _ints(shape, "shape"),
                                         name=ctx.take_hint("s"))

    @instruction
    def free_shared(self, s) -> None:
        current("free_shared").builder.free_shared(_tensor(s, "free_shared's operand", SHARED))

    @instruction
    def slice_shared(self, s, offsets, shape, dims=None) -> Tensor:
        ctx = current("slice_shared")
        _tensor(s, "slice_shared's source", SHARED)
        return ctx.builder.slice_shared(s, _scalars(offsets, "offsets"), _ints(shape, "shape"),
                                        _dims(dims), name=ctx.take_hint("s"))

    @instruction
    def copy_async(self, src, dst, offsets, dims=None) -> None:
        ctx = current("copy_async")
        _tensor(src, "copy_async's src", GLOBAL)
        _tensor(dst, "copy_async's dst", SHARED)
        ctx.builder.copy_async(src, dst, _scalars(offsets, "offsets"), _dims(dims))

    @instruction
    def copy_async_commit_group(self) -> None:
        current("copy_async_commit_group").builder.copy_async_commit_group()

    @instruction
    def copy_async_wait_group(self, n=0) -> None:
        current("copy_async_wait_group").builder.copy_async_wait_group(_int(n, "n"))

    @instruction
    def copy_async_wait_all(self) -> None:
        """Waits for every copy_async issued so far, committed or not (commit, then wait for 0)."""
        builder = current("copy_async_wait_all").builder
        builder.copy_async_commit_group()
        builder.copy_async_wait_group(0)

    @instruction
    def load_shared(self, s) -> Tensor:
        ctx = current("load_shared")
        return ctx.builder.load_shared(_tensor(s, "load_shared's source", SHARED),
                                       name=ctx.take_hint("x"))

    @instruction
    def lookup(self, table, index) -> Tensor:
        """``table[index]``: for every element of the int32 register tile ``index``, the element
        of the 1-D shared ``table`` (a 32-bit type) it names; the tile has index's shape."""
        ctx = current("lookup")
        return ctx.builder.lookup(_tensor(table, "lookup's table", SHARED),
                                  _tensor(index, "lookup's index", REGISTER),
                                  name=ctx.take_hint("l"))

    @instruction
    def store_shared(self, s, x) -> None:
        ctx = current("store_shared")
        ctx.builder.store_shared(_tensor(s, "store_shared's destination", SHARED),
                                 _tensor(x, "store_shared's value", REGISTER))

    @instruction
    def assign(self, out, x) -> None:
        """Copies register tile ``x`` into the existing register tile ``out`` (same dtype and
        shape): what rebinding a loop-carried name does, for tiles kept in Python lists."""
        ctx = current("assign")
        ctx.builder.assign(_tensor(out, "assign's destination", REGISTER),
                           _tensor(x, "assign's value", REGISTER))

    # ----- compute --------------------------------------------------------------------------
    @instruction
    def dot(self, a, b, acc=None, out=None, acc_dtype=None) -> Tensor:
        """``a @ b + acc``; ``out=acc`` accumulates in place. Without ``acc``, the accumulator is
        a zero tile of ``acc_dtype`` (one of the two is needed)."""
        ctx = current("dot")
        _tensor(a, "dot's a", REGISTER)
        _tensor(b, "dot's b", REGISTER)
        if acc is None:
            if acc_dtype is None:
                raise TilusError("dot(a, b) without an accumulator needs acc_dtype=")
            if len(a.shape) != 2 or len(b.shape) != 2:
                raise TilusError(f"dot takes rank-2 tiles, got {list(a.shape)} @ {list(b.shape)}")
            acc = ctx.builder.register_tensor(_dtype(acc_dtype, "acc_dtype"),
                                              [a.shape[0], b.shape[1]], 0, name="zero")
        else:
            _tensor(acc, "dot's acc", REGISTER)
            if acc_dtype is not None and _dtype(acc_dtype, "acc_dtype") != acc.dtype:
                raise TilusError(f"dot: acc_dtype={_dtype(acc_dtype)} but the accumulator {acc} is "
                                 f"{acc.dtype}")
        if out is not None:
            _tensor(out, "dot's out", REGISTER)
        return ctx.builder.dot(a, b, acc, out=out, name=ctx.take_hint("acc"))

    @instruction
    def cast(self, x, dtype, exponent: int = 0) -> Tensor:
        """``x`` converted to ``dtype``; with ``exponent=e``, ``x * 2^e`` rounded once (a tile of
        at most 16 bits to a float dtype: the packed low-bit casts do it for free)."""
        ctx = current("cast")
        if not isinstance(x, Tensor):
            if exponent:
                raise TilusError("cast(..., exponent=) takes a register tile, not a scalar")
            return E.cast(_scalar(x, "cast's operand"), _dtype(dtype))
        return ctx.builder.cast(_tensor(x, "cast's operand", REGISTER), _dtype(dtype),
                                name=ctx.take_hint("c"), exponent=exponent)

    @instruction
    def view(self, x, dtype=None, shape=None, layout=None) -> Tensor:
        """Reinterprets the bits of ``x`` (row-major bit stream) as ``dtype`` and ``shape``. With
        ``layout=``, reinterprets each thread's registers instead (x must have an annotated
        layout): the output, in ``layout``, holds in thread t the bits x holds in thread t."""
        ctx = current("view")
        _tensor(x, "view's operand", REGISTER)
        if layout is None:
            return ctx.builder.view(x, None if dtype is None else _dtype(dtype),
                                    None if shape is None else _ints(shape, "shape"),
                                    name=ctx.take_hint("v"))
        known = ctx.layouts.get(x.name)
        if known is None:
            raise TilusError(f"view(..., layout=): {x} has no layout; annotate_layout it first")
        x = Tensor(x.name, x.type.with_layout(known[0]))
        shape = tuple(layout.shape) if shape is None else _ints(shape, "shape")
        out = ctx.builder.reinterpret(x, x.dtype if dtype is None else _dtype(dtype), shape,
                                      layout, name=ctx.take_hint("v"))
        ctx.layouts[out.name] = (layout, ctx.location)
        return out

    @instruction
    def convert_layout(self, x, layout) -> Tensor:
        """``x`` redistributed over the threads as the register layout ``layout`` says (the same
        values); the IR shows what it costs: free, a warp shuffle, or through shared memory."""
        ctx = current("convert_layout")
        _tensor(x, "convert_layout's operand", REGISTER)
        if not isinstance(layout, RegisterLayout):
            raise TilusError(f"convert_layout: {layout!r} is not a register layout")
        if tuple(layout.shape) != tuple(x.shape):
            raise TilusError(f"convert_layout: the layout's shape {list(layout.shape)} differs from "
                             f"{x}'s shape {list(x.shape)}")
        out = ctx.builder.convert_layout(x, layout, name=ctx.take_hint("cl"))
        ctx.layouts[out.name] = (layout, ctx.location)
        return out

    @instruction
    def fma(self, a, b, c) -> Tensor:
        """``a * b + c`` elementwise (broadcasting) with one rounding, as ``fma.rn``."""
        ctx = current("fma")
        _tensor(a, "fma's first operand", REGISTER)
        return ctx.builder.fma(a, b, c, name=ctx.take_hint("f"))

    def _reduce(self, op, x, dim, keepdim):
        ctx = current(op)
        _tensor(x, f"{op}'s operand", REGISTER)
        rank = len(x.shape)
        d = _int(dim, "dim")
        if not -rank <= d < rank:
            raise TilusError(f"{op}: dim {d} out of range for the rank-{rank} tile {x}")
        return ctx.builder.reduce(op, x, d, bool(keepdim), name=ctx.take_hint(op))

    @instruction
    def sum(self, x, dim, keepdim=False) -> Tensor:
        return self._reduce("sum", x, dim, keepdim)

    @instruction
    def max(self, x, dim, keepdim=False) -> Tensor:
        return self._reduce("max", x, dim, keepdim)

    @instruction
    def min(self, x, dim, keepdim=False) -> Tensor:
        return self._reduce("min", x, dim, keepdim)

    @instruction
    def where(self, cond, x, y) -> Tensor:
        """``x`` where ``cond`` holds, else ``y`` (broadcasting); under a tensor condition, scalar
        choices become tiles of the condition's shape (a Python float: float32, int: int32)."""
        ctx = current("where")
        if not any(isinstance(v, Tensor) for v in (cond, x, y)):
            return E.select(cond, x, y)
        if not isinstance(x, Tensor) and not isinstance(y, Tensor):
            _tensor(cond, "where's condition", REGISTER)
            x = ctx.builder.register_tensor(_scalar_dtype(x, y), list(cond.shape),
                                            _scalar(x, "where's x"), name="x")
        return ctx.builder.where(cond, x, y, name=ctx.take_hint("w"))

    def _elementwise(self, op, x, y, out):
        ctx = current(op)
        if not isinstance(x, Tensor) and not isinstance(y, Tensor):
            raise TilusError(f"{op} takes at least one register tensor")
        if out is not None:
            _tensor(out, f"{op}'s out", REGISTER)
        return ctx.builder.binary(op, x, y, name=ctx.take_hint(op), out=out)

    @instruction
    def add(self, x, y, out=None) -> Tensor:
        """``x + y`` (broadcasting); ``out=t`` writes into the existing tile ``t``."""
        return self._elementwise("add", x, y, out)

    @instruction
    def sub(self, x, y, out=None) -> Tensor:
        return self._elementwise("sub", x, y, out)

    @instruction
    def mul(self, x, y, out=None) -> Tensor:
        return self._elementwise("mul", x, y, out)

    @instruction
    def div(self, x, y, out=None) -> Tensor:
        return self._elementwise("div", x, y, out)

    @instruction
    def square(self, x) -> Tensor:
        """``x * x`` elementwise."""
        _tensor(x, "square's operand", REGISTER)
        return self._elementwise("mul", x, x, None)

    def _unary(self, op, x):
        ctx = current(op)
        _tensor(x, f"{op}'s operand", REGISTER)
        return ctx.builder.unary(op, x, name=ctx.take_hint(op))

    @instruction
    def exp(self, x) -> Tensor:
        return self._unary("exp", x)

    @instruction
    def log(self, x) -> Tensor:
        return self._unary("log", x)

    @instruction
    def sqrt(self, x) -> Tensor:
        return self._unary("sqrt", x)

    @instruction
    def rsqrt(self, x) -> Tensor:
        return self._unary("rsqrt", x)

    @instruction
    def abs(self, x) -> Tensor:
        return self._unary("abs", x)

    @instruction
    def neg(self, x) -> Tensor:
        return self._unary("neg", x)

    def _minmax(self, op, a, b):
        if not isinstance(a, Tensor) and not isinstance(b, Tensor):
            return (E.maximum if op == "maximum" else E.minimum)(_scalar(a, "a"), _scalar(b, "b"))
        ctx = current(op)
        return ctx.builder.binary(op, a, b, name=ctx.take_hint(op))

    @instruction
    def maximum(self, a, b) -> Tensor:
        """Elementwise maximum (tensors with broadcasting, or two scalars)."""
        return self._minmax("maximum", a, b)

    @instruction
    def minimum(self, a, b) -> Tensor:
        return self._minmax("minimum", a, b)

    @instruction
    def transpose(self, x) -> Tensor:
        ctx = current("transpose")
        return ctx.builder.transpose(_tensor(x, "transpose's operand", REGISTER),
                                     name=ctx.take_hint("tr"))

    @instruction
    def squeeze(self, x, dim) -> Tensor:
        ctx = current("squeeze")
        _tensor(x, "squeeze's operand", REGISTER)
        d = _int(dim, "dim")
        return ctx.builder.squeeze(x, d + len(x.shape) if d < 0 else d, name=ctx.take_hint("sq"))

    @instruction
    def unsqueeze(self, x, dim) -> Tensor:
        ctx = current("unsqueeze")
        _tensor(x, "unsqueeze's operand", REGISTER)
        d = _int(dim, "dim")
        return ctx.builder.unsqueeze(x, d + len(x.shape) + 1 if d < 0 else d,
                                     name=ctx.take_hint("usq"))

    @instruction
    def repeat(self, x, repeats) -> Tensor:
        ctx = current("repeat")
        return ctx.builder.repeat(_tensor(x, "repeat's operand", REGISTER),
                                  _ints(repeats, "repeats"), name=ctx.take_hint("rep"))

    @instruction
    def broadcast(self, x, shape) -> Tensor:
        ctx = current("broadcast")
        return ctx.builder.broadcast(_tensor(x, "broadcast's operand", REGISTER),
                                     _ints(shape, "shape"), name=ctx.take_hint("bc"))

    # ----- synchronisation, layouts, debugging ----------------------------------------------
    @instruction
    def static_assert(self, cond, msg="") -> None:
        """Fails the build (with ``msg``) unless ``cond``, a value known at build time, holds."""
        current("static_assert")
        if isinstance(cond, (Expr, Tensor)):
            raise TilusError(f"static_assert needs a condition known at build time, got {cond}")
        if not cond:
            raise TilusError(f"static_assert failed: {msg}" if msg else "static_assert failed")

    @instruction
    def sync(self) -> None:
        current("sync").builder.sync()

    @instruction
    def lock_semaphore(self, sema, index=None, value=None) -> None:
        """Waits until ``sema[index] == value`` (``sema``: an int32 global tensor), or until the
        element an ``item_ptr`` points at equals ``value``."""
        ctx = current("lock_semaphore")
        ctx.builder.lock_semaphore(*_semaphore(sema, index, value, "lock_semaphore"))

    @instruction
    def release_semaphore(self, sema, index=None, value=None) -> None:
        """Publishes this block's global writes, then sets ``sema[index]`` (or the element an
        ``item_ptr`` points at) to ``value``."""
        ctx = current("release_semaphore")
        ctx.builder.release_semaphore(*_semaphore(sema, index, value, "release_semaphore"))

    @instruction
    def annotate_layout(self, x, layout) -> None:
        """Fixes the layout of the register or shared tensor ``x``; it lands in ``x``'s type in the
        finished Program (every use of ``x`` carries it)."""
        ctx = current("annotate_layout")
        _tensor(x, "annotate_layout's tensor")
        if x.scope == GLOBAL:
            raise TilusError(f"annotate_layout: {x} is a global tensor; its layout is its strides")
        shape = getattr(layout, "shape", None)
        if shape is not None and tuple(shape) != tuple(x.shape):
            raise TilusError(f"annotate_layout: the layout's shape {list(shape)} differs from "
                             f"{x}'s shape {list(x.shape)}")
        old = ctx.layouts.get(x.name)
        if old is not None and old[0] != layout:
            raise TilusError(f"annotate_layout: {x} already has the layout {old[0]}, "
                             f"cannot also give it {layout}")
        ctx.layouts[x.name] = (layout, ctx.location)

    @instruction
    def print_tensor(self, x, msg="") -> None:
        ctx = current("print_tensor")
        ctx.builder.print_tensor(_tensor(x, "print_tensor's operand"), str(msg))


def instruction_names() -> list[str]:
    return sorted(n for n, v in vars(InstructionMethods).items() if getattr(v, DSL_MARK, False))
