"""tilus.simulator: run a kernel's lowered ``tvm.tirx`` PrimFunc on the CPU, thread by thread.

All threads of a block run at once (every scalar is a numpy vector over the threads); divergent
branches and loops run under masks; PTX instructions have their ISA semantics
(``tilus.simulator.ptx``); out-of-bounds accesses, shared-memory races, reads of uninitialised
local/shared values and barriers reached in divergent code are reported as errors
(``tilus.simulator.errors``).

    tilus.simulator.run_prim_func(func, args, grid=None, uninit="error", races=True,
                                  max_while_iterations=100_000) -> SimulationReport
    tilus.simulate(kernel_or_program_or_prim_func, *args, arch="sm_80")

Modules: ``ptx`` (instruction semantics, pure numpy: mma.sync m16n8k8/16/32, ldmatrix, shfl.sync,
lop3, prmt), ``memory`` (byte-addressed global/shared/local memories and their bookkeeping),
``machine`` (the TIR evaluator), ``threads`` (thread ids, masks, warp rules, barriers), ``access``
(memory accesses and their checks, cp.async groups), ``intrinsics`` (the calls: PTX instructions,
atomics, shuffles, math), ``scalars`` (dtypes and arithmetic on thread vectors), ``errors``.

Not modelled: timing; concurrency between blocks (they run one after another, in blockIdx order,
so a spin-wait on a later block never ends and is reported after ``max_while_iterations``); the
memory model's reorderings (fences are no-ops, global memory is coherent at once; races are
checked in shared memory, plus conflicting same-statement stores in global memory); bank
conflicts; hardware rounding order inside mma (products are summed exactly, rounded once).

This package's ``__init__`` imports nothing heavy: ``tilus.simulator.ptx`` (pure numpy) loads
without TVM. The backend never imports this package (a checker shares no code with what it checks).
"""
from __future__ import annotations

from tilus.simulator.errors import (  # noqa: F401
    DivergentBarrierError, MisalignedAccessError, OutOfBoundsError, RaceError, SimulationError, UninitializedReadError,
    UninitializedReadWarning, UnsupportedError,
)


def run_prim_func(func, args, grid=None, uninit: str = "error", races: bool = True,
                  max_while_iterations: int = 100_000):
    """Run a tvm.tirx PrimFunc on CPU arrays (numpy / torch CPU tensors), in place, like a launch.

    ``args`` follow ``func.params`` (buffers take arrays, scalars take Python numbers). ``grid``
    overrides the number of blocks (an int or (x, y, z)); by default it comes from the blockIdx
    bindings. ``uninit``: "error" (default), "warn" or "ignore" for reads of uninitialised
    local/shared memory. ``races=False`` turns the shared-memory race checks off. A ``while`` loop
    running more than ``max_while_iterations`` times is reported (a spin-wait that cannot end,
    since blocks run one after another). Returns a ``SimulationReport`` (blocks, threads, statements executed).
    """
    from tilus.simulator.machine import run_prim_func as _run

    return _run(func, args, grid=grid, uninit=uninit, races=races,
                max_while_iterations=max_while_iterations)


def simulate(kernel, *args, arch: str = "sm_80", grid=None, uninit: str = "error", races: bool = True):
    """Build ``kernel`` as for the GPU and run the result on the CPU (outputs written in place).

    ``kernel``: a tvm.tirx PrimFunc (run as is), an object with a ``.prim_func`` (a CompiledKernel
    from ``tilus.build``), or a Tilus Program / Script (built with ``tilus.build(kernel, arch=arch)``).
    """
    from tilus.simulator.machine import as_prim_func

    func = as_prim_func(kernel, arch)
    return run_prim_func(func, args, grid=grid, uninit=uninit, races=races)
