"""Checks of the public ops' arguments (``tilus.ops``, ``tilus.nn``): each returns the value it
accepts or raises a ``tilus.errors`` error that names the argument and what is allowed."""
from __future__ import annotations

from numbers import Integral
from typing import Any, Mapping, Sequence

from tilus.errors import ArgumentError, TilusError


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(value: Any, name: str, where: str, minimum: int = 1,
              error: type[TilusError] = ArgumentError) -> int:
    """``value`` as an int when it is an integer (not a bool) >= ``minimum``, else ``error``."""
    if not _is_int(value) or value < minimum:
        raise error(f"{where}: {name} must be an integer >= {minimum}, got "
                    f"{type(value).__name__} {value!r}")
    return int(value)


def check_schedule(schedule: Any, allowed: Sequence[str], where: str) -> dict:
    """A kernel schedule: a mapping from names in ``allowed`` to integers >= 1 (ArgumentError
    naming the bad key or value and the allowed keys)."""
    names = ", ".join(allowed)
    if not isinstance(schedule, Mapping):
        raise ArgumentError(f"{where}: schedule must be a dict with keys among {names} and "
                            f"integer values >= 1, got {type(schedule).__name__} {schedule!r}")
    out = {}
    for key, value in schedule.items():
        if not isinstance(key, str) or key not in allowed:
            raise ArgumentError(f"{where}: unknown schedule key {key!r}; the allowed keys are "
                                f"{names}")
        out[key] = check_int(value, f"schedule[{key!r}]", where)
    return out

