"""Bit packing: codes of a K-bit type <-> the bit stream Tilus keeps in memory.

Element ``i`` occupies bits ``[i*K, (i+1)*K)`` of the stream, and bit ``j`` of the stream is bit
``j % 8`` of byte ``j // 8`` (little-endian, least significant bit first). A stream of ``n``
elements takes ``ceil(n*K/8)`` bytes; the padding bits of the last byte are zero. Bit ``b`` of an
element's code lands in stream bit ``i*K + b``. ``pack_words``/``unpack_words`` use the same stream
grouped into little-endian 32-bit words (what a register holds), zero-padded to whole words.

K may be 1..8, 16, 32 or 64 (the widths of Tilus's types): ``dtype`` is a ``DataType``, a type name
or such a width as an ``int``. Arrays of any shape are flattened row-major; ``unpack(..., shape=)``
gives the shape back. numpy in gives numpy out; a torch tensor in gives a torch tensor out on the
same device, computed with torch operations on that device (no trip through the host).

Codes are unsigned: numpy ``uint8/16/32/64`` (or a list of non-negative ints); torch ``uint8`` for
K <= 8, and for K = 16/32/64 torch's ``uint16/32/64`` or the signed type of the same width (its bits
are taken as they are). Unpacked codes come back as the narrowest unsigned type (numpy) or as
``torch.uint8`` (K <= 8) / ``torch.int16/32/64`` holding the same bits (torch has few operations on
its unsigned wide types). ``pack_words`` on torch returns ``torch.int32`` holding the words' bits,
for the same reason.
"""
from __future__ import annotations

import math

import numpy as np

from tilus.dtypes.codec import _torch_tensor
from tilus.dtypes.types import DataType, get
from tilus.errors import DataTypeError, PackingError

_WIDTHS = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64)


def bit_width(dtype: "DataType | str | int") -> int:
    """K for a type, a type name or a width; widths that Tilus cannot pack raise ``DataTypeError``."""
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        k = int(dtype)
        if k not in _WIDTHS:
            raise DataTypeError(f"cannot pack {k}-bit elements: the bit widths are 1..8, 16, 32 and "
                                f"64 (pass a data type such as 'uint4' or its width)")
        return k
    return get(dtype).nbits  # type: ignore[arg-type]  # a bool was refused above


def packed_nbytes(count: int, dtype: "DataType | str | int") -> int:
    """Bytes of the stream holding ``count`` elements: ``ceil(count*K/8)``."""
    return (count * bit_width(dtype) + 7) // 8


def _group(k: int) -> tuple[int, int]:
    """(elements, bytes) of the smallest whole-byte group: lcm(K, 8) bits, at most 64."""
    bits = k * 8 // math.gcd(k, 8)
    return bits // k, bits // 8


def _name(dtype, k: int) -> str:
    if isinstance(dtype, DataType):
        return dtype.name
    return dtype if isinstance(dtype, str) else f"{k}-bit"


# ------------------------------------------------------------------------------------------- numpy
def _np_codes(codes, k: int, label: str) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.dtype.kind in "iO" and not isinstance(codes, np.ndarray):   # a Python list of ints
        if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
            raise PackingError(f"{label} codes are unsigned, got {int(arr.min())}")
        if arr.dtype.kind == "i":
            arr = arr.astype(np.uint64)
    if arr.size == 0 and arr.dtype.kind == "f" and not isinstance(codes, np.ndarray):
        arr = arr.astype(np.uint8)
    if arr.dtype.kind != "u":
        raise PackingError(f"{label} codes must be an unsigned integer array (uint8/16/32/64, e.g. "
                           f"from dtype.encode), got dtype {arr.dtype}")
    if arr.dtype.itemsize * 8 > k and arr.size:
        bad = arr >= (np.uint64(1) << np.uint64(k))
        if bad.any():
            i = int(np.argmax(bad.reshape(-1)))
            raise PackingError(f"code {int(arr.reshape(-1)[i])} at flat index {i} does not fit in "
                               f"{k} bits ({label} codes are 0..{(1 << k) - 1})")
    return arr.reshape(-1)


def _np_pack(flat: np.ndarray, k: int) -> np.ndarray:
    n = flat.size
    g, nb = _group(k)
    groups = -(-n // g)
    padded = np.zeros(groups * g, np.uint64)
    padded[:n] = flat
    lanes = padded.reshape(groups, g)
    word = np.zeros(groups, np.uint64)
    for j in range(g):                     # at most 8 vectorized steps, one per lane of a group
        word |= lanes[:, j] << np.uint64(j * k)
    out = np.empty((groups, nb), np.uint8)
    for b in range(nb):
        out[:, b] = (word >> np.uint64(8 * b)) & np.uint64(0xFF)
    return out.reshape(-1)[: (n * k + 7) // 8]


def _np_unpack(buf: np.ndarray, k: int, count: int) -> np.ndarray:
    g, nb = _group(k)
    groups = -(-count // g)
    padded = np.zeros(groups * nb, np.uint8)
    used = min(buf.size, groups * nb)
    padded[:used] = buf[:used]
    rows = padded.reshape(groups, nb).astype(np.uint64)
    word = np.zeros(groups, np.uint64)
    for b in range(nb):
        word |= rows[:, b] << np.uint64(8 * b)
    mask = np.uint64((1 << k) - 1) if k < 64 else np.uint64(2**64 - 1)
    out = np.empty((groups, g), np.uint64)
    for j in range(g):
        out[:, j] = (word >> np.uint64(j * k)) & mask
    width = np.uint8 if k <= 8 else {16: np.uint16, 32: np.uint32, 64: np.uint64}[k]
    return out.reshape(-1)[:count].astype(width)


# ------------------------------------------------------------------------------------------- torch
def _torch_codes(t, k: int, label: str):
    import torch

    wide = {16: (torch.uint16, torch.int16), 32: (torch.uint32, torch.int32),
            64: (torch.uint64, torch.int64)}
    if k <= 8:
        if t.dtype != torch.uint8:
            raise PackingError(f"{label} codes as a torch tensor must be torch.uint8, got {t.dtype} "
                               f"(convert with .to(torch.uint8) once the values are 0..{(1 << k) - 1})")
        if k < 8 and t.numel() and bool((t >> k).any()):
            i = int(torch.nonzero((t >> k).reshape(-1))[0])
            raise PackingError(f"code {int(t.reshape(-1)[i])} at flat index {i} does not fit in "
                               f"{k} bits ({label} codes are 0..{(1 << k) - 1})")
    elif t.dtype not in wide[k]:
        raise PackingError(f"{label} codes as a torch tensor must be {wide[k][0]} or {wide[k][1]}, "
                           f"got {t.dtype}")
    return t.reshape(-1)


def _torch_pack(flat, k: int):
    import torch

    n = flat.numel()
    nbytes = (n * k + 7) // 8
    if k > 8:
        return flat.contiguous().view(torch.uint8)[:nbytes]
    g, nb = _group(k)
    groups = -(-n // g)
    lanes = torch.zeros(groups * g, dtype=torch.int64, device=flat.device)
    lanes[:n] = flat.to(torch.int64)
    lanes = lanes.reshape(groups, g)
    shifts = torch.arange(g, device=flat.device, dtype=torch.int64) * k
    word = (lanes << shifts).sum(dim=1)        # lanes occupy disjoint bits: sum == or; < 2^56
    byte_shifts = torch.arange(nb, device=flat.device, dtype=torch.int64) * 8
    out = ((word[:, None] >> byte_shifts) & 0xFF).to(torch.uint8)
    return out.reshape(-1)[:nbytes]


def _torch_unpack(buf, k: int, count: int):
    import torch

    if k > 8:
        wide = {16: torch.int16, 32: torch.int32, 64: torch.int64}[k]
        head = buf[: count * k // 8].contiguous()
        if head.storage_offset() % (k // 8):      # a view dtype change needs aligned storage
            head = head.clone()
        return head.view(wide)
    g, nb = _group(k)
    groups = -(-count // g)
    padded = torch.zeros(groups * nb, dtype=torch.int64, device=buf.device)
    used = min(buf.numel(), groups * nb)
    padded[:used] = buf[:used].to(torch.int64)
    rows = padded.reshape(groups, nb)
    byte_shifts = torch.arange(nb, device=buf.device, dtype=torch.int64) * 8
    word = (rows << byte_shifts).sum(dim=1)
    shifts = torch.arange(g, device=buf.device, dtype=torch.int64) * k
    out = (word[:, None] >> shifts) & ((1 << k) - 1)
    return out.reshape(-1)[:count].to(torch.uint8)


# ---------------------------------------------------------------------------------------- public
def pack(codes, dtype: "DataType | str | int"):
    """Pack ``codes`` (any shape, flattened row-major) into the ``uint8`` bit stream of ``dtype``.

    >>> pack(np.array([1, 2, 3, 4, 5, 6, 7, 0], np.uint8), "uint3")   # 24 bits
    array([209,  88,  31], dtype=uint8)
    """
    k = bit_width(dtype)
    label = _name(dtype, k)
    t = _torch_tensor(codes)
    if t is not None:
        return _torch_pack(_torch_codes(t, k, label), k)
    return _np_pack(_np_codes(codes, k, label), k)


def _resolve_count(count, shape, label: str) -> tuple[int, tuple | None]:
    if shape is not None:
        shape = tuple(int(s) for s in (shape if hasattr(shape, "__len__") else (shape,)))
        n = math.prod(shape)
        if count is not None and int(count) != n:
            raise PackingError(f"unpack of {label}: count={count} disagrees with shape={shape} "
                               f"({n} elements)")
        return n, shape
    if count is None:
        raise PackingError(f"unpack of {label} needs the element count (count=) or shape= "
                           f"(the stream's padding bits make the byte length ambiguous)")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise PackingError(f"unpack of {label}: count must be a non-negative int, got {count!r}")
    return int(count), None


def unpack(buf, dtype: "DataType | str | int", count: "int | None" = None, *, shape=None):
    """The first ``count`` codes of the ``uint8`` bit stream ``buf`` (any shape, read row-major).

    ``shape=`` reshapes the result (and implies ``count``). A buffer shorter than
    ``ceil(count*K/8)`` bytes raises ``PackingError``; bytes beyond that are ignored.
    """
    k = bit_width(dtype)
    label = _name(dtype, k)
    n, shape = _resolve_count(count, shape, label)
    need = (n * k + 7) // 8
    t = _torch_tensor(buf)
    if t is not None:
        import torch

        if t.dtype != torch.uint8:
            raise PackingError(f"a packed {label} buffer must be torch.uint8, got {t.dtype}")
        flat = t.reshape(-1)
    else:
        arr = np.asarray(buf)
        if arr.dtype != np.uint8:
            raise PackingError(f"a packed {label} buffer must be a uint8 array, got dtype {arr.dtype}")
        flat = arr.reshape(-1)
    size = flat.numel() if t is not None else flat.size
    if size < need:
        raise PackingError(f"a packed buffer of {n} {label} elements needs {need} bytes "
                           f"(ceil({n}*{k}/8)), got {size}")
    out = _torch_unpack(flat, k, n) if t is not None else _np_unpack(flat, k, n)
    return out.reshape(shape) if shape is not None else out


def pack_words(codes, dtype: "DataType | str | int"):
    """The bit stream of ``pack(codes, dtype)`` as little-endian 32-bit words, zero-padded.

    numpy gives ``uint32``; torch gives ``torch.int32`` holding the same bits.
    """
    stream = pack(codes, dtype)
    nbytes = stream.shape[0]
    nwords = -(-nbytes // 4)
    t = _torch_tensor(stream)
    if t is not None:
        import torch

        padded = torch.zeros(nwords * 4, dtype=torch.uint8, device=t.device)
        padded[:nbytes] = t
        return padded.view(torch.int32)
    words = np.zeros(nwords * 4, np.uint8)
    words[:nbytes] = stream
    return words.view("<u4").astype(np.uint32)


def unpack_words(words, dtype: "DataType | str | int", count: "int | None" = None, *, shape=None):
    """Inverse of ``pack_words``: the first ``count`` codes of a stream held in 32-bit words
    (numpy ``uint32``/``int32``, torch ``int32``/``uint32``; the bits are what count)."""
    k = bit_width(dtype)
    label = _name(dtype, k)
    t = _torch_tensor(words)
    if t is not None:
        import torch

        if t.dtype not in (torch.int32, torch.uint32):
            raise PackingError(f"packed {label} words must be torch.int32 or torch.uint32, got {t.dtype}")
        stream = t.reshape(-1).contiguous().view(torch.uint8)
    else:
        arr = np.asarray(words)
        if arr.dtype not in (np.dtype(np.uint32), np.dtype(np.int32)):
            raise PackingError(f"packed {label} words must be a uint32 (or int32) array, "
                               f"got dtype {arr.dtype}")
        stream = np.ascontiguousarray(arr.reshape(-1)).astype(arr.dtype.newbyteorder("<")).view(np.uint8)
    return unpack(stream, dtype, count, shape=shape)
