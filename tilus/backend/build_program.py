"""``tilus.build``: Program (or DSL Script) -> passes -> tirx PrimFunc -> CUDA -> CompiledKernel."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

from tilus.backend.compiled import CompiledKernel
from tilus.backend.toolchain import normalize_arch
from tilus.ir.program import Program, as_program  # noqa: F401  (re-exported for build's callers)


def prepare(program: Program, arch: str = "sm_90") -> Program:
    """The pass pipeline before lowering (``tilus.transforms.default_passes``: layout inference,
    shared-memory planning, barrier insertion), each followed by verification."""
    from tilus.transforms import PassManager, default_passes

    return PassManager(default_passes(arch)).run(program)


def _launch_expr(e):
    """A grid dimension for the runtime's metadata: an int when constant, else the IR text."""
    from tilus.ir.expr import Const

    return int(e.value) if isinstance(e, Const) else str(e)


class Clock:
    """Seconds per named stage, each measured from the end of the previous one."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._t
        self._t = now


def build(kernel_or_program: Any, arch: "str | int | None" = None, options=(),
          library: "str | os.PathLike | None" = None, **consts) -> CompiledKernel:
    """Build a kernel for ``arch`` (default: the toolchain's default, ``TILUS_ARCH`` or sm_80
    without a GPU). ``library``: also export TVM's host library (the launcher) to that path,
    its host code generated and linked by g++ while nvcc compiles the cubin. Stage times land in ``.timings``."""
    clock = Clock()
    from tilus.backend import tvm_shim
    from tilus.backend.codegen import lower_program
    from tilus.backend.codegen.emitters.dot import check_arch

    clock.lap("tvm_import")
    arch = normalize_arch(arch)
    program = as_program(kernel_or_program, **consts)
    clock.lap("transpile")
    program = prepare(program, arch)
    clock.lap("passes")
    check_arch(program, arch)
    lowered = lower_program(program)
    clock.lap("lowering")
    compiled = tvm_shim.compile_module(lowered.prim_func, arch)
    source = tvm_shim.cuda_source(compiled)
    clock.lap("tvm_codegen")
    export = _Background(tvm_shim.export_library, compiled, str(library)) if library else None
    try:
        kernel = CompiledKernel.from_cuda(source, arch, lowered.name + "_kernel", options)
    finally:
        if export is not None:
            export.join()
    clock.lap("nvcc")
    if export is not None:
        export.result()
        clock.laps["export_overlapped"] = export.seconds
    kernel.timings = clock.laps
    kernel.prim_func = lowered.prim_func
    kernel.program = program
    kernel.launch = {
        "grid": [_launch_expr(g) for g in lowered.grid] + [1] * (3 - len(lowered.grid)),
        "block": [lowered.threads, 1, 1],
        "shared_bytes": lowered.shared_bytes,     # dynamic shared memory (one pool)
    }
    kernel.assumptions = ["pointer arguments are passed as flat 1-D tensors (sub-byte: uint8 bytes)"] \
        + list(lowered.assumptions)
    return kernel


class _Background:
    """``fn(*args)`` on a thread (a subprocess-bound step run alongside another); ``result()``
    re-raises its error."""

    def __init__(self, fn, *args) -> None:
        self._out: dict = {}
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn, args) -> None:
        t0 = time.perf_counter()
        try:
            self._out["value"] = fn(*args)
        except BaseException as exc:  # re-raised by result() on the caller's thread
            self._out["error"] = exc
        self.seconds = time.perf_counter() - t0

    def join(self) -> None:
        self._thread.join()

    def result(self):
        if "error" in self._out:
            raise self._out["error"]
        return self._out.get("value")
