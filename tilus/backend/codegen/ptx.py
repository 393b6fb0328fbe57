"""PTX instructions by their text: ``ptx("fma.rn.f16x2")(d, a, b, c)`` is the TIR call
``T.ptx["fma.rn.f16x2"](d, a, b, c)`` makes, built faster.

TVM's ``T.ptx`` narrows the dotted text against its whole instruction table on every lookup and
then checks and coerces every operand (arity, register classes, dtypes, immediates) in Python on
every call; a kernel that emits a few hundred instructions spends more time there than anywhere
else in its lowering. So the lookup is done once per text, and the checks once per operand
*signature*: the operands' node types and dtypes, and the values of Python int operands
(immediates), which is all those checks read. The first call with a signature goes through TVM;
when TVM passed its expression operands through unchanged (they are the call's leading
arguments) and rebuilding that call from them gives the same call, the call is kept as a
template, and later calls with the signature put their operands into a copy of it. Anything else
(addresses, which TVM converts; keyword arguments) goes through TVM every time.

Templates depend on the instruction and the signature only, never on a program, so they are kept
for the process (a few per instruction a kernel uses).
"""
from __future__ import annotations

import functools
from typing import Any, Optional

from tilus.backend.tvm_shim import T, ir, structural_equal, tirx

_UNSEEN = object()


class Instruction:
    """``T.ptx[text]``, callable with the instruction's operands."""

    __slots__ = ("text", "chain", "templates")

    def __init__(self, text: str):
        self.text = text
        self.chain = T.ptx[text]
        self.templates: dict[tuple, Optional[tuple]] = {}

    def __call__(self, *operands, **kwargs) -> Any:
        key = _signature(operands) if not kwargs else None
        if key is None:
            return self.chain(*operands, **kwargs)
        template: Any = self.templates.get(key, _UNSEEN)
        if template is _UNSEEN:
            call = self.chain(*operands)
            self.templates[key] = _template(call, operands)
            return call
        if template is None:
            return self.chain(*operands)
        op, fixed, tail = template
        return _rebuild(op, fixed, tail, operands)

    def __repr__(self) -> str:
        return f"ptx({self.text!r})"


@functools.lru_cache(maxsize=None)
def ptx(text: str) -> Instruction:
    """The PTX instruction ``text`` (call it with the operands to get its TIR call)."""
    return Instruction(text)


def _signature(operands: tuple) -> Optional[tuple]:
    """What TVM's operand checks read: each operand's node type and dtype, or a Python int's
    type and value; None when an operand is neither an int nor a scalar (PrimType) expression,
    e.g. a pointer (the call bypasses the templates)."""
    key: list[tuple[Any, Any]] = []
    for x in operands:
        if isinstance(x, int):      # bool or int (a float immediate bypasses: NaN keys miss)
            key.append((type(x), x))
            continue
        ty = getattr(x, "ty", None)
        if not isinstance(ty, ir.PrimType):
            return None
        key.append((type(x), str(ty.dtype)))
    return tuple(key)


def _template(call, operands: tuple) -> Optional[tuple]:
    """(op, fixed arguments, trailing arguments) of ``call`` when its leading arguments are the
    expression operands themselves (an int operand's coerced constant is fixed: its value is in
    the signature) and rebuilding the call from them reproduces it; else None."""
    args = list(getattr(call, "args", ()))
    if len(args) < len(operands):
        return None
    fixed: list = []
    for x, arg in zip(operands, args):
        if isinstance(x, int):
            fixed.append(arg)
        elif arg.same_as(x):
            fixed.append(None)
        else:
            return None
    template = (call.op, tuple(fixed), tuple(args[len(operands):]))
    if not structural_equal(_rebuild(*template, operands), call):
        return None
    return template


def _rebuild(op, fixed: tuple, tail: tuple, operands: tuple):
    args = [x if f is None else f for f, x in zip(fixed, operands)]
    return tirx.call_intrin("", op, *args, *tail)
