"""Nested scopes of scalar and tensor names, as the IR text and the verifier see them: a name
defined in a loop or branch body is visible to the end of that body only."""
from __future__ import annotations

from typing import Optional

from tilus.ir.expr import Var
from tilus.ir.types import Tensor


class NameScopes:
    """A stack of scopes; ``push``/``pop`` around every nested body."""

    def __init__(self) -> None:
        self.scalars: list[dict[str, Var]] = [{}]
        self.tensors: list[dict[str, Tensor]] = [{}]

    def push(self) -> None:
        self.scalars.append({})
        self.tensors.append({})

    def pop(self) -> None:
        self.scalars.pop()
        self.tensors.pop()

    def find_scalar(self, name: str) -> Optional[Var]:
        return next((s[name] for s in reversed(self.scalars) if name in s), None)

    def find_tensor(self, name: str) -> Optional[Tensor]:
        return next((s[name] for s in reversed(self.tensors) if name in s), None)
