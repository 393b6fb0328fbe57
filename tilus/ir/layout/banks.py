"""Counting shared-memory bank conflicts of one warp's access, as the CUDA guide describes it.

Shared memory has 32 banks of 4 bytes. A warp's request is served in phases: all 32 lanes at once
for accesses of up to 4 bytes, 16 lanes at a time for 8-byte and 8 lanes at a time for 16-byte
accesses. Within a phase, each bank serves one distinct 4-byte word per wavefront (lanes reading the
same word share it), so a phase takes as many wavefronts as its busiest bank has distinct words.
"""
from __future__ import annotations

from typing import Sequence

from tilus.errors import LayoutError

NUM_BANKS = 32
BANK_BYTES = 4


def wavefronts(addresses: Sequence[int | None], access_bytes: int = 4) -> tuple[int, int]:
    """(wavefronts taken, phases) for one warp; ``None`` marks an inactive lane."""
    if access_bytes not in (1, 2, 4, 8, 16):
        raise LayoutError(f"shared accesses are 1, 2, 4, 8 or 16 bytes, not {access_bytes}")
    if len(addresses) > 32:
        raise LayoutError(f"a warp has 32 lanes, got {len(addresses)} addresses")
    per_phase = 32 * BANK_BYTES // max(access_bytes, BANK_BYTES)
    total = phases = 0
    for start in range(0, len(addresses), per_phase):
        words: dict[int, set[int]] = {}
        for addr in addresses[start:start + per_phase]:
            if addr is None:
                continue
            if addr % access_bytes:
                raise LayoutError(f"address {addr} is not aligned to the {access_bytes}-byte access")
            first = addr // BANK_BYTES
            for word in range(first, first + max(1, access_bytes // BANK_BYTES)):
                words.setdefault(word % NUM_BANKS, set()).add(word)
        if words:
            total += max(len(w) for w in words.values())
            phases += 1
    return total, phases


def bank_conflicts(addresses: Sequence[int | None], access_bytes: int = 4) -> int:
    """Extra wavefronts a warp's access takes beyond one per phase (0 means conflict-free)."""
    total, phases = wavefronts(addresses, access_bytes)
    return total - phases
