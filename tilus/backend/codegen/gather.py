"""Reading a register tile "as another layout sees it": the generic data-movement helper.

``slot_values(lw, x, n, fn)`` returns, for virtual slots v = 0..n-1 of every thread, the stored
element of ``x`` at logical index ``fn(thread, v)``. ``fn`` is written with + * // % only, so it is
evaluated twice: on numpy arrays at compile time (which (thread, slot) of x's layout holds each
needed element?) and on IR expressions (the index in code).

- **Static path (free):** when every thread holds what it needs, in the same slot for every
  thread, the values are direct reads of x's local buffer at constant slots (registers).
- **Through shared memory (general):** otherwise x is written to a scratch shared buffer at its
  row-major index (every owner writes; replicas write equal values), a barrier, then each thread
  reads the elements it needs into a local buffer. A barrier before the writes protects the scratch
  buffer from the previous use (loops).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from tilus.backend.codegen.dtypes_map import storage
from tilus.ir.types import Tensor


def flat_index(index, shape) -> Any:
    """Row-major flat index of ``index`` in ``shape`` (ints, numpy arrays or IR exprs)."""
    flat: Any = 0
    for i, n in zip(index, shape):
        flat = flat * n + i
    return flat


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


def spill_to_shared(lw, x: Tensor):
    """Write register tile x into a fresh scratch shared buffer at its row-major index."""
    from tilus.backend.codegen.lower import THREAD

    st = lw.reg(x)
    scratch = lw.alloc_scratch(max(1, x.type.size), storage(x.dtype), "xchg")
    lw.sync()
    for s in range(st.layout.local_size):
        idx = st.layout.index_exprs(THREAD, s)
        lw.store(scratch, st.buf[s], [flat_index(idx, x.shape)])
    lw.sync()
    return scratch


def slot_values(lw, x: Tensor, n: int, fn: Callable) -> list:
    """Stored elements of x at ``fn(thread, v)`` for v in range(n) (see the module docstring)."""
    from tilus.backend.codegen.lower import THREAD

    st = lw.reg(x)
    slots = static_slots(st.layout, x.shape, n, lw.threads, fn)
    if slots is not None:
        return [st.buf[s] for s in slots]
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
