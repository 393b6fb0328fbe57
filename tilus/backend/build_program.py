"""``tilus.build``: Program (or DSL Script) -> passes -> tirx PrimFunc -> CUDA -> CompiledKernel."""
from __future__ import annotations

import os
import threading
import time
from typing import Any

from tilus.backend.compiled import CompiledKernel
from tilus.backend.toolchain import normalize_arch
from tilus.errors import CompilationError
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


def cuda_printer_choice(printer: "str | None" = None) -> str:
    """Who prints the CUDA source (:func:`tilus.runtime.keys.cuda_printer`), as a
    CompilationError when the name is unknown."""
    from tilus.runtime.keys import cuda_printer

    try:
        return cuda_printer(printer)
    except ValueError as exc:
        raise CompilationError(str(exc)) from None


def build(kernel_or_program: Any, arch: "str | int | None" = None, options=(),
          library: "str | os.PathLike | None" = None, printer: "str | None" = None,
          **consts) -> CompiledKernel:
    """Build a kernel for ``arch`` (default: the toolchain's default, ``TILUS_ARCH`` or sm_80
    without a GPU). ``library``: also export TVM's host library (the launcher) to that path,
    its host code generated and linked by g++ while nvcc compiles the cubin. ``printer``: see
    :func:`cuda_printer_choice`. Stage times land in ``.timings``."""
    clock = Clock()
    printer = cuda_printer_choice(printer)
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
    if printer == "tilus":
        from tilus.backend.cuda_printer import print_cuda

        printed = print_cuda(lowered.prim_func, lowered.name)
        source = printed.source
        export = _Background(_export_launcher, lowered.prim_func, printed, arch, str(library)) \
            if library else None
    else:
        compiled = tvm_shim.compile_module(lowered.prim_func, arch)
        source = tvm_shim.cuda_source(compiled)
        export = _Background(tvm_shim.export_library, compiled, str(library)) if library else None
    clock.lap("codegen")
    try:
        kernel = CompiledKernel.from_cuda(source, arch, lowered.name + "_kernel", options)
    finally:
        if export is not None:
            export.join()
    clock.lap("nvcc")
    kernel.launcher_source = source
    if export is not None:
        embedded = export.result()
        if printer == "tilus":
            kernel.launcher_source = embedded
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


def _export_launcher(func, printed, arch: str, library: str) -> str:
    """TVM's host library for a kernel Tilus printed: generated from the launcher stub (same
    parameters, grid, block and shared memory), checked to pass the printed kernel's parameters.
    Returns the stub's CUDA source the library embeds: TVM's loader asks for its cubin by that
    source (tilus.runtime.cubins), and gets the printed kernel's."""
    from tilus.backend import tvm_shim
    from tilus.backend.launcher_stub import check_signature, launcher_stub

    compiled = tvm_shim.compile_module(launcher_stub(func, printed), arch)
    embedded = tvm_shim.cuda_source(compiled)
    check_signature(embedded, printed)
    tvm_shim.export_library(compiled, library)
    return embedded


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
