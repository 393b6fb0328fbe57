"""The IR's text form, printing side. ``tilus.ir.parser`` reads exactly what this writes."""
from __future__ import annotations

import dataclasses
import json
import math
import re

from numpy import bool_ as np_bool, floating as np_floating, integer as np_integer

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.ir.expr import (AXIS_NAMES, INFIX, BinaryOp, BlockIdx, Cast, Const, Expr, Select,
                           UnaryOp, Var)

# Binding strength of infix operators (higher binds tighter), C-like.
PRECEDENCE = {"or": 1, "and": 2, "bitor": 3, "bitxor": 4, "bitand": 5, "eq": 6, "ne": 6,
              "lt": 7, "le": 7, "gt": 7, "ge": 7, "shl": 8, "shr": 8, "add": 9, "sub": 9,
              "mul": 10, "div": 10, "floordiv": 10, "mod": 10}
UNARY_PRECEDENCE = 11
UNARY_SYMBOL = {"neg": "-", "not": "!", "bitnot": "~"}
FUNCTION_OPS = ("min", "max", "cdiv")


def format_float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(float(value))
    return text if any(c in text for c in ".en") else text + ".0"


def format_const(c: Const) -> str:
    if c.dtype.is_bool:
        return "true" if c.value else "false"
    if c.dtype is dtypes.int32:
        return str(c.value)
    if c.dtype is dtypes.float32:
        return format_float(c.value)
    return f"{c.dtype.name}({format_float(c.value) if c.dtype.is_float else c.value})"


def _prec(e: Expr) -> int:
    if isinstance(e, BinaryOp) and e.op in PRECEDENCE:
        return PRECEDENCE[e.op]
    if isinstance(e, UnaryOp) or (isinstance(e, Const) and not e.dtype.is_bool
                                  and e.dtype in (dtypes.int32, dtypes.float32) and e.value < 0):
        return UNARY_PRECEDENCE
    return 100


def format_expr(e: Expr) -> str:
    """One expression as text, with the fewest parentheses that keep its tree."""
    if isinstance(e, Const):
        return format_const(e)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, BlockIdx):
        return f"blockIdx.{AXIS_NAMES[e.axis]}"
    if isinstance(e, BinaryOp):
        if e.op in FUNCTION_OPS:
            return f"{e.op}({format_expr(e.a)}, {format_expr(e.b)})"
        p = PRECEDENCE[e.op]
        left = format_expr(e.a)
        right = format_expr(e.b)
        if _prec(e.a) < p:
            left = f"({left})"
        if _prec(e.b) <= p:
            right = f"({right})"
        return f"{left} {INFIX[e.op]} {right}"
    if isinstance(e, UnaryOp):
        inner = format_expr(e.a)
        if _prec(e.a) < UNARY_PRECEDENCE or (isinstance(e.a, UnaryOp)) or inner.startswith("-"):
            inner = f"({inner})"
        return f"{UNARY_SYMBOL[e.op]}{inner}"
    if isinstance(e, Cast):
        return f"cast({format_expr(e.a)}, {e.dtype.name})"
    if isinstance(e, Select):
        return f"select({format_expr(e.cond)}, {format_expr(e.a)}, {format_expr(e.b)})"
    raise TypeError(f"cannot print {type(e).__name__}")


# ----- statements, tensor types and programs ---------------------------------------------------
#
# The text form (the parser reads exactly this):
#
#   kernel vec_add(n: int32, a: ~float32, c: ~float32)
#       blocks [cdiv(n, 128)] warps 4 consts {block: 128}
#   {
#       %g: global[float32, (n,)] = global_view(ptr=a, strides=[1])
#       %x: register[float32, (128,)] = load_global(%g, offsets=[blockIdx.x * 128])
#       for i in range(0, 4, 1) unroll 2 {
#           %x = mul(%x, 2.0)
#       }
#       store_global(%gc, %x, offsets=[blockIdx.x * 128])
#   }
#
# Instructions print generically from their class metadata: the tensor operands (OPERANDS) are
# positional, the other fields ``name=value`` (omitted when equal to the field's default); the
# first time a tensor is written it carries its type (``%x: <type> = ...``), later writes don't.

INDENT = "    "
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Words of the text form that cannot name scalars, parameters or kernels (tensors are %-prefixed).
RESERVED = frozenset({
    "kernel", "blocks", "warps", "consts", "for", "in", "range", "unroll", "if", "else", "while",
    "break", "continue", "let", "true", "false", "inf", "nan", "none", "blockIdx", "layout",
})


def format_dtype(t) -> str:
    """A scalar parameter's type: ``int32``; a pointer: ``~float16``."""
    if isinstance(t, DataType):
        return t.name
    from tilus.ir.types import PointerType

    if isinstance(t, PointerType):
        return f"~{t.dtype.name}"
    return str(t)


def _escape_unprintable(c: str) -> str:
    if c.isprintable():
        return c
    code = ord(c)
    if code > 0xFFFF:  # a JSON escape names UTF-16 code units
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def format_string(s: str) -> str:
    """A JSON string literal; characters that aren't printable (lone surrogates too) are escaped,
    so the text is always valid, visible UTF-8."""
    return "".join(_escape_unprintable(c) for c in json.dumps(s, ensure_ascii=False))


def format_value(v) -> str:
    """An instruction attribute, an operand or a compile-time constant."""
    from tilus.ir.types import PointerType, Tensor

    if isinstance(v, Tensor):
        return f"%{v.name}"
    if isinstance(v, Expr):
        return format_expr(v)
    if v is None:
        return "none"
    if isinstance(v, (bool, np_bool)):
        return "true" if v else "false"
    if isinstance(v, (int, np_integer)):
        return str(int(v))
    if isinstance(v, (float, np_floating)):
        return format_float(float(v))
    if isinstance(v, str):
        return format_string(v)
    if isinstance(v, (DataType, PointerType)):
        return format_dtype(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def format_tensor_type(t) -> str:
    """``register[float32, (16, 8)]``, ``global[float16, (m, k)]``, ``shared[..., layout=...]``."""
    dims = [format_expr(s) if isinstance(s, Expr) else str(s) for s in t.shape]
    shape = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
    layout = "" if t.layout is None else f", layout={t.layout}"
    return f"{t.scope}[{t.dtype.name}, {shape}{layout}]"


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def format_call(inst) -> str:
    """``name(%operand, ..., attr=value, ...)`` of an instruction (without its output): operands
    positional in OPERANDS order, then the other fields by name (the Vars it binds first); fields
    equal to their default are left out (an operand after a left-out one goes by name)."""
    fields = {f.name: f for f in dataclasses.fields(inst)}
    args: list[str] = []
    keyword = False
    rest = [n for n in fields if n not in inst.OPERANDS and n not in ("output", inst.OP_FIELD)]
    rest.sort(key=lambda n: n not in inst.BINDS)   # what an instruction binds comes first
    for name in (*inst.OPERANDS, *rest):
        value = getattr(inst, name)
        default = _field_default(fields[name])
        if default is not dataclasses.MISSING and _same(value, default):
            keyword = True
            continue
        if name in inst.OPERANDS and not keyword:
            args.append(format_value(value))
        else:
            keyword = True
            args.append(f"{name}={format_value(value)}")
    return f"{inst.display_name()}({', '.join(args)})"


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


class _StmtPrinter:
    def __init__(self):
        self.lines: list[str] = []
        self.defined: set[str] = set()

    def instruction_line(self, inst) -> str:
        note = inst.comment()
        return self._instruction(inst) + (f"  # {note}" if note else "")

    def _instruction(self, inst) -> str:
        if inst.DEFINES:    # load_scalar: ``let var: dtype = %src[offsets]``
            offsets = ", ".join(format_expr(e) for e in inst.offsets)
            return f"let {inst.var.name}: {format_dtype(inst.var.dtype)} = %{inst.src.name}[{offsets}]"
        call = format_call(inst)
        out = getattr(inst, "output", None) if inst.HAS_OUTPUT else None
        if out is None:
            return call
        if out.name in self.defined:
            return f"%{out.name} = {call}"
        self.defined.add(out.name)
        return f"%{out.name}: {format_tensor_type(out.type)} = {call}"

    def body(self, s, depth: int) -> None:
        from tilus.ir.stmt import SeqStmt

        for x in (s.stmts if isinstance(s, SeqStmt) else (s,)):
            self.stmt(x, depth)

    def stmt(self, s, depth: int) -> None:
        from tilus.ir.inst import Instruction
        from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt,
                                   SeqStmt, WhileStmt)

        pad = INDENT * depth
        if isinstance(s, SeqStmt):
            self.body(s, depth)
        elif isinstance(s, Instruction):
            self.lines.append(pad + self.instruction_line(s))
        elif isinstance(s, (ForStmt, IfStmt, WhileStmt)):
            self.lines.append(pad + format_stmt_head(s))
            self.body(s.then_body if isinstance(s, IfStmt) else s.body, depth + 1)
            if isinstance(s, IfStmt) and s.else_body is not None:
                self.lines.append(pad + "} else {")
                self.body(s.else_body, depth + 1)
            self.lines.append(pad + "}")
        elif isinstance(s, (BreakStmt, ContinueStmt, LetStmt, AssignStmt)):
            self.lines.append(pad + format_stmt_head(s))
        else:
            raise TypeError(f"cannot print {type(s).__name__}")


def format_stmt_head(s, defined=()) -> str:
    """The first line of a statement: a whole instruction (with its output's type unless the
    output's name is in ``defined``), a loop or branch header, ``let``/assignment, ``break``.
    The verifier names statements this way."""
    from tilus.ir.inst import Instruction
    from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt,
                               WhileStmt)

    if isinstance(s, Instruction):
        printer = _StmtPrinter()
        printer.defined.update(defined)
        return printer.instruction_line(s)
    if isinstance(s, ForStmt):
        var_type = "" if s.var.dtype is dtypes.int32 else f": {format_dtype(s.var.dtype)}"
        if s.unroll is None:
            unroll = ""
        elif s.unroll is True:
            unroll = " unroll"
        elif s.unroll is False:
            unroll = " unroll false"
        else:
            unroll = f" unroll {int(s.unroll)}"
        return (f"for {s.var.name}{var_type} in range({format_expr(s.start)}, {format_expr(s.stop)}, "
                f"{format_expr(s.step)}){unroll} {{")
    if isinstance(s, IfStmt):
        return f"if ({format_expr(s.cond)}) {{"
    if isinstance(s, WhileStmt):
        return f"while ({format_expr(s.cond)}) {{"
    if isinstance(s, BreakStmt):
        return "break"
    if isinstance(s, ContinueStmt):
        return "continue"
    if isinstance(s, LetStmt):
        return f"let {s.var.name}: {format_dtype(s.var.dtype)} = {format_expr(s.value)}"
    if isinstance(s, AssignStmt):
        return f"{s.var.name} = {format_expr(s.value)}"
    return type(s).__name__


def format_stmt(s, depth: int = 0) -> str:
    """A statement (and what it nests) as lines of text, indented ``depth`` levels."""
    p = _StmtPrinter()
    p.stmt(s, depth)
    return "\n".join(p.lines)


def _format_const_name(name: str) -> str:
    return name if IDENTIFIER.match(name) and name not in RESERVED else format_string(name)


def format_program_head(p) -> str:
    params = ", ".join(f"{v.name}: {format_dtype(v.dtype)}" for v in p.params)
    blocks = ", ".join(format_expr(b) if isinstance(b, Expr) else format_value(b) for b in p.blocks)
    head = f"kernel {p.name}({params})\n{INDENT}blocks [{blocks}] warps {format_value(p.warps)}"
    if p.consts:
        items = ", ".join(f"{_format_const_name(k)}: {format_value(v)}" for k, v in p.consts)
        head += f" consts {{{items}}}"
    return head


def format_program(p) -> str:
    """A whole kernel as text, ending with a newline; ``tilus.ir.parse`` reads it back."""
    printer = _StmtPrinter()
    printer.body(p.body, 1)
    return "\n".join([format_program_head(p), "{", *printer.lines, "}"]) + "\n"
