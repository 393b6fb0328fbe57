"""The IR's text form, reading side: ``parse(text) -> Program``, the exact inverse of printing
(``parse(str(p)) == p`` and ``str(parse(t)) == t`` for printed text).

The grammar (``tilus.lark``, LALR) knows statements and expressions but no instruction: a call
``name(positional, attr=value, ...)`` is matched to the instruction class whose ``text_names()``
has ``name``, positional arguments to its ``OPERANDS`` and keyword arguments to its fields, each
value converted after the field's type annotation. A new instruction class needs no change here.

Every failure is a ``TilusParseError`` with the line and column of the offending text.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from importlib import resources
from typing import Any, Callable, Optional, Union

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import DataTypeError, TilusParseError, VerificationError
from tilus.ir.expr import (AXIS_NAMES, BinaryOp, BlockIdx, Cast, Const, Expr, Select, UnaryOp, Var,
                           _result_dtype, cdiv, maximum, minimum, promote)
from tilus.ir.inst import Instruction, LoadScalarInst, instruction_classes
from tilus.ir.program import Program
from tilus.ir.scopes import NameScopes
from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt, Stmt,
                           WhileStmt, seq)
from tilus.ir.types import GLOBAL, SCOPES, PointerType, Tensor, TensorType
from tilus.ir.verifier import MAX_DEPTH

__all__ = ["parse", "ParseVerificationError"]

_NONE_TYPE = type(None)
_LITERALS = ("int_lit", "float_lit", "inf_lit", "nan_lit")
_FUNCTIONS = ("min", "max", "cdiv", "select", "cast")


class ParseVerificationError(TilusParseError, VerificationError):
    """Text that parses but fails ``tilus.ir.verifier.verify``; located at the offending statement."""


_PARSER: Optional[Lark] = None


def _lark() -> Lark:
    global _PARSER
    if _PARSER is None:
        grammar = resources.files("tilus.ir").joinpath("tilus.lark").read_text(encoding="utf-8")
        _PARSER = Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)
    return _PARSER


def keywords() -> frozenset[str]:
    """The words the grammar spells out (they cannot name scalars or kernels)."""
    from lark.lexer import PatternStr

    return frozenset(t.pattern.value for t in _lark().terminals
                     if isinstance(t.pattern, PatternStr) and t.pattern.value.isidentifier())


def layout_from_text(text: str, env: Optional[dict[str, Any]] = None) -> Any:
    """The layout ``text`` denotes, its symbolic sizes IR expressions: bare names are looked up in
    ``env``, else int32 Vars; cdiv/min/max are the IR's."""
    from tilus.ir.layout.parser import Symbols, parse_layout

    symbols = Symbols(name=lambda n: Var(n, dtypes.int32),
                      functions={"cdiv": cdiv, "min": minimum, "max": maximum})
    return parse_layout(text, env, symbols)


def _default_layout_parser() -> Optional[Callable[[str], Any]]:
    return layout_from_text


def parse(text: str, verify: bool = True,
          layout_parser: Optional[Callable[[str], Any]] = None) -> Program:
    """Read a Program from its text form and (by default) verify it.

    ``layout_parser`` turns a layout's text into a layout object; it defaults to
    :func:`layout_from_text` (``tilus.ir.layout.parse_layout`` with the IR's symbols).
    """
    if not isinstance(text, str):
        raise TilusParseError(f"expected the program's text as a str, got {type(text).__name__}")
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from None
    except LarkError as e:  # pragma: no cover - lark's other complaints
        raise TilusParseError(f"cannot parse: {e}") from None
    except RecursionError:
        raise TilusParseError("the text is nested too deeply") from None
    reader = _Reader(text, layout_parser or _default_layout_parser())
    try:
        program = reader.program(tree)
    except TilusParseError:
        raise
    except RecursionError:
        raise reader.error(reader.current, "the text is nested too deeply") from None
    except Exception as e:  # an IRError, DataTypeError, ... from building: locate it
        raise reader.error(reader.current, f"{type(e).__name__}: {e}") from e
    if verify:
        from tilus.ir.verifier import verify as run_verifier

        try:
            run_verifier(program)
        except VerificationError as e:
            node = getattr(e, "node", None)
            where = reader.header_locations.get(node) if isinstance(node, str) \
                else reader.locations.get(id(node))
            line, column = where or (None, None)
            raise ParseVerificationError(str(e), line, column) from e
    return program


# ----- syntax errors ----------------------------------------------------------------------------

_TERMINAL_WORDS = {
    "NAME": "a name", "TENSOR": "a tensor (%name)", "INT": "an integer", "FLOAT": "a float",
    "STRING": "a string", "$END": "the end of the text",
}


def _describe_terminals(names) -> str:
    from lark.lexer import PatternStr

    words = []
    for name in names:
        if name in _TERMINAL_WORDS:
            words.append(_TERMINAL_WORDS[name])
            continue
        try:
            pattern = _lark().get_terminal(name).pattern
        except KeyError:
            words.append(name)
            continue
        words.append(repr(pattern.value) if isinstance(pattern, PatternStr) else name.lower())
    words = sorted(set(words))
    if len(words) > 12:
        words = words[:12] + ["..."]
    return ", ".join(words)


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def _syntax_error(e: UnexpectedInput, text: str) -> TilusParseError:
    line, column = getattr(e, "line", None), getattr(e, "column", None)
    expected: Any
    if isinstance(e, UnexpectedToken):
        expected = e.accepts or e.expected
        if e.token.type == "$END":
            what = "unexpected end of text"
            line, column = _end_position(text)
        else:
            what = f"unexpected {e.token.value!r}"
    elif isinstance(e, UnexpectedCharacters):
        expected = e.allowed or ()
        what = f"unexpected character {e.char!r}"
    else:  # UnexpectedEOF
        expected = getattr(e, "expected", ()) or ()
        what = "unexpected end of text"
        line, column = _end_position(text)
    if line is None or line < 1:
        line, column = _end_position(text)
    hint = f"; expected {_describe_terminals(expected)}" if expected else ""
    return TilusParseError(what + hint, line, column)


# ----- instruction metadata ---------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _instruction_table() -> dict[str, list[type[Instruction]]]:
    table: dict[str, list[type[Instruction]]] = {}
    for cls in instruction_classes():
        for name in cls.text_names():
            table.setdefault(name, []).append(cls)
    return table


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


class _Mismatch(TilusParseError):
    """A call whose arguments do not fit one instruction class's signature."""


def _is_union(hint) -> bool:
    return typing.get_origin(hint) is Union or isinstance(hint, getattr(types, "UnionType", ()))


def _describe_hint(hint) -> str:
    if hint is Any:
        return "a constant"
    if _is_union(hint):
        return " or ".join(_describe_hint(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (tuple, list):
        args = typing.get_args(hint)
        return f"a list of {_describe_hint(args[0])}" if args else "a list"
    return {_NONE_TYPE: "none", int: "an integer", bool: "true or false", float: "a number",
            str: "a string", DataType: "a data type name", Tensor: "a tensor (%name)",
            Expr: "an expression"}.get(hint, getattr(hint, "__name__", str(hint)))


# ----- the tree walk ----------------------------------------------------------------------------

class _Reader(NameScopes):
    def __init__(self, text: str, layout_parser):
        super().__init__()
        self.text = text
        self.layout_parser = layout_parser
        self.locations: dict[int, tuple[int, int]] = {}  # id(statement or parameter) -> where
        self.header_locations: dict[str, tuple[Optional[int], Optional[int]]] = {}  # "blocks", "warps" -> where
        self.table = _instruction_table()
        self.current: Any = None
        self.depth = 0  # loop and branch bodies plus expression operators around the node read

    # -- helpers
    @staticmethod
    def position(node) -> tuple[Optional[int], Optional[int]]:
        if isinstance(node, Token):
            return node.line, node.column
        if isinstance(node, Tree) and not node.meta.empty:
            return node.meta.line, node.meta.column
        return None, None

    def error(self, node, message: str, cls=TilusParseError) -> TilusParseError:
        return cls(message, *self.position(node))

    def source(self, node) -> str:
        if isinstance(node, Token):
            return str(node)
        if isinstance(node, Tree) and not node.meta.empty:
            return self.text[node.meta.start_pos:node.meta.end_pos]
        return "?"

    def locate(self, obj, node):
        self.locations[id(obj)] = self.position(node)
        return obj

    def dtype(self, tok: Token) -> DataType:
        try:
            return dtypes.get(str(tok))
        except DataTypeError as e:
            raise self.error(tok, str(e)) from None

    def lookup_scalar(self, tok: Token) -> Var:
        found = self.find_scalar(str(tok))
        if found is None:
            raise self.error(tok, f"undefined variable {str(tok)!r}")
        return found

    def lookup_tensor(self, tok: Token) -> Tensor:
        found = self.find_tensor(str(tok)[1:])
        if found is None:
            raise self.error(tok, f"undefined tensor {tok}")
        return found

    # -- program
    def program(self, tree: Tree) -> Program:
        (kernel,) = tree.children
        self.current = kernel
        name, params_node, blocks_node, warps_node, consts_node, body_node = kernel.children
        pch: list[Any]
        params = []
        for p in params_node.children:
            if p is None:
                continue
            self.current = p
            pch = p.children
            if p.data == "scalar_param":
                var = Var(str(pch[0]), self.dtype(pch[1]))
            else:
                var = Var(str(pch[0]), PointerType(self.dtype(pch[1])))
            self.scalars[-1][var.name] = var
            params.append(self.locate(var, p))
        blocks = tuple(self.expr(b) for b in blocks_node.children if b is not None)
        warps = int(str(warps_node.children[0])) * (-1 if warps_node.data == "neg_int" else 1)
        consts = []
        if consts_node is not None:
            for item in consts_node.children:
                if item is None:
                    continue
                key_tok, value = item.children
                key = json.loads(str(key_tok)) if getattr(key_tok, "type", None) == "STRING" else str(key_tok)
                consts.append((key, self.literal(value)))
        body = self.body(body_node, nested=False)
        program = Program(str(name), tuple(params), blocks, warps, body, tuple(consts))
        self.locate(program, kernel)
        self.header_locations["blocks"] = self.position(blocks_node)
        self.header_locations["warps"] = self.position(warps_node)
        return program

    # -- statements
    def body(self, node: Tree, nested: bool = True) -> Stmt:
        """A ``{ ... }`` body; a nested one (of a loop or branch) is one level deeper (and only
        reached through a loop's bounds or a condition, whose depth is checked)."""
        self.push()
        self.depth += nested
        try:
            return seq([self.stmt(c) for c in node.children])
        finally:
            self.depth -= nested
            self.pop()

    def check_depth(self, node) -> None:
        if self.depth > MAX_DEPTH:
            raise self.error(node, f"the program nests more than {MAX_DEPTH} levels deep here "
                                   f"(loop and branch bodies plus expression operators); split "
                                   f"expressions with let variables")

    def stmt(self, node: Tree) -> Stmt:
        s: Stmt
        self.current = node
        kind = node.data
        ch: list[Any] = node.children   # tokens and subtrees, as the grammar puts them
        if kind == "def_inst":
            out = Tensor(str(ch[0])[1:], self.tensor_type(ch[1]))
            s = self.call(ch[2], out, ch[0])
            self.tensors[-1][out.name] = out
        elif kind == "write_inst":
            s = self.call(ch[1], self.lookup_tensor(ch[0]), ch[0])
        elif kind == "plain_inst":
            s = self.call(ch[0], None, None)
        elif kind == "for_stmt":
            name, type_node, start, stop, step, unroll_node, body = ch
            dtype = dtypes.int32 if type_node.children[0] is None else self.dtype(type_node.children[0])
            start, stop, step = self.expr(start), self.expr(stop), self.expr(step)
            unroll_kw, factor = unroll_node.children
            unroll: Union[int, bool, None] = None
            if unroll_kw is not None:
                unroll = True if factor is None else False if factor.type == "FALSE" else int(factor)
            var = Var(str(name), dtype)
            self.push()
            self.scalars[-1][var.name] = var
            try:
                inner = self.body(body)
            finally:
                self.pop()
            s = ForStmt(var, start, stop, step, inner, unroll)
        elif kind == "if_stmt":
            cond = self.expr(ch[0])
            s = IfStmt(cond, self.body(ch[1]), None if ch[2] is None else self.body(ch[2]))
        elif kind == "while_stmt":
            s = WhileStmt(self.expr(ch[0]), self.body(ch[1]))
        elif kind == "break_stmt":
            s = BreakStmt()
        elif kind == "continue_stmt":
            s = ContinueStmt()
        elif kind == "let_stmt":
            name, type_tok, value = ch
            value = self.expr(value)
            var = Var(str(name), self.dtype(type_tok))
            self.scalars[-1][var.name] = var
            s = LetStmt(var, value)
        elif kind == "let_load":
            name, type_tok, tensor_tok, exprs_node = ch
            src = self.lookup_tensor(tensor_tok)
            offsets = tuple(self.expr(e) for e in exprs_node.children if e is not None)
            var = Var(str(name), self.dtype(type_tok))
            try:
                s = LoadScalarInst(var, src, offsets)
            except Exception as e:  # pragma: no cover - the dataclass takes any values
                raise self.error(node, f"load_scalar: {e}") from None
            self.scalars[-1][var.name] = var
        elif kind == "assign_stmt":
            var = self.lookup_scalar(ch[0])
            s = AssignStmt(var, self.expr(ch[1]))
        else:  # pragma: no cover - the grammar has no other statements
            raise self.error(node, f"unknown statement {kind}")
        return self.locate(s, node)

    def tensor_type(self, node: Tree) -> TensorType:
        scope_tok, dtype_tok, shape_node, layout_node = node.children
        shape: tuple[Any, ...]
        scope = str(scope_tok)
        if scope not in SCOPES:
            raise self.error(scope_tok, f"unknown memory scope {scope!r}; expected one of {', '.join(SCOPES)}")
        dtype = self.dtype(dtype_tok)  # type: ignore[arg-type]
        dims = [d for d in shape_node.children if d is not None]
        if scope == GLOBAL:
            shape = tuple(self.expr(d) for d in dims)
        else:
            shape = tuple(self.int_literal(d, f"a size of a {scope} tensor") for d in dims)
        layout = None
        if layout_node is not None:
            text = self.source(layout_node).strip()
            if self.layout_parser is None:
                raise self.error(layout_node, f"cannot read the layout {text!r}: no layout parser "
                                              f"(tilus.ir.parser.layout_from_text) is available")
            try:
                layout = self.layout_parser(text)
            except Exception as e:
                raise self.error(layout_node, f"bad layout {text!r}: {e}") from None
        try:
            return TensorType(dtype, shape, scope, layout)
        except Exception as e:
            raise self.error(node, str(e)) from None

    # -- instructions
    def call(self, node: Tree, out: Optional[Tensor], out_tok) -> Instruction:
        name_tok, *args = node.children
        name = str(name_tok)
        classes = self.table.get(name)
        if not classes:
            near = difflib.get_close_matches(name, list(self.table), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else \
                f" (instructions: {', '.join(sorted(self.table)[:12])}, ...)"
            raise self.error(name_tok, f"unknown instruction {name!r}{hint}")
        if any(cls.DEFINES for cls in classes):
            raise self.error(name_tok, f"{name} declares a scalar: write it as a let, "
                                       f"let x: <dtype> = %tensor[offsets]")
        positional, keyword = [], []
        for a in args:
            if a is None:
                continue
            if isinstance(a, Tree) and a.data == "kwarg":
                keyword.append((a.children[0], a.children[1]))
            elif keyword:
                raise self.error(a, f"{name}: a positional argument after keyword arguments")
            else:
                positional.append(a)
        mismatches = []
        for cls in classes:
            try:
                kwargs = self.match(cls, name, node, positional, keyword, out, out_tok)
            except _Mismatch as e:
                mismatches.append((cls, e))
                continue
            hints = _hints(cls)
            self.push()   # the scalars the instruction binds, seen by its other fields only
            try:
                for field_name in cls.BINDS:
                    if isinstance(kwargs.get(field_name), Tree):
                        kwargs[field_name] = self.bound_vars(kwargs[field_name],
                                                             f"{field_name} of {name}")
                for field_name, value_node in list(kwargs.items()):
                    if isinstance(value_node, (Tree, Token)):
                        kwargs[field_name] = self.convert(value_node, hints[field_name],
                                                          f"{field_name} of {name}")
            finally:
                self.pop()
            self.current = node
            try:
                return cls(**kwargs)
            except Exception as e:
                raise self.error(node, f"{name}: {e}") from None
        if len(mismatches) == 1:
            raise mismatches[0][1]
        forms = "; ".join(f"as {cls.__name__}: {e.args[0].split(': ', 1)[-1]}" for cls, e in mismatches)
        raise self.error(node, f"{name}(...) fits none of its forms ({forms})")

    def match(self, cls, name, node, positional, keyword, out, out_tok) -> dict[str, Any]:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        if cls.OP_FIELD:
            kwargs[cls.OP_FIELD] = name
        has_output = cls.HAS_OUTPUT and "output" in fields
        if out is not None and not has_output:
            raise self.error(out_tok, f"{name} has no output; write it as a plain call", _Mismatch)
        if out is None and has_output:
            raise self.error(node, f"{name} produces a tensor: write %name: <type> = {name}(...)",
                             _Mismatch)
        if has_output:
            kwargs["output"] = out
        settable = [n for n in fields if n not in ("output", cls.OP_FIELD)]
        if len(positional) > len(cls.OPERANDS):
            ops = ", ".join(cls.OPERANDS) or "none"
            attrs = ", ".join(n for n in settable if n not in cls.OPERANDS) or "none"
            raise self.error(positional[len(cls.OPERANDS)],
                             f"{name} takes {len(cls.OPERANDS)} positional operand(s) ({ops}), got "
                             f"{len(positional)}; attributes go by name ({attrs})", _Mismatch)
        for field_name, value in zip(cls.OPERANDS, positional):
            kwargs[field_name] = value
        for key_tok, value in keyword:
            key = str(key_tok)
            if key not in settable:
                raise self.error(key_tok, f"unknown attribute {key!r} of {name}; it has "
                                          f"{', '.join(settable) or 'none'}", _Mismatch)
            if key in kwargs:
                raise self.error(key_tok, f"{name}: {key} given twice", _Mismatch)
            kwargs[key] = value
        missing = [n for n in settable if n not in kwargs and _required(fields[n])]
        if missing:
            raise self.error(node, f"{name} needs {', '.join(missing)}", _Mismatch)
        return kwargs

    def bound_vars(self, node: Tree, what: str) -> Optional[tuple[Var, ...]]:
        """A list of names that an instruction binds, as int32 Vars in the innermost scope."""
        if self.kind(node) == "none":
            return None
        items = [c for c in node.children if c is not None] if self.kind(node) == "list" else None
        if items is None or any(not (isinstance(c, Tree) and c.data == "var") for c in items):
            raise self.error(node, f"{what} must be a list of names, got {self.source(node)}")
        out = []
        for c in items:
            var = Var(str(c.children[0]), dtypes.int32)
            self.scalars[-1][var.name] = var
            out.append(self.locate(var, c))
        return tuple(out)

    # -- values after a field's type annotation
    @staticmethod
    def kind(node) -> str:
        if isinstance(node, Tree):
            if node.data == "tensor_ref":
                return "tensor"
            if node.data in ("list", "string", "none"):
                return node.data
        return "expr"

    def fits(self, node, hint) -> bool:
        kind = self.kind(node)
        origin = typing.get_origin(hint)
        if hint is Any:
            return True
        if _is_union(hint):
            return any(self.fits(node, a) for a in typing.get_args(hint))
        if origin in (tuple, list):
            return kind == "list"
        if kind == "tensor":
            return isinstance(hint, type) and issubclass(hint, Tensor)
        if kind == "string":
            return hint is str
        if kind == "none":
            return hint is _NONE_TYPE
        if kind == "list":
            return False
        if isinstance(hint, type) and issubclass(hint, Expr):
            return True
        data = node.data
        if hint is bool:
            return data in ("true_lit", "false_lit")
        if hint is int:
            return data == "int_lit" or (data == "u_neg" and node.children[0].data == "int_lit")
        if hint is float:
            return data in _LITERALS or (data == "u_neg" and node.children[0].data in _LITERALS)
        if hint is DataType:
            return data == "var"
        return False

    def convert(self, node, hint, what: str) -> Any:
        self.current = node
        if hint is Any or hint is object:
            return self.literal(node)
        if _is_union(hint):
            options = [a for a in typing.get_args(hint)]
            for a in options:
                if self.fits(node, a):
                    return self.convert(node, a, what)
            raise self.error(node, f"{what} must be {_describe_hint(hint)}, got {self.source(node)}")
        if not self.fits(node, hint):
            raise self.error(node, f"{what} must be {_describe_hint(hint)}, got {self.source(node)}")
        origin = typing.get_origin(hint)
        if origin in (tuple, list):
            items = [c for c in node.children if c is not None]
            args = typing.get_args(hint)
            if not args:
                return tuple(self.literal(c) for c in items)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.convert(c, args[0], what) for c in items)
            if len(args) != len(items):
                raise self.error(node, f"{what} must have {len(args)} items, got {len(items)}")
            return tuple(self.convert(c, a, what) for c, a in zip(items, args))
        if hint is _NONE_TYPE:
            return None
        if isinstance(hint, type) and issubclass(hint, Tensor):
            return self.lookup_tensor(node.children[0])
        if hint is str:
            return self.string(node)
        if isinstance(hint, type) and issubclass(hint, Expr):
            return self.expr(node)
        if hint is bool:
            return node.data == "true_lit"
        if hint is int:
            return self.int_literal(node, what)
        if hint is float:
            return float(self.number(node))
        if hint is DataType:
            return self.dtype(node.children[0])
        raise self.error(node, f"{what}: cannot read a value of type {hint}")  # pragma: no cover

    def string(self, node: Tree) -> str:
        try:
            return json.loads(str(node.children[0]))
        except ValueError as e:
            raise self.error(node, f"bad string {self.source(node)}: {e}") from None

    def literal(self, node) -> Any:
        """A compile-time constant: integer, float, true/false, string, none, data type, list."""
        self.current = node
        kind = self.kind(node)
        if kind == "none":
            return None
        if kind == "string":
            return self.string(node)
        if kind == "list":
            return tuple(self.literal(c) for c in node.children if c is not None)
        if kind == "tensor":
            return self.lookup_tensor(node.children[0])
        data = node.data
        if data in ("true_lit", "false_lit"):
            return data == "true_lit"
        if data in _LITERALS or (data == "u_neg" and node.children[0].data in _LITERALS):
            return self.number(node)
        if data == "var":
            try:
                return dtypes.get(str(node.children[0]))
            except DataTypeError:
                pass
        raise self.error(node, f"expected a constant (number, true/false, string, none, data type "
                               f"or list), got {self.source(node)}")

    def number(self, node) -> Any:
        sign = 1
        if node.data == "u_neg":
            sign, node = -1, node.children[0]
        if node.data == "int_lit":
            return sign * int(node.children[0])
        if node.data == "float_lit":
            return sign * float(node.children[0])
        if node.data == "inf_lit":
            return sign * float("inf")
        if node.data == "nan_lit":
            return float("nan")
        raise self.error(node, f"expected a number, got {self.source(node)}")

    def int_literal(self, node, what: str) -> int:
        if isinstance(node, Tree) and (node.data == "int_lit" or (
                node.data == "u_neg" and isinstance(node.children[0], Tree)
                and node.children[0].data == "int_lit")):
            return self.number(node)
        raise self.error(node, f"{what} must be an integer constant, got {self.source(node)}")

    # -- expressions
    def scalar(self, node, e: Expr) -> Expr:
        if not isinstance(e.dtype, DataType):
            raise self.error(node, f"the pointer parameter {e} cannot be computed with; "
                                   f"it can only be the ptr of a global_view")
        return e

    def expr(self, node: Tree) -> Expr:
        """An expression, one level deeper than what contains it."""
        self.depth += 1
        try:
            self.check_depth(node)
            return self._expr(node)
        finally:
            self.depth -= 1

    def _expr(self, node: Tree) -> Expr:
        self.current = node
        data = node.data
        ch: list[Any] = node.children   # tokens and subtrees, as the grammar puts them
        if data == "int_lit":
            return Const(int(ch[0]), dtypes.int32)
        if data == "float_lit":
            return Const(float(ch[0]), dtypes.float32)
        if data == "inf_lit":
            return Const(float("inf"), dtypes.float32)
        if data == "nan_lit":
            return Const(float("nan"), dtypes.float32)
        if data in ("true_lit", "false_lit"):
            return Const(data == "true_lit", dtypes.bool)
        if data == "var":
            return self.lookup_scalar(ch[0])
        if data == "block_idx":
            axis = str(ch[0])
            if axis not in AXIS_NAMES:
                raise self.error(ch[0], f"blockIdx has axes x, y and z, not {axis!r}")
            return BlockIdx(AXIS_NAMES.index(axis))
        if data.startswith("b_"):
            a, b = self.expr(ch[0]), self.expr(ch[1])
            return self.binary(node, data[2:], a, b)
        if data.startswith("u_"):
            op = data[2:]
            if op == "neg" and isinstance(ch[0], Tree) and ch[0].data in _LITERALS:
                # A negative literal is a constant: the printer writes Const(-5) as -5.
                inner = self._expr(ch[0])
                assert isinstance(inner, Const)
                return Const(-inner.value, inner.dtype)
            a = self.scalar(node, self.expr(ch[0]))
            return UnaryOp(op, a, dtypes.bool if op == "not" else a.dtype)
        if data == "func":
            return self.func(node)
        raise self.error(node, f"unexpected expression {self.source(node)}")  # pragma: no cover

    def binary(self, node, op: str, a: Expr, b: Expr) -> Expr:
        self.scalar(node, a)
        self.scalar(node, b)
        try:
            dtype = _result_dtype(op, a, b)
        except Exception as e:
            raise self.error(node, str(e)) from None
        return BinaryOp(op, a, b, dtype)

    def func(self, node: Tree) -> Expr:
        name_tok, *args = node.children
        args = [a for a in args if a is not None]
        name = str(name_tok)

        def arity(n: int) -> None:
            if len(args) != n:
                raise self.error(node, f"{name}(...) takes {n} arguments, got {len(args)}")

        if name in ("min", "max", "cdiv"):
            arity(2)
            return self.binary(node, name, self.expr(args[0]), self.expr(args[1]))
        if name == "select":
            arity(3)
            c, a, b = (self.scalar(x, self.expr(x)) for x in args)
            try:
                dtype = promote(a.dtype, b.dtype)
            except Exception as e:  # pragma: no cover
                raise self.error(node, str(e)) from None
            return Select(c, a, b, dtype)
        if name == "cast":
            arity(2)
            a = self.scalar(args[0], self.expr(args[0]))
            if not (isinstance(args[1], Tree) and args[1].data == "var"):
                raise self.error(args[1], f"cast(x, dtype) needs a data type name, got {self.source(args[1])}")
            return Cast(a, self.dtype(args[1].children[0]))  # type: ignore[arg-type]
        try:
            dtype = dtypes.get(name)
        except DataTypeError:
            near = difflib.get_close_matches(name, list(_FUNCTIONS), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise self.error(name_tok, f"unknown function {name!r}; {hint}expressions call "
                                       f"{', '.join(_FUNCTIONS)} or a type name (int64(5))") from None
        arity(1)
        arg = args[0]
        if dtype.is_bool:
            if arg.data not in ("true_lit", "false_lit"):
                raise self.error(arg, f"a bool constant is true or false, got {self.source(arg)}")
            return Const(arg.data == "true_lit", dtype)
        if dtype.is_integer:
            return Const(self.int_literal(arg, f"a {dtype.name} constant"), dtype)
        return Const(float(self.number(arg)), dtype)
