"""One emitter per instruction class: ``@emitter(LoadGlobalInst) def f(lw, inst): ...``.

An emitter receives the Lowerer (``tilus.backend.codegen.lower``) and the instruction, and emits
TIR through the Lowerer's helpers (the IRBuilder frame stack is current while it runs).
"""
from __future__ import annotations

from typing import Callable

from tilus.errors import CompilationError
from tilus.registry import Registry

EMITTERS: Registry[Callable] = Registry("emitter")


def emitter(*classes: type) -> Callable[[Callable], Callable]:
    """Registers the decorated emitter for ``classes`` (a class registered twice raises)."""
    return EMITTERS.register(*classes)


def emitter_for(cls: type) -> Callable:
    """The emitter of ``cls`` or of its nearest registered base."""
    fn = EMITTERS.find(cls)
    if fn is not None:
        return fn
    raise CompilationError(f"the CUDA backend has no emitter for {cls.__name__}")
