"""Timers for autotuning and benchmarks: ``CudaEventTimer`` (GPU) and ``FakeTimer`` (tests).

A timer is called as ``timer(fn, config=None) -> milliseconds`` (one number: the median).

``CudaEventTimer`` times ``fn()`` with CUDA events on the current stream: ``warmup`` untimed calls,
then ``reps`` timed calls, each preceded by an L2 flush (a write of a buffer larger than any L2,
256 MiB, outside the timed region), and returns the median. It needs a CUDA device; it is not run
on machines without one.

``FakeTimer(cost)`` returns ``cost(config)`` (a callable, or a dict keyed by the config's sorted
items) without running anything and counts its calls: it exists only so the autotuner's logic can
be tested on the CPU.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable, Optional

from tilus.errors import AutotuneError


def config_key(config: dict) -> tuple:
    return tuple(sorted(config.items()))


class CudaEventTimer:
    def __init__(self, warmup: int = 5, reps: int = 30, flush_l2: bool = True,
                 flush_bytes: int = 256 << 20):
        self.warmup, self.reps = warmup, reps
        self.flush_l2, self.flush_bytes = flush_l2, flush_bytes
        self._flush_buf = None

    def _flush(self, torch) -> None:
        if self._flush_buf is None:
            self._flush_buf = torch.empty(self.flush_bytes // 4, dtype=torch.int32, device="cuda")
        self._flush_buf.zero_()

    def __call__(self, fn: Callable[[], Any], config: Optional[dict] = None) -> float:
        import torch

        if not torch.cuda.is_available():
            raise AutotuneError("CudaEventTimer needs a CUDA device")
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(self.reps):
            if self.flush_l2:
                self._flush(torch)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)


class FakeTimer:
    """Deterministic fake timings for CPU tests of the autotuner (never runs ``fn``)."""

    def __init__(self, cost: Any):
        self.cost = cost
        self.calls: list[dict] = []

    def __call__(self, fn: Callable[[], Any], config: Optional[dict] = None) -> float:
        self.calls.append(dict(config or {}))
        if callable(self.cost):
            return float(self.cost(config or {}))
        return float(self.cost[config_key(config or {})])
