"""One registry mechanism for the tables that map an instruction class (or an intrinsic's name) to
what handles it: interpreter handlers, layout rules, codegen emitters, simulator intrinsics.

Registering a key twice raises, so two handlers never silently replace each other; class keys
are looked up along the method resolution order, so a handler of a base class serves its
subclasses.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterable, Iterator, Optional, TypeVar

from tilus.errors import RegistryError

V = TypeVar("V")


class Registry(Generic[V]):
    """A table from keys to values (handlers, rules, emitters), each key registered once."""

    def __init__(self, what: str):
        self.what = what                   # e.g. "interpreter handler", for messages
        self._table: dict[object, V] = {}

    def add(self, key: object, value: V) -> None:
        """Registers ``value`` for ``key``; a key registered before raises RegistryError."""
        if key in self._table:
            raise RegistryError(f"two {self.what}s for {_name(key)}: {_name(self._table[key])} "
                                f"and {_name(value)}")
        self._table[key] = value

    def add_all(self, pairs: Iterable[tuple[object, V]]) -> "Registry[V]":
        """Registers every (key, value) of ``pairs`` (a repeated key raises); returns the registry."""
        for key, value in pairs:
            self.add(key, value)
        return self

    def register(self, *keys: object) -> Callable[[V], V]:
        """A decorator registering the decorated function for every key."""
        def deco(value: V) -> V:
            for key in keys:
                self.add(key, value)
            return value
        return deco

    def get(self, key: object) -> Optional[V]:
        """The value registered for exactly ``key``, or None."""
        return self._table.get(key)

    def find(self, cls: type) -> Optional[V]:
        """The value of ``cls`` or of its nearest registered base class, or None."""
        for base in cls.__mro__:
            if base in self._table:
                return self._table[base]
        return None

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def __iter__(self) -> Iterator[object]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


def _name(x: object) -> str:
    return getattr(x, "__qualname__", None) or repr(x)
