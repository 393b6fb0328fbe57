"""Reading a register tile "as another layout sees it": which (thread, slot) of a source layout
holds what a reader needs, and what moving it costs.

A reader is ``fn(thread, v)``: the logical index the reading thread needs in its virtual slot v.
``fn`` is written with + * // % only, so it is evaluated on numpy arrays here (at compile time)
and on IR expressions by the backend (the index in code). Three cost classes, cheapest first:

- ``free``: every thread holds what it needs itself, in a slot that is the same for every thread
  (the layouts agree, or differ only in replication the reader can read): register copies.
- ``shuffle``: each needed element is held, at a slot that is the same for every thread, by a lane
  of the reader's own warp (the replica in the reader's replica group): one warp shuffle per slot.
- ``shared``: anything else: through shared memory (written at the row-major index, a barrier,
  read back in the new layout).

``conversion_cost(src, dst)`` is the class of converting a whole tile from ``src`` to ``dst``; the
IR shows it on every ``convert_layout`` and the backend lowers it that way.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from tilus.dtypes import DataType
from tilus.ir.layout.register import RegisterLayout

FREE, SHUFFLE, SHARED = "free", "shuffle", "shared"
COSTS = (FREE, SHUFFLE, SHARED)

Reader = Callable[[Any, Any], Sequence[Any]]


def flat_index(index: Sequence[Any], shape: Sequence[int]) -> Any:
    """Row-major flat index of ``index`` in ``shape`` (ints, numpy arrays or IR exprs)."""
    flat: Any = 0
    for i, n in zip(index, shape):
        flat = flat * n + i
    return flat


def same_index(layout: RegisterLayout) -> Reader:
    """The reader of a tile of ``layout``'s shape that wants, in each slot, the element ``layout``
    puts there."""
    return lambda t, v: layout._coords(t, v)


def slot_table(layout: RegisterLayout, shape: Sequence[int], n: int, threads: int,
               fn: Reader) -> np.ndarray:
    """[threads, n] slots of ``layout`` holding ``fn(t, v)`` in thread t, -1 where t holds none."""
    size = int(np.prod(shape)) if len(shape) else 1
    t = np.arange(threads, dtype=np.int64)[:, None]
    v = np.arange(n, dtype=np.int64)[None, :]
    flat = np.broadcast_to(np.asarray(flat_index(fn(t, v), shape), dtype=np.int64), (threads, n))
    table = layout.index_table()                      # [threads, L] flat index per slot
    inv = np.full((threads, size), -1, dtype=np.int64)
    rows = np.arange(threads)[:, None]
    inv[rows, table] = np.arange(layout.local_size)[None, :]
    return inv[rows, flat]


def static_slots(layout: RegisterLayout, shape: Sequence[int], n: int, threads: int,
                 fn: Reader) -> Optional[list[int]]:
    """The slot of ``layout`` each virtual slot reads when the read is free, else None."""
    if n == 0:
        return []
    slots = slot_table(layout, shape, n, threads, fn)
    if (slots >= 0).all() and (slots == slots[0:1]).all():
        return [int(s) for s in slots[0]]
    return None


def owner(layout: RegisterLayout, index: Sequence[Any], thread: Any) -> tuple[Any, Any]:
    """(thread, slot) holding ``index`` (ints, numpy arrays or IR exprs); replicated thread
    digits are taken from ``thread`` (the owner in the reader's replica group)."""
    digits = layout._index_digits(index)
    sizes = [layout._entry_size(e) for e in layout.spatial_modes]
    strides: list[int] = []
    stride = 1
    for size in reversed(sizes):
        strides.insert(0, stride)
        stride *= size
    who: Any = 0
    for e, size, st in zip(layout.spatial_modes, sizes, strides):
        d = digits[e] if e >= 0 else (thread // st) % size
        who = who * size + d
    slot: Any = 0
    for e in layout.local_modes:
        slot = slot * layout.mode_shape[e] + digits[e]
    return who, slot


def shuffle_slots(layout: RegisterLayout, shape: Sequence[int], n: int, threads: int,
                  fn: Reader) -> Optional[list[int]]:
    """The source slot of each virtual slot when a warp shuffle per slot reads it, else None."""
    if n == 0 or threads % 32:
        return None
    t = np.arange(threads, dtype=np.int64)[:, None]
    v = np.arange(n, dtype=np.int64)[None, :]
    idx = [np.broadcast_to(np.asarray(c, dtype=np.int64), (threads, n)) for c in fn(t, v)]
    who, slot = owner(layout, idx, np.broadcast_to(t, (threads, n)))
    who = np.broadcast_to(np.asarray(who), (threads, n))
    slot = np.broadcast_to(np.asarray(slot), (threads, n))
    if not (slot == slot[0:1]).all() or not (who // 32 == t // 32).all():
        return None
    return [int(s) for s in slot[0]]


def read_cost(layout: RegisterLayout, shape: Sequence[int], n: int, threads: int,
              fn: Reader) -> str:
    """The cost class of ``n`` virtual slots of every thread reading ``fn`` from ``layout``."""
    if static_slots(layout, shape, n, threads, fn) is not None:
        return FREE
    if shuffle_slots(layout, shape, n, threads, fn) is not None:
        return SHUFFLE
    return SHARED


def conversion_cost(src: RegisterLayout, dst: RegisterLayout) -> str:
    """The cost class of converting a tile from layout ``src`` to ``dst`` (same shape and threads)."""
    if src == dst:
        return FREE
    return read_cost(src, dst.shape, dst.local_size, dst.num_threads, same_index(dst))


def reduce_shuffle_plan(lx: RegisterLayout, lo: RegisterLayout, dim: int, keepdim: bool,
                        threads: int, dtype: DataType) -> Optional[tuple[list, list]]:
    """(per-output-slot lists of x slots, lane bits) when each thread's partial of an output row
    combines with its XOR partners over ``bits`` (lanes of one warp) into the whole row: the
    partners hold the same output element in the same slot and disjoint parts of the row, and
    together all of it. None otherwise, and for bool and 64-bit integer tiles (shuffles move 32-bit
    lanes; 64-bit floats go as two)."""
    if dtype.is_bool or (dtype.nbits == 64 and not dtype.is_float):
        return None
    n = lx.shape[dim]
    t = np.arange(threads)[:, None]
    xs = np.arange(lx.local_size)[None, :]
    xc = [np.broadcast_to(np.asarray(c), (threads, lx.local_size)) for c in lx._coords(t, xs)]
    rest = [c for d, c in enumerate(xc) if d != dim]
    rshape = [m for d, m in enumerate(lx.shape) if d != dim]
    xkey = np.zeros((threads, lx.local_size), dtype=np.int64)
    for c, m in zip(rest, rshape):
        xkey = xkey * m + c
    os_ = np.arange(lo.local_size)[None, :]
    oc = [np.broadcast_to(np.asarray(c), (threads, lo.local_size)) for c in lo._coords(t, os_)]
    if keepdim:
        oc = [c for d, c in enumerate(oc) if d != dim]
    okey = np.zeros((threads, lo.local_size), dtype=np.int64)
    for c, m in zip(oc, rshape):
        okey = okey * m + c
    xflat = np.zeros((threads, lx.local_size), dtype=np.int64)
    for c, m in zip(xc, lx.shape):
        xflat = xflat * m + c
    parts = []
    for s in range(lo.local_size):
        sel = [np.nonzero(xkey[th] == okey[th, s])[0].tolist() for th in range(threads)]
        if any(x != sel[0] for x in sel) or not sel[0]:
            return None
        parts.append(sel[0])
    p = len(parts[0])
    bits = []
    for b in range(5):
        partner = t[:, 0] ^ (1 << b)
        if (partner >= threads).any():
            continue
        if not (okey[partner] == okey).all():
            continue
        ok = True
        for s in range(lo.local_size):
            mine = xflat[:, parts[s]]
            theirs = xflat[partner][:, parts[s]]
            if (np.sort(mine, axis=1)[:, :, None] == np.sort(theirs, axis=1)[:, None, :]).any():
                ok = False
                break
        if ok:
            bits.append(b)
    if not bits or p * (1 << len(bits)) != n:
        return None
    # the XOR group of every thread must cover its row exactly (no element twice)
    for s in range(lo.local_size):
        for th in range(min(threads, 32)):
            group = {th ^ sum(1 << b for i, b in enumerate(bits) if mask >> i & 1)
                     for mask in range(1 << len(bits))}
            elems = np.concatenate([xflat[g, parts[s]] for g in group])
            if len(set(elems.tolist())) != n:
                return None
    return parts, bits


def reduce_source(lo: RegisterLayout, dim: int, keepdim: bool) -> Callable[[Any, Any, Any], tuple]:
    """``fn(thread, out_slot, r)``: the input index that a reduction along ``dim`` folds into
    output slot ``out_slot`` (of layout ``lo``) as its r-th element."""
    def src(t, s, r):
        o = list(lo._coords(t, s))
        if keepdim:
            return tuple(r if d == dim else c for d, c in enumerate(o))
        o.insert(dim, r)
        return tuple(o)
    return src


def reduce_cost(lx: RegisterLayout, lo: RegisterLayout, dim: int, keepdim: bool,
                dtype: DataType) -> str:
    """``free`` when every thread holds its output rows whole, ``shuffle`` when a warp's XOR
    butterfly completes them (``reduce_shuffle_plan``), else ``shared`` (the input needs a
    conversion first)."""
    n, src = lx.shape[dim], reduce_source(lo, dim, keepdim)
    if static_slots(lx, lx.shape, lo.local_size * n, lx.num_threads,
                    lambda t, v: src(t, v // n, v % n)) is not None:
        return FREE
    if reduce_shuffle_plan(lx, lo, dim, keepdim, lx.num_threads, dtype) is not None:
        return SHUFFLE
    return SHARED


def broadcast_index(layout: RegisterLayout, x_shape: Sequence[int]) -> Reader:
    """The reader of an operand of ``x_shape`` broadcast (numpy rules) to ``layout``'s shape."""
    pad = layout.rank - len(x_shape)

    def fn(t, v):
        idx = layout._coords(t, v)
        return tuple(0 if n == 1 else idx[d + pad] for d, n in enumerate(x_shape))
    return fn
