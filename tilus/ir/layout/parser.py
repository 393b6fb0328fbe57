"""Reading layouts back from their text form (a small recursive-descent parser).

Grammar (``*`` is the layout product between layouts and multiplication between numbers)::

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "//" | "%") unary)*
    unary := "-" unary | atom
    atom  := INT | NAME "(" [arg ("," arg)*] ")" | NAME | "(" expr ")" | "[" [expr ("," expr)*] "]"
    arg   := [NAME "="] expr

A call names a layout constructor (or a scalar function: cdiv/min/max); a bare NAME is a scalar,
looked up in ``env`` or made by ``symbols.name``, for the symbolic sizes and strides of global
layouts. The layouts know no IR expressions: the IR's parser passes its own ``Symbols`` (int32
Vars and its cdiv/min/max), see ``tilus.ir.parser.layout_from_text``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, NoReturn

from dataclasses import dataclass, field

from tilus.errors import LayoutError
from tilus.ir.layout.global_layout import GlobalLayout, global_strided
from tilus.ir.layout.primitives import (column_local, column_spatial, local, register_layout,
                                        replicate, spatial)
from tilus.ir.layout.register import RegisterLayout
from tilus.ir.layout.shared import SharedLayout, column_major, row_major, strided, swizzle

Layout = RegisterLayout | SharedLayout | GlobalLayout

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "local": local, "spatial": spatial, "column_local": column_local,
    "column_spatial": column_spatial, "replicate": replicate, "register_layout": register_layout,
    "strided": strided, "row_major": row_major, "column_major": column_major, "swizzle": swizzle,
    "global_strided": global_strided,
}
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_]\w*)|(//|[()\[\],=*+\-%]))")


def _no_name(name: str) -> Any:
    raise LayoutError(f"unknown name {name!r} (a symbolic size needs the IR's symbols)")


@dataclass(frozen=True)
class Symbols:
    """The scalars of a layout's text: a value for a bare name not in ``env``, and the scalar
    functions its sizes may call. The default knows ints only."""
    name: Callable[[str], Any] = _no_name
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=lambda: {
        "cdiv": lambda a, b: -(-a // b), "min": min, "max": max})


class _Parser:
    def __init__(self, text: str, env: Mapping[str, Any], symbols: Symbols):
        self.text, self.env, self.symbols, self.tokens = text, env, symbols, []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None:
                self.error(pos + len(text[pos:]) - len(text[pos:].lstrip()), "unexpected character")
            assert m.lastindex is not None   # every alternative is a group
            kind = "int" if m.group(1) else "name" if m.group(2) else m.group(3)
            self.tokens.append((kind, m.group(m.lastindex), m.start(m.lastindex)))
            pos = m.end()
        self.tokens.append(("end", "", len(text)))
        self.i = 0

    def error(self, pos: int, message: str) -> NoReturn:
        raise LayoutError(f"layout text, column {pos + 1}: {message}\n  {self.text}\n  {' ' * pos}^")

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, kind: str) -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] != kind:
            self.error(tok[2], f"expected {kind!r}, found {tok[1] or 'the end'!r}")
        self.i += 1
        return tok

    def expr(self) -> Any:
        value = self.term()
        while self.peek()[0] in ("+", "-"):
            op, pos = self.take(self.peek()[0])[0], self.peek()[2]
            value = self.apply(op, value, self.term(), pos)
        return value

    def term(self) -> Any:
        value = self.unary()
        while self.peek()[0] in ("*", "//", "%"):
            op, pos = self.take(self.peek()[0])[0], self.peek()[2]
            value = self.apply(op, value, self.unary(), pos)
        return value

    def apply(self, op: str, a: Any, b: Any, pos: int) -> Any:
        try:
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "//": lambda: a // b, "%": lambda: a % b}[op]()
        except (TypeError, LayoutError) as e:
            self.error(pos, f"cannot apply {op!r}: {e}")

    def unary(self) -> Any:
        if self.peek()[0] == "-":
            self.take("-")
            return -self.unary()
        return self.atom()

    def atom(self) -> Any:
        kind, text, pos = self.peek()
        if kind == "int":
            self.i += 1
            return int(text)
        if kind == "(":
            self.take("(")
            value = self.expr()
            self.take(")")
            return value
        if kind == "[":
            return self.sequence("[", "]")
        if kind == "name":
            self.i += 1
            if self.peek()[0] != "(":
                if text in self.env:
                    return self.env[text]
                try:
                    return self.symbols.name(text)
                except LayoutError as e:
                    self.error(pos, str(e))
            functions = {**FUNCTIONS, **self.symbols.functions}
            if text not in functions:
                self.error(pos, f"unknown layout constructor {text!r}; known: {', '.join(functions)}")
            args, kwargs = self.arguments()
            try:
                return functions[text](*args, **kwargs)
            except (TypeError, LayoutError) as e:
                self.error(pos, f"{text}(...): {e}")
        self.error(pos, f"expected a layout, a number or a name, found {text or 'the end'!r}")

    def sequence(self, open_: str, close: str) -> list[Any]:
        self.take(open_)
        items = []
        while self.peek()[0] != close:
            items.append(self.expr())
            if self.peek()[0] != close:
                self.take(",")
        self.take(close)
        return items

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        self.take("(")
        args, kwargs = [], {}
        while self.peek()[0] != ")":
            if self.peek()[0] == "name" and self.tokens[self.i + 1][0] == "=":
                name = self.take("name")[1]
                self.take("=")
                kwargs[name] = self.expr()
            else:
                args.append(self.expr())
            if self.peek()[0] != ")":
                self.take(",")
        self.take(")")
        return args, kwargs


def parse_layout(text: str, env: Mapping[str, Any] | None = None,
                 symbols: Symbols | None = None) -> Layout:
    """The register, shared or global layout that ``text`` (as ``str(layout)`` writes it) denotes;
    bare names are looked up in ``env``, then made by ``symbols``."""
    parser = _Parser(text, env or {}, symbols or Symbols())
    value = parser.expr()
    end = parser.peek()
    if end[0] != "end":
        parser.error(end[2], f"unexpected {end[1]!r} after the layout")
    if not isinstance(value, (RegisterLayout, SharedLayout, GlobalLayout)):
        parser.error(0, f"the text denotes {value!r}, not a layout")
    return value
