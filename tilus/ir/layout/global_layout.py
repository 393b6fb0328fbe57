"""Global layouts: strided views over a pointer, sizes and strides symbolic in kernel parameters."""
from __future__ import annotations

from typing import Any, Sequence

from tilus.errors import LayoutError


class GlobalLayout:
    """offset(index) = sum(index[d] * strides[d]); sizes and strides are ints or any values with
    + * // % (the IR's expressions), which the layout only combines with those operators."""

    def __init__(self, shape: Sequence[Any], strides: Sequence[Any]):
        if len(shape) != len(strides):
            raise LayoutError(f"a global layout needs one stride per dimension, got shape "
                              f"{[str(s) for s in shape]} and strides {[str(s) for s in strides]}")
        self.shape: tuple[Any, ...] = tuple(shape)
        self.strides: tuple[Any, ...] = tuple(strides)

    @property
    def rank(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    def offset(self, index: Sequence[Any]) -> Any:
        """The element offset of ``index`` from the pointer, as an expression."""
        if len(index) != self.rank:
            raise LayoutError(f"index of rank {len(index)} into {self} of rank {self.rank}")
        total: Any = 0
        for i, st in zip(index, self.strides):
            total = total + i * st
        return total

    def _key(self) -> tuple:
        return self.shape, self.strides

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobalLayout) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return (f"global_strided([{','.join(map(str, self.shape))}],"
                f"[{','.join(map(str, self.strides))}])")

    def __repr__(self) -> str:
        return f"GlobalLayout({str(self)!r})"


def global_strided(shape: Sequence[Any], strides: Sequence[Any] | None = None) -> GlobalLayout:
    """A strided view of ``shape``; the strides default to row-major (products of the sizes)."""
    if strides is None:
        acc: Any = 1
        rev = []
        for n in reversed(list(shape)):
            rev.append(acc)
            acc = n * acc
        strides = list(reversed(rev))
    return GlobalLayout(shape, strides)
