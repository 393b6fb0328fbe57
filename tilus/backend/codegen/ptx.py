"""PTX instructions by their text, ``ptx("cp.async.cg.shared.global")`` = ``T.ptx[...]``, parsed
once per text: TVM narrows the dotted text against its whole instruction table on every lookup,
which costs more than the call it prepares for the instructions a kernel emits in bulk. The
instruction objects are immutable and independent of any program, so one per text is shared."""
from __future__ import annotations

import functools
from typing import Any

from tilus.backend.tvm_shim import T


@functools.lru_cache(maxsize=None)
def ptx(text: str) -> Any:
    """``T.ptx[text]`` (call it with the operands to get the instruction's TIR call)."""
    return T.ptx[text]
