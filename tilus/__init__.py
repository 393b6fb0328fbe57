"""Tilus: a compiler and virtual machine for GPU kernels over 1-8-bit data types."""
from tilus import dtypes, errors  # noqa: F401
from tilus.dtypes import *  # noqa: F401,F403  (tilus.uint3, tilus.float16, ...)

from tilus.version import __version__  # noqa: F401,E402
from tilus.interpreter import interpret  # noqa: F401,E402
from tilus.simulator import simulate  # noqa: F401,E402  (imports no TVM until called)


def build(kernel_or_program, arch=None, **consts):
    """Compile a tilus.Script (instantiated with ``consts``) or Program to a CompiledKernel."""
    from tilus.backend.build_program import build as _build

    return _build(kernel_or_program, arch, **consts)

# ----- tilus.lang: the Python DSL (kept as one block at the end to merge cleanly) -----
from tilus.ir.expr import cdiv  # noqa: E402,F401
from tilus.ir.types import void_p  # noqa: E402,F401  (raw byte pointer, = ~tilus.uint8)
from tilus import jit  # noqa: E402,F401
from tilus.jit import Script  # noqa: E402,F401

from tilus.logging_config import configure_logging as _configure_logging  # noqa: E402

_configure_logging()


# ----- tilus.ops / nn / autotune / utils: imported on first use (they import torch) -----
def __getattr__(name):
    if name in ("ops", "nn", "autotune", "utils"):
        import importlib

        return importlib.import_module(f"tilus.{name}")
    raise AttributeError(f"module 'tilus' has no attribute {name!r}")
