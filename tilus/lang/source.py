"""Reading the source of a kernel function: its file, first line and AST."""
from __future__ import annotations

import ast
import dataclasses
import inspect
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


def function_source(func) -> FunctionSource:
    func = inspect.unwrap(func)
    code = func.__code__
    if code not in _SOURCES:
        try:
            lines, first = inspect.getsourcelines(func)
        except (OSError, TypeError) as e:
            raise TilusError(f"cannot read the source of {func.__qualname__} ({e}); Tilus kernels "
                             f"must be defined in a file") from None
        text = textwrap.dedent("".join(lines))
        module = ast.parse(text)
        tree = module.body[0]
        if not isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef)):
            raise TilusError(f"{func.__qualname__}: expected a function definition")
        _SOURCES[code] = FunctionSource(func, code.co_filename, first, lines, tree)
    src = _SOURCES[code]
    # functions made by one factory share their code but not their closures and globals
    return src if src.func is func else dataclasses.replace(src, func=func)
