"""Global memory: the caller's buffers as bytes, global views over them, and element access.

A pointer argument becomes a :class:`Buffer`: a flat ``uint8`` numpy view that shares memory with
the caller's array or tensor, so stores reach the caller. A global tensor (``global_view``) is a
strided view over a buffer: its element at index ``idx`` has the linear element offset
``e = sum(idx * strides)`` and, for a K-bit dtype, occupies bits ``[e*K, (e+1)*K)`` of the
buffer, counted from bit 0 of byte 0, little-endian (the layout of ``tilus.dtypes.pack``). For
K = 8, 16, 32, 64 that is simply the ``e``-th element of the buffer read as K-bit words.

Reads and writes are vectorized over a whole tile. Elements outside the global tensor's shape are
masked by the callers (read as ``other``, writes dropped); this module additionally refuses any
access outside the buffer itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilus.dtypes import DataType
from tilus.errors import InterpreterError
from tilus.interpreter import values as V


@dataclass(eq=False)
class Buffer:
    """The bytes behind a pointer parameter ``name`` (pointee ``dtype``), shared with the caller."""

    name: str
    dtype: DataType
    data: np.ndarray          # 1-D uint8, a view of the caller's memory

    @property
    def nbytes(self) -> int:
        return int(self.data.size)

    @property
    def nbits(self) -> int:
        return 8 * self.nbytes

    def describe(self) -> str:
        return f"the buffer of parameter '{self.name}' ({self.nbytes} bytes)"


@dataclass(eq=False)
class GlobalTensor:
    """A global view: ``dtype`` elements of ``shape`` with element ``strides`` over ``buffer``."""

    buffer: Buffer
    dtype: DataType
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    name: str = ""

    def extent(self) -> tuple[int, int]:
        """The lowest and highest linear element offsets the view can address (empty: (0, -1))."""
        if any(s <= 0 for s in self.shape):
            return 0, -1
        lo = sum(min(0, (n - 1) * st) for n, st in zip(self.shape, self.strides))
        hi = sum(max(0, (n - 1) * st) for n, st in zip(self.shape, self.strides))
        return lo, hi

    def in_bounds(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        ok = np.ones(np.broadcast(*index).shape if index else (), bool)
        for i, n in zip(index, self.shape):
            ok = ok & (i >= 0) & (i < n)
        return ok

    def offsets(self, index: tuple[np.ndarray, ...]) -> np.ndarray:
        e = np.zeros((), np.int64)
        for i, st in zip(index, self.strides):
            e = e + np.asarray(i, np.int64) * np.int64(st)
        return e


def tile_index(offsets: tuple[int, ...], tile_shape: tuple[int, ...], dims: tuple[int, ...],
               rank: int) -> tuple[np.ndarray, ...]:
    """For every element of a tile of ``tile_shape`` placed at ``offsets`` of a rank-``rank``
    tensor and spanning its dimensions ``dims`` (tile dimension j runs along dimension dims[j]):
    the index into the tensor, one int64 array per tensor dimension, broadcast to ``tile_shape``."""
    out = []
    for d in range(rank):
        idx = np.full(tile_shape, offsets[d], np.int64)
        if d in dims:
            j = dims.index(d)
            shape = [1] * len(tile_shape)
            shape[j] = tile_shape[j]
            idx = idx + np.arange(tile_shape[j], dtype=np.int64).reshape(shape)
        out.append(idx)
    return tuple(out)


def _check_inside(buf: Buffer, elem: np.ndarray, k: int, what: str) -> None:
    if elem.size == 0:
        return
    lo, hi = int(elem.min()), int(elem.max())
    if lo < 0 or (hi + 1) * k > buf.nbits:
        bad = lo if lo < 0 else hi
        raise InterpreterError(
            f"{what} element offset {bad} of {k}-bit elements, outside {buf.describe()}; "
            f"a GPU would access memory that is not the argument's")


def read_codes(buf: Buffer, dtype: DataType, elem: np.ndarray) -> np.ndarray:
    """The codes of the ``dtype`` elements at linear element offsets ``elem`` (any shape)."""
    k = dtype.nbits
    elem = np.asarray(elem, np.int64)
    _check_inside(buf, elem, k, "a read at")
    if k % 8 == 0:
        width = k // 8
        words = buf.data[: buf.nbytes // width * width].view(V.code_dtype(dtype))
        return words[elem]
    bit = elem * k
    byte = bit >> 3
    shift = (bit & 7).astype(np.uint16)
    lo = buf.data[byte].astype(np.uint16)
    nxt = np.minimum(byte + 1, buf.nbytes - 1)
    hi = np.where(byte + 1 < buf.nbytes, buf.data[nxt], 0).astype(np.uint16)
    word = lo | (hi << np.uint16(8))
    return ((word >> shift) & np.uint16((1 << k) - 1)).astype(np.uint8)


def write_codes(buf: Buffer, dtype: DataType, elem: np.ndarray, codes: np.ndarray) -> None:
    """Store ``codes`` at linear element offsets ``elem``; sub-byte elements read-modify-write
    their bits, leaving the neighbouring elements' bits unchanged. When one offset appears twice,
    which write wins is unspecified (as on a GPU)."""
    k = dtype.nbits
    elem = np.asarray(elem, np.int64).reshape(-1)
    codes = np.asarray(codes).reshape(-1)
    if elem.size == 0:
        return
    _check_inside(buf, elem, k, "a write at")
    if not buf.data.flags.writeable:
        raise InterpreterError(f"the kernel writes to parameter '{buf.name}', whose array is read-only")
    if k % 8 == 0:
        width = k // 8
        words = buf.data[: buf.nbytes // width * width].view(V.code_dtype(dtype))
        words[elem] = codes.astype(words.dtype)
        return
    bit = elem * k
    byte = bit >> 3
    shift = (bit & 7).astype(np.uint32)
    mask = (np.uint32((1 << k) - 1) << shift)
    val = (codes.astype(np.uint32) << shift) & mask
    # low byte, then the part that spills into the next byte (when shift + k > 8)
    np.bitwise_and.at(buf.data, byte, (~mask & 0xFF).astype(np.uint8))
    np.bitwise_or.at(buf.data, byte, (val & 0xFF).astype(np.uint8))
    spill = (shift + k) > 8
    if spill.any():
        b1 = byte[spill] + 1
        np.bitwise_and.at(buf.data, b1, (~(mask[spill] >> 8) & 0xFF).astype(np.uint8))
        np.bitwise_or.at(buf.data, b1, ((val[spill] >> 8) & 0xFF).astype(np.uint8))


def load_tile(g: GlobalTensor, offsets, tile_shape, dims, other) -> np.ndarray:
    """The values of a tile of ``g`` (see LoadGlobalInst); elements outside ``g`` are ``other``."""
    index = tile_index(tuple(offsets), tuple(tile_shape), tuple(dims), len(g.shape))
    ok = g.in_bounds(index)
    out = np.empty(tuple(tile_shape), V.storage_dtype(g.dtype))
    out[...] = other
    if ok.any():
        codes = read_codes(g.buffer, g.dtype, g.offsets(index)[ok])
        out[ok] = V.from_codes(g.dtype, codes)
    return out


def store_tile(g: GlobalTensor, offsets, values: np.ndarray, dims) -> None:
    """Write a tile of values into ``g`` (see StoreGlobalInst); elements outside ``g`` are dropped."""
    index = tile_index(tuple(offsets), tuple(values.shape), tuple(dims), len(g.shape))
    ok = g.in_bounds(index)
    if ok.any():
        write_codes(g.buffer, g.dtype, g.offsets(index)[ok], V.to_codes(g.dtype, values[ok]))
