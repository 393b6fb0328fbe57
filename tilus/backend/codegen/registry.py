"""One emitter per instruction class: ``@emitter(LoadGlobalInst) def f(lw, inst): ...``.

An emitter receives the Lowerer (``tilus.backend.codegen.lower``) and the instruction, and emits
TIR through the Lowerer's helpers (the IRBuilder frame stack is current while it runs).
"""
from __future__ import annotations

from typing import Callable

from tilus.errors import CompilationError

EMITTERS: dict[type, Callable] = {}


def emitter(*classes: type):
    def register(fn: Callable) -> Callable:
        for cls in classes:
            if cls in EMITTERS:
                raise CompilationError(f"two emitters for {cls.__name__}")
            EMITTERS[cls] = fn
        return fn
    return register


def emitter_for(cls: type) -> Callable:
    for klass in cls.__mro__:
        if klass in EMITTERS:
            return EMITTERS[klass]
    raise CompilationError(f"the CUDA backend has no emitter for {cls.__name__}")
