"""``convert_layout``: lowered as the IR's cost class says (``tilus.ir.layout.conversion``).

- ``free``: register copies (each thread already holds what it needs, at fixed slots).
- ``shuffle``: one ``__shfl_sync`` per output slot, from the lane of the same warp that holds it.
- ``shared``: ``store_shared`` of x into the conversion's scratch tile (a ``shared_tensor`` that
  layout inference allocated and PlanSharedMemory placed), one barrier (every thread's reads
  follow every thread's writes: the conversion's own), ``load_shared`` in the output's layout.
  Barriers against other users of the scratch's bytes are the barrier pass's (InsertBarriers).
  Sub-byte tiles are bit-packed in the scratch (``store_shared`` writes them with atomics); a tile
  ``view``-ed from a uint8 tile is written as those bytes (its packed form).
"""
from __future__ import annotations

from tilus.backend.codegen.emitters.compute import write
from tilus.backend.codegen.emitters.memory import load_shared, store_shared
from tilus.backend.codegen.gather import shuffle_values, slot_index, slot_values
from tilus.backend.codegen.lower import Lowerer, buffer_layout, tirx_dtype_bytes
from tilus.backend.codegen.registry import emitter
from tilus.backend.tvm_shim import TB, dt
from tilus.errors import CompilationError
from tilus.ir import inst as I
from tilus.ir.layout.conversion import FREE, SHUFFLE, flat_index, same_index


@emitter(I.ConvertLayoutInst)
def convert_layout(lw: Lowerer, inst: I.ConvertLayoutInst) -> None:
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
    else:
        source = lw.view_source(inst.x)
        if source is not None and inst.x.dtype.nbits < 8:
            _store_bytes(lw, source, inst.scratch)
        else:
            store_shared(lw, I.StoreSharedInst(inst.scratch, inst.x))
        lw.sync()
        load_shared(lw, I.LoadSharedInst(inst.output, inst.scratch))


def _store_bytes(lw: Lowerer, source, scratch) -> None:
    """Writes the uint8 tile that x was viewed from into the scratch: a view keeps the row-major bit
    stream, so these bytes are x's packed scratch exactly (fewer registers than x's codes, plain
    byte stores instead of read-modify-writes; replicas store equal bytes)."""
    st, src = lw.shared(scratch), lw.reg(source)
    eb = tirx_dtype_bytes(dt(st.buf))
    view = lw.name(f"{scratch.name}_bytes",
                   TB.decl_buffer((st.nbytes,), "uint8", data=lw.pool.data,
                                  elem_offset=st.buf.elem_offset * eb, scope="shared.dyn",
                                  layout=buffer_layout((st.nbytes,))))
    for s in range(src.layout.local_size):
        lw.store(view, src.buf[s], [flat_index(slot_index(lw, src.layout, s), source.shape)])
