"""Register layouts: which thread, and which local slot of it, holds each element of a tile.

A layout is a tile shape plus a list of *modes*. Every logical dimension is split into modes (sizes
whose product is the dimension, most significant first) and every mode is assigned to the spatial
axis (threads) or to the local axis (slots of one thread). The thread index is mixed-radix over the
spatial entries and the slot index over the local entries, most significant first. A spatial entry
may also be a replicated mode of ``n`` threads that maps to no dimension: threads that differ only
in it hold the same elements (broadcast). The stored form is canonical (size-1 modes dropped,
modes merged where adjacent both in their dimension and on their axis), so two layouts are equal
exactly when they map every (thread, slot) to the same index, whatever built them.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tilus.errors import LayoutError


class _Mode:
    """One mode while a layout is being rebuilt: a size and a dimension (None when replicated)."""

    __slots__ = ("size", "dim")

    def __init__(self, size: int, dim: int | None):
        self.size = size
        self.dim = dim


@dataclass
class _Work:
    """A mutable layout under construction; ``build`` returns its canonical RegisterLayout."""

    shape: list[int]
    dims: list[list[_Mode]]
    spatial: list[_Mode]
    local: list[_Mode]

    def axis_of(self, mode: _Mode) -> list[_Mode]:
        """The axis list (spatial or local) that holds ``mode``."""
        return self.spatial if any(m is mode for m in self.spatial) else self.local

    def split(self, mode: _Mode, inner: int) -> tuple[_Mode, _Mode]:
        """Split a mode into (outer, inner) of sizes (size // inner, inner) in place."""
        hi, lo = _Mode(mode.size // inner, mode.dim), _Mode(inner, mode.dim)
        lists = [self.axis_of(mode)] + ([self.dims[mode.dim]] if mode.dim is not None else [])
        for seq in lists:
            i = next(k for k, m in enumerate(seq) if m is mode)
            seq[i:i + 1] = [hi, lo]
        return hi, lo

    def build(self) -> "RegisterLayout":
        """Drop size-1 modes, merge compatible neighbours and freeze into the canonical form."""
        def keep(seq: list[_Mode]) -> list[_Mode]:
            return [m for m in seq if m.size != 1]
        dims = [keep(d) for d in self.dims]
        spatial, local = keep(self.spatial), keep(self.local)
        for d, modes in enumerate(dims):
            if math.prod(m.size for m in modes) != self.shape[d]:
                raise LayoutError(f"the modes of dimension {d} do not multiply to {self.shape[d]}")
        while _merge_once(dims, spatial) or _merge_once(dims, local):
            pass
        ids = {id(m): k for k, m in enumerate(m for d in dims for m in d)}
        placed = [id(m) for m in spatial + local if m.dim is not None]
        if sorted(placed) != sorted(ids) or len(set(placed)) != len(placed):
            raise LayoutError("every mode must be assigned to exactly one of the spatial and local axes")
        if any(m.dim is None for m in local):
            raise LayoutError("a replicated mode can only be on the spatial axis")
        return RegisterLayout._canonical(
            tuple(self.shape), tuple(m.size for d in dims for m in d),
            tuple(ids[id(m)] if m.dim is not None else -m.size for m in spatial),
            tuple(ids[id(m)] for m in local))


def _merge_once(dims: list[list[_Mode]], axis: list[_Mode]) -> bool:
    """Merge the first pair of axis neighbours that are also neighbours in one dimension."""
    for i in range(len(axis) - 1):
        a, b = axis[i], axis[i + 1]
        if a.dim is None and b.dim is None:
            mergeable = True
        elif a.dim is not None and a.dim == b.dim:
            seq = dims[a.dim]
            k = next(j for j, m in enumerate(seq) if m is a)
            mergeable = k + 1 < len(seq) and seq[k + 1] is b
        else:
            mergeable = False
        if mergeable:
            a.size *= b.size
            del axis[i + 1]
            if b.dim is not None:
                dims[b.dim].remove(b)
            return True
    return False


class RegisterLayout:
    """A canonical register layout: ``shape``, ``mode_shape``, ``spatial_modes``, ``local_modes``.

    ``mode_shape`` lists the modes of dimension 0 first (most significant first), then those of
    dimension 1, and so on; ``spatial_modes`` and ``local_modes`` list mode ids, most significant
    first, and a negative entry ``-n`` in ``spatial_modes`` is a replicated mode of ``n`` threads.
    """

    __slots__ = ("shape", "mode_shape", "spatial_modes", "local_modes", "mode_dims")
    shape: tuple[int, ...]
    mode_shape: tuple[int, ...]
    spatial_modes: tuple[int, ...]
    local_modes: tuple[int, ...]
    mode_dims: tuple[int, ...]

    def __init__(self, shape: Sequence[int], mode_shape: Sequence[int],
                 spatial_modes: Sequence[int], local_modes: Sequence[int]):
        """Build a layout from its mode form (any form: it is brought to the canonical one)."""
        shape, mode_shape = [_positive(s, "shape") for s in shape], [_positive(s, "mode") for s in mode_shape]
        modes = [_Mode(s, None) for s in mode_shape]
        dims: list[list[_Mode]] = []
        k = 0
        for d, extent in enumerate(shape):
            group: list[_Mode] = []
            while math.prod(m.size for m in group) < extent and k < len(modes):
                modes[k].dim = d
                group.append(modes[k])
                k += 1
            dims.append(group)
        if any(m.size != 1 for m in modes[k:]) or \
                any(math.prod(m.size for m in g) != e for g, e in zip(dims, shape)):
            raise LayoutError(f"modes {list(mode_shape)} do not split the shape {list(shape)}")

        def entry(e: int) -> _Mode:
            if e < 0:
                return _Mode(-e, None)
            if e >= len(modes):
                raise LayoutError(f"mode id {e} out of range for modes {list(mode_shape)}")
            return modes[e]
        built = _Work(shape, dims, [entry(int(e)) for e in spatial_modes],
                      [entry(int(e)) for e in local_modes]).build()
        for name in self.__slots__:
            object.__setattr__(self, name, getattr(built, name))

    @classmethod
    def _canonical(cls, shape: tuple[int, ...], mode_shape: tuple[int, ...],
                   spatial_modes: tuple[int, ...], local_modes: tuple[int, ...]) -> "RegisterLayout":
        """Wrap fields already in canonical form (no checks)."""
        self = object.__new__(cls)
        dims: list[int] = []
        for d, extent in enumerate(shape):
            covered = 1
            while covered < extent:
                covered *= mode_shape[len(dims)]
                dims.append(d)
        for name, value in (("shape", shape), ("mode_shape", mode_shape), ("mode_dims", tuple(dims)),
                            ("spatial_modes", spatial_modes), ("local_modes", local_modes)):
            object.__setattr__(self, name, value)
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("layouts are immutable")

    def _work(self) -> _Work:
        """A fresh mutable copy of this layout's modes."""
        modes = [_Mode(s, d) for s, d in zip(self.mode_shape, self.mode_dims)]
        dims = [[m for m in modes if m.dim == d] for d in range(self.rank)]
        spatial = [modes[e] if e >= 0 else _Mode(-e, None) for e in self.spatial_modes]
        return _Work(list(self.shape), dims, spatial, [modes[e] for e in self.local_modes])

    # ----- sizes -----
    @property
    def rank(self) -> int:
        """The number of logical dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements of the tile."""
        return math.prod(self.shape)

    @property
    def num_threads(self) -> int:
        """The number of threads T the layout spreads the tile over."""
        return math.prod(self._entry_size(e) for e in self.spatial_modes)

    @property
    def local_size(self) -> int:
        """The number of local slots L each thread holds."""
        return math.prod(self.mode_shape[e] for e in self.local_modes)

    def _entry_size(self, e: int) -> int:
        return self.mode_shape[e] if e >= 0 else -e

    # ----- the map, written with + * // % only so it works on ints, numpy arrays and IR exprs -----
    def _coords(self, thread: Any, slot: Any) -> list[Any]:
        digits: dict[int, Any] = {}
        for entries, x in ((self.spatial_modes, thread), (self.local_modes, slot)):
            stride = 1
            for pos in reversed(range(len(entries))):
                n = self._entry_size(entries[pos])
                q = x // stride if stride != 1 else x
                if entries[pos] >= 0:
                    digits[entries[pos]] = q if pos == 0 else q % n
                stride *= n
        coords = []
        for d in range(self.rank):
            c: Any = 0
            for m in (k for k, dim in enumerate(self.mode_dims) if dim == d):
                c = c * self.mode_shape[m] + digits[m]
            coords.append(c)
        return coords

    def index(self, thread: int, slot: int) -> tuple[int, ...]:
        """The logical index that ``thread`` holds in local ``slot``."""
        if not (0 <= thread < self.num_threads and 0 <= slot < self.local_size):
            raise LayoutError(f"(thread {thread}, slot {slot}) is outside {self}: "
                              f"{self.num_threads} threads x {self.local_size} slots")
        return tuple(int(c) for c in self._coords(thread, slot))

    def index_exprs(self, thread: Any, slot: Any) -> tuple[Any, ...]:
        """The logical index as expressions of ``thread`` and ``slot`` (any values with + * // %,
        e.g. IR Vars; a coordinate that depends on neither is a plain int)."""
        return tuple(self._coords(thread, slot))

    def index_table(self) -> np.ndarray:
        """A (threads, slots) int64 table of the row-major flattened index each slot holds."""
        t = np.arange(self.num_threads, dtype=np.int64)[:, None]
        s = np.arange(self.local_size, dtype=np.int64)[None, :]
        flat = np.zeros((self.num_threads, self.local_size), dtype=np.int64)
        for c, extent in zip(self._coords(t, s), self.shape):
            flat = flat * extent + c
        return flat

    def _index_digits(self, index: Sequence[Any]) -> dict[int, Any]:
        digits: dict[int, Any] = {}
        for d, c in enumerate(index):
            modes = [k for k, dim in enumerate(self.mode_dims) if dim == d]
            inner = 1
            for pos in reversed(range(len(modes))):
                q = c // inner if inner != 1 else c
                digits[modes[pos]] = q if pos == 0 else q % self.mode_shape[modes[pos]]
                inner *= self.mode_shape[modes[pos]]
        return digits

    def owners(self, index: Sequence[int]) -> list[tuple[int, int]]:
        """Every (thread, slot) that holds the element at ``index``, sorted."""
        index = tuple(int(i) for i in index)
        if len(index) != self.rank or not all(0 <= i < n for i, n in zip(index, self.shape)):
            raise LayoutError(f"index {list(index)} is outside the shape {list(self.shape)} of {self}")
        digits = self._index_digits(index)
        slot = _mixed_radix([digits[e] for e in self.local_modes],
                            [self.mode_shape[e] for e in self.local_modes])
        choices = [range(-e) if e < 0 else [digits[e]] for e in self.spatial_modes]
        sizes = [self._entry_size(e) for e in self.spatial_modes]
        return sorted((_mixed_radix(list(ds), sizes), slot) for ds in itertools.product(*choices))

    def owner_exprs(self, index: Sequence[Any]) -> tuple[Any, Any]:
        """(thread, slot) of the lowest owner of ``index`` (replicated digits 0), as expressions of
        the index's values (plain ints where constant)."""
        digits = self._index_digits(index)
        thread = _mixed_radix([digits.get(e, 0) for e in self.spatial_modes],
                              [self._entry_size(e) for e in self.spatial_modes])
        slot = _mixed_radix([digits[e] for e in self.local_modes],
                            [self.mode_shape[e] for e in self.local_modes])
        return thread, slot

    # ----- identity -----
    def _key(self) -> tuple:
        return self.shape, self.mode_shape, self.spatial_modes, self.local_modes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegisterLayout) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        from tilus.ir.layout.text import format_register

        return format_register(self)

    def __repr__(self) -> str:
        return f"RegisterLayout({str(self)!r})"

    # ----- the algebra (tilus.ir.layout.algebra) -----
    def __mul__(self, other: "RegisterLayout") -> "RegisterLayout":
        from tilus.ir.layout.algebra import product

        return product(self, other)

    def __truediv__(self, other: "RegisterLayout") -> "RegisterLayout":
        from tilus.ir.layout.algebra import divide

        return divide(self, other)

    def reduce(self, dim: int, keepdim: bool = True) -> "RegisterLayout":
        """The layout of this tile reduced over ``dim`` (see algebra.reduce)."""
        from tilus.ir.layout.algebra import reduce

        return reduce(self, dim, keepdim)

    def permute(self, dims: Sequence[int]) -> "RegisterLayout":
        """The layout of the tile with its dimensions permuted (see algebra.permute)."""
        from tilus.ir.layout.algebra import permute

        return permute(self, dims)

    def reshape(self, shape: Sequence[int]) -> "RegisterLayout":
        """The layout of the tile reshaped in row-major order (see algebra.reshape)."""
        from tilus.ir.layout.algebra import reshape

        return reshape(self, shape)

    def slice(self, offsets: Sequence[int], shape: Sequence[int]) -> "RegisterLayout":
        """The layout of a sub-tile held in fewer slots (see algebra.slice_tile)."""
        from tilus.ir.layout.algebra import slice_tile

        return slice_tile(self, offsets, shape)

    def vector_length(self) -> int:
        """Length of the aligned runs each thread holds along the last dim (see algebra)."""
        from tilus.ir.layout.algebra import vector_length

        return vector_length(self)

    def contiguous_runs(self, thread: int = 0) -> list[tuple[int, tuple[int, ...], int]]:
        """(first slot, first index, length) of each run ``thread`` holds along the last dim."""
        from tilus.ir.layout.algebra import contiguous_runs

        return contiguous_runs(self, thread)

    # ----- pictures (tilus.ir.layout.visualize) -----
    def visualize(self) -> str:
        """A text table of the (thread, slot) holding each element."""
        from tilus.ir.layout.visualize import visualize

        return visualize(self)

    def to_svg(self, path: str) -> None:
        """Draw the layout, coloured by thread, to an SVG file."""
        from tilus.ir.layout.visualize import draw

        draw(self, path, "svg")

    def to_png(self, path: str) -> None:
        """Draw the layout, coloured by thread, to a PNG file."""
        from tilus.ir.layout.visualize import draw

        draw(self, path, "png")


def _positive(value: Any, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise LayoutError(f"a layout {what} size must be a positive integer, got {value!r}")
    return int(value)


def _mixed_radix(digits: Sequence[Any], sizes: Sequence[int]) -> Any:
    """The number whose digits (most significant first) in the given radices are ``digits``."""
    x: Any = 0
    for digit, n in zip(digits, sizes):
        x = x * n + digit
    return x
