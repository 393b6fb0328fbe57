"""Helpers with NVIDIA Tilus's names: ``cdiv``, ``gcd`` and ``benchmark_func`` (a do_bench-like
timer). ``tilus.utils`` is what Tilus examples import them from."""
from __future__ import annotations

import math
from typing import Any, Callable

from tilus.autotune.timers import CudaEventTimer
from tilus.errors import NoDeviceError
from tilus.ir.expr import Expr, cdiv

__all__ = ["cdiv", "gcd", "benchmark_func"]


def gcd(*values: int) -> int:
    """Greatest common divisor of compile-time integers (``gcd(bytes_per_thread, 16)``)."""
    for v in values:
        if isinstance(v, Expr) or isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"gcd takes compile-time integers, got {v!r}")
    return math.gcd(*values)


def benchmark_func(fn: Callable[[], Any], warmup: int = 5, repeat: int = 20,
                   flush_l2: bool = True) -> float:
    """The median time of ``fn()`` in milliseconds, timed with CUDA events on the current stream
    after ``warmup`` untimed calls, each timed call preceded by an L2 flush.
    NoDeviceError on a machine without CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise NoDeviceError("benchmark_func times with CUDA events and needs a CUDA device; this "
                            "machine has none (run the kernel on CPU tensors to interpret it)")
    return CudaEventTimer(warmup=warmup, reps=repeat, flush_l2=flush_l2)(fn)
