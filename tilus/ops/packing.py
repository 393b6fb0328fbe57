"""The packed-weight format v2: codes laid out for the mma B operand, and v1 read back.

``data`` is ``uint8 [N_pad / 128, (K_pad / 32) * 512 * B]`` (``K_pad`` = K rounded up to 32,
``N_pad`` = N rounded up to 128, padding codes 0). Row ``j`` holds the units of columns
[128j, 128j + 128) one after the other along k (unit ``u``: k in [32u, 32u + 32)), so a k-tile of
one column tile is one contiguous run of bytes; unit ``(j, u)`` is ``512 * B`` bytes: thread ``t``
(0..127) of the kernel reads its ``4 * B`` bytes at ``t * 4B`` with one vector load, and slot
``p`` of that bit stream is the code at ``tilus.ir.layout.packed.weight_stream_layout(d).index(t,
p)`` of the unit, ``d = pair_stride(dtype, scale dtype)``. So a thread's load holds exactly the
codes of its mma B fragments, ordered so that the packed casts write whole half2 registers.

Everything here is torch ops on the weight's device (the permutation is one gather).
"""
from __future__ import annotations

import torch

from tilus import dtypes
from tilus.ir.layout.packed import UNIT_K, UNIT_N, pair_stride, weight_stream_layout

_PERMS: dict = {}


def padded(k: int, n: int) -> tuple[int, int]:
    """(K_pad, N_pad): K rounded up to the unit's 32, N to its 128."""
    return -(-k // UNIT_K) * UNIT_K, -(-n // UNIT_N) * UNIT_N


def data_shape(k: int, n: int, nbits: int) -> tuple[int, int]:
    """The shape of v2 ``data`` for a [N, K] weight of ``nbits``-bit codes."""
    kp, np_ = padded(k, n)
    return np_ // UNIT_N, kp * UNIT_N * nbits // 8


def stream_order(dtype: str, target: str, device) -> torch.Tensor:
    """int64 [4096]: the unit element (flat index of [32, 128]) at each packed stream position."""
    d = pair_stride(dtype, target)
    key = (d, str(device))
    if key not in _PERMS:
        table = weight_stream_layout(d).index_table().reshape(-1)
        _PERMS[key] = torch.as_tensor(table, dtype=torch.int64, device=device)
    return _PERMS[key]


def pack_codes(codes: torch.Tensor, dtype: str, target: str) -> torch.Tensor:
    """v2 ``data`` from [K, N] uint8 codes (on their device)."""
    t = dtypes.get(dtype)
    k, n = codes.shape
    kp, np_ = padded(k, n)
    full = torch.zeros(kp, np_, dtype=torch.uint8, device=codes.device)
    full[:k, :n] = codes
    units = full.reshape(kp // UNIT_K, UNIT_K, np_ // UNIT_N, UNIT_N).permute(2, 0, 1, 3)
    units = units.reshape(np_ // UNIT_N, kp // UNIT_K, UNIT_K * UNIT_N)
    stream = units[:, :, stream_order(dtype, target, codes.device)]
    return dtypes.pack(stream.reshape(-1), t).reshape(data_shape(k, n, t.nbits))


def unpack_codes(data: torch.Tensor, dtype: str, target: str, n: int, k: int) -> torch.Tensor:
    """[K, N] uint8 codes from v2 ``data`` (the inverse of :func:`pack_codes`)."""
    t = dtypes.get(dtype)
    kp, np_ = padded(k, n)
    ku, nt = kp // UNIT_K, np_ // UNIT_N
    stream = dtypes.unpack(data.reshape(-1), t, kp * np_).reshape(nt, ku, UNIT_K * UNIT_N)
    units = torch.empty_like(stream)
    units[:, :, stream_order(dtype, target, data.device)] = stream
    full = units.reshape(nt, ku, UNIT_K, UNIT_N).permute(1, 2, 0, 3).reshape(kp, np_)
    return full[:k, :n]


def unpack_v1_codes(data: torch.Tensor, dtype: str, n: int, k: int) -> torch.Tensor:
    """[K, N] codes from format v1 ``data`` (``[K, N_pad * B / 8]``, the row-major bit stream)."""
    t = dtypes.get(dtype)
    npad = -(-n // 128) * 128
    if t.nbits == 8:
        return data.reshape(k, npad)[:, :n]
    return dtypes.unpack(data.reshape(-1), t, k * npad).reshape(k, npad)[:, :n]
