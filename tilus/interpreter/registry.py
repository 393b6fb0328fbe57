"""The instruction registry: one handler function per instruction class.

A handler is ``fn(state, inst) -> None``; it reads operands from ``state`` and stores its output
there. Its docstring is the instruction's reference semantics (the compiler must agree with it).
Adding an instruction to the interpreter is adding one ``@register(TheInst)`` function.
"""
from __future__ import annotations

from typing import Callable

from tilus.errors import InterpreterError
from tilus.ir.inst import Instruction

Handler = Callable[..., None]
HANDLERS: dict[type, Handler] = {}


def register(*classes: type[Instruction]) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for cls in classes:
            if cls in HANDLERS:
                raise RuntimeError(f"two interpreter handlers for {cls.__name__}")
            HANDLERS[cls] = fn
        return fn
    return deco


def handler_for(inst: Instruction) -> Handler:
    for cls in type(inst).__mro__:
        if cls in HANDLERS:
            return HANDLERS[cls]
    raise InterpreterError(f"the interpreter has no semantics for instruction "
                           f"{type(inst).__name__} ('{inst.display_name()}')")
