"""The calls a lowered kernel makes, by name: TIR intrinsics and PTX instructions (``_CALLS``) and
CUDA extern functions (``_EXTERNS``); each is ``fn(machine, call, args)``, its semantics from the
PTX ISA (``tilus.simulator.ptx``). Both are registries: a name registered twice raises."""
from __future__ import annotations

import math
from typing import Callable

import ml_dtypes
import numpy as np

from tilus.backend.tvm_shim import ir
from tilus.registry import Registry
from tilus.simulator import ptx
from tilus.simulator.errors import SimulationError, UnsupportedError
from tilus.simulator.memory import Pointer
from tilus.simulator.scalars import _expr_dtype, np_dtype

# ---------------------------------------------------------------------- calls

def _strings(args):
    return [a.value for a in args if isinstance(a, ir.StringImm)]


def _operands(args):
    return [a for a in args if not isinstance(a, ir.StringImm)]


def _as_u32(v):
    v = np.ascontiguousarray(v)
    T = v.shape[0]
    if v.dtype.itemsize * (v.size // T) != 4:
        raise UnsupportedError(f"a 32-bit register operand holds {v.dtype} x {v.size // T}")
    return v.view(np.uint8).reshape(T, 4).view(np.uint32).reshape(T)


def _c_reinterpret(m, e, args):
    v = np.ascontiguousarray(m.eval(args[0]))
    npdt, lanes = np_dtype(_expr_dtype(e))
    out = v.view(np.uint8).reshape(m.T, -1).view(npdt)
    return out[:, 0] if lanes == 1 else out


def _c_if_then_else(m, e, args):
    c = np.asarray(m.eval(args[0])).astype(bool)
    saved = m.mask
    try:
        m.mask = saved & c
        t = m.eval(args[1])
        m.mask = saved & ~c
        f = m.eval(args[2])
    finally:
        m.mask = saved
    return np.where(c, t, f)


def _c_address_of(m, e, args):
    x = args[0]
    if isinstance(x, ir.TensorLoad):
        view = m.view_of(x.source)
        off = m._offsets(view, x.indices, check=False)
        if off.ndim > 1:
            off = off[:, 0]
        return Pointer(view.mem, off, view.npdt)
    v = m.eval(x)
    if isinstance(v, Pointer):
        return v
    raise m._err(UnsupportedError, f"address_of({x})")


def _c_buffer_data(m, e, args):
    v = m.view_of(args[0])
    return Pointer(v.mem, v.base + v.elem_offset * v.elem_bytes, v.npdt)


def _c_passthrough(m, e, args):
    return m.eval(args[0])


def _c_sync(m, e, args):
    scope = args[0].value if args and isinstance(args[0], ir.StringImm) else "shared"
    if scope == "warp":
        m.syncwarp()
        return None
    if not scope.startswith("shared"):
        raise m._err(UnsupportedError, f"tvm_storage_sync({scope!r}) (only block barriers are modelled)")
    m.barrier()
    return None


def _c_cta_sync(m, e, args):
    m.barrier()


def _c_noop(m, e, args):
    return None


def _c_cp_async(m, e, args):
    ops = _operands(args)
    dst, src = m.eval(ops[0]), m.eval(ops[1])
    cp_size = int(ops[2].value)
    src_size = m.eval(ops[3]) if len(ops) > 3 else cp_size
    m.cp_async(dst, src, cp_size, src_size)


def _c_cp_async_ignore_src(m, e, args):
    """cp.async ... ignore-src: when the predicate holds, the source is not read and zeros land."""
    ops = _operands(args)
    dst, src = m.eval(ops[0]), m.eval(ops[1])
    cp_size = int(ops[2].value)
    ignore = np.asarray(m.eval(ops[3])).astype(bool)
    m.cp_async(dst, src, cp_size, np.where(ignore, 0, cp_size))


def _c_commit(m, e, args):
    m.cp_async_commit()


def _c_wait_group(m, e, args):
    n = int(_operands(args)[0].value)
    m.cp_async_wait(n)


def _c_wait_all(m, e, args):
    m.cp_async_commit()
    m.cp_async_wait(0)


def _c_ldmatrix(m, e, args):
    ss = _strings(args)
    ops = _operands(args)
    num = next(int(s[1:]) for s in ss if s in ("x1", "x2", "x4"))
    trans = "trans" in ss
    if "b16" not in ss or "m8n8" not in ss:
        raise m._err(UnsupportedError, f"ldmatrix {'.'.join(s for s in ss if s)}")
    dests, ptr = ops[:num], m.eval(ops[num])
    if not isinstance(ptr, Pointer) or ptr.mem.scope != "shared":
        raise m._err(SimulationError, "ldmatrix source is not a shared-memory address")
    m.require_full_warps("ldmatrix")
    src, boff = ptx.ldmatrix_sources(num, trans, m.T)
    inactive_src = m.mask[:, None, None] & ~m.mask[src]
    if inactive_src.any():
        raise m._err(SimulationError, "ldmatrix row address from an inactive lane", m._threads_of(inactive_src))
    # only lanes 0 .. 8*num-1 give row addresses; each row is 16 bytes, 16-byte aligned
    m.check_alignment(ptr.mem, ptr.off, np.dtype(np.uint8), "ldmatrix row address", width=16,
                      mask=m.mask & (m.tid % ptx.WARP < 8 * num))
    addr = ptr.off[src] + boff
    halves = m.mem_read(ptr.mem, addr, np.dtype(np.uint16))
    words = np.ascontiguousarray(halves).view(np.uint32).reshape(m.T, num)
    for j in range(num):
        m.store_to(dests[j], words[:, j])


def _c_mma(m, e, args):
    ss = [s for s in _strings(args) if s]
    ops = _operands(args)
    try:
        i = next(k for k, s in enumerate(ss) if s.startswith("m") and "n" in s and "k" in s)
        shape = ss[i]
        alay, blay, dty, aty, bty, cty = ss[i + 1: i + 7]
    except (StopIteration, ValueError):
        raise m._err(UnsupportedError, f"mma spelled {ss}") from None
    if (alay, blay) != ("row", "col"):
        raise m._err(UnsupportedError, f"mma .{alay}.{blay} (only .row.col exists for these shapes)")
    try:
        nd = ptx.mma_num_regs("c", shape, dty)
        na = ptx.mma_num_regs("a", shape, aty)
        nb = ptx.mma_num_regs("b", shape, bty)
        nc = ptx.mma_num_regs("c", shape, cty)
    except KeyError:
        raise m._err(UnsupportedError, f"mma.{shape}.{dty}.{aty}.{bty}.{cty}") from None
    if len(ops) != nd + na + nb + nc:
        raise m._err(SimulationError, f"mma.{shape} takes {nd + na + nb + nc} register operands, got {len(ops)}")
    m.require_full_warps("mma.sync")
    d_ops = ops[:nd]
    a = np.stack([_as_u32(m.eval(x)) for x in ops[nd: nd + na]], 1)
    b = np.stack([_as_u32(m.eval(x)) for x in ops[nd + na: nd + na + nb]], 1)
    c = np.stack([_as_u32(m.eval(x)) for x in ops[nd + na + nb:]], 1)
    d = ptx.mma(shape, dty, aty, bty, cty, a, b, c)
    for j, x in enumerate(d_ops):
        m.store_to(x, d[:, j])


def _c_lop3(m, e, args):
    ops = _operands(args)
    a, b, c = (_as_u32(m.eval(x)) for x in ops[1:4])
    lut = int(ops[4].value) if hasattr(ops[4], "value") else m._uniform(m.eval(ops[4]), "lop3 lut")
    m.store_to(ops[0], ptx.lop3(a, b, c, lut))


_HALF_LANES = {"f16x2": np.float16, "bf16x2": ml_dtypes.bfloat16}


def _c_fma_half(m, e, args):
    """fma.rn.{f16,bf16}x2 d, a, b, c on 32-bit registers of two halves (ptx.fma_rn per lane)."""
    ss = [s for s in _strings(args) if s]
    ty = next((s for s in ss if s in _HALF_LANES), None)
    if ty is None or "rn" not in ss or any(s in ("ftz", "sat", "relu", "oob") for s in ss):
        raise m._err(UnsupportedError, f"fma {ss}")
    ops = _operands(args)
    npdt = _HALF_LANES[ty]
    a, b, c = (_as_u32(m.eval(x)).astype(np.uint32).view(npdt).reshape(-1, 2) for x in ops[1:4])
    d = ptx.fma_rn(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64), npdt)
    m.store_to(ops[0], np.ascontiguousarray(d.astype(npdt)).view(np.uint32).reshape(-1))


def _c_prmt(m, e, args):
    ss = [s for s in _strings(args) if s and s != "b32"]
    if any(s not in ptx.PRMT_MODES for s in ss) or len(ss) > 1:
        raise m._err(UnsupportedError, f"prmt mode {ss}")
    ops = _operands(args)
    a, b, c = (_as_u32(m.eval(x)) for x in ops[1:4])
    m.store_to(ops[0], ptx.prmt(a, b, c, ss[0] if ss else None))


def _shuffle(mode, m, membermask, value, b, width):
    if m.T % ptx.WARP:
        raise m._err(UnsupportedError, "shfl.sync in a block that is not whole warps")
    width = m._uniform(width, "shfl width")
    src, _ = _shfl_sources(m, mode, b, ptx.shfl_c(mode, width), membermask)
    return np.asarray(value)[src]


def _shfl_sources(m, mode, b, c, membermask):
    """The thread each thread reads for shfl.sync.{mode} (b: lane operand, c: packed clamp and
    segment mask) and whether its source lane was in range; an error names the threads whose
    source is inactive or outside the member mask."""
    lane = m.tid % ptx.WARP
    j, in_range = ptx.shfl_source_lane(mode, lane, np.asarray(b).astype(np.int64),
                                       np.asarray(c).astype(np.int64))
    src = (m.tid - lane) + j
    mm = np.asarray(membermask).astype(np.uint64)
    in_mask = ((mm >> (src % ptx.WARP).astype(np.uint64)) & np.uint64(1)).astype(bool)
    bad = m.mask & (~m.mask[src] | ~in_mask)
    if bad.any():
        raise m._err(SimulationError, f"shfl.sync.{mode} reads a lane that is inactive or not in the member "
                     f"mask", m._threads_of(bad))
    return src, in_range


def _c_ptx_shfl(m, e, args):
    """T.ptx["shfl.sync.{mode}.b32"](d[, p], a, b, c, membermask): the raw PTX form (c packs the
    segment mask and clamp); p (shfl_sync_p) receives whether the source lane was in range."""
    mode = next(x for x in _strings(args) if x in ptx.SHFL_MODES)
    ops = _operands(args)
    with_p = len(ops) == 6
    d, p = ops[0], (ops[1] if with_p else None)
    a, b, c, membermask = (m.eval(x) for x in ops[2 if with_p else 1:])
    if m.T % ptx.WARP:
        raise m._err(UnsupportedError, "shfl.sync in a block that is not whole warps")
    src, pval = _shfl_sources(m, mode, b, c, membermask)
    m.store_to(d, np.asarray(a)[src])
    if p is not None:
        m.store_to(p, pval)


def _shfl_call(mode):
    def fn(m, e, args):
        vals = [m.eval(a) for a in args]
        membermask, value, b = vals[0], vals[1], vals[2]
        width = vals[3] if len(vals) > 3 else ptx.WARP
        return _shuffle(mode, m, membermask, value, b, width)
    return fn


def _atomic(kind):
    def fn(m, e, args):
        ptr = m.eval(args[0])
        if not isinstance(ptr, Pointer):
            raise m._err(UnsupportedError, f"atomic {kind} on a non-address operand")
        vals = [np.asarray(m.eval(a)) for a in args[1:]]
        npdt = ptr.npdt
        old = np.zeros(m.T, npdt)
        for t in np.nonzero(m.mask)[0]:
            mask = np.zeros(m.T, bool)
            mask[t] = True
            saved = m.mask
            m.mask = mask
            try:
                # and/or/xor update some bits of a word (sub-byte stores): the other bits may be
                # unwritten yet, so they are not reported; the others use the old value as a whole
                cur = m.mem_read(ptr.mem, np.full(m.T, ptr.off[t]), npdt,
                                 check_init=kind not in ("and", "or", "xor"), atomic=True)[t]
                if kind == "add":
                    new = npdt.type(cur + vals[0][t].astype(npdt))
                elif kind == "exch":
                    new = vals[0][t].astype(npdt)
                elif kind == "cas":
                    new = vals[1][t].astype(npdt) if cur == vals[0][t].astype(npdt) else cur
                elif kind == "sub":
                    new = npdt.type(cur - vals[0][t].astype(npdt))
                elif kind == "and":
                    new = npdt.type(cur & vals[0][t].astype(npdt))
                elif kind == "or":
                    new = npdt.type(cur | vals[0][t].astype(npdt))
                elif kind == "xor":
                    new = npdt.type(cur ^ vals[0][t].astype(npdt))
                elif kind == "max":
                    new = max(cur, vals[0][t].astype(npdt))
                elif kind == "min":
                    new = min(cur, vals[0][t].astype(npdt))
                else:
                    raise m._err(UnsupportedError, f"atomic {kind}")
                m.mem_write(ptr.mem, np.full(m.T, ptr.off[t]), np.full(m.T, new, npdt), atomic=True)
            finally:
                m.mask = saved
            old[t] = cur
        return old
    return fn


def _math(f):
    def fn(m, e, args):
        npdt, _ = np_dtype(_expr_dtype(e))
        vals = [np.asarray(m.eval(a)) for a in args]
        if npdt.kind == "f":
            return np.asarray(f(*[v.astype(np.float64) for v in vals])).astype(npdt)
        return np.asarray(f(*vals)).astype(npdt)
    return fn


def _fma(m, e, args):
    """fmaf / __hfma: one rounding (ptx.fma_rn)."""
    npdt, _ = np_dtype(_expr_dtype(e))
    a, b, c = (np.asarray(m.eval(x)) for x in args)
    return ptx.fma_rn(a, b, c, npdt)


def _popcount(x):
    x = np.asarray(x).astype(np.uint64)
    c = np.zeros(x.shape, np.int64)
    for i in range(64):
        c += ((x >> np.uint64(i)) & np.uint64(1)).astype(np.int64)
    return c


def _erf(x):
    return np.vectorize(math.erf)(x)


_CALLS: Registry[Callable] = Registry("simulator intrinsic").add_all([
    ("reinterpret", _c_reinterpret), ("if_then_else", _c_if_then_else),
    ("address_of", _c_address_of), ("buffer_data", _c_buffer_data),
    ("cuda.cvta_generic_to_shared", _c_passthrough),
    ("break_loop", lambda m, e, a: m._s_break(None)),
    ("continue_loop", lambda m, e, a: m._s_continue(None)), ("likely", _c_passthrough),
    ("assume", lambda m, e, a: None), ("tvm_storage_sync", _c_sync), ("cuda.cta_sync", _c_cta_sync),
    ("ptx.bar_sync", _c_cta_sync), ("ptx.barrier_sync", _c_cta_sync),
    ("cuda.warp_sync", lambda m, e, a: m.syncwarp()), ("ptx.fence", _c_noop),
    ("cuda.thread_fence", _c_noop), ("ptx.fence_proxy", _c_noop), ("ptx.cp_async_cg", _c_cp_async),
    ("ptx.cp_async_ca", _c_cp_async), ("ptx.cp_async_cg_src_size", _c_cp_async),
    ("ptx.cp_async_ca_src_size", _c_cp_async),
    ("ptx.cp_async_cg_ignore_src", _c_cp_async_ignore_src),
    ("ptx.cp_async_ca_ignore_src", _c_cp_async_ignore_src),
    ("ptx.cp_async_commit_group", _c_commit), ("ptx.cp_async_wait_group", _c_wait_group),
    ("ptx.cp_async_wait_all", _c_wait_all), ("ptx.ldmatrix", _c_ldmatrix), ("ptx.mma", _c_mma),
    ("ptx.mma_int", _c_mma), ("ptx.lop3", _c_lop3), ("ptx.prmt", _c_prmt),
    ("ptx.fma_half", _c_fma_half), ("ptx.shfl_sync", _c_ptx_shfl), ("ptx.shfl_sync_p", _c_ptx_shfl),
    ("tvm_warp_shuffle", _shfl_call("idx")), ("tvm_warp_shuffle_xor", _shfl_call("bfly")),
    ("tvm_warp_shuffle_up", _shfl_call("up")), ("tvm_warp_shuffle_down", _shfl_call("down")),
    ("cuda.__shfl_sync", _shfl_call("idx")), ("cuda.__shfl_xor_sync", _shfl_call("bfly")),
    ("cuda.__shfl_up_sync", _shfl_call("up")), ("cuda.__shfl_down_sync", _shfl_call("down")),
    ("atomic_add", _atomic("add")), ("cuda.atomic_add", _atomic("add")),
    ("cuda.atomic_cas", _atomic("cas")), ("exp", _math(np.exp)), ("exp2", _math(np.exp2)),
    ("log", _math(np.log)), ("log2", _math(np.log2)), ("sqrt", _math(np.sqrt)),
    ("rsqrt", _math(lambda x: 1.0 / np.sqrt(x))), ("tanh", _math(np.tanh)), ("sin", _math(np.sin)),
    ("cos", _math(np.cos)), ("fabs", _math(np.abs)), ("abs", _math(np.abs)),
    ("floor", _math(np.floor)), ("ceil", _math(np.ceil)), ("round", _math(np.rint)),
    ("nearbyint", _math(np.rint)), ("trunc", _math(np.trunc)), ("erf", _math(_erf)),
    ("sigmoid", _math(lambda x: 1 / (1 + np.exp(-x)))), ("pow", _math(np.power)),
    ("fmod", _math(np.fmod)), ("isnan", lambda m, e, a: np.isnan(m.eval(a[0]).astype(np.float64))),
    ("isinf", lambda m, e, a: np.isinf(m.eval(a[0]).astype(np.float64))),
    ("popcount", _math(_popcount)),
])

_EXTERNS: Registry[Callable] = Registry("simulator extern function").add_all([
    ("atomicAdd", _atomic("add")), ("atomicCAS", _atomic("cas")), ("atomicExch", _atomic("exch")),
    ("atomicMax", _atomic("max")), ("atomicMin", _atomic("min")), ("atomicSub", _atomic("sub")),
    ("atomicAnd", _atomic("and")), ("atomicOr", _atomic("or")), ("atomicXor", _atomic("xor")),
    ("__nanosleep", _c_noop), ("__shfl_sync", _shfl_call("idx")),
    ("__shfl_xor_sync", _shfl_call("bfly")), ("__shfl_up_sync", _shfl_call("up")),
    ("__shfl_down_sync", _shfl_call("down")), ("__syncthreads", _c_cta_sync),
    ("__threadfence", _c_noop), ("__threadfence_block", _c_noop),
    ("__syncwarp", lambda m, e, a: m.syncwarp()), ("expf", _math(np.exp)),
    ("exp2f", _math(np.exp2)), ("logf", _math(np.log)), ("sqrtf", _math(np.sqrt)),
    ("rsqrtf", _math(lambda x: 1.0 / np.sqrt(x))), ("fabsf", _math(np.abs)),
    ("tanhf", _math(np.tanh)), ("__expf", _math(np.exp)), ("fmaxf", _math(np.fmax)),
    ("fminf", _math(np.fmin)), ("fmaf", _fma), ("__hfma", _fma),
])
