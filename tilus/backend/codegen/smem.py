"""Shared-memory planning: one dynamic shared memory pool per kernel, regions handed out first-fit.

Shared tensors placed by the ``PlanSharedMemory`` pass (``AllocateSharedInst.offset``, what
``tilus.build`` runs) live at their offsets, in a reserved region at the start of the pool; the
planner below then places only what the pass did not see (scratch buffers of the lowering, and
shared tensors of unplanned programs).

Every shared tensor (``shared_tensor``) and every scratch buffer of the lowering (layout
conversions, reductions through shared memory) is a typed view (DeclBuffer) at a byte offset of
one ``shared.dyn`` uint8 pool, 128-byte aligned. ``free_shared`` returns a tensor's region; a
later allocation may reuse it, and when it does the lowering puts a barrier before the new
tensor's first use (threads may still be reading the old contents). Scratch regions are never
freed (each conversion site keeps its own region, so loops need no extra barriers).

The pool's size is the peak of live bytes; it is known after lowering, so the driver lowers twice
(the first pass measures). Dynamic shared memory lifts the 48 KB limit of static arrays (TVM's
launcher sets the kernel attribute when more is needed).
"""
from __future__ import annotations

ALIGN = 128


class SmemPlanner:
    """``reserved`` bytes at the start belong to the shared tensors PlanSharedMemory placed
    (``AllocateSharedInst.offset``); the lowering's own regions go above them."""

    def __init__(self, reserved: int = 0):
        self.live: list[tuple[int, int]] = []      # (offset, size) in bytes
        self.freed: list[tuple[int, int]] = []     # regions released by free_shared
        self.peak = 0
        if reserved:
            size = -(-reserved // ALIGN) * ALIGN
            self.live.append((0, size))
            self.peak = size

    def reserve(self, offset: int, nbytes: int) -> None:
        """A planned tensor's bytes (inside the reserved region; extends the peak if needed)."""
        self.peak = max(self.peak, offset + nbytes)

    def alloc(self, nbytes: int) -> tuple[int, bool]:
        """(offset, reuses_freed_memory)."""
        size = -(-max(1, nbytes) // ALIGN) * ALIGN
        offset = 0
        for start, length in sorted(self.live):
            if offset + size <= start:
                break
            offset = max(offset, start + length)
        self.live.append((offset, size))
        self.peak = max(self.peak, offset + size)
        reused = any(offset < s + n and s < offset + size for s, n in self.freed)
        return offset, reused

    def free(self, offset: int) -> None:
        for region in self.live:
            if region[0] == offset:
                self.live.remove(region)
                self.freed.append(region)
                return
