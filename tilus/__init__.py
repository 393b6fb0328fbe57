"""Tilus: a compiler and virtual machine for GPU kernels over 1-8-bit data types."""
from tilus import dtypes, errors  # noqa: F401
from tilus.dtypes import *  # noqa: F401,F403  (tilus.uint3, tilus.float16, ...)

__version__ = "0.1.0"
from tilus.interpreter import interpret  # noqa: F401,E402
