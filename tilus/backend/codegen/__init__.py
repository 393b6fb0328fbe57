"""Lowering Tilus Programs to ``tvm.tirx`` (see lower.py for the driver, emitters/ for one module
per instruction family). Importing this package imports TVM (through tvm_shim)."""
from tilus.backend.codegen.lower import Lowered, lower_program  # noqa: F401
