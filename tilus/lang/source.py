"""Reading the source of a kernel function: its file, first line and AST."""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import linecache
import textwrap
from dataclasses import dataclass
from typing import Any

from tilus.errors import TilusError

@dataclass
class FunctionSource:
    func: Any
    filename: str
    first_line: int
    lines: list[str]
    tree: ast.FunctionDef

    def location(self, node: ast.AST) -> tuple[str, int, str]:
        rel = getattr(node, "lineno", 1)
        line = self.lines[rel - 1] if 0 < rel <= len(self.lines) else ""
        return self.filename, self.first_line + rel - 1, line


_SOURCES: dict[Any, FunctionSource] = {}


def _block_lines(func) -> "tuple[list[str], int] | None":
    """The lines of ``func``'s definition (decorators included) and its first line number, read
    from the file's cached lines: from ``co_firstlineno`` up to the first line, neither blank nor
    a comment, indented no deeper than the ``def``. None when that is not a whole function (a
    multi-line string or bracket back at the ``def``'s column, no file): the caller then asks
    ``inspect.getsourcelines``, which tokenizes the block, the slow part of reading a kernel."""
    code = func.__code__
    lines = linecache.getlines(code.co_filename, func.__globals__)
    first = code.co_firstlineno
    if not lines or first > len(lines):
        return None
    i = first - 1
    while i < len(lines) and lines[i].lstrip().startswith("@"):
        i += 1
    if i == len(lines) or not lines[i].lstrip().startswith(("def ", "async def ")):
        return None
    indent = len(lines[i]) - len(lines[i].lstrip())
    end = i + 1
    while end < len(lines):
        text = lines[end].strip()
        if text and not text.startswith("#") and len(lines[end]) - len(lines[end].lstrip()) <= indent:
            break
        end += 1
    return lines[first - 1:end], first


def _parse_function(lines: list[str]) -> "ast.AST | None":
    try:
        return ast.parse(textwrap.dedent("".join(lines))).body[0]
    except (SyntaxError, IndexError):
        return None


def function_source(func) -> FunctionSource:
    func = inspect.unwrap(func)
    code = func.__code__
    if code not in _SOURCES:
        block = _block_lines(func)
        tree = _parse_function(block[0]) if block is not None else None
        if tree is None:
            try:
                lines, first = inspect.getsourcelines(func)
            except (OSError, TypeError) as e:
                raise TilusError(f"cannot read the source of {func.__qualname__} ({e}); Tilus "
                                 f"kernels must be defined in a file") from None
            tree = ast.parse(textwrap.dedent("".join(lines))).body[0]
        else:
            lines, first = block
        if not isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef)):
            raise TilusError(f"{func.__qualname__}: expected a function definition")
        _SOURCES[code] = FunctionSource(func, code.co_filename, first, lines, tree)
    src = _SOURCES[code]
    # functions made by one factory share their code but not their closures and globals
    return src if src.func is func else dataclasses.replace(src, func=func)


@functools.lru_cache(maxsize=None)
def method_signature(func) -> inspect.Signature:
    """The signature of the function ``func`` called as a bound method (its first parameter
    dropped, no return annotation): what ``inspect.signature(obj.method)`` says, computed once per
    function (a kernel's transpilation asks hundreds of times)."""
    sig = inspect.signature(func)
    return sig.replace(parameters=list(sig.parameters.values())[1:],
                       return_annotation=inspect.Signature.empty)
