"""Reading a register tile "as another layout sees it": the generic data-movement helper.

``slot_values(lw, x, n, fn)`` returns, for virtual slots v = 0..n-1 of every thread, the stored
element of ``x`` at logical index ``fn(thread, v)``. ``fn`` is written with + * // % only, so it is
evaluated twice: on numpy arrays at compile time (which (thread, slot) of x's layout holds each
needed element?) and on IR expressions (the index in code).

- **Static path (free):** when every thread holds what it needs, in the same slot for every
  thread, the values are direct reads of x's local buffer at constant slots (registers).
- **Warp shuffles:** when each needed element is held, at a slot that is the same for every
  thread, by a lane of the same warp (replicated layouts: the replica in the reader's replica
  group), one ``__shfl_sync`` per virtual slot.
- **Through shared memory (general):** otherwise x is written to a scratch shared buffer at its
  row-major index (every owner writes; replicas write equal values), a barrier, then each thread
  reads the elements it needs into a local buffer. A barrier before the writes protects the scratch
  buffer from the previous use (loops).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tilus.backend.codegen.dtypes_map import storage
from tilus.backend.codegen.lower import Lowerer
from tilus.ir import expr as E
from tilus.ir.types import Tensor


def flat_index(index, shape) -> Any:
    """Row-major flat index of ``index`` in ``shape`` (ints, numpy arrays or IR exprs)."""
    flat: Any = 0
    for i, n in zip(index, shape):
        flat = flat * n + i
    return flat


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


def slot_table(layout, shape, n: int, threads: int, fn: Callable) -> np.ndarray:
    """[threads, n] slots of ``layout`` holding ``fn(t, v)`` in thread t, -1 where t holds none."""
    size = int(np.prod(shape)) if len(shape) else 1
    t = np.arange(threads, dtype=np.int64)[:, None]
    v = np.arange(n, dtype=np.int64)[None, :]
    idx = fn(t, v)
    flat = np.broadcast_to(np.asarray(flat_index(idx, shape), dtype=np.int64), (threads, n))
    table = layout.index_table()                      # [threads, L] flat index per slot
    inv = np.full((threads, size), -1, dtype=np.int64)
    rows = np.arange(threads)[:, None]
    inv[rows, table] = np.arange(layout.local_size)[None, :]
    return inv[rows, flat]


def static_slots(layout, shape, n: int, threads: int, fn: Callable):
    """The slot list when the static path applies, else None."""
    if n == 0:
        return []
    slots = slot_table(layout, shape, n, threads, fn)
    if (slots >= 0).all() and (slots == slots[0:1]).all():
        return [int(s) for s in slots[0]]
    return None


def index_exprs(layout, thread: Any, slot: Any) -> tuple[E.Expr, ...]:
    """The logical index ``layout`` puts at (``thread``, ``slot``), as IR expressions (the layout
    gives plain ints where a coordinate is constant)."""
    return tuple(E.as_expr(c) for c in layout.index_exprs(thread, slot))


def spill_to_shared(lw: Lowerer, x: Tensor):
    """Write register tile x into a fresh scratch shared buffer at its row-major index."""
    from tilus.backend.codegen.lower import THREAD

    st = lw.reg(x)
    scratch = lw.alloc_scratch(max(1, x.type.size), storage(x.dtype), "xchg")
    lw.sync()
    for s in range(st.layout.local_size):
        idx = index_exprs(st.layout, THREAD, s)
        lw.store(scratch, st.buf[s], [flat_index(idx, x.shape)])
    lw.sync()
    return scratch


def _owner(layout, index, thread):
    """(thread, slot) holding ``index`` (ints, numpy arrays or IR exprs); replicated thread
    digits are taken from ``thread`` (the owner in the reader's replica group)."""
    digits = layout._index_digits(index)
    sizes = [layout._entry_size(e) for e in layout.spatial_modes]
    owner: Any = 0
    stride = 1
    strides = []
    for size in reversed(sizes):
        strides.insert(0, stride)
        stride *= size
    for e, size, st in zip(layout.spatial_modes, sizes, strides):
        d = digits[e] if e >= 0 else (thread // st) % size
        owner = owner * size + d
    slot: Any = 0
    for e in layout.local_modes:
        slot = slot * layout.mode_shape[e] + digits[e]
    return owner, slot


def shuffle_slots(layout, shape, n: int, threads: int, fn: Callable):
    """The source slot per virtual slot when the shuffle path applies, else None."""
    if n == 0 or threads % 32:
        return None
    t = np.arange(threads, dtype=np.int64)[:, None]
    v = np.arange(n, dtype=np.int64)[None, :]
    idx = [np.broadcast_to(np.asarray(c, dtype=np.int64), (threads, n)) for c in fn(t, v)]
    owner, slot = _owner(layout, idx, np.broadcast_to(t, (threads, n)))
    owner = np.broadcast_to(np.asarray(owner), (threads, n))
    slot = np.broadcast_to(np.asarray(slot), (threads, n))
    if not (slot == slot[0:1]).all() or not (owner // 32 == t // 32).all():
        return None
    return [int(s) for s in slot[0]]


def _shuffle(lw: Lowerer, value, lane):
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


def slot_values(lw: Lowerer, x: Tensor, n: int, fn: Callable) -> list:
    """Stored elements of x at ``fn(thread, v)`` for v in range(n) (see the module docstring)."""
    from tilus.backend.codegen.lower import THREAD

    st = lw.reg(x)
    slots = static_slots(st.layout, x.shape, n, lw.threads, fn)
    if slots is not None:
        return [st.buf[s] for s in slots]
    src = shuffle_slots(st.layout, x.shape, n, lw.threads, fn)
    if src is not None:
        out = lw.alloc_local(n, storage(x.dtype), lw.fresh(f"{x.name}_s"))
        for v in range(n):
            owner, _ = _owner(st.layout, fn(THREAD, v), THREAD)
            lane = lw.expr(E.as_expr(owner % 32))
            lw.store(out, _shuffle(lw, st.buf[src[v]], lane), [v])
        return [out[v] for v in range(n)]
    scratch = spill_to_shared(lw, x)
    out = lw.alloc_local(n, storage(x.dtype), lw.fresh(f"{x.name}_g"))
    for v in range(n):
        lw.store(out, scratch[lw.index(flat_index(fn(THREAD, v), x.shape))], [v])
    return [out[v] for v in range(n)]


def same_index(layout) -> Callable:
    """fn for reading x at the index ``layout`` holds in each slot (x has layout's shape)."""
    return lambda t, v: layout._coords(t, v)


def broadcast_index(layout, x_shape) -> Callable:
    """fn for reading an operand of ``x_shape`` broadcast (numpy rules) to ``layout``'s shape."""
    rank = layout.rank
    pad = rank - len(x_shape)

    def fn(t, v):
        idx = layout._coords(t, v)
        out = []
        for d, n in enumerate(x_shape):
            out.append(0 if n == 1 else idx[d + pad])
        return tuple(out)
    return fn
