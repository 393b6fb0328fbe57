"""Integer expressions over a kernel's scalar parameters, stored as text in metadata.

Launch dimensions (``cdiv(n, 512)``) and buffer-size requirements (``m * k``) are written in the
subset of Python syntax that the IR printer uses for integer arithmetic: integer literals, parameter
names, ``+ - * // %``, unary ``-``, parentheses, and the calls ``cdiv``, ``min``, ``max``. The text is
parsed with :mod:`ast` and walked by hand: nothing is ``eval``-ed, so metadata read from disk cannot
run code. Texts longer than :data:`MAX_CHARS` or nested deeper than :data:`MAX_DEPTH` are refused,
so that evaluating one never recurses far.
"""
from __future__ import annotations

import ast
import operator
from functools import lru_cache
from typing import Callable, Mapping, Union

from tilus.errors import TilusError


class ExpressionError(TilusError, ValueError):
    """An expression in kernel metadata is malformed, or names a parameter that has no value."""


SizeExpr = Union[str, int, Callable[[Mapping[str, int]], int]]

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
MAX_CHARS = 4096
MAX_DEPTH = 64
_CALLS: dict[str, Callable[..., int]] = {"cdiv": lambda a, b: -((-a) // b), "min": min, "max": max}


@lru_cache(maxsize=1024)
def _parse(text: str) -> ast.expr:
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"expression of {len(text)} characters (at most {MAX_CHARS}): "
                              f"{text[:40]!r}...")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"cannot parse expression {text[:80]!r}: {e.msg}") from None
    except ValueError as e:  # e.g. a NUL character
        raise ExpressionError(f"cannot parse expression {text[:80]!r}: {e}") from None
    except (RecursionError, MemoryError):  # the parser's own limits
        raise ExpressionError(f"expression {text[:40]!r}... is nested too deeply") from None
    _check(tree.body, text, 0)
    return tree.body


def _check(node: ast.AST, text: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExpressionError(f"{text[:40]!r}...: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise ExpressionError(f"{text!r}: only integer literals are allowed, got {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id in _CALLS:
            raise ExpressionError(f"{text!r}: {node.id} is a function, not a parameter")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            hint = " (use // or cdiv)" if isinstance(node.op, ast.Div) else ""
            raise ExpressionError(f"{text!r}: operator {type(node.op).__name__} not allowed{hint}")
        _check(node.left, text, depth + 1)
        _check(node.right, text, depth + 1)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _check(node.operand, text, depth + 1)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in _CALLS and not node.keywords:
        if node.func.id == "cdiv" and len(node.args) != 2 or len(node.args) < 2:
            raise ExpressionError(f"{text!r}: {node.func.id} takes "
                                  f"{'2' if node.func.id == 'cdiv' else 'at least 2'} arguments")
        for a in node.args:
            _check(a, text, depth + 1)
    else:
        raise ExpressionError(f"{text!r}: {type(node).__name__} is not allowed in a size expression "
                              f"(integers, parameter names, + - * // %, cdiv, min, max)")


def _eval(node: ast.expr, env: Mapping[str, int], text: str) -> int:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int)   # _parse admits int constants only
        return node.value
    if isinstance(node, ast.Name):
        try:
            return int(env[node.id])
        except KeyError:
            raise ExpressionError(f"{text!r} names {node.id!r}, which is not a scalar parameter "
                                  f"(known: {', '.join(env) or 'none'})") from None
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env, text), _eval(node.right, env, text)
        if b == 0 and isinstance(node.op, (ast.FloorDiv, ast.Mod)):
            raise ExpressionError(f"{text!r}: division by zero")
        return _BINOPS[type(node.op)](a, b)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env, text)
        return -v if isinstance(node.op, ast.USub) else v
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    args = [_eval(a, env, text) for a in node.args]
    if node.func.id == "cdiv" and args[1] == 0:
        raise ExpressionError(f"{text!r}: division by zero")
    return _CALLS[node.func.id](*args)


def validate(expr: SizeExpr) -> None:
    """Raise ExpressionError unless ``expr`` is a well-formed expression (or int, or callable)."""
    if isinstance(expr, str):
        _parse(expr)
    elif not (callable(expr) or type(expr) is int):
        raise ExpressionError(f"expected an expression text, an int or a callable, got {expr!r}")


def evaluate(expr: SizeExpr, env: Mapping[str, int]) -> int:
    """Value of ``expr`` given the scalar parameters' values ``env``."""
    if type(expr) is int:
        return expr
    if callable(expr):
        return int(expr(env))
    return _eval(_parse(str(expr)), env, str(expr))


def names(expr: SizeExpr) -> list[str]:
    """The parameter names an expression text refers to (empty for ints and callables)."""
    if not isinstance(expr, str):
        return []
    return sorted({n.id for n in ast.walk(_parse(expr)) if isinstance(n, ast.Name)} - set(_CALLS))
