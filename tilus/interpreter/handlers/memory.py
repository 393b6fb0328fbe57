"""Memory instructions: views, allocations, loads, stores and copies between the three memories."""
from __future__ import annotations

import numpy as np

from tilus.errors import ArgumentError, InterpreterError
from tilus.interpreter import values as V
from tilus.interpreter.memory import Buffer, GlobalTensor, load_tile, read_codes, store_tile
from tilus.interpreter.registry import register
from tilus.interpreter.state import BlockState, evaluate_scalar
from tilus.ir import inst as I
from tilus.ir.builder import row_major_strides
from tilus.ir.inst import tile_dims


@register(I.GlobalViewInst)
def global_view(state: BlockState, inst: I.GlobalViewInst) -> None:
    """Binds the output to a strided view over the pointer's buffer: shape and strides are
    evaluated now from the scalars. Its elements, for a K-bit dtype, sit at bits [e*K, (e+1)*K) of
    the buffer, e = sum(index * strides). A view that reaches outside the caller's buffer raises
    ArgumentError naming the parameter (the buffer is too short for the sizes passed)."""
    buf = state.eval(inst.ptr)
    if not isinstance(buf, Buffer):
        raise InterpreterError(f"global_view: {inst.ptr} is not a pointer parameter")
    out = inst.output
    shape = state.ints(out.shape)
    strides = state.ints(inst.strides)
    if any(s < 0 for s in shape):
        raise InterpreterError(f"global_view {out}: negative size in shape {list(shape)}")
    g = GlobalTensor(buf, out.dtype, shape, strides, out.name)
    lo, hi = g.extent()
    k = out.dtype.nbits
    if hi >= lo and (lo < 0 or (hi + 1) * k > buf.nbits):
        need = -(-(hi + 1) * k // 8)
        raise ArgumentError(
            f"parameter '{buf.name}' is too short: the global view {out} of {out.dtype} with shape "
            f"{list(shape)} and strides {list(strides)} needs {need} bytes "
            f"({hi + 1} elements of {k} bits), the buffer has {buf.nbytes}")
    state.tensors[out] = g


@register(I.AllocateGlobalInst)
def global_tensor(state: BlockState, inst: I.AllocateGlobalInst) -> None:
    """The launch's workspace: the first block to reach it creates a zero-filled row-major buffer
    (the interpreter zeroes it whatever ``requires_clean`` says); later blocks get the same one and
    must evaluate the same shape."""
    out = inst.output
    shape = state.ints(out.shape)
    if any(s < 0 for s in shape):
        raise InterpreterError(f"global_tensor {out}: negative size in shape {list(shape)}")
    g = state.workspaces.get(out.name)
    if g is None:
        nbytes = -(-int(np.prod(shape, dtype=np.int64)) * out.dtype.nbits // 8)
        buf = Buffer(out.name, out.dtype, np.zeros(nbytes, dtype=np.uint8))
        g = GlobalTensor(buf, out.dtype, shape, state.ints(row_major_strides(out.shape)), out.name)
        state.workspaces[out.name] = g
    elif g.shape != shape:
        raise InterpreterError(f"global_tensor {out}: block {state.block} asks for shape {list(shape)}, "
                               f"an earlier block made it {list(g.shape)}; every block must agree")
    state.tensors[out] = g


@register(I.AllocateRegisterInst)
def register_tensor(state: BlockState, inst: I.AllocateRegisterInst) -> None:
    """A new register tile, every element ``init`` (converted to the tile's dtype); with ``axes``,
    element ``idx`` is ``init`` evaluated with ``axes[d] = idx[d]`` (all elements at once, over
    ``np.indices``). Without ``init`` the contents are undefined; the interpreter gives zeros (do
    not rely on it). Like every register or shared tensor, it may have at most ``state.limit``
    elements."""
    out = inst.output
    arr = V.zeros(out.dtype, out.shape)
    if inst.init is not None and inst.axes is not None:
        env = dict(state.scalars)
        env.update(zip(inst.axes, np.indices(tuple(out.shape), dtype=np.int64)))
        arr[...] = V.from_python(out.dtype, evaluate_scalar(inst.init, env))
    elif inst.init is not None:
        arr[...] = state.value(inst.init, out.dtype)
    state.set(out, arr)


@register(I.AllocateSharedInst)
def shared_tensor(state: BlockState, inst: I.AllocateSharedInst) -> None:
    """A new shared tile with undefined contents: reading an element before something writes it
    (store_shared, copy_async) is an UninitializedMemoryError. Shared tiles are the only tensors
    updated in place, so slices of them are views that share their elements."""
    out = inst.output
    state.allocate_shared(out, V.zeros(out.dtype, out.shape), np.zeros(tuple(out.shape), bool))


@register(I.FreeSharedInst)
def free_shared(state: BlockState, inst: I.FreeSharedInst) -> None:
    """Ends the tensor's lifetime: using it afterwards is an InterpreterError."""
    state.free_shared(inst.tensor)


@register(I.SliceSharedInst)
def slice_shared(state: BlockState, inst: I.SliceSharedInst) -> None:
    """A view of ``src``: tile dimension j runs along src dimension dims[j] (the last dimensions
    when dims is None) from offsets[dims[j]]; the other dimensions are fixed at their offset.
    Writes through the view reach ``src`` (and mark its elements written). A slice that leaves
    ``src`` is an InterpreterError."""
    src = state.get(inst.src)
    out_shape = tuple(inst.output.shape)
    rank = len(inst.src.shape)
    dims = tile_dims(rank, len(out_shape), inst.dims)
    offsets = state.ints(inst.offsets)
    key = []
    for d in range(rank):
        n = out_shape[dims.index(d)] if d in dims else 1
        if offsets[d] < 0 or offsets[d] + n > src.shape[d]:
            raise InterpreterError(f"slice_shared {inst.output}: offset {offsets[d]} + size {n} "
                                   f"leaves dimension {d} of {inst.src} (size {src.shape[d]})")
        key.append(slice(offsets[d], offsets[d] + n) if d in dims else offsets[d])
    # the remaining axes are the spanned dims in increasing order; reorder them as ``dims`` says
    order = sorted(dims)
    axes = [order.index(d) for d in dims]
    state.allocate_shared(inst.output, np.transpose(src[tuple(key)], axes),
                          np.transpose(state.written[inst.src][tuple(key)], axes))


def _other(state: BlockState, inst) -> object:
    if getattr(inst, "other", None) is None:
        return V.zeros(inst.output.dtype, ())
    return state.value(inst.other, inst.output.dtype)


@register(I.LoadGlobalInst)
def load_global(state: BlockState, inst: I.LoadGlobalInst) -> None:
    """Tile element i = src[offsets + scatter(i, dims)]: tile dimension j runs along src
    dimension dims[j] (the last dimensions when dims is None). Elements whose index falls outside
    src's shape read as ``other`` (0 when absent) and touch no memory."""
    g = state.global_tensor(inst.src)
    shape = tuple(inst.output.shape)
    dims = tile_dims(len(g.shape), len(shape), inst.dims)
    state.set(inst.output, load_tile(g, state.ints(inst.offsets), shape, dims, _other(state, inst)))


@register(I.LoadScalarInst)
def load_scalar(state: BlockState, inst: I.LoadScalarInst) -> None:
    """Binds ``var`` to the element ``src[offsets]`` (a Python int, float or bool, like a let). An
    index outside src's shape is an InterpreterError (on a GPU, an out-of-bounds read)."""
    g = state.global_tensor(inst.src)
    index = state.ints(inst.offsets)
    if not all(0 <= i < n for i, n in zip(index, g.shape)):
        raise InterpreterError(f"load_scalar {inst.var.name}: the index {list(index)} lies outside "
                               f"{inst.src} of shape {list(g.shape)}")
    codes = read_codes(g.buffer, g.dtype, g.offsets(tuple(np.int64(i) for i in index)))
    value = V.from_codes(g.dtype, np.asarray(codes).reshape(1))[0]
    state.scalars[inst.var] = value.item()


@register(I.StoreGlobalInst)
def store_global(state: BlockState, inst: I.StoreGlobalInst) -> None:
    """dst[offsets + scatter(i, dims)] = src tile element i, for the elements whose index falls
    inside dst's shape; the others are dropped. Sub-byte elements are written bit-exactly,
    leaving their neighbours unchanged."""
    g = state.global_tensor(inst.dst)
    src = state.get(inst.src)
    dims = tile_dims(len(g.shape), src.ndim, inst.dims)
    store_tile(g, state.ints(inst.offsets), src, dims)


@register(I.CopyAsyncInst)
def copy_async(state: BlockState, inst: I.CopyAsyncInst) -> None:
    """dst (shared, whole) = the tile of src at offsets, out-of-bounds elements 0 (as load_global
    with other=0); every element of dst counts as written, the zero fill included. The
    interpreter copies at once: blocks run one after another with all threads in lock-step, so
    the copy is complete before anything can observe it; commit/wait are no-ops.
    (Reading ``dst`` before the matching wait is a race on a GPU; the interpreter cannot see it.)"""
    g = state.global_tensor(inst.src)
    dst = state.get(inst.dst)
    dims = tile_dims(len(g.shape), dst.ndim, inst.dims)
    state.write_shared(inst.dst, load_tile(g, state.ints(inst.offsets), dst.shape, dims,
                                           V.zeros(g.dtype, ())))


@register(I.CopyAsyncCommitGroupInst, I.CopyAsyncWaitGroupInst)
def copy_async_group(state: BlockState, inst) -> None:
    """No-ops: copy_async has completed already (see copy_async)."""


@register(I.LoadSharedInst)
def load_shared(state: BlockState, inst: I.LoadSharedInst) -> None:
    """A register tile holding a copy of the whole shared tensor; an element nothing has written
    (store_shared, copy_async, including its zero fill) is an UninitializedMemoryError."""
    state.set(inst.output, state.read_shared(inst.src))


@register(I.LookupInst)
def lookup(state: BlockState, inst: I.LookupInst) -> None:
    """``table[index]`` elementwise (numpy fancy indexing); an index outside ``[0, len(table))``
    is an InterpreterError naming it, an unwritten table element an UninitializedMemoryError."""
    table = state.read_shared(inst.table)
    index = np.asarray(state.get(inst.index), dtype=np.int64)
    bad = (index < 0) | (index >= table.shape[0])
    if bad.any():
        at = [int(i) for i in np.argwhere(bad)[0]]
        raise InterpreterError(f"lookup: index {int(index[tuple(at)])} at {at} of {inst.index} is "
                               f"outside the table {inst.table} of {table.shape[0]} elements")
    state.set(inst.output, table[index])


@register(I.StoreSharedInst)
def store_shared(state: BlockState, inst: I.StoreSharedInst) -> None:
    """Overwrites the whole shared tensor (or slice) with the register tile."""
    state.write_shared(inst.dst, state.get(inst.src))
