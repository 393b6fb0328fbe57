"""``tilus.build``: Program (or DSL Script) -> passes -> tirx PrimFunc -> CUDA -> CompiledKernel."""
from __future__ import annotations

from typing import Any

from tilus.backend.compiled import CompiledKernel
from tilus.backend.toolchain import normalize_arch
from tilus.errors import CompilationError
from tilus.ir.program import Program


def as_program(kernel_or_program: Any, **consts) -> Program:
    if isinstance(kernel_or_program, Program):
        if consts:
            raise CompilationError("compile-time constants are given to a Script, not a Program")
        return kernel_or_program
    program = getattr(kernel_or_program, "program", None)
    if callable(program):
        return program(**consts)
    raise CompilationError(f"tilus.build needs a tilus.Script or a tilus.ir.Program, got "
                           f"{type(kernel_or_program).__name__}")


def prepare(program: Program, arch: str = "sm_90") -> Program:
    """The pass pipeline before lowering (``tilus.transforms.default_passes``: layout inference,
    shared-memory planning, barrier insertion), each followed by verification."""
    from tilus.transforms import PassManager, default_passes

    return PassManager(default_passes(arch)).run(program)


def _launch_expr(e):
    """A grid dimension for the runtime's metadata: an int when constant, else the IR text."""
    from tilus.ir.expr import Const

    return int(e.value) if isinstance(e, Const) else str(e)


def build(kernel_or_program: Any, arch: "str | int | None" = None, options=(), **consts) -> CompiledKernel:
    """Build a kernel for ``arch`` (default: the toolchain's default, sm_90 without a GPU)."""
    from tilus.backend import build as tir_build
    from tilus.backend.codegen import lower_program

    arch = normalize_arch(arch)
    program = prepare(as_program(kernel_or_program, **consts), arch)
    lowered = lower_program(program)
    source = tir_build.tir_to_cuda(lowered.prim_func, arch)
    kernel = CompiledKernel.from_cuda(source, arch, lowered.name + "_kernel", options)
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
