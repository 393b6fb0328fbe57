"""Reading a register tile "as another layout sees it".

``slot_values(lw, x, n, fn)`` returns, for virtual slots v = 0..n-1 of every thread, the stored
element of ``x`` at logical index ``fn(thread, v)`` (``tilus.ir.layout.conversion`` defines
readers and their cost). Emitters read only what is free (every thread holds what it needs, in a
slot that is the same for every thread): direct reads of x's registers. Any other read is a
``convert_layout`` in the IR (layout inference inserts it), lowered by ``shuffle_values`` (a warp
shuffle per virtual slot) or through its shared scratch (emitters/convert.py); the backend moves
no data the IR does not show.
"""
from __future__ import annotations

from typing import Any, Callable

from tilus.backend.codegen.dtypes_map import storage
from tilus.backend.codegen.lower import Lowerer
from tilus.errors import CompilationError
from tilus.ir import expr as E
from tilus.ir.layout.conversion import (broadcast_index, flat_index, owner, same_index, shuffle_slots,
                                        static_slots)
from tilus.ir.types import Tensor

__all__ = ["flat_index", "unravel", "index_exprs", "slot_index", "slot_values", "elementwise_values", "shuffle_values"]


def unravel(flat, shape) -> tuple:
    """The row-major index of the flat index ``flat`` in ``shape`` (inverse of ``flat_index``);
    the outermost coordinate skips the modulo, which is exact for in-range indices."""
    strides, stride = [], 1
    for n in reversed(shape):
        strides.insert(0, stride)
        stride *= n
    idx = []
    for n, st in zip(shape, strides):
        q = flat // st if st != 1 else flat
        idx.append(q % n if st * n != stride else q)
    return tuple(idx)


def index_exprs(layout, thread: Any, slot: Any) -> tuple[E.Expr, ...]:
    """The logical index ``layout`` puts at (``thread``, ``slot``), as IR expressions (the layout
    gives plain ints where a coordinate is constant)."""
    return tuple(E.as_expr(c) for c in layout.index_exprs(thread, slot))


def slot_index(lw: Lowerer, layout, slot: int) -> tuple[E.Expr, ...]:
    """``index_exprs(layout, THREAD, slot)``: the index this thread holds in ``slot``, built once
    per lowering (emitters ask for the same layouts' slots instruction after instruction)."""
    from tilus.backend.codegen.lower import THREAD

    return lw.derived(index_exprs, layout, THREAD, slot)


def slot_values(lw: Lowerer, x: Tensor, n: int, fn: Callable) -> list:
    """Stored elements of x at ``fn(thread, v)`` for v in range(n), when every thread holds them
    (raises CompilationError otherwise: the IR lacks a convert_layout)."""
    st = lw.reg(x)
    return _read(x, st, static_slots(st.layout, x.shape, n, lw.threads, fn))


def elementwise_values(lw: Lowerer, x: Tensor, layout, shape: tuple) -> list:
    """``slot_values`` of the operand x of an elementwise op whose output has ``layout`` and
    ``shape``: x's element at each output slot's index (numpy broadcasting when x's shape
    differs). The slots depend on the layouts and shapes only, so they are found once per
    lowering."""
    st = lw.reg(x)
    return _read(x, st, lw.derived(_operand_slots, st.layout, tuple(x.shape), layout, tuple(shape),
                                   lw.threads))


def _operand_slots(src, x_shape: tuple, layout, shape: tuple, threads: int):
    fn = same_index(layout) if x_shape == shape else broadcast_index(layout, x_shape)
    return static_slots(src, x_shape, layout.local_size, threads, fn)


def _read(x: Tensor, st, slots) -> list:
    if slots is None:
        raise CompilationError(f"%{x.name} is read in a layout other than its own ({st.layout}) "
                               f"and the IR has no convert_layout for it (run layout inference)")
    return [st.buf[s] for s in slots]


def _shuffle(value, lane):
    """__shfl_sync of a stored element (32-bit lanes; narrower types widened, 16-bit floats by bits)."""
    from tilus.backend.tvm_shim import dt, tirx

    d = dt(value)
    full = tirx.const(0xFFFFFFFF, "uint32")
    width = tirx.const(32, "int32")
    if d in ("float32", "int32", "uint32", "float64", "int64", "uint64"):
        return tirx.call_extern(d, "__shfl_sync", full, value, lane, width)
    if d in ("float16", "bfloat16"):
        bits = tirx.Cast("uint32", tirx.reinterpret("uint16", value))
        got = tirx.call_extern("uint32", "__shfl_sync", full, bits, lane, width)
        return tirx.reinterpret(d, tirx.Cast("uint16", got))
    wide = tirx.Cast("int32", value)
    got = tirx.call_extern("int32", "__shfl_sync", full, wide, lane, width)
    return got != tirx.const(0, "int32") if d == "bool" else tirx.Cast(d, got)


def shuffle_values(lw: Lowerer, x: Tensor, n: int, fn: Callable) -> list:
    """Elements of x at ``fn(thread, v)``, each fetched from the lane of the reader's warp that
    holds it (one ``__shfl_sync`` per virtual slot); a convert_layout of cost ``shuffle``."""
    from tilus.backend.codegen.lower import THREAD

    st = lw.reg(x)
    src = shuffle_slots(st.layout, x.shape, n, lw.threads, fn)
    if src is None:
        raise CompilationError(f"%{x.name}: no warp shuffle reads it in the wanted layout")
    out = lw.alloc_local(n, storage(x.dtype), lw.fresh(f"{x.name}_s"))
    for v in range(n):
        who, _ = owner(st.layout, fn(THREAD, v), THREAD)
        lane: Any = lw.expr(E.as_expr(who % 32))
        lw.store(out, _shuffle(st.buf[src[v]], lane), [v])
    return [out[v] for v in range(n)]
