"""``convert_layout``: lowered as the IR's cost class says (``tilus.ir.layout.conversion``).

- ``free``: register copies (each thread already holds what it needs, at fixed slots).
- ``shuffle``: one ``__shfl_sync`` per output slot, from the lane of the same warp that holds it.
- ``shared``: ``store_shared`` of x into the conversion's scratch tile (a ``shared_tensor`` that
  layout inference allocated and PlanSharedMemory placed), one barrier (every thread's reads
  follow every thread's writes: the conversion's own), ``load_shared`` in the output's layout;
  sub-byte tiles go as one uint8 code per element (``scratch_dtype``), stored and loaded per slot.
  Barriers against other users of the scratch's bytes are the barrier pass's (InsertBarriers).
"""
from __future__ import annotations

from tilus.backend.codegen.emitters.compute import write
from tilus.backend.codegen.emitters.memory import load_shared, store_shared
from tilus.backend.codegen.gather import shuffle_values, slot_values
from tilus.backend.codegen.lower import THREAD
from tilus.backend.codegen.registry import emitter
from tilus.errors import CompilationError
from tilus.ir import inst as I
from tilus.ir.layout.conversion import FREE, SHUFFLE, flat_index, same_index


@emitter(I.ConvertLayoutInst)
def convert_layout(lw, inst: I.ConvertLayoutInst) -> None:
    layout = lw.reg(inst.output).layout
    cost = inst.cost
    if inst.x.name == inst.output.name:
        raise CompilationError(f"convert_layout cannot write its own operand %{inst.x.name}")
    if cost == FREE:
        write(lw, inst.output, slot_values(lw, inst.x, layout.local_size, same_index(layout)))
    elif cost == SHUFFLE:
        write(lw, inst.output, shuffle_values(lw, inst.x, layout.local_size, same_index(layout)))
    elif inst.scratch is None:
        raise CompilationError(f"convert_layout of %{inst.x.name} goes through shared memory but "
                               f"has no scratch tile (layout inference allocates it)")
    elif inst.scratch.dtype is inst.x.dtype:
        store_shared(lw, I.StoreSharedInst(inst.scratch, inst.x))
        lw.sync()
        load_shared(lw, I.LoadSharedInst(inst.output, inst.scratch))
    else:
        _through_codes(lw, inst)


def _through_codes(lw, inst: I.ConvertLayoutInst) -> None:
    """A sub-byte tile through a scratch of one uint8 code per element (row-major)."""
    buf, shape = lw.shared(inst.scratch).buf, inst.x.shape
    src, dst = lw.reg(inst.x), lw.reg(inst.output)
    for s in range(src.layout.local_size):
        lw.store(buf, src.buf[s], [flat_index(src.layout.index_exprs(THREAD, s), shape)])
    lw.sync()
    for s in range(dst.layout.local_size):
        lw.store(dst.buf, buf[lw.index(flat_index(dst.layout.index_exprs(THREAD, s), shape))], [s])
