"""The Python DSL of Tilus: ``tilus.Script`` and its AST-to-IR transpiler.

A kernel is a subclass of ``tilus.Script``; ``__init__`` stores compile-time parameters on
``self``; ``__call__`` is the program of one thread block. It is never run by Python: the
transpiler reads its source and builds a ``tilus.ir.Program`` (see ``tilus.lang.transpiler`` for
how names, operators, control flow and rebinding map to IR).

Modules: ``script`` (the Script class, parameters, program cache), ``instructions`` (the
instruction methods, ``self.load_global`` etc.), ``transpiler`` (the AST walk), ``context`` (the
state of one build).
"""
from tilus.lang.script import KernelParam, Script  # noqa: F401
from tilus.lang.instructions import RangeSpec, instruction_names  # noqa: F401

__all__ = ["Script", "KernelParam", "instruction_names"]
