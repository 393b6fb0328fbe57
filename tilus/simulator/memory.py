"""Memories of the simulated GPU: global (the caller's bytes), shared (one per block) and local
(one row per thread), all byte-addressed, plus the bookkeeping the checks need.

Shared memory keeps, per byte: ``init`` (ever written), ``writer``/``wmax``/``wepoch`` (smallest
and largest thread that wrote it in the barrier epoch ``wepoch``: several threads storing one value
in one statement is how replicated layouts write), ``rmin``/``rmax``/``repoch`` (smallest and largest reading
thread in the epoch ``repoch``), ``wws``/``rws`` (the accessing warp's __syncwarp count, so that
__syncwarp orders accesses within a warp), ``watomic`` (every write in the epoch ``wepoch`` was
an atomic: another atomic may read-modify-write the byte without a barrier, as sub-byte stores of
several threads into one word do) and ``pending`` (the thread whose cp.async to this byte has not
landed yet, or -1). Local memory keeps ``init`` per thread and byte.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Memory:
    def __init__(self, name: str, scope: str, nbytes: int, data: np.ndarray | None = None,
                 nthreads: int = 1):
        self.name, self.scope, self.nbytes = name, scope, int(nbytes)
        if scope == "global":
            self.data = data if data is not None else np.zeros(self.nbytes, np.uint8)
            self.init = None
        elif scope == "shared":
            n = self.nbytes
            self.data = np.zeros(n, np.uint8)
            self.init = np.zeros(n, bool)
            self.writer = np.full(n, -1, np.int32)
            self.wmax = np.full(n, -1, np.int32)
            self.wepoch = np.full(n, -1, np.int64)
            self.rmin = np.full(n, -1, np.int32)
            self.rmax = np.full(n, -1, np.int32)
            self.repoch = np.full(n, -1, np.int64)
            self.pending = np.full(n, -1, np.int32)
            self.wws = np.zeros(n, np.int64)   # the writing warp's __syncwarp count at the write
            self.watomic = np.zeros(n, bool)   # every write in the epoch ``wepoch`` was atomic
            self.rws = np.zeros(n, np.int64)   # the reading warp's __syncwarp count at the read
        elif scope == "local":
            self.data = np.zeros((nthreads, self.nbytes), np.uint8)
            self.init = np.zeros((nthreads, self.nbytes), bool)
        else:
            raise ValueError(scope)

    def __repr__(self) -> str:
        return f"Memory({self.name}, {self.scope}, {self.nbytes} B)"


@dataclass
class Pointer:
    """A pointer value: per-thread byte offsets into one memory; ``npdt`` is the pointee type."""

    mem: Memory
    off: np.ndarray  # int64 [T]
    npdt: np.dtype


@dataclass
class View:
    """A buffer bound to memory: element (i0, i1, ...) of thread t is at byte
    base[t] + (elem_offset + sum(i_d * strides_d)) * elem_bytes."""

    name: str
    mem: Memory
    base: np.ndarray  # int64 [T]
    npdt: np.dtype    # scalar element type
    lanes: int        # lanes of the buffer's dtype (float32x4 buffers: 4)
    shape: tuple
    strides: tuple
    elem_offset: int

    @property
    def elem_bytes(self) -> int:
        return self.npdt.itemsize * self.lanes
