"""Instructions that rearrange a register tile's elements: view, reinterpret, transpose, squeeze,
unsqueeze, repeat, broadcast."""
from __future__ import annotations

import functools

import numpy as np

from tilus import dtypes
from tilus.errors import InterpreterError
from tilus.interpreter import values as V
from tilus.interpreter.registry import register
from tilus.interpreter.state import BlockState
from tilus.ir import inst as I


@register(I.ViewInst)
def view(state: BlockState, inst: I.ViewInst) -> None:
    """Reinterprets bits: x's elements, row-major, form a bit stream (element i at bits
    [i*K, (i+1)*K), little-endian, as in memory); the output's elements, row-major, are read from
    that stream as its dtype. Exact for every type (values -> codes -> packed bits -> codes of
    the new type -> values), e.g. one uint8 holding 0x21 viewed as uint4 is [1, 2]."""
    src_t, dst_t = inst.x.dtype, inst.output.dtype
    codes = V.to_codes(src_t, state.get(inst.x)).reshape(-1)
    if src_t.nbits == dst_t.nbits:
        out_codes = codes.astype(V.code_dtype(dst_t))
    else:
        stream = dtypes.pack(codes, src_t.nbits)
        out_codes = dtypes.unpack(stream, dst_t.nbits, inst.output.type.size)
    state.set(inst.output, V.from_codes(dst_t, out_codes.reshape(inst.output.shape)))


@functools.lru_cache(maxsize=64)
def _flat_table(layout) -> np.ndarray:
    """layout.index_table() flattened (thread-major), computed once per layout (read-only)."""
    table = layout.index_table().reshape(-1)
    table.flags.writeable = False
    return table


@register(I.ReinterpretInst)
def reinterpret(state: BlockState, inst: I.ReinterpretInst) -> None:
    """Thread t's slots of x (x's layout), as one bit stream, become its slots of the output (the
    output's layout and dtype). Every output element must be written, and replicas must agree."""
    src_t, dst_t = inst.x.dtype, inst.output.dtype
    src, dst = inst.x.layout, inst.output.layout
    codes = V.to_codes(src_t, state.get(inst.x)).reshape(-1)
    per_thread = codes[_flat_table(src)]
    stream = dtypes.pack(per_thread, src_t.nbits)
    out_codes = dtypes.unpack(stream, dst_t.nbits, dst.num_threads * dst.local_size)
    where = _flat_table(dst)
    out = np.zeros(inst.output.type.size, dtype=out_codes.dtype)
    out[where] = out_codes
    written = np.zeros(inst.output.type.size, dtype=bool)
    written[where] = True
    if not written.all() or not np.array_equal(out[where], out_codes):
        raise InterpreterError(f"{inst.display_name()} of {inst.x} as {inst.output}: the output "
                               f"layout leaves elements unwritten or gives one element two values")
    state.set(inst.output, V.from_codes(dst_t, out.reshape(inst.output.shape)))


@register(I.TransposeInst)
def transpose(state: BlockState, inst: I.TransposeInst) -> None:
    """output[i, j] = x[j, i]."""
    state.set(inst.output, state.get(inst.x).T)


@register(I.SqueezeInst)
def squeeze(state: BlockState, inst: I.SqueezeInst) -> None:
    """Removes the size-1 dimension ``dim``."""
    state.set(inst.output, np.squeeze(state.get(inst.x), axis=inst.dim))


@register(I.UnsqueezeInst)
def unsqueeze(state: BlockState, inst: I.UnsqueezeInst) -> None:
    """Inserts a size-1 dimension at ``dim``."""
    state.set(inst.output, np.expand_dims(state.get(inst.x), inst.dim))


@register(I.RepeatInst)
def repeat(state: BlockState, inst: I.RepeatInst) -> None:
    """numpy.tile(x, repeats): the whole tile repeated ``repeats[i]`` times along dimension i."""
    state.set(inst.output, np.tile(state.get(inst.x), inst.repeats))


@register(I.BroadcastInst)
def broadcast(state: BlockState, inst: I.BroadcastInst) -> None:
    """x broadcast to the output's shape (numpy rules: size-1 dimensions stretch, leading
    dimensions are added)."""
    state.set(inst.output, np.broadcast_to(state.get(inst.x), tuple(inst.output.shape)))
