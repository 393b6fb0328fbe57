"""The register-layout operations layout inference relies on; each returns a layout or raises.

Every operation rebuilds the operand's modes (``_Work``), splitting a mode where a boundary falls
inside it, and lets ``_Work.build`` restore the canonical form. Errors name every layout involved.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tilus.errors import LayoutError
from tilus.ir.layout.register import RegisterLayout, _Mode, _Work


def _widened(layout: RegisterLayout, rank: int) -> _Work:
    """The layout's modes; a rank-0 layout is widened to ``rank`` dimensions of size 1."""
    work = layout._work()
    if layout.rank == 0:
        work.shape, work.dims = [1] * rank, [[] for _ in range(rank)]
    return work


def product(a: RegisterLayout, b: RegisterLayout) -> RegisterLayout:
    """``a * b``: ``a`` outer, ``b`` inner; index = idx_a * b.shape + idx_b, thread and slot alike.

    Both must have the same rank, except that a rank-0 layout (``replicate(n)``) fits any rank.
    """
    if a.rank != b.rank and a.rank and b.rank:
        raise LayoutError(f"cannot multiply {a} (rank {a.rank}) by {b} (rank {b.rank}): "
                          f"a product needs layouts of the same rank")
    rank = max(a.rank, b.rank)
    wa, wb = _widened(a, rank), _widened(b, rank)
    return _Work([x * y for x, y in zip(wa.shape, wb.shape)],
                 [da + db for da, db in zip(wa.dims, wb.dims)],
                 wa.spatial + wb.spatial, wa.local + wb.local).build()


def _cut(work: _Work, axis: list[_Mode], count: int, inner: list[_Mode]) -> list[_Mode] | None:
    """The outer part of ``axis`` once its least significant entries of total size ``count``
    (all of them modes of ``inner`` or replicated) are cut off; None when that is impossible."""
    need, i = count, len(axis)
    while need > 1:
        i -= 1
        if i < 0:
            return None
        m = axis[i]
        if need % m.size == 0:
            need //= m.size
        elif m.dim is None and m.size % need == 0:
            work.split(m, need)
            i, need = i + 1, 1
        else:
            return None
        if m.dim is not None and not any(m is x for x in inner):
            return None
    outer = axis[:i]
    return None if any(m is x for m in outer for x in inner) else outer


def divide(a: RegisterLayout, b: RegisterLayout) -> RegisterLayout:
    """``a / b``: the layout ``c`` with ``c * b == a``; undoes a product."""
    def failure(why: str) -> LayoutError:
        return LayoutError(f"cannot divide {a} by {b}: {why}")
    if a.rank != b.rank and b.rank:
        raise failure(f"ranks differ ({a.rank} and {b.rank})")
    bshape = b.shape if b.rank else (1,) * a.rank
    if any(x % y for x, y in zip(a.shape, bshape)):
        raise failure(f"shape {list(bshape)} does not divide {list(a.shape)}")
    work, inner = a._work(), []
    for d in range(a.rank):
        need = bshape[d]
        for m in reversed(list(work.dims[d])):
            if need == 1:
                break
            if need % m.size == 0:
                inner.append(m)
                need //= m.size
            elif m.size % need == 0:
                inner.append(work.split(m, need)[1])
                need = 1
            else:
                raise failure(f"dimension {d} of {a} does not split at size {bshape[d]}")
    spatial = _cut(work, work.spatial, b.num_threads, inner)
    local = _cut(work, work.local, b.local_size, inner)
    if spatial is None or local is None:
        raise failure(f"the threads and slots of {b} are not the innermost ones of {a}")
    c = _Work([x // y for x, y in zip(a.shape, bshape)],
              [[m for m in modes if not any(m is x for x in inner)] for modes in work.dims],
              spatial, local).build()
    if c * b != a:
        raise failure(f"no layout c has c * {b} == {a}")
    return c


def _check_dim(layout: RegisterLayout, dim: int) -> int:
    if not -layout.rank <= dim < layout.rank:
        raise LayoutError(f"dimension {dim} is out of range for {layout} of rank {layout.rank}")
    return dim % layout.rank


def reduce(layout: RegisterLayout, dim: int, keepdim: bool = True) -> RegisterLayout:
    """The layout of the result of reducing ``dim``: its size becomes 1, its local modes vanish
    (fewer slots) and its spatial modes become replicated (those threads all hold the result)."""
    dim = _check_dim(layout, dim)
    work = layout._work()
    for m in work.dims[dim]:
        if any(m is x for x in work.local):
            work.local = [x for x in work.local if x is not m]
        m.dim = None
    work.dims[dim], work.shape[dim] = [], 1
    if not keepdim:
        del work.dims[dim], work.shape[dim]
        for d, modes in enumerate(work.dims):
            for m in modes:
                m.dim = d
    return work.build()


def permute(layout: RegisterLayout, dims: Sequence[int]) -> RegisterLayout:
    """The layout of the tile whose dimension ``i`` is dimension ``dims[i]`` of this one."""
    if sorted(dims) != list(range(layout.rank)):
        raise LayoutError(f"cannot permute {layout} by {list(dims)}: "
                          f"not a permutation of 0..{layout.rank - 1}")
    work = layout._work()
    new_dims = [work.dims[p] for p in dims]
    for d, modes in enumerate(new_dims):
        for m in modes:
            m.dim = d
    return _Work([layout.shape[p] for p in dims], new_dims, work.spatial, work.local).build()


def reshape(layout: RegisterLayout, shape: Sequence[int]) -> RegisterLayout:
    """The layout of the tile reshaped in row-major order: every (thread, slot) keeps its element
    at the same flattened index. Fails when a new dimension boundary falls inside a mode that it
    does not split (the held elements would not stay contiguous in the new shape)."""
    shape = [int(s) for s in shape]
    if any(s < 1 for s in shape) or math.prod(shape) != layout.size:
        raise LayoutError(f"cannot reshape {layout} of shape {list(layout.shape)} to {shape}: "
                          f"the sizes differ")
    w = layout._work()
    flat = _Work([layout.size], [[m for modes in w.dims for m in modes]], w.spatial, w.local)
    for m in flat.dims[0]:
        m.dim = 0
    work = flat.build()._work()
    rest = list(work.dims[0])
    new_dims: list[list[_Mode]] = [[] for _ in shape]
    for d in reversed(range(len(shape))):
        need = shape[d]
        while need > 1:
            m = rest.pop()
            if need % m.size == 0:
                new_dims[d].insert(0, m)
                need //= m.size
            elif m.size % need == 0:
                hi, lo = work.split(m, need)
                rest.append(hi)
                new_dims[d].insert(0, lo)
                need = 1
            else:
                raise LayoutError(f"cannot reshape {layout} to {shape}: dimension {d} (size "
                                  f"{shape[d]}) would cut a mode of size {m.size} that it does not divide")
    for d, modes in enumerate(new_dims):
        for m in modes:
            m.dim = d
    return _Work(shape, new_dims, work.spatial, work.local).build()


def concat(a: RegisterLayout, b: RegisterLayout) -> RegisterLayout:
    """The layout of shape ``a.shape + b.shape``: ``a`` on the leading dimensions and the outer
    thread/slot digits, ``b`` on the trailing dimensions and the inner ones."""
    wa, wb = a._work(), b._work()
    for modes in wb.dims:
        for m in modes:
            assert m.dim is not None   # a dimension's modes know their dimension
            m.dim += a.rank
    return _Work(wa.shape + wb.shape, wa.dims + wb.dims, wa.spatial + wb.spatial,
                 wa.local + wb.local).build()


def slice_tile(layout: RegisterLayout, offsets: Sequence[int], shape: Sequence[int]) -> RegisterLayout:
    """The layout of the sub-tile ``[offsets, offsets + shape)`` held by the same threads in fewer
    slots. Each extent must be made of whole inner modes and each offset a multiple of it, and the
    modes it fixes must be local (fixing a spatial one would leave threads holding nothing)."""
    where = f"the sub-tile at {list(offsets)} of shape {list(shape)} of {layout}"
    if len(offsets) != layout.rank or len(shape) != layout.rank:
        raise LayoutError(f"{where}: rank differs")
    work = layout._work()
    for d in range(layout.rank):
        need, off = shape[d], offsets[d]
        if need < 1 or off < 0 or off + need > layout.shape[d] or off % need:
            raise LayoutError(f"{where}: dimension {d} must be an aligned range inside the tile")
        kept: list[_Mode] = []
        for m in reversed(list(work.dims[d])):
            if need == 1:
                break
            if need % m.size == 0:
                kept.insert(0, m)
                need //= m.size
            elif m.size % need == 0:
                kept.insert(0, work.split(m, need)[1])
                need = 1
            else:
                raise LayoutError(f"{where}: dimension {d} cuts a mode of size {m.size}")
        for m in work.dims[d]:
            if any(m is x for x in kept):
                continue
            if any(m is x for x in work.spatial):
                raise LayoutError(f"{where}: it fixes a spatial mode, so some threads would hold nothing")
            work.local = [x for x in work.local if x is not m]
        work.dims[d], work.shape[d] = kept, shape[d]
    return work.build()


def vector_length(layout: RegisterLayout) -> int:
    """The length ``n`` of the aligned runs every thread holds along the last dimension: slots
    ``k*n .. k*n+n-1`` hold last indices ``j*n .. j*n+n-1`` (the other indices equal)."""
    if not layout.local_modes or layout.rank == 0:
        return 1
    last = layout.local_modes[-1]
    return layout.mode_shape[last] if last == len(layout.mode_shape) - 1 and \
        layout.mode_dims[last] == layout.rank - 1 else 1


def contiguous_runs(layout: RegisterLayout, thread: int = 0) -> list[tuple[int, tuple[int, ...], int]]:
    """(first slot, first index, length) of each aligned run ``thread`` holds along the last dim."""
    n = vector_length(layout)
    return [(s, layout.index(thread, s), n) for s in range(0, layout.local_size, n)]


def same_owners(a: RegisterLayout, b: RegisterLayout) -> bool:
    """Whether every thread holds the same elements under ``a`` and ``b`` (in any slot order):
    converting between them moves nothing between threads."""
    if tuple(a.shape) != tuple(b.shape) or a.num_threads != b.num_threads \
            or a.local_size != b.local_size:
        return False
    return bool(np.array_equal(np.sort(a.index_table(), axis=1), np.sort(b.index_table(), axis=1)))
