"""Memory instructions: global views, allocations, loads/stores between the three memories.

Fast paths (each falls back to the per-element path at run time when its condition fails):
- load_global/store_global: when each thread's slots form runs of ``vec`` consecutive elements of
  the last dimension (vec * bytes in 4..16) and the global view's last stride is 1, a run whose
  elements are all in bounds and whose element offset is a multiple of vec moves as one vector
  access (LDG.E.128 for 16 bytes). Assumes 16-byte aligned base pointers (recorded).
- copy_async: 16-byte (or 8/4-byte) ``cp.async`` chunks when the shared layout keeps chunks
  contiguous; an aligned chunk that runs past the end of the last dimension uses cp.async's
  src-size (the rest zero-filled); misaligned chunks (or rows out of bounds) are copied element by
  element (zero-filled) synchronously. That guarded path (a tile whose columns run out of bounds
  or whose chunks may be misaligned) is cold, so each thread's chunks go through it in one loop
  that stays a loop (``#pragma unroll 1``): nvcc compiles one chunk's code, not one per chunk
  (on the decode QuantMatmul ~20% less time in cicc, ~40% less in ptxas). The per-element copies
  inside stay unrolled: a second loop level inside a kernel's main loop makes ptxas allocate
  registers for it, at the main loop's expense.
- load_shared/store_shared: vector accesses of runs contiguous in shared memory.
Every element access is predicated by its bounds mask; sub-byte tensors use bitstream reads and
atomic read-modify-writes (see tilus.backend.codegen.bitstream).
"""
from __future__ import annotations

import numpy as np

from tilus import dtypes
from tilus.backend.codegen.dtypes_map import is_native, pointer_storage, storage
from tilus.backend.codegen.emitters.access import (global_read, global_write, in_bounds, in_range,
                                                   shared_read, shared_write, subbyte)
from tilus.backend.codegen import scalar
from tilus.backend.codegen.gather import slot_index, unravel
from tilus.backend.codegen.lower import THREAD, GlobalStorage, Lowerer, SharedStorage, workspace_key
from tilus.backend.codegen.registry import emitter
from tilus.backend.codegen.ptx import ptx
from tilus.backend.tvm_shim import TB, dt, provably_true, tirx
from tilus.ir import expr as E
from tilus.errors import CompilationError
from tilus.ir import inst as I
from tilus.ir.builder import row_major_strides
from tilus.ir.inst import tile_dims
from tilus.ir.layout import SharedLayout, row_major


# ---------------------------------------------------------------------------------- views/allocs
@emitter(I.GlobalViewInst)
def global_view(lw: Lowerer, inst: I.GlobalViewInst) -> None:
    base = lw.param_buffer(inst.ptr)
    out = inst.output
    buf = lw.alias(base, pointer_storage(out.dtype))
    words = lw.alias(base, "uint32") if subbyte(out.dtype) else None
    lw.tensors[out.name] = GlobalStorage(buf, words, out.dtype, tuple(E.as_expr(s) for s in out.shape),
                                         tuple(inst.strides))


@emitter(I.AllocateGlobalInst)
def global_tensor(lw: Lowerer, inst: I.AllocateGlobalInst) -> None:
    """A row-major view over the workspace's hidden pointer parameter (see ``Lowerer.build``)."""
    base = lw.param_buffers[workspace_key(inst)]
    out = inst.output
    buf = lw.alias(base, pointer_storage(out.dtype))
    words = lw.alias(base, "uint32") if subbyte(out.dtype) else None
    lw.tensors[out.name] = GlobalStorage(buf, words, out.dtype, tuple(E.as_expr(s) for s in out.shape),
                                         row_major_strides(out.shape))


def _shared_words(layout: SharedLayout, dtype) -> tuple[int, str]:
    if subbyte(dtype):
        return -(-layout.size * dtype.nbits // 32), "uint32"
    return layout.size, storage(dtype)


@emitter(I.AllocateSharedInst)
def shared_tensor(lw: Lowerer, inst: I.AllocateSharedInst) -> None:
    out = inst.output
    layout = out.layout if isinstance(out.layout, SharedLayout) else row_major(*out.shape)
    n, d = _shared_words(layout, out.dtype)
    buf = lw.shared_at(inst.offset, n, d, out.name)       # placed by PlanSharedMemory
    inner = getattr(layout, "inner", layout)
    period = (1 << (layout.shift + layout.base + layout.bits)) if hasattr(layout, "shift") else 1
    lw.tensors[out.name] = SharedStorage(buf, out.dtype, tuple(out.shape), layout.offset,
                                         layout.nbytes(out.dtype), layout=layout, base_static=True,
                                         check_offset=layout.offset,
                                         root_strides=getattr(inner, "strides", None), root_period=period)


@emitter(I.FreeSharedInst)
def free_shared(lw: Lowerer, inst: I.FreeSharedInst) -> None:
    """Nothing to emit: the tensor's bytes were planned (PlanSharedMemory ends its lifetime here,
    InsertBarriers orders the next user of the bytes)."""


@emitter(I.SliceSharedInst)
def slice_shared(lw: Lowerer, inst: I.SliceSharedInst) -> None:
    """A slice is an offset function into its source. For the compile-time checks of the fast
    paths (contiguous, aligned chunks) it also gets ``check_offset``: the offsets with the slice's
    run-time offsets taken as 0, representative when every run-time offset moves the root by a
    multiple of 16 elements (and of the swizzle's period), which keeps chunks where they were."""
    src = lw.shared(inst.src)
    rank = len(inst.src.shape)
    dims = tile_dims(rank, len(inst.output.shape), inst.dims)
    offsets = tuple(E.as_expr(o) for o in inst.offsets)
    parent, parent_check = src.offset, src.check_offset

    def offset(index, parent=parent):
        full = [offsets[d] + (index[dims.index(d)] if d in dims else 0) for d in range(rank)]
        return parent(tuple(full))
    const = [o.value if isinstance(o, E.Const) else 0 for o in offsets]
    dynamic = [d for d, o in enumerate(offsets) if not isinstance(o, E.Const)]

    def check_offset(index, parent_check=parent_check):
        full = [const[d] + (index[dims.index(d)] if d in dims else 0) for d in range(rank)]
        return parent_check(tuple(full))
    checker = check_offset if parent_check is not None else None
    # slices of slices: no stride bookkeeping
    strides = src.root_strides if src.layout is not None else None
    ok = src.base_static and checker is not None
    if dynamic:
        ok = ok and strides is not None and all(
            strides[d] % 16 == 0 and strides[d] % src.root_period == 0 for d in dynamic)
    lw.tensors[inst.output.name] = SharedStorage(src.buf, src.dtype, tuple(inst.output.shape), offset, 0,
                                                 base_static=ok, check_offset=checker,
                                                 root_strides=strides, root_period=src.root_period)


@emitter(I.AllocateRegisterInst)
def register_tensor(lw: Lowerer, inst: I.AllocateRegisterInst) -> None:
    """A constant ``init`` is stored to every slot; an ``init`` over ``axes`` is computed per slot
    from the logical index the layout puts at (this thread, that slot)."""
    if inst.init is None:
        return
    st = lw.reg(inst.output)
    if inst.axes is None:
        value = _scalar_to_storage(lw, inst.init, inst.output.dtype)
        with TB.unroll(0, st.layout.local_size) as s:
            lw.store(st.buf, value, [s])
        return
    for slot in range(st.layout.local_size):
        index = slot_index(lw, st.layout, slot)
        value = E.substitute(inst.init, dict(zip(inst.axes, index)))
        lw.store(st.buf, _scalar_to_storage(lw, value, inst.output.dtype), [slot])


def _scalar_to_storage(lw: Lowerer, e, dtype):
    """A scalar expression converted (cast semantics) to ``dtype``'s stored form."""
    from tilus.backend.codegen.dtypes_map import is_native as native

    x = lw.expr(E.as_expr(e))
    src = E.as_expr(e).dtype
    return scalar.convert(src, dtype, x) if native(src) else x


# ---------------------------------------------------------------------------------- vector runs
def _vector_length(layout, dtype, max_bytes: int = 16) -> int:
    """vec such that slots g*vec..g*vec+vec-1 of every thread hold consecutive last-dim elements
    starting at a multiple of vec; 1 when no vector of at least 4 bytes fits."""
    if not is_native(dtype) or dtype.is_bool or not layout.shape:
        return 1
    nbytes = dtype.nbits // 8
    table = layout.index_table()
    last = layout.shape[-1]
    vec = max_bytes // nbytes
    while vec >= 2 and vec * nbytes >= 4:
        if layout.local_size % vec == 0 and last % vec == 0:
            g = table.reshape(table.shape[0], -1, vec)
            if (np.diff(g, axis=2) == 1).all() and (g[:, :, 0] % last % vec == 0).all():
                return vec
        vec //= 2
    return 1


def _global_vec_ok(g: GlobalStorage, dims, rank) -> bool:
    st = g.strides[-1]
    return bool(dims) and dims[-1] == rank - 1 and isinstance(st, E.Const) and st.value == 1


def _global_index(inst, tile_index, rank, dims):
    return [E.as_expr(inst.offsets[d]) + (tile_index[dims.index(d)] if d in dims else 0)
            for d in range(rank)]


def _tile_corners(inst, shape, rank, dims):
    """The global indices of a tile's first and last element (the tile is a box)."""
    return (_global_index(inst, (0,) * len(shape), rank, dims),
            _global_index(inst, tuple(n - 1 for n in shape), rank, dims))


def _is_replicated(layout) -> bool:
    return any(e < 0 for e in layout.spatial_modes)


def _owner_guard(lw: Lowerer, layout, index):
    """tx == lowest owner of ``index`` (only one replica stores)."""
    owner, _ = layout.owner_exprs(index)
    return lw.expr(E.as_expr(owner)) == lw.tx


# ---------------------------------------------------------------------------------- global
def _vector_access(lw: Lowerer, g, gidx, vec: int):
    """The element offset of a ``vec``-wide access at ``gidx`` and the run-time condition under
    which it may be one vector access: both ends in bounds and the offset a multiple of ``vec``."""
    last = list(gidx)
    last[-1] = last[-1] + (vec - 1)
    off = lw.expr(E.as_expr(g.offset(gidx)))
    cond = tirx.And(tirx.And(in_bounds(lw, gidx, g.shape), in_bounds(lw, last, g.shape)),
                    tirx.floormod(off, vec) == 0)
    return off, cond


@emitter(I.LoadGlobalInst)
def load_global(lw: Lowerer, inst: I.LoadGlobalInst) -> None:
    g = lw.glob(inst.src)
    out = lw.reg(inst.output)
    layout = out.layout
    rank = len(g.shape)
    dims = tile_dims(rank, len(inst.output.shape), inst.dims)
    other = _scalar_to_storage(lw, inst.other, g.dtype) if inst.other is not None \
        else tirx.const(0, storage(g.dtype))
    vec = _vector_length(layout, g.dtype) if _global_vec_ok(g, dims, rank) else 1
    if vec > 1:
        lw.assume("global tensors are 16-byte aligned")

    def scalar_load(s, checked=True):
        gidx = _global_index(inst, slot_index(lw, layout, s), rank, dims)
        value = global_read(lw, g, gidx)
        if checked:
            value = tirx.if_then_else(in_bounds(lw, gidx, g.shape), value, other)
        lw.store(out.buf, value, [s])

    if vec == 1 and layout.local_size > 1:
        # one uniform check for the whole tile (a box): in bounds -> no check per element
        first, last = _tile_corners(inst, inst.output.shape, rank, dims)
        whole = tirx.And(in_bounds(lw, first, g.shape), in_bounds(lw, last, g.shape))
        with TB.If(whole):
            with TB.Then():
                for s in range(layout.local_size):
                    scalar_load(s, checked=False)
            with TB.Else():
                for s in range(layout.local_size):
                    scalar_load(s)
        return
    for s0 in range(0, layout.local_size, vec):
        if vec == 1:
            scalar_load(s0)
            continue
        gidx = _global_index(inst, slot_index(lw, layout, s0), rank, dims)
        off, cond = _vector_access(lw, g, gidx, vec)
        with TB.If(cond):
            with TB.Then():
                vector_copy(lw, out.buf, s0, g.buf, off, vec, g.dtype.nbits // 8)
            with TB.Else():
                for s in range(s0, s0 + vec):
                    scalar_load(s)


@emitter(I.LoadScalarInst)
def load_scalar(lw: Lowerer, inst: I.LoadScalarInst) -> None:
    """Every thread reads the element (a uniform load, one transaction per warp) into a let."""
    lw.bind(inst.var, global_read(lw, lw.glob(inst.src), inst.offsets))


@emitter(I.StoreGlobalInst)
def store_global(lw: Lowerer, inst: I.StoreGlobalInst) -> None:
    g = lw.glob(inst.dst)
    src = lw.reg(inst.src)
    layout = src.layout
    rank = len(g.shape)
    dims = tile_dims(rank, len(inst.src.shape), inst.dims)
    vec = _vector_length(layout, g.dtype) if _global_vec_ok(g, dims, rank) else 1
    if vec > 1:
        lw.assume("global tensors are 16-byte aligned")
    replicated = _is_replicated(layout)

    def guard(tidx, cond):
        return tirx.And(cond, _owner_guard(lw, layout, tidx)) if replicated else cond

    def scalar_store(s):
        tidx = slot_index(lw, layout, s)
        gidx = _global_index(inst, tidx, rank, dims)
        with TB.If(guard(tidx, in_bounds(lw, gidx, g.shape))):
            with TB.Then():
                global_write(lw, g, gidx, src.buf[s])

    for s0 in range(0, layout.local_size, vec):
        if vec == 1:
            scalar_store(s0)
            continue
        tidx = slot_index(lw, layout, s0)
        gidx = _global_index(inst, tidx, rank, dims)
        off, cond = _vector_access(lw, g, gidx, vec)
        with TB.If(cond):
            with TB.Then():
                with TB.If(guard(tidx, tirx.const(True, "bool"))) if replicated else _null():
                    if replicated:
                        with TB.Then():
                            vector_copy(lw, g.buf, off, src.buf, s0, vec, g.dtype.nbits // 8)
                    else:
                        vector_copy(lw, g.buf, off, src.buf, s0, vec, g.dtype.nbits // 8)
            with TB.Else():
                for s in range(s0, s0 + vec):
                    scalar_store(s)


def vector_copy(lw: Lowerer, dst, dst_off, src, src_off, vec: int, elem_bytes: int) -> None:
    """dst[dst_off : +vec] = src[src_off : +vec] as one access of vec*elem_bytes (4, 8 or 16)
    bytes, through views of both buffers whose element is the whole vector (uint32, uint32x2 or
    uint32x4), indexed by offset // vec (offsets are element offsets, multiples of vec)."""
    words = vec * elem_bytes // 4
    vdt = "uint32" if words == 1 else f"uint32x{words}"

    def index(off):
        if isinstance(off, int):
            return tirx.const(off // vec, "int32")
        return tirx.floordiv(off, vec) if vec > 1 else off
    dv = _vector_view(lw, dst, vdt)
    sv = _vector_view(lw, src, vdt)
    TB.buffer_store(dv, sv[index(src_off)], [index(dst_off)])


def _vector_view(lw: Lowerer, buf, vdt: str):
    scope = buf.scope() if callable(getattr(buf, "scope", None)) else "global"
    if scope == "local":
        return lw.alias_local(buf, vdt)
    return lw.alias(buf, vdt)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------------------------- copy_async
def _shared_chunk_ok(st: SharedStorage, vec: int) -> bool:
    """True when every run of ``vec`` last-dim elements starting at a multiple of vec is contiguous
    and vec-aligned in shared memory (checked on the whole tile with numpy)."""
    if st.shape[-1] % vec:
        return False
    return st.aligned_runs(tuple(np.meshgrid(*[np.arange(n) for n in st.shape], indexing="ij")), vec)


@emitter(I.CopyAsyncInst)
def copy_async(lw: Lowerer, inst: I.CopyAsyncInst) -> None:
    """cp.async in 16/8/4-byte chunks. When the tile's last dimension is in bounds and its chunks
    are aligned (one uniform check per instruction), each chunk is one cp.async whose src-size is
    0 for rows out of bounds (zero fill, nothing read); otherwise each chunk is guarded: cp.async
    with src-size = the valid bytes when aligned, element by element when not (the guarded
    chunks in one rolled loop, a cold path)."""
    g = lw.glob(inst.src)
    dst = lw.shared(inst.dst)
    shape = tuple(inst.dst.shape)
    rank = len(g.shape)
    dims = tile_dims(rank, len(shape), inst.dims)
    vec = 1
    if is_native(g.dtype) and not g.dtype.is_bool and _global_vec_ok(g, dims, rank):
        nbytes = g.dtype.nbits // 8
        for v in (16 // nbytes, 8 // nbytes, 4 // nbytes):
            if v >= 1 and v * nbytes >= 4 and _shared_chunk_ok(dst, v):
                vec = v
                break
    if vec == 1:
        _copy_chunks(lw, inst, g, dst, shape, dims, 1, _guarded_chunk)
        return
    lw.assume("global tensors are 16-byte aligned")
    columns = _columns_fit(lw, inst, g, shape, dims, vec)
    if provably_true(columns):
        _copy_chunks(lw, inst, g, dst, shape, dims, vec, _row_guarded_chunk)
        return
    with TB.If(columns):
        with TB.Then():
            _copy_chunks(lw, inst, g, dst, shape, dims, vec, _row_guarded_chunk)
        with TB.Else():
            _copy_chunks(lw, inst, g, dst, shape, dims, vec, _guarded_chunk, rolled=True)


def _columns_fit(lw: Lowerer, inst, g, shape, dims, vec):
    """The tile's span of the last dimension is in bounds and every chunk's global offset is a
    multiple of vec (the first chunk's, and the row strides)."""
    rank = len(g.shape)
    first, last = _tile_corners(inst, shape, rank, dims)
    cond = tirx.And(in_bounds(lw, first[-1:], g.shape[-1:]), in_bounds(lw, last[-1:], g.shape[-1:]))
    aligned = tirx.floormod(lw.expr(E.as_expr(g.offset(first))), vec) == 0
    for d in dims[:-1]:
        aligned = tirx.And(aligned, tirx.floormod(lw.expr(E.as_expr(g.strides[d])), vec) == 0)
    return tirx.And(cond, aligned)


def _copy_chunks(lw: Lowerer, inst, g, dst, shape, dims, vec, chunk, rolled: bool = False) -> None:
    """This thread's chunks (ids THREAD + j * threads, those below the tile's chunk count), each
    through ``chunk``: unrolled, or (``rolled``: a cold path) one loop over j that stays a loop
    (``#pragma unroll 1``), so nvcc compiles one chunk's code instead of one per j."""
    chunks = int(np.prod(shape)) // vec
    nthreads = lw.threads
    count = -(-chunks // nthreads)

    def one(cid, guard: bool) -> None:
        with TB.If(lw.expr(cid) < chunks) if guard else _null():
            with TB.Then() if guard else _null():
                tidx = unravel(cid * vec, shape)
                chunk(lw, g, dst, tidx, _global_index(inst, tidx, len(g.shape), dims), vec)

    if rolled and count > 1:
        j = E.Var(lw.fresh("chunk_j"), dtypes.int32)
        with TB.serial(0, count, annotations={"pragma_unroll_explicit": 1}, dtype="int32") as jv:
            lw.define(j, lw.name(j.name, jv))
            one(THREAD + j * nthreads, count * nthreads > chunks)
        return
    for j0 in range(count):
        one(THREAD + j0 * nthreads, (j0 + 1) * nthreads > chunks)


def _chunk_op(g, vec):
    nbytes = vec * (g.dtype.nbits // 8)
    return ptx(f"cp.async.{'cg' if nbytes == 16 else 'ca'}.shared.global"), nbytes


def _row_guarded_chunk(lw: Lowerer, g, dst, tidx, gidx, vec) -> None:
    """A chunk whose columns are in bounds: all of it, or (row out of bounds) zero fill."""
    op, nbytes = _chunk_op(g, vec)
    off = lw.expr(E.as_expr(g.offset(gidx)))
    soff = lw.expr(E.as_expr(dst.offset(tuple(tidx))))
    rows_ok = in_bounds(lw, gidx[:-1], g.shape[:-1])
    if provably_true(rows_ok):
        lw.emit(op(dst.buf.ptr_to([soff]), g.buf.ptr_to([off]), nbytes))
        return
    src = tirx.Select(rows_ok, off, tirx.const(0, dt(off)))
    size = tirx.Select(rows_ok, tirx.const(nbytes, "uint32"), tirx.const(0, "uint32"))
    lw.emit(op(dst.buf.ptr_to([soff]), g.buf.ptr_to([src]), nbytes, size))


def _guarded_chunk(lw: Lowerer, g, dst, tidx, gidx, vec) -> None:
    zero = tirx.const(0, storage(g.dtype))
    if vec == 1:
        cond = in_bounds(lw, gidx, g.shape)
        shared_write(lw, dst, tidx, tirx.if_then_else(cond, global_read(lw, g, gidx), zero))
        return
    op, nbytes = _chunk_op(g, vec)
    off = lw.expr(E.as_expr(g.offset(gidx)))
    soff = lw.expr(E.as_expr(dst.offset(tuple(tidx))))
    rows_ok = tirx.And(in_bounds(lw, gidx[:-1], g.shape[:-1]), lw.expr(E.as_expr(gidx[-1])) >= 0)
    left = lw.expr(E.as_expr(g.shape[-1])) - lw.expr(E.as_expr(gidx[-1]))
    valid = tirx.Select(rows_ok, tirx.max(tirx.min(left, vec), 0), tirx.const(0, dt(left)))
    src = tirx.Select(valid > 0, off, tirx.const(0, dt(off)))
    size = tirx.Cast("uint32", valid * (g.dtype.nbits // 8))
    aligned = tirx.floormod(off, vec) == 0
    if provably_true(aligned):
        lw.emit(op(dst.buf.ptr_to([soff]), g.buf.ptr_to([src]), nbytes, size))
        return
    with TB.If(aligned):
        with TB.Then():
            lw.emit(op(dst.buf.ptr_to([soff]), g.buf.ptr_to([src]), nbytes, size))
        with TB.Else():
            _elementwise_chunk(lw, g, dst.buf, gidx, off, soff, vec)


def _elementwise_chunk(lw: Lowerer, g, sbuf, gidx, off, soff, vec: int) -> None:
    """A misaligned chunk's ``vec`` elements copied one by one (zero when out of bounds). The
    chunk is contiguous in both memories (the global view's last stride is 1, the shared layout
    keeps chunks contiguous), so element e is at ``off + e`` and ``soff + e``."""
    col = lw.expr(E.as_expr(gidx[-1]))
    n = lw.expr(E.as_expr(g.shape[-1]))
    rows_ok = in_bounds(lw, gidx[:-1], g.shape[:-1])
    zero = tirx.const(0, storage(g.dtype))
    for e in range(vec):
        c = tirx.And(rows_ok, in_range(col + e, n))
        lw.store(sbuf, tirx.if_then_else(c, g.buf[off + e], zero), [soff + e])


@emitter(I.CopyAsyncCommitGroupInst)
def commit_group(lw: Lowerer, inst) -> None:
    lw.emit(ptx("cp.async.commit_group")())


@emitter(I.CopyAsyncWaitGroupInst)
def wait_group(lw: Lowerer, inst: I.CopyAsyncWaitGroupInst) -> None:
    lw.emit(ptx("cp.async.wait_group")(int(inst.n)))


# ---------------------------------------------------------------------------------- shared
def _shared_vec(st: SharedStorage, layout, dtype) -> int:
    vec = _vector_length(layout, dtype)
    while vec > 1:
        if _shared_run_ok(st, layout, vec):
            return vec
        vec //= 2
    return 1


def _shared_run_ok(st: SharedStorage, layout, vec) -> bool:
    """Whether each thread's slots form runs of ``vec`` contiguous, aligned elements (of 4 bytes or
    more) in shared memory."""
    if vec * (st.dtype.nbits // 8) < 4 or layout.local_size % vec:
        return False
    t = np.arange(layout.num_threads)[:, None]
    s = np.arange(layout.local_size)[None, :]
    return st.aligned_runs(tuple(np.broadcast_to(np.asarray(c), (t.shape[0], s.shape[1]))
                                 for c in layout._coords(t, s)), vec)


@emitter(I.LoadSharedInst)
def load_shared(lw: Lowerer, inst: I.LoadSharedInst) -> None:
    from tilus.backend.codegen.emitters.ldmatrix import try_ldmatrix

    st = lw.shared(inst.src)
    out = lw.reg(inst.output)
    if try_ldmatrix(lw, st, out):
        return
    layout = out.layout
    vec = _shared_vec(st, layout, inst.src.dtype)
    for s0 in range(0, layout.local_size, vec):
        idx = slot_index(lw, layout, s0)
        if vec > 1:
            off = lw.expr(E.as_expr(st.offset(tuple(idx))))
            vector_copy(lw, out.buf, s0, st.buf, off, vec, inst.src.dtype.nbits // 8)
        else:
            lw.store(out.buf, shared_read(lw, st, idx), [s0])


@emitter(I.LookupInst)
def lookup(lw: Lowerer, inst: I.LookupInst) -> None:
    """One shared-memory load per slot, at the table offset of the index register it holds
    (index and output share a layout)."""
    st = lw.shared(inst.table)
    index, out = lw.reg(inst.index), lw.reg(inst.output)
    if index.layout != out.layout:
        raise CompilationError(f"lookup: the index {inst.index} and the output {inst.output} "
                               f"must have one layout, got {index.layout} and {out.layout}")
    for s0 in range(out.layout.local_size):
        i = E.Var(lw.fresh("lut_index"), dtypes.int32)
        lw.define(i, index.buf[s0])
        lw.store(out.buf, shared_read(lw, st, (i,)), [s0])


@emitter(I.StoreSharedInst)
def store_shared(lw: Lowerer, inst: I.StoreSharedInst) -> None:
    st = lw.shared(inst.dst)
    src = lw.reg(inst.src)
    layout = src.layout
    replicated = _is_replicated(layout)
    vec = _shared_vec(st, layout, inst.dst.dtype)
    for s0 in range(0, layout.local_size, vec):
        idx = slot_index(lw, layout, s0)
        # replicas write equal values; sub-byte writes are atomic, so only the owner writes them
        guard = replicated and subbyte(st.dtype)
        with TB.If(_owner_guard(lw, layout, idx)) if guard else _null():
            with TB.Then() if guard else _null():
                if vec > 1:
                    off = lw.expr(E.as_expr(st.offset(tuple(idx))))
                    vector_copy(lw, st.buf, off, src.buf, s0, vec, inst.dst.dtype.nbits // 8)
                else:
                    shared_write(lw, st, idx, src.buf[s0])
