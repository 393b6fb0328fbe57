"""TIR of the binary operators that mean the same on scalar expressions and on tile elements.

The two differ elsewhere (documented in the interpreter): a scalar ``mod`` is floor modulo and
its min/max are ``min``/``max``; a tile's ``mod`` is C's remainder and its min/max are
``maximum``/``minimum``. Those stay with their callers.
"""
from __future__ import annotations

import math

from tilus.backend.tvm_shim import dt, tirx

_COMPARE = {"lt": tirx.LT, "le": tirx.LE, "gt": tirx.GT, "ge": tirx.GE, "eq": tirx.EQ, "ne": tirx.NE}
_BITWISE = {"bitand": tirx.bitwise_and, "bitor": tirx.bitwise_or, "bitxor": tirx.bitwise_xor,
            "shl": tirx.shift_left, "shr": tirx.shift_right}


def common_binary(op: str, a, b, is_float: bool):
    """``a op b`` for arithmetic (integer ``div`` truncates), comparisons, bitwise ops and
    shifts; None for an operator this table does not cover."""
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return tirx.Div(a, _opaque_zero(b)) if is_float else tirx.truncdiv(a, b)
    if op in _COMPARE:
        return _COMPARE[op](a, b)
    if op in _BITWISE:
        return _BITWISE[op](a, b)
    return None


def _opaque_zero(b):
    """A constant float divisor 0.0 / -0.0 as the reinterpretation of its bits: IEEE division by
    zero (inf, nan) is defined, but TVM's constant folder rejects a literal zero divisor."""
    if not isinstance(b, tirx.FloatImm) or float(b.value) != 0.0:
        return b
    bits = dt(b).replace("float", "uint")
    sign = 1 << (int(bits[4:]) - 1) if math.copysign(1.0, float(b.value)) < 0 else 0
    return tirx.reinterpret(dt(b), tirx.const(sign, bits))
