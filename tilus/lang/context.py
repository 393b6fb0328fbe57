"""State shared while one Script is turned into a Program: the builder, the launch attributes, the
layouts recorded by ``annotate_layout``, the nesting depth of run-time bodies and the name hint."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from tilus.errors import TilusError
from tilus.ir.builder import ProgramBuilder
import numpy as np

from tilus.ir.expr import BlockIdx, Expr

_STACK: list["BuildContext"] = []


class Attributes:
    """``self.attrs`` inside ``__call__``: ``blocks`` (an expression or a list of 1-3) and ``warps``."""

    __slots__ = ("blocks", "warps")

    def __init__(self):
        self.blocks: Any = 1
        self.warps: Any = 1

    def __setattr__(self, name, value):
        if name not in self.__slots__:
            raise TilusError(f"self.attrs has no attribute {name!r}; kernels set attrs.blocks and "
                             f"attrs.warps")
        if name == "blocks":
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if not 1 <= len(items) <= 3:
                raise TilusError(f"attrs.blocks takes 1 to 3 sizes, got {len(items)}")
            for b in items:
                if isinstance(b, (bool, np.bool_)) or not isinstance(b, (Expr, int, np.integer)):
                    raise TilusError(f"attrs.blocks must be integer scalars (expressions of the "
                                     f"parameters), got {getattr(b, 'name', b)!r} "
                                     f"({type(b).__name__})")
                if isinstance(b, Expr) and not b.dtype.is_integer:
                    raise TilusError(f"attrs.blocks must be integers, {b} is {b.dtype}")
            value = [int(b) if isinstance(b, np.integer) else b for b in items]
        elif name == "warps":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                    or not 1 <= value <= 32:
                raise TilusError(f"attrs.warps must be a compile-time int in 1..32, got {value}")
            value = int(value)
        object.__setattr__(self, name, value)


class BlockIndex:
    """``self.blockIdx``: the block's index along the grid axes x, y and z."""

    x = BlockIdx(0)
    y = BlockIdx(1)
    z = BlockIdx(2)


@dataclass
class BuildContext:
    script: Any
    builder: ProgramBuilder
    attrs: Attributes = field(default_factory=Attributes)
    # tensor name -> (layout, (filename, lineno, source_line)) recorded by annotate_layout
    layouts: dict = field(default_factory=dict)
    depth: int = 0
    hint: Optional[str] = None
    location: Any = None  # where the statement being transpiled is (for deferred errors)
    # let-variables never reassigned -> their values (to express the grid in the parameters)
    let_values: dict = field(default_factory=dict)
    # "blocks" / "warps" -> (filename, lineno, source_line) of the statement that set self.attrs.*
    attr_locations: dict = field(default_factory=dict)

    def take_hint(self, default: str) -> str:
        hint, self.hint = self.hint, None
        return hint or default

    def __enter__(self) -> "BuildContext":
        _STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _STACK.pop()


def current(what: str = "this method") -> BuildContext:
    """The context of the Script being built; an error outside ``program()``."""
    if not _STACK:
        raise TilusError(f"{what} can only be used inside a Script's __call__ while Tilus builds it "
                         f"(call kernel.program() or kernel(...))")
    return _STACK[-1]
