"""The CUDA backend: TVM (through tilus.backend.tvm_shim only), the CUDA toolchain, compiled kernels,
and the packed low-bit casts.

Importing this package does not import TVM; ``tilus.backend.tvm_shim`` does.
"""
from tilus.backend.compiled import CompiledKernel  # noqa: F401
from tilus.backend.toolchain import Resources, compile_cuda, disassemble  # noqa: F401
