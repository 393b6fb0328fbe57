"""A compiled kernel: CUDA source, PTX, cubin, SASS (on demand) and ptxas' resource report."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tilus.backend import toolchain
from tilus.backend.toolchain import Resources
from tilus.errors import CompilationError

_RE_GLOBAL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(')


def kernel_names(cuda_source: str) -> list[str]:
    """The ``extern "C" __global__`` kernels defined in a CUDA source, in order, without repeats."""
    names = []
    for name in _RE_GLOBAL.findall(cuda_source):
        if name not in names:
            names.append(name)
    return names


@dataclass
class CompiledKernel:
    """One translation unit built for one architecture.

    ``resources`` is the main kernel's report (registers, spills, stack, static shared memory,
    constant memory); ``all_resources`` has every function ptxas reported.
    """

    cuda_source: str
    arch: str
    cubin: bytes
    ptx: str
    kernel_name: str
    all_resources: dict[str, Resources]
    compiler: str = "nvcc"
    log: str = ""
    _sass: str | None = field(default=None, repr=False)
    # set by tilus.build: the lowered tirx PrimFunc (before TVM's passes) and the Program after
    # the passes (both properties: a kernel from the cache has the program's text, parsed and
    # lowered again when asked), launch dimensions (grid expressions of the parameters, block
    # threads, shared bytes) and the assumptions the code makes about its arguments (e.g.
    # 16-byte aligned pointers)
    _prim_func: object = field(default=None, repr=False)
    _program: object = field(default=None, repr=False)
    program_text: str | None = field(default=None, repr=False)
    launch: dict = field(default_factory=dict)
    assumptions: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)     # seconds per build stage (tilus.build)

    @classmethod
    def from_cuda(cls, cuda_source: str, arch: "str | int | None" = None,
                  kernel_name: str | None = None, options=()) -> "CompiledKernel":
        """Compile CUDA C++ (nvcc, or NVRTC without nvcc) for ``arch``."""
        build = toolchain.compile_cuda(cuda_source, arch, options=options)
        names = kernel_names(cuda_source)
        if kernel_name is None:
            if not names:
                raise CompilationError('no extern "C" __global__ kernel in the CUDA source')
            kernel_name = names[0]
        return cls(cuda_source, build.arch, build.cubin, build.ptx, kernel_name, build.resources,
                   build.compiler, build.log)

    @property
    def program(self):
        """The Program after the passes (parsed from ``program_text`` for a cached kernel)."""
        if self._program is None and self.program_text is not None:
            from tilus.ir import parse

            self._program = parse(self.program_text)
        return self._program

    @program.setter
    def program(self, value) -> None:
        self._program = value

    @property
    def prim_func(self):
        """The lowered tirx PrimFunc (lowered again from :attr:`program` for a cached kernel)."""
        if self._prim_func is None and self.program is not None:
            from tilus.backend.codegen import lower_program

            self._prim_func = lower_program(self.program).prim_func
        return self._prim_func

    @prim_func.setter
    def prim_func(self, value) -> None:
        self._prim_func = value

    @property
    def resources(self) -> Resources:
        try:
            return self.all_resources[self.kernel_name]
        except KeyError:
            raise CompilationError(f"ptxas reported nothing for kernel {self.kernel_name!r} "
                                   f"(reported: {sorted(self.all_resources)})") from None

    @property
    def sass(self) -> str:
        if self._sass is None:
            self._sass = toolchain.disassemble(self.cubin)
        return self._sass

    def main_loop_cost(self, markers: tuple = ("HMMA", "IMMA"), innermost: bool = False):
        """One steady-state iteration of the main loop (the one with the most ``markers``
        instructions: tensor-core ones by default; ``innermost``: the smallest loop with any)
        counted from the SASS: ``tilus.backend.sass_cost.LoopCost``."""
        from tilus.backend.sass_cost import main_loop_cost

        return main_loop_cost(self.sass, markers, innermost)

    def __repr__(self) -> str:
        r = self.all_resources.get(self.kernel_name)
        regs = f", {r.registers} regs, {r.shared_memory_bytes} B smem" if r else ""
        return f"CompiledKernel({self.kernel_name}, {self.arch}{regs})"
