"""The instruction registry: one handler function per instruction class.

A handler is ``fn(state, inst) -> None``; it reads operands from ``state`` and stores its output
there. Its docstring is the instruction's reference semantics (the compiler must agree with it).
Adding an instruction to the interpreter is adding one ``@register(TheInst)`` function.
"""
from __future__ import annotations

from typing import Callable

from tilus.errors import InterpreterError
from tilus.ir.inst import Instruction
from tilus.registry import Registry

Handler = Callable[..., None]
HANDLERS: Registry[Handler] = Registry("interpreter handler")


def register(*classes: type[Instruction]) -> Callable[[Handler], Handler]:
    """Registers the decorated handler for ``classes`` (a class registered twice raises)."""
    return HANDLERS.register(*classes)


def handler_for(inst: Instruction) -> Handler:
    """The handler of ``inst``'s class or of its nearest registered base."""
    handler = HANDLERS.find(type(inst))
    if handler is not None:
        return handler
    raise InterpreterError(f"the interpreter has no semantics for instruction "
                           f"{type(inst).__name__} ('{inst.display_name()}')")
