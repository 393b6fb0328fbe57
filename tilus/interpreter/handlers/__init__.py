"""Instruction semantics, one handler per instruction class (importing this package registers them)."""
from tilus.interpreter.handlers import arith, control, memory, shape  # noqa: F401
