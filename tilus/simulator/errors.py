"""What the simulator reports: each error names the statement, the block, the thread(s) and the
address (memory scope, buffer, byte offset)."""
from __future__ import annotations

from tilus.errors import TilusError


class SimulationError(TilusError):
    """A kernel did something a GPU would do wrong (or that the simulator cannot model)."""

    kind = "simulation error"

    def __init__(self, detail: str, stmt: str | None = None, block=None, threads=None,
                 buffer: str | None = None, address=None):
        self.detail, self.stmt, self.block, self.buffer, self.address = detail, stmt, block, buffer, address
        self.threads = [int(t) for t in threads] if threads is not None else None
        parts = [f"{self.kind}: {detail}"]
        if buffer is not None:
            parts.append(f"buffer {buffer}" + (f" byte offset {address}" if address is not None else ""))
        if block is not None:
            parts.append(f"block {tuple(block)}")
        if self.threads is not None:
            shown = ", ".join(str(t) for t in self.threads[:8])
            more = f" (+{len(self.threads) - 8} more)" if len(self.threads) > 8 else ""
            parts.append(f"thread(s) {shown}{more}")
        if stmt:
            parts.append(f"in `{stmt}`")
        super().__init__("; ".join(parts))


class OutOfBoundsError(SimulationError):
    kind = "out-of-bounds access"


class MisalignedAccessError(SimulationError):
    """A GPU faults with "misaligned address": scalar accesses need natural alignment, vector
    accesses (float4, half2, ...) their whole width, ldmatrix rows and cp.async 16 / cp-size bytes."""

    kind = "misaligned access"


class RaceError(SimulationError):
    kind = "race"


class UninitializedReadError(SimulationError):
    kind = "read of uninitialised memory"


class DivergentBarrierError(SimulationError):
    kind = "barrier in divergent code"


class UnsupportedError(SimulationError):
    kind = "not modelled by the simulator"


class UninitializedReadWarning(UserWarning):
    """A read of uninitialised local/shared memory, when ``uninit="warn"``."""
