"""The block's threads: their ids and coordinates, the active mask, errors that name the threads
and statement at fault, and the warp-level alignment rules (whole warps, block barriers)."""
from __future__ import annotations

import numpy as np

from tilus.simulator import ptx
from tilus.simulator.errors import DivergentBarrierError, UnsupportedError


def _stmt_text(stmt) -> str:
    try:
        lines = [ln.strip() for ln in stmt.script().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except Exception:  # pragma: no cover - printing never matters for semantics
        return type(stmt).__name__
    for ln in lines:
        if ln.startswith(("for ", "if ", "while ")):
            return ln
    text = lines[-1] if lines else type(stmt).__name__
    return text if len(text) < 240 else text[:237] + "..."


class _Loop:
    __slots__ = ("broken",)

    def __init__(self, n):
        self.broken = np.zeros(n, bool)


class Threads:
    """The thread set of a Machine (a mixin: the evaluator's state lives in the Machine)."""

    # ------------------------------------------------------------------ threads and errors

    def _set_threads(self, n, dims=(1, 1, 1)):
        self.T = n
        self._consts = {}
        self.tid = np.arange(n)
        self.dims = dims
        x, y, z = dims
        self.coords = {"x": self.tid % x, "y": (self.tid // x) % y, "z": self.tid // (x * y)}
        self.mask = np.ones(n, bool)
        self.alive = np.ones(n, bool)
        self.loops: list[_Loop] = []

    def _err(self, cls, detail, threads=None, buffer=None, address=None):
        stmt = _stmt_text(self.stmt) if self.stmt is not None else None
        return cls(detail, stmt=stmt, block=self.block, threads=threads, buffer=buffer, address=address)

    def _threads_of(self, bad):
        """Thread ids where a boolean array (first axis = threads) is true."""
        bad = np.asarray(bad)
        rows = bad.reshape(bad.shape[0], -1).any(1) if bad.ndim > 1 else bad
        return np.nonzero(rows)[0]

    def _full(self, value, dtype):
        return np.full(self.T, value, dtype=dtype)

    def _uniform(self, v, what):
        """A Python int from a per-thread value that must agree on the active threads."""
        if isinstance(v, (int, np.integer)):
            return int(v)
        v = np.asarray(v)
        act = v[self.mask] if self.mask.any() else v
        if act.size == 0:
            return 0
        if not (act == act.flat[0]).all():
            raise self._err(UnsupportedError, f"{what} differs between threads")
        return int(act.flat[0])

    # ------------------------------------------------------------------ warp-level helpers

    def require_full_warps(self, what):
        if self.T % ptx.WARP:
            raise self._err(UnsupportedError, f"{what} in a block of {self.T} threads (not whole warps)")
        m = self.mask.reshape(-1, ptx.WARP)
        partial = m.any(1) & ~m.all(1)
        if partial.any():
            w = int(np.nonzero(partial)[0][0])
            missing = [w * 32 + i for i in range(32) if not m[w, i]]
            raise self._err(DivergentBarrierError, f"{what} (.sync.aligned) executed by part of warp {w}; "
                            f"lanes not executing it", missing)

    def barrier(self):
        expected = self.alive
        if (self.mask != expected).any():
            missing = np.nonzero(expected & ~self.mask)[0]
            raise self._err(DivergentBarrierError, f"__syncthreads reached by {int(self.mask.sum())} of "
                            f"{int(expected.sum())} live threads; threads not arriving", missing)
        self.epoch += 1
