"""Integer expressions over a kernel's scalar parameters, stored as text in metadata.

Launch dimensions (``cdiv(n, 512)``) and buffer-size requirements (``m * k``) are written in the
subset of Python syntax that the IR printer uses for integer arithmetic: integer literals, parameter
names, ``+ - * // %``, unary ``-``, parentheses, and the calls ``cdiv``, ``min``, ``max``. The text is
parsed with :mod:`ast` and walked by hand: nothing is ``eval``-ed, so metadata read from disk cannot
run code.
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
_CALLS = {"cdiv": lambda a, b: -((-a) // b), "min": min, "max": max}


@lru_cache(maxsize=1024)
def _parse(text: str) -> ast.expr:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ExpressionError(f"cannot parse expression {text!r}: {e.msg}") from None
    _check(tree.body, text)
    return tree.body


def _check(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.Constant):
        if type(node.value) is not int:
            raise ExpressionError(f"{text!r}: only integer literals are allowed, got {node.value!r}")
    elif isinstance(node, ast.Name):
        pass
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            hint = " (use // or cdiv)" if isinstance(node.op, ast.Div) else ""
            raise ExpressionError(f"{text!r}: operator {type(node.op).__name__} not allowed{hint}")
        _check(node.left, text)
        _check(node.right, text)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _check(node.operand, text)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in _CALLS and not node.keywords:
        if node.func.id == "cdiv" and len(node.args) != 2 or len(node.args) < 1:
            raise ExpressionError(f"{text!r}: wrong number of arguments to {node.func.id}")
        for a in node.args:
            _check(a, text)
    else:
        raise ExpressionError(f"{text!r}: {type(node).__name__} is not allowed in a size expression "
                              f"(integers, parameter names, + - * // %, cdiv, min, max)")


def _eval(node: ast.expr, env: Mapping[str, int], text: str) -> int:
    if isinstance(node, ast.Constant):
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
    assert isinstance(node, ast.Call)
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
    return _eval(_parse(expr), env, expr)


def names(expr: SizeExpr) -> list[str]:
    """The parameter names an expression text refers to (empty for ints and callables)."""
    if not isinstance(expr, str):
        return []
    return sorted({n.id for n in ast.walk(_parse(expr)) if isinstance(n, ast.Name)} - set(_CALLS))
