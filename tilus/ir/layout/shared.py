"""Shared-memory layouts: a logical index to an element offset (strides, padding, XOR swizzles).

``offset`` is written with + * ^ >> & only, so it works on ints, numpy arrays and IR expressions.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from tilus.dtypes import DataType
from tilus.errors import LayoutError


class SharedLayout:
    """Base class: ``shape``, ``offset(index)``, ``size`` (elements spanned) and ``nbytes``."""

    shape: tuple[int, ...]

    def offset(self, index: Sequence[Any]) -> Any:
        """The element offset of ``index`` (ints, numpy arrays or IR expressions)."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        """The number of elements the layout spans (what to allocate)."""
        raise NotImplementedError

    def nbytes(self, dtype: DataType) -> int:
        """Bytes to allocate for elements of ``dtype`` (sub-byte types are bit-packed)."""
        return -(-self.size * dtype.nbits // 8)

    def _key(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class StridedShared(SharedLayout):
    """offset = sum(index[d] * strides[d]); row/column-major with optional padding are instances."""

    def __init__(self, shape: Sequence[int], strides: Sequence[int]):
        if len(shape) != len(strides) or any(s < 1 for s in shape) or any(s < 0 for s in strides):
            raise LayoutError(f"a strided shared layout needs positive sizes and non-negative "
                              f"strides of one rank, got {list(shape)} and {list(strides)}")
        self.shape = tuple(int(s) for s in shape)
        # the stride of a size-1 dimension is never used: store 0 so equality is by meaning
        self.strides = tuple(int(st) if n > 1 else 0 for n, st in zip(self.shape, strides))

    def offset(self, index: Sequence[Any]) -> Any:
        total: Any = 0
        for i, st in zip(index, self.strides):
            total = total + i * st
        return total

    @property
    def size(self) -> int:
        return 1 + sum((n - 1) * st for n, st in zip(self.shape, self.strides))

    def _key(self) -> tuple:
        return self.shape, self.strides

    def __str__(self) -> str:
        dims = ",".join(map(str, self.shape))
        for name, ctor in (("row_major", row_major), ("column_major", column_major)):
            pad = _padding(self, ctor)
            if pad is not None:
                return f"{name}({dims}{f',pad={pad}' if pad else ''})"
        return f"strided([{dims}],[{','.join(map(str, self.strides))}])"


def _padding(layout: StridedShared, ctor: Any) -> int | None:
    """The padding with which ``ctor`` rebuilds ``layout``, or None."""
    for pad in sorted({0, *(s - n for s, n in zip(layout.strides, layout.shape) if s > n)}):
        if ctor(*layout.shape, pad=pad) == layout:
            return pad
    return None


def strided(shape: Sequence[int], strides: Sequence[int]) -> StridedShared:
    """A shared layout with explicit element strides."""
    return StridedShared(shape, strides)


def row_major(*shape: int, pad: int = 0) -> StridedShared:
    """Row-major, each row (last dimension) padded by ``pad`` elements to shift banks."""
    strides: list[int] = []
    acc = 1
    for d in reversed(range(len(shape))):
        strides.insert(0, acc)
        acc *= shape[d] + (pad if d == len(shape) - 1 else 0)
    return StridedShared(shape, strides)


def column_major(*shape: int, pad: int = 0) -> StridedShared:
    """Column-major (dimension 0 fastest), each column padded by ``pad`` elements."""
    strides, acc = [], 1
    for d in range(len(shape)):
        strides.append(acc)
        acc *= shape[d] + (pad if d == 0 else 0)
    return StridedShared(shape, strides)


class SwizzledShared(SharedLayout):
    """CuTe's ``Swizzle<bits, base, shift>`` on the element offset of an inner layout:
    offset ^ ((offset >> shift) & (((1 << bits) - 1) << base)), i.e. the ``bits``-bit field at
    ``base`` (which ``2**base``-element chunk) is XOR'd with the field ``shift`` bits above it."""

    def __init__(self, inner: StridedShared, bits: int, base: int, shift: int):
        if bits < 1 or base < 0 or shift < bits:
            raise LayoutError(f"swizzle({inner},{bits},{base},{shift}) needs bits >= 1, base >= 0 "
                              f"and shift >= bits (the XOR source must lie above its target)")
        self.inner, self.bits, self.base, self.shift = inner, bits, base, shift
        self.shape = inner.shape

    def offset(self, index: Sequence[Any]) -> Any:
        o = self.inner.offset(index)
        return o ^ ((o >> self.shift) & (((1 << self.bits) - 1) << self.base))

    @property
    def size(self) -> int:
        block = 1 << (self.base + self.bits)
        return -(-self.inner.size // block) * block

    def _key(self) -> tuple:
        return self.inner, self.bits, self.base, self.shift

    def __str__(self) -> str:
        return f"swizzle({self.inner},{self.bits},{self.base},{self.shift})"


def swizzle(inner: StridedShared, bits: int, base: int, shift: int) -> SwizzledShared:
    """``Swizzle<bits, base, shift>`` over element offsets (see SwizzledShared)."""
    return SwizzledShared(inner, bits, base, shift)


def swizzle_128b(inner: StridedShared, dtype: DataType) -> SwizzledShared:
    """The 128-byte swizzle ldmatrix and cp.async use without bank conflicts: 16-byte chunks of a
    128-byte row XOR'd by the row index mod 8 (CuTe's Swizzle<3,4,3> on byte offsets)."""
    chunk = 128 // dtype.nbits  # elements in 16 bytes
    if 128 % dtype.nbits or chunk & (chunk - 1):
        raise LayoutError(f"no 128-byte swizzle for {dtype.name}: 16 bytes must hold 2^k elements")
    return SwizzledShared(inner, 3, int(math.log2(chunk)), 3)
