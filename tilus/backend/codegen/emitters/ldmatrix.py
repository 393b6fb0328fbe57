"""ldmatrix for load_shared into mma fragments (not implemented yet: load_shared takes the
per-element path)."""
from __future__ import annotations


def try_ldmatrix(lw, st, out) -> bool:
    return False
