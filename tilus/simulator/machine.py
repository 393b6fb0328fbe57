"""The evaluator: runs a ``tvm.tirx`` PrimFunc one block at a time, all threads of the block at once.

Every scalar is a numpy vector over the block's threads (shape [T]; a vector value such as
float32x4 has shape [T, 4]); the statement being executed applies to the threads in ``mask``.
Divergent ``if``s run both sides under complementary masks, loops whose trip count differs per
thread run until every thread is done, ``break``/``continue``/``return`` drop threads from the mask.
``tvm_storage_sync("shared")`` is where execution lines up: every live thread of the block must
reach it together, else ``DivergentBarrierError``; it starts a new barrier epoch for the race checks.
``__syncwarp`` (tvm_storage_sync("warp")) orders shared-memory accesses among one warp's lanes.

TIR subset: For (serial, unrolled, vectorized, parallel, thread_binding to blockIdx/threadIdx),
While, IfThenElse, SeqStmt, Bind (LetStmt), AttrStmt (thread_extent binds a thread axis; others are
transparent), AssertStmt, Break/Continue/Return, BufferStore, AllocBuffer / DeclBuffer in global,
shared and local scope, Evaluate; expressions IntImm, FloatImm, StringImm, Var, Cast, Add, Sub, Mul,
Div/Mod (C: truncating), FloorDiv/FloorMod, Min, Max, shifts, bit ops (incl. BitwiseNot),
comparisons, And/Or/Not
(short-circuit: the right side runs under the left's mask), Select, Let, Ramp, Broadcast, Shuffle,
BufferLoad (scalar and vector indices, vector-typed buffers), and calls (see ``_CALLS``).
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from tilus.backend.tvm_shim import ir, tirx
from tilus.simulator import ptx
from tilus.simulator.errors import (
    DivergentBarrierError, MisalignedAccessError, OutOfBoundsError, RaceError, SimulationError, UninitializedReadError,
    UninitializedReadWarning, UnsupportedError,
)
from tilus.simulator.memory import Memory, Pointer, View

_SCALARS = {
    "bool": np.dtype(np.bool_), "float16": np.dtype(np.float16), "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64), "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn), "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}
for _b in (8, 16, 32, 64):
    _SCALARS[f"int{_b}"] = np.dtype(f"int{_b}")
    _SCALARS[f"uint{_b}"] = np.dtype(f"uint{_b}")


@functools.lru_cache(maxsize=None)
def _np_dtype_str(s: str, lanes: int):
    base = s
    if lanes > 1 and s.endswith(f"x{lanes}"):
        base = s[: -len(f"x{lanes}")]
    if base not in _SCALARS:
        raise UnsupportedError(f"data type {s}")
    return _SCALARS[base], lanes


def np_dtype(dt):
    """(numpy scalar dtype, lanes) of a TVM dtype."""
    return _np_dtype_str(str(dt), int(getattr(dt, "lanes", 1)))


def _expr_dtype(e):
    ty = e.ty
    return getattr(ty, "dtype", None)


def _stmt_text(stmt) -> str:
    try:
        lines = [ln.strip() for ln in stmt.script().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except Exception:  # pragma: no cover - printing never matters for semantics
        return type(stmt).__name__
    for ln in lines:
        if ln.startswith(("for ", "if ", "while ")):
            return ln
    text = lines[-1] if lines else type(stmt).__name__
    return text if len(text) < 240 else text[:237] + "..."


@dataclass
class SimulationReport:
    blocks: int
    threads: int
    statements: int
    seconds: float
    warnings: list = field(default_factory=list)


class _Loop:
    __slots__ = ("broken",)

    def __init__(self, n):
        self.broken = np.zeros(n, bool)


class Machine:
    def __init__(self, func, uninit: str = "error", races: bool = True, max_while_iterations: int = 100_000):
        if uninit not in ("error", "warn", "ignore"):
            raise ValueError("uninit must be 'error', 'warn' or 'ignore'")
        self.func, self.uninit, self.races = func, uninit, races
        self.max_while_iterations = int(max_while_iterations)
        self.env: dict = {}
        self.views: dict = {}
        self.stmt = None
        self.block = (0, 0, 0)
        self.count = 0
        self.warned: list = []
        self._set_threads(1)
        self._exprs = {
            tirx.IntImm: self._e_imm, tirx.FloatImm: self._e_imm, ir.StringImm: lambda e: e.value,
            ir.Var: self._e_var, ir.TensorLoad: self._e_load, ir.Call: self._e_call,
            tirx.Cast: self._e_cast, tirx.Select: self._e_select, tirx.Let: self._e_let,
            tirx.Ramp: self._e_ramp, tirx.Broadcast: self._e_broadcast, tirx.Shuffle: self._e_shuffle,
            tirx.And: self._e_and, tirx.Or: self._e_or, tirx.Not: self._e_not,
            tirx.BitwiseNot: self._e_bitnot,
        }
        for cls, fn in _BINARY.items():
            self._exprs[cls] = functools.partial(self._e_binary, fn)
        self._stmts = {
            tirx.SeqStmt: self._s_seq, tirx.For: self._s_for, tirx.While: self._s_while,
            tirx.IfThenElse: self._s_if, tirx.Evaluate: self._s_evaluate, tirx.BufferStore: self._s_store,
            tirx.Bind: self._s_bind, tirx.AllocBuffer: self._s_alloc, tirx.DeclBuffer: self._s_decl,
            tirx.AttrStmt: self._s_attr, tirx.AssertStmt: self._s_assert, tirx.Break: self._s_break,
            tirx.Continue: self._s_continue, tirx.Return: self._s_return,
        }

    # ------------------------------------------------------------------ threads and errors

    def _set_threads(self, n, dims=(1, 1, 1)):
        self.T = n
        self._consts = {}
        self.tid = np.arange(n)
        self.dims = dims
        x, y, z = dims
        self.coords = {"x": self.tid % x, "y": (self.tid // x) % y, "z": self.tid // (x * y)}
        self.mask = np.ones(n, bool)
        self.alive = np.ones(n, bool)
        self.loops: list[_Loop] = []

    def _err(self, cls, detail, threads=None, buffer=None, address=None):
        stmt = _stmt_text(self.stmt) if self.stmt is not None else None
        return cls(detail, stmt=stmt, block=self.block, threads=threads, buffer=buffer, address=address)

    def _threads_of(self, bad):
        """Thread ids where a boolean array (first axis = threads) is true."""
        bad = np.asarray(bad)
        rows = bad.reshape(bad.shape[0], -1).any(1) if bad.ndim > 1 else bad
        return np.nonzero(rows)[0]

    def _full(self, value, dtype):
        return np.full(self.T, value, dtype=dtype)

    def _uniform(self, v, what):
        """A Python int from a per-thread value that must agree on the active threads."""
        if isinstance(v, (int, np.integer)):
            return int(v)
        v = np.asarray(v)
        act = v[self.mask] if self.mask.any() else v
        if act.size == 0:
            return 0
        if not (act == act.flat[0]).all():
            raise self._err(UnsupportedError, f"{what} differs between threads")
        return int(act.flat[0])

    # ------------------------------------------------------------------ memory access

    def _byte_index(self, mem, off, k, mask):
        off = np.asarray(off, dtype=np.int64)
        act = np.broadcast_to(mask.reshape(mask.shape + (1,) * (off.ndim - mask.ndim)), off.shape)
        limit = mem.nbytes
        bad = act & ((off < 0) | (off + k > limit))
        if bad.any():
            first = off[bad].flat[0]
            raise self._err(OutOfBoundsError, f"access of {k} byte(s) at byte offset {first} of a "
                            f"{limit}-byte {mem.scope} allocation", self._threads_of(bad),
                            mem.name, int(first))
        off = np.where(act, off, 0)
        idx = off[..., None] + np.arange(k)
        if limit < k:
            idx = np.minimum(idx, max(limit - 1, 0))
        return idx, act

    def _tids_like(self, idx):
        return np.broadcast_to(self.tid.reshape((-1,) + (1,) * (idx.ndim - 1)), idx.shape)

    def mem_read(self, mem, off, npdt, mask=None, check_init=True, atomic=False):
        """The values at byte offsets ``off`` for the threads in ``mask``; ``atomic``: the read of
        an atomic read-modify-write (not racing with other atomics)."""
        mask = self.mask if mask is None else mask
        off = np.asarray(off, dtype=np.int64)
        k = npdt.itemsize
        if not mask.any() or mem.nbytes == 0:
            if mask.any():
                raise self._err(OutOfBoundsError, "access of an empty allocation",
                                self._threads_of(mask), mem.name, 0)
            return np.zeros(off.shape, npdt)
        idx, act = self._byte_index(mem, off, k, mask)
        actb = np.broadcast_to(act[..., None], idx.shape)
        if mem.scope == "local":
            tids = self._tids_like(idx)
            raw = mem.data[tids, idx]
            if check_init:
                self._check_init(mem, mem.init[tids, idx], actb, idx)
        else:
            raw = mem.data[idx]
            if mem.scope == "shared":
                self._check_shared_read(mem, idx, actb, check_init, atomic)
        return np.ascontiguousarray(raw).view(npdt).reshape(off.shape)

    def _check_init(self, mem, init, actb, idx):
        if self.uninit == "ignore":
            return
        bad = actb & ~init
        if bad.any():
            addr = int(idx[bad].flat[0])
            err = self._err(UninitializedReadError, f"read of {mem.scope} memory never written",
                            self._threads_of(bad), mem.name, addr)
            if self.uninit == "error":
                raise err
            self.warned.append(str(err))
            warnings.warn(str(err), UninitializedReadWarning, stacklevel=2)

    def _check_shared_read(self, mem, idx, actb, check_init=True, atomic=False):
        pend = actb & (mem.pending[idx] >= 0)
        if pend.any():
            raise self._err(RaceError, "read of a cp.async destination before cp.async.wait_group/"
                            "wait_all made it land", self._threads_of(pend), mem.name,
                            int(idx[pend].flat[0]))
        if check_init:
            self._check_init(mem, mem.init[idx], actb, idx)
        if not self.races:
            return
        tids = self._tids_like(idx)
        w, wmax = mem.writer[idx], mem.wmax[idx]
        # a value several threads wrote (identically) counts as written by each of them: the range
        # [writer, wmax] stands for that set (an approximation when the writers are not contiguous)
        raw = actb & (mem.wepoch[idx] == self.epoch) & (w >= 0) & ((tids < w) | (tids > wmax))
        if atomic:
            raw &= ~mem.watomic[idx]      # atomics on one word are ordered by the hardware
        if raw.any():
            raw &= ~self._warp_ordered(w, wmax, tids, mem.wws[idx])
        if raw.any():
            i = np.argwhere(raw)[0]
            raise self._err(RaceError, f"read of a value written by thread {int(w[tuple(i)])} with no "
                            f"barrier in between", self._threads_of(raw), mem.name, int(idx[tuple(i)]))
        sel = idx[actb]
        t = tids[actb]
        stale = mem.repoch[sel] != self.epoch
        mem.rmin[sel[stale]] = np.iinfo(np.int32).max
        mem.rmax[sel[stale]] = -1
        np.minimum.at(mem.rmin, sel, t.astype(np.int32))
        np.maximum.at(mem.rmax, sel, t.astype(np.int32))
        mem.repoch[sel] = self.epoch
        mem.rws[sel] = self.wsync[t // ptx.WARP]

    def mem_write(self, mem, off, values, mask=None, atomic=False, since_epoch=None):
        """Store ``values`` at byte offsets ``off`` for the threads in ``mask``. ``since_epoch``: the
        write may have happened at any time since that barrier epoch (a cp.async lands somewhere
        between its issue and its wait), so hazards are checked against accesses since then."""
        mask = self.mask if mask is None else mask
        off = np.asarray(off, dtype=np.int64)
        values = np.ascontiguousarray(values)
        k = values.dtype.itemsize
        if not mask.any():
            return
        idx, act = self._byte_index(mem, off, k, mask)
        actb = np.broadcast_to(act[..., None], idx.shape)
        raw = values.view(np.uint8).reshape(idx.shape)
        tids = self._tids_like(idx)
        if mem.scope == "shared" and not atomic:
            self._check_shared_write(mem, idx, actb, tids, raw, since_epoch)
        elif mem.scope == "global" and not atomic and self.races:
            self._check_same_statement(mem, idx, actb, tids, raw)
        sel_idx, sel_raw, sel_t = idx[actb], raw[actb], tids[actb]
        if mem.scope == "local":
            mem.data[sel_t, sel_idx] = sel_raw
            mem.init[sel_t, sel_idx] = True
            return
        if mem.scope == "shared":
            same = mem.init[sel_idx] & (mem.data[sel_idx] == sel_raw) & (mem.wepoch[sel_idx] == self.epoch)
            fresh = sel_idx[~same]
            mem.writer[fresh] = np.iinfo(np.int32).max
            mem.wmax[fresh] = -1
            mem.wws[sel_idx] = self.wsync[sel_t // ptx.WARP]
            np.minimum.at(mem.writer, sel_idx, sel_t.astype(np.int32))
            np.maximum.at(mem.wmax, sel_idx, sel_t.astype(np.int32))
            same_epoch = mem.wepoch[sel_idx] == self.epoch
            mem.watomic[sel_idx] = atomic & (mem.watomic[sel_idx] | ~same_epoch)
            mem.init[sel_idx] = True
            mem.wepoch[sel_idx] = self.epoch
        mem.data[sel_idx] = sel_raw

    def _warp_ordered(self, lo, hi, tids, count_at_access):
        """True where the earlier access (by threads lo..hi) and this one (by ``tids``) are in one
        warp that has executed __syncwarp since the earlier access."""
        warp = tids // ptx.WARP
        return ((lo // ptx.WARP) == warp) & ((hi // ptx.WARP) == warp) & (self.wsync[warp] > count_at_access)

    def syncwarp(self):
        self.require_full_warps("__syncwarp")
        warps = self.mask.reshape(-1, ptx.WARP).any(1) if self.T % ptx.WARP == 0 else np.zeros(0, bool)
        self.wsync[: len(warps)][warps] += 1

    def _check_shared_write(self, mem, idx, actb, tids, raw, since_epoch=None):
        """Write-after-write and write-after-read hazards with other threads in this barrier epoch.
        Storing the value a byte already holds is benign (replicated threads write identical data)."""
        pend = actb & (mem.pending[idx] >= 0)
        if pend.any():
            raise self._err(RaceError, "write to a cp.async destination whose copy has not landed",
                            self._threads_of(pend), mem.name, int(idx[pend].flat[0]))
        if not self.races:
            return
        changes = mem.data[idx] != raw
        w, wmax = mem.writer[idx], mem.wmax[idx]
        since = self.epoch if since_epoch is None else since_epoch
        waw = actb & changes & (mem.wepoch[idx] >= since) & (w >= 0) & ((w != tids) | (wmax != tids))
        if waw.any():
            waw &= ~self._warp_ordered(w, wmax, tids, mem.wws[idx])
        if waw.any():
            i = tuple(np.argwhere(waw)[0])
            other = int(w[i]) if int(w[i]) != int(tids[i]) else int(wmax[i])
            raise self._err(RaceError, f"write over a value written by thread {other} with no "
                            f"barrier in between", self._threads_of(waw), mem.name, int(idx[i]))
        rmin, rmax = mem.rmin[idx], mem.rmax[idx]
        war = actb & changes & (mem.repoch[idx] >= since) & (rmax >= 0) & ((rmin != tids) | (rmax != tids))
        if war.any():
            war &= ~self._warp_ordered(rmin, rmax, tids, mem.rws[idx])
        if war.any():
            i = tuple(np.argwhere(war)[0])
            other = int(rmin[i]) if int(rmin[i]) != int(tids[i]) else int(rmax[i])
            raise self._err(RaceError, f"write over a value read by thread {other} with no barrier "
                            f"in between", self._threads_of(war), mem.name, int(idx[i]))
        self._check_same_statement(mem, idx, actb, tids, raw)

    def _check_same_statement(self, mem, idx, actb, tids, raw):
        """Two threads writing different values to one byte in the same statement."""
        flat_i, flat_t, flat_r = idx[actb], tids[actb], raw[actb]
        if flat_i.size > 1:
            order = np.argsort(flat_i, kind="stable")
            si, st, sr = flat_i[order], flat_t[order], flat_r[order]
            dup = (si[1:] == si[:-1]) & (st[1:] != st[:-1]) & (sr[1:] != sr[:-1])
            if dup.any():
                j = int(np.nonzero(dup)[0][0])
                raise self._err(RaceError, f"threads {int(st[j])} and {int(st[j + 1])} write different "
                                f"values to the same {mem.scope} byte in one statement", [st[j], st[j + 1]],
                                mem.name, int(si[j]))

    # ------------------------------------------------------------------ buffers

    def view_of(self, buf) -> View:
        try:
            return self.views[buf]
        except KeyError:
            raise self._err(UnsupportedError, f"buffer {buf.name} is used before it is allocated "
                            f"or declared") from None

    def _make_view(self, buf, mem, base) -> View:
        npdt, lanes = np_dtype(buf.dtype)
        shape = tuple(self._uniform(self.eval(s), f"shape of {buf.name}") for s in buf.shape)
        if len(buf.strides):
            strides = tuple(self._uniform(self.eval(s), f"strides of {buf.name}") for s in buf.strides)
        else:
            strides, acc = [], 1
            for s in reversed(shape):
                strides.append(acc)
                acc *= s
            strides = tuple(reversed(strides))
        eo = buf.elem_offset
        elem_offset = self._uniform(self.eval(eo), f"elem_offset of {buf.name}") if eo is not None else 0
        base = np.broadcast_to(np.asarray(base, np.int64), (self.T,))
        return View(buf.name, mem, base, npdt, lanes, shape, strides, elem_offset)

    def _offsets(self, view: View, indices, check=True):
        """Byte offsets [T] or [T, L] of the scalar elements addressed by ``indices``."""
        idx = [np.asarray(self.eval(i)) for i in indices]
        if len(idx) != len(view.shape):
            raise self._err(UnsupportedError, f"{len(idx)} indices for the {len(view.shape)}-d buffer {view.name}")
        flat = None
        vec = max(i.ndim for i in idx) if idx else 1
        if check:
            for d, (i, n) in enumerate(zip(idx, view.shape)):
                act = self.mask.reshape((-1,) + (1,) * (i.ndim - 1))
                act = np.broadcast_to(act, i.shape)
                if len(view.shape) == 1:
                    n = int(np.prod(view.shape))
                bad = act & ((i < 0) | (i >= n))
                if bad.any():
                    raise self._err(OutOfBoundsError, f"index {int(i[bad].flat[0])} of dimension {d} "
                                    f"of {view.name} (extent {n})", self._threads_of(bad), view.name)
        for i, s in zip(idx, view.strides):
            i = i.astype(np.int64)
            if vec == 2 and i.ndim == 1:
                i = i[:, None]
            flat = i * s if flat is None else flat + i * s
        if flat is None:
            flat = np.zeros(self.T, np.int64)
        base = view.base if flat.ndim == 1 else view.base[:, None]
        off = base + (view.elem_offset + flat) * view.elem_bytes
        if view.lanes > 1:
            off = (off[..., None] + np.arange(view.lanes) * view.npdt.itemsize).reshape(self.T, -1)
        return off

    def check_alignment(self, mem, off, npdt, what="access", width=None, mask=None):
        """Natural alignment of scalar accesses, whole-width alignment of contiguous vector accesses
        (a Ramp with stride 1 over 2/4/8/16 bytes is one vector instruction) in global/shared memory.
        Offsets count from the start of the allocation, taken as 256-byte aligned (cudaMalloc)."""
        mask = self.mask if mask is None else mask
        if mem.scope == "local" or not mask.any():
            return
        k = npdt.itemsize
        if width is None:
            width = k
            if off.ndim == 2 and off.shape[1] > 1:
                total = k * off.shape[1]
                contiguous = (np.diff(off, axis=1) == k).all(axis=1)
                if total in (2, 4, 8, 16) and contiguous[mask].all():
                    width = total
        first = off if off.ndim == 1 else off[:, 0]
        bad = mask & (first % width != 0)
        if off.ndim == 2 and width == k:
            bad = bad | (mask & (off % k != 0).any(axis=1))
        if bad.any():
            t = int(np.nonzero(bad)[0][0])
            addr = int(first[t])
            raise self._err(MisalignedAccessError, f"{what} of {width} byte(s) at byte offset {addr}, "
                            f"not a multiple of {width}", np.nonzero(bad)[0], mem.name, addr)

    def load(self, e):
        view = self.view_of(e.source)
        off = self._offsets(view, e.indices)
        self.check_alignment(view.mem, off, view.npdt, "load")
        return self.mem_read(view.mem, off, view.npdt)

    def store_to(self, target, value):
        """Write ``value`` to the element(s) a BufferLoad expression names (a PTX destination)."""
        if not isinstance(target, ir.TensorLoad):
            raise self._err(UnsupportedError, f"PTX destination operand {target} is not a buffer element")
        view = self.view_of(target.source)
        off = self._offsets(view, target.indices)
        value = np.asarray(value)
        if value.dtype != view.npdt:
            if value.dtype.itemsize * (value.size // self.T) == view.npdt.itemsize * (off.size // self.T):
                value = np.ascontiguousarray(value).view(view.npdt)
            else:
                value = value.astype(view.npdt)
        self.mem_write(view.mem, off, value.reshape(off.shape))

    # ------------------------------------------------------------------ expressions

    def eval(self, e):
        try:
            fn = self._exprs[type(e)]
        except KeyError:
            if isinstance(e, (int, float)):
                return e
            raise self._err(UnsupportedError, f"expression {type(e).__name__}: {e}") from None
        return fn(e)

    def _e_imm(self, e):
        npdt, lanes = np_dtype(_expr_dtype(e))
        key = (e.value, npdt)
        arr = self._consts.get(key)
        if arr is None:           # one read-only array per constant (no statement writes in place)
            arr = self._full(e.value, npdt)
            arr.flags.writeable = False
            self._consts[key] = arr
        return arr

    def _e_var(self, e):
        try:
            return self.env[e]
        except KeyError:
            if e in self.views:
                v = self.views[e]
                return Pointer(v.mem, v.base + v.elem_offset * v.elem_bytes, v.npdt)
            raise self._err(UnsupportedError, f"variable {e.name} has no value") from None

    def _e_load(self, e):
        return self.load(e)

    def _e_cast(self, e):
        v = self.eval(e.value)
        npdt, lanes = np_dtype(_expr_dtype(e))
        return _cast(v, npdt)

    def _e_binary(self, fn, e):
        a, b = self.eval(e.a), self.eval(e.b)
        npdt, _ = np_dtype(_expr_dtype(e))
        return fn(self, a, b, npdt)

    def _e_and(self, e):
        a = self.eval(e.a).astype(bool)
        saved = self.mask
        self.mask = saved & (a if a.ndim == 1 else a.any(1))
        try:
            b = self.eval(e.b).astype(bool)
        finally:
            self.mask = saved
        return a & b

    def _e_or(self, e):
        a = self.eval(e.a).astype(bool)
        saved = self.mask
        self.mask = saved & ~(a if a.ndim == 1 else a.all(1))
        try:
            b = self.eval(e.b).astype(bool)
        finally:
            self.mask = saved
        return a | b

    def _e_bitnot(self, e):
        return np.invert(self.eval(e.a))

    def _e_not(self, e):
        return ~self.eval(e.a).astype(bool)

    def _e_select(self, e):
        c = self.eval(e.condition).astype(bool)
        t, f = self.eval(e.true_value), self.eval(e.false_value)
        return np.where(c, t, f)

    def _e_let(self, e):
        self.env[e.var] = self.eval(e.value)
        try:
            return self.eval(e.body)
        finally:
            del self.env[e.var]

    def _e_ramp(self, e):
        base, stride = self.eval(e.base), self.eval(e.stride)
        lanes = self._uniform(self.eval(e.lanes), "ramp lanes") if not isinstance(e.lanes, int) else e.lanes
        return (base[:, None] + stride[:, None] * np.arange(lanes, dtype=base.dtype)).astype(base.dtype)

    def _e_broadcast(self, e):
        v = self.eval(e.value)
        lanes = self._uniform(self.eval(e.lanes), "broadcast lanes") if not isinstance(e.lanes, int) else e.lanes
        return np.repeat(np.asarray(v).reshape(self.T, -1), lanes, axis=1)

    def _e_shuffle(self, e):
        vs = [np.asarray(self.eval(v)).reshape(self.T, -1) for v in e.vectors]
        cat = np.concatenate(vs, axis=1)
        ids = [self._uniform(self.eval(i), "shuffle index") for i in e.indices]
        out = cat[:, ids]
        return out[:, 0] if out.shape[1] == 1 else out

    def _e_call(self, e):
        op = e.op
        name = getattr(op, "name", None)
        if name is None:
            raise self._err(UnsupportedError, f"call of {op}")
        if name.startswith(("tirx.", "prim.")):
            name = name[5:]
        if name in ("call_extern", "call_pure_extern"):
            ext = e.args[0].value
            fn = _EXTERNS.get(ext)
            if fn is None:
                raise self._err(UnsupportedError, f"extern function {ext}")
            return fn(self, e, list(e.args[1:]))
        fn = _CALLS.get(name)
        if fn is None:
            raise self._err(UnsupportedError, f"intrinsic {name}")
        return fn(self, e, list(e.args))

    # ------------------------------------------------------------------ statements

    def exec(self, s):
        try:
            fn = self._stmts[type(s)]
        except KeyError:
            raise self._err(UnsupportedError, f"statement {type(s).__name__}") from None
        self.count += 1
        fn(s)

    def _s_seq(self, s):
        for x in s.seq:
            if not self.mask.any():
                return
            self.exec(x)

    def _s_evaluate(self, s):
        self.stmt = s
        self.eval(s.value)

    def _s_store(self, s):
        self.stmt = s
        view = self.view_of(s.buffer)
        value = np.asarray(self.eval(s.value))
        off = self._offsets(view, s.indices)
        self.check_alignment(view.mem, off, view.npdt, "store")
        if value.dtype != view.npdt:
            value = value.astype(view.npdt)
        self.mem_write(view.mem, off, np.broadcast_to(value.reshape(self.T, -1), off.reshape(self.T, -1).shape).reshape(off.shape))

    def _s_bind(self, s):
        self.stmt = s
        value = self.eval(s.value)
        old = self.env.get(s.var)
        if isinstance(old, np.ndarray) and isinstance(value, np.ndarray) and old.shape == value.shape \
                and not self.mask.all():
            # a variable bound again under a mask (an assignment in divergent code) keeps the
            # values of the threads that do not execute this statement
            m = self.mask.reshape((-1,) + (1,) * (value.ndim - 1))
            value = np.where(m, value, old).astype(value.dtype)
        self.env[s.var] = value

    def _s_alloc(self, s):
        buf = s.buffer
        if buf in self.views:
            return
        scope = buf.scope() or "global"
        npdt, lanes = np_dtype(buf.dtype)
        shape = [self._uniform(self.eval(x), f"shape of {buf.name}") for x in buf.shape]
        nbytes = int(np.prod(shape)) * npdt.itemsize * lanes
        if scope.startswith("shared"):
            mem = Memory(buf.name, "shared", nbytes)
        elif scope.startswith("local") or scope == "warp":
            mem = Memory(buf.name, "local", nbytes, nthreads=self.T)
        else:
            raise self._err(UnsupportedError, f"allocation of {buf.name} in scope {scope}")
        self.views[buf] = self._make_view(buf, mem, 0)

    def _s_decl(self, s):
        buf = s.buffer
        data = getattr(s, "data", None)
        if data is None:
            self._s_alloc(s)
            return
        ptr = self.eval(data)
        if not isinstance(ptr, Pointer):
            raise self._err(UnsupportedError, f"DeclBuffer {buf.name} over a non-pointer value")
        self.views[buf] = self._make_view(buf, ptr.mem, ptr.off)

    def _s_attr(self, s):
        if s.attr_key == "thread_extent" and hasattr(s.node, "thread_tag"):
            self._bind_thread(s.node.var, s.node.thread_tag, s.value, s.body)
        else:
            self.exec(s.body)

    def _s_assert(self, s):
        self.stmt = s
        c = self.eval(s.condition).astype(bool)
        bad = self.mask & ~c
        if bad.any():
            raise self._err(SimulationError, f"assertion failed: {getattr(s.message, 'value', s.message)}",
                            self._threads_of(bad))

    def _s_break(self, s):
        if not self.loops:
            raise self._err(UnsupportedError, "break outside a loop")
        self.loops[-1].broken |= self.mask
        self.mask = np.zeros(self.T, bool)

    def _s_continue(self, s):
        self.mask = np.zeros(self.T, bool)

    def _s_return(self, s):
        self.alive &= ~self.mask
        self.mask = np.zeros(self.T, bool)

    def _s_if(self, s):
        self.stmt = s
        c = np.asarray(self.eval(s.condition)).astype(bool)
        saved = self.mask
        taken = saved & c
        killed = np.zeros(self.T, bool)
        if taken.any():
            self.mask = taken
            self.exec(s.then_case)
            killed |= taken & ~self.mask
        other = saved & ~c
        if s.else_case is not None and other.any():
            self.mask = other
            self.exec(s.else_case)
            killed |= other & ~self.mask
        self.mask = saved & ~killed

    def _bind_thread(self, var, tag, extent, body):
        ext = self._uniform(self.eval(extent), f"extent of {tag}")
        axis = tag[-1]
        saved = self.mask
        if tag.startswith("blockIdx"):
            idx = {"x": 0, "y": 1, "z": 2}[axis]
            self.env[var] = self._full(self.block[idx], _var_np(var))
            if self.block[idx] >= ext:
                return
        elif tag.startswith("threadIdx"):
            coord = self.coords[axis]
            self.env[var] = coord.astype(_var_np(var))
            self.mask = saved & (coord < ext)
        else:
            raise self._err(UnsupportedError, f"thread binding {tag}")
        self.exec(body)
        self.mask = saved & self.alive

    def _s_for(self, s):
        if s.kind == tirx.ForKind.THREAD_BINDING:
            self._bind_thread(s.loop_var, s.thread_binding.thread_tag, s.extent, s.body)
            return
        self.stmt = s
        vnp = _var_np(s.loop_var)
        lo = np.asarray(self.eval(s.min)).astype(np.int64)
        ext = np.asarray(self.eval(s.extent)).astype(np.int64)
        step = np.asarray(self.eval(s.step)).astype(np.int64) if s.step is not None else np.ones(self.T, np.int64)
        saved = self.mask
        act = saved
        n = int(ext[act].max()) if act.any() else 0
        loop = _Loop(self.T)
        self.loops.append(loop)
        try:
            for i in range(max(n, 0)):
                m = act & (i < ext) & ~loop.broken & self.alive
                if not m.any():
                    break
                self.env[s.loop_var] = (lo + i * step).astype(vnp)
                self.mask = m
                self.exec(s.body)
        finally:
            self.loops.pop()
            self.mask = saved & self.alive

    def _s_while(self, s):
        self.stmt = s
        saved = self.mask
        loop = _Loop(self.T)
        self.loops.append(loop)
        running = saved.copy()
        iterations = 0
        try:
            while True:
                iterations += 1
                if iterations > self.max_while_iterations:
                    self.stmt = s
                    raise self._err(SimulationError, f"while loop still running after "
                                    f"{self.max_while_iterations} iterations (blocks run one after "
                                    f"another: a spin-wait on a value no earlier block sets never ends)",
                                    self._threads_of(running))
                running = running & ~loop.broken & self.alive
                self.mask = running
                if not running.any():
                    break
                running = running & np.asarray(self.eval(s.condition)).astype(bool)
                if not running.any():
                    break
                self.mask = running
                self.exec(s.body)
        finally:
            self.loops.pop()
        self.mask = saved & self.alive

    # ------------------------------------------------------------------ warp-level helpers

    def require_full_warps(self, what):
        if self.T % ptx.WARP:
            raise self._err(UnsupportedError, f"{what} in a block of {self.T} threads (not whole warps)")
        m = self.mask.reshape(-1, ptx.WARP)
        partial = m.any(1) & ~m.all(1)
        if partial.any():
            w = int(np.nonzero(partial)[0][0])
            missing = [w * 32 + i for i in range(32) if not m[w, i]]
            raise self._err(DivergentBarrierError, f"{what} (.sync.aligned) executed by part of warp {w}; "
                            f"lanes not executing it", missing)

    def barrier(self):
        expected = self.alive
        if (self.mask != expected).any():
            missing = np.nonzero(expected & ~self.mask)[0]
            raise self._err(DivergentBarrierError, f"__syncthreads reached by {int(self.mask.sum())} of "
                            f"{int(expected.sum())} live threads; threads not arriving", missing)
        self.epoch += 1

    # ------------------------------------------------------------------ cp.async

    def cp_async(self, dst, src, cp_size, src_size):
        if not isinstance(dst, Pointer) or not isinstance(src, Pointer):
            raise self._err(UnsupportedError, "cp.async operands must be addresses of buffer elements")
        if dst.mem.scope != "shared":
            raise self._err(SimulationError, f"cp.async destination {dst.mem.name} is not shared memory")
        k = int(cp_size)
        self.check_alignment(dst.mem, dst.off, np.dtype(np.uint8), "cp.async destination", width=k)
        self.check_alignment(src.mem, src.off, np.dtype(np.uint8), "cp.async source", width=k)
        src_size = np.broadcast_to(np.asarray(src_size, np.int64), (self.T,))
        lanes = np.arange(k)
        dst_off = dst.off[:, None] + lanes
        src_mask = self.mask[:, None] & (lanes[None, :] < src_size[:, None])
        data = self.mem_read(src.mem, src.off[:, None] + lanes, np.dtype(np.uint8), mask=src_mask)
        data = np.where(src_mask, data, 0).astype(np.uint8)
        idx, act = self._byte_index(dst.mem, dst_off, 1, self.mask)
        idx = idx[..., 0]
        actb = np.broadcast_to(self.mask[:, None], idx.shape)
        pend = actb & (dst.mem.pending[idx] >= 0)
        if pend.any():
            raise self._err(RaceError, "cp.async to a destination whose earlier cp.async has not landed",
                            self._threads_of(pend), dst.mem.name, int(idx[pend].flat[0]))
        dst.mem.pending[idx[actb]] = np.broadcast_to(self.tid[:, None], idx.shape)[actb]
        self.async_recs.append({"mem": dst.mem, "off": dst_off, "data": data,
                                "active": self.mask.copy(), "group": np.full(self.T, -1),
                                "epoch": self.epoch})

    def cp_async_commit(self):
        for rec in self.async_recs:
            sel = self.mask & rec["active"] & (rec["group"] < 0)
            rec["group"][sel] = self.commit_count[sel]
        self.commit_count[self.mask] += 1

    def cp_async_wait(self, n, mask=None):
        mask = self.mask if mask is None else mask
        limit = self.commit_count - int(n)
        keep = []
        for rec in self.async_recs:
            sel = mask & rec["active"] & (rec["group"] >= 0) & (rec["group"] < limit)
            if sel.any():
                mem = rec["mem"]
                offs = rec["off"][sel]
                mem.pending[offs.reshape(-1)] = -1
                self.mem_write(mem, rec["off"], rec["data"], mask=sel, since_epoch=rec["epoch"])
                rec["active"] = rec["active"] & ~sel
            if rec["active"].any():
                keep.append(rec)
        self.async_recs = keep

    # ------------------------------------------------------------------ running

    def launch_dims(self, grid=None):
        """(grid (x, y, z), block (x, y, z)) from the thread bindings (grid may be overridden)."""
        found: dict = {}

        def visit(s):
            if isinstance(s, tirx.For):
                if s.kind == tirx.ForKind.THREAD_BINDING:
                    found.setdefault(s.thread_binding.thread_tag, []).append(s.extent)
                visit(s.body)
            elif isinstance(s, tirx.AttrStmt):
                if s.attr_key == "thread_extent" and hasattr(s.node, "thread_tag"):
                    found.setdefault(s.node.thread_tag, []).append(s.value)
                visit(s.body)
            elif isinstance(s, tirx.SeqStmt):
                for x in s.seq:
                    visit(x)
            elif isinstance(s, tirx.IfThenElse):
                visit(s.then_case)
                if s.else_case is not None:
                    visit(s.else_case)
            elif isinstance(s, tirx.While):
                visit(s.body)

        visit(self.func.body)
        dims = {}
        for tag, exts in found.items():
            vals = []
            for e in exts:
                try:
                    vals.append(self._uniform(self.eval(e), f"extent of {tag}"))
                except SimulationError as exc:
                    raise UnsupportedError(f"the extent of {tag} ({e}) must depend only on the "
                                           f"parameters: {exc.detail}") from None
            dims[tag] = max(vals)
        g = tuple(dims.get(f"blockIdx.{a}", 1) for a in "xyz")
        b = tuple(dims.get(f"threadIdx.{a}", 1) for a in "xyz")
        if grid is not None:
            g = (int(grid), 1, 1) if isinstance(grid, (int, np.integer)) else tuple(int(x) for x in grid) + (1,) * (3 - len(grid))
        return g, b

    def bind_params(self, args):
        params = list(self.func.params)
        if len(args) != len(params):
            raise SimulationError(f"{len(params)} arguments expected ({', '.join(p.name for p in params)}), "
                                  f"got {len(args)}")
        self.param_values = []
        buffers = []
        for p, a in zip(params, args):
            ty = p.ty
            if isinstance(ty, tirx.BufferType):
                buffers.append((p, a))
            elif isinstance(ty, ir.PointerType):
                raw = _as_bytes(a, p.name)
                self.param_values.append((p, Pointer(Memory(p.name, "global", raw.size, data=raw),
                                                     np.zeros(1, np.int64), np.dtype(np.uint8))))
            else:
                npdt, _ = np_dtype(ty.dtype)
                self.param_values.append((p, np.asarray(a).astype(npdt).reshape(())))
        self.buffer_params = []
        bound = {p for p, _ in self.param_values}
        for p, a in buffers:
            raw = _as_bytes(a, p.name)
            self.buffer_params.append((p, Memory(p.name, "global", raw.size, data=raw)))
            # a shape variable no parameter defines (``a_len`` of a match_buffer) is the array's length
            shape = list(p.shape)
            if len(shape) == 1 and isinstance(shape[0], ir.Var) and shape[0] not in bound:
                npdt, lanes = np_dtype(p.dtype)
                vnp = _var_np(shape[0])
                self.param_values.append((shape[0], np.asarray(raw.size // (npdt.itemsize * lanes)).astype(vnp)))
                bound.add(shape[0])

    def reset_block(self):
        self.env = {}
        self.views = {}
        for p, v in self.param_values:
            if isinstance(v, Pointer):
                self.env[p] = Pointer(v.mem, np.zeros(self.T, np.int64), v.npdt)
            else:
                self.env[p] = np.full(self.T, v, dtype=v.dtype)
        for p, mem in self.buffer_params:
            self.views[p] = self._make_view(p, mem, 0)
        self.mask = np.ones(self.T, bool)
        self.alive = np.ones(self.T, bool)
        self.loops = []
        self.epoch = 0
        self.async_recs = []
        self.commit_count = np.zeros(self.T, np.int64)
        self.wsync = np.zeros(self.T // ptx.WARP + 1, np.int64)

    def run(self, args, grid=None) -> SimulationReport:
        t0 = time.perf_counter()
        self.bind_params(args)
        self._set_threads(1)
        self.reset_block()
        g, b = self.launch_dims(grid)
        nthreads = b[0] * b[1] * b[2]
        self._set_threads(nthreads, b)
        blocks = 0
        with np.errstate(all="ignore"):
            for bz in range(g[2]):
                for by in range(g[1]):
                    for bx in range(g[0]):
                        self.block = (bx, by, bz)
                        self.reset_block()
                        self.stmt = None
                        self.exec(self.func.body)
                        # copies never waited for still land before the kernel ends
                        self.commit_count += 1
                        self.cp_async_wait(0, mask=np.ones(self.T, bool))
                        blocks += 1
        return SimulationReport(blocks, nthreads, self.count, time.perf_counter() - t0, self.warned)


# ---------------------------------------------------------------------- helpers

def _var_np(var):
    dt = _expr_dtype(var)
    try:
        return np_dtype(dt)[0]
    except Exception:
        return np.dtype(np.int32)


_ML_FLOATS = (_SCALARS["bfloat16"], _SCALARS["float8_e4m3fn"], _SCALARS["float8_e5m2"])


def _is_float(dt) -> bool:
    return dt.kind == "f" or dt in _ML_FLOATS


def _cast(v, npdt):
    """C / PTX conversion: float -> int truncates toward zero and saturates, NaN -> 0 (cvt.rzi);
    int -> int wraps (two's complement); -> float rounds to nearest even; -> bool is != 0."""
    v = np.asarray(v)
    if v.dtype == npdt:
        return v
    if npdt == np.bool_:
        return v != 0
    if npdt.kind in "iu":
        if _is_float(v.dtype):
            f = np.trunc(np.nan_to_num(v.astype(np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf))
            info = np.iinfo(npdt)
            return np.clip(f, info.min, info.max).astype(npdt)
        return v.astype(npdt)
    if v.dtype.kind in "iub" and npdt in _ML_FLOATS:
        return v.astype(np.float64).astype(npdt)
    return v.astype(npdt)


def _as_bytes(a, name):
    """The caller's array as a flat uint8 view sharing its memory (writes land in place)."""
    mod = type(a).__module__
    if mod.startswith("torch"):
        t = a.detach()
        if t.device.type != "cpu":
            raise SimulationError(f"argument {name}: the simulator runs on CPU tensors (got {t.device})")
        if not t.is_contiguous():
            raise SimulationError(f"argument {name}: tensor is not contiguous")
        import torch

        return t.reshape(-1).view(torch.uint8).numpy()
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise SimulationError(f"argument {name}: array is not C-contiguous")
        return a.reshape(-1).view(np.uint8)
    raise SimulationError(f"argument {name}: expected a numpy array or torch CPU tensor, got {type(a).__name__}")


def _safe_divisor(m, b, what: str):
    """``b`` with zeros replaced by 1, after reporting a zero divisor in an active thread."""
    zero = (b == 0)
    bad = m.mask.reshape((-1,) + (1,) * (np.ndim(b) - 1)) & zero
    if np.any(bad):
        raise m._err(SimulationError, f"integer {what} by zero", m._threads_of(bad))
    return np.where(zero, 1, b)


def _int_div(m, a, b, npdt):
    if npdt.kind == "f":
        return (a / b).astype(npdt)
    b = _safe_divisor(m, b, "division")
    r = np.fmod(a, b)
    return ((a - r) // b).astype(npdt)


def _int_mod(m, a, b, npdt):
    if npdt.kind == "f":
        return np.fmod(a, b).astype(npdt)
    return np.fmod(a, _safe_divisor(m, b, "modulo")).astype(npdt)


def _floordiv(m, a, b, npdt):
    if npdt.kind == "f":
        return np.floor(a / b).astype(npdt)
    return np.floor_divide(a, _safe_divisor(m, b, "division")).astype(npdt)


def _floormod(m, a, b, npdt):
    if npdt.kind == "f":
        return (a - np.floor(a / b) * b).astype(npdt)
    return np.mod(a, _safe_divisor(m, b, "modulo")).astype(npdt)


def _shift(left):
    def fn(m, a, b, npdt):
        b = np.asarray(b).astype(a.dtype)
        return (np.left_shift(a, b) if left else np.right_shift(a, b)).astype(npdt)
    return fn


def _arith(f):
    return lambda m, a, b, npdt: np.asarray(f(a, b)).astype(npdt, copy=False)


_BINARY = {
    tirx.Add: _arith(np.add), tirx.Sub: _arith(np.subtract), tirx.Mul: _arith(np.multiply),
    tirx.Div: _int_div, tirx.Mod: _int_mod, tirx.FloorDiv: _floordiv, tirx.FloorMod: _floormod,
    tirx.Min: _arith(np.minimum), tirx.Max: _arith(np.maximum),
    tirx.LShift: _shift(True), tirx.RShift: _shift(False),
    tirx.BitwiseAnd: _arith(np.bitwise_and), tirx.BitwiseOr: _arith(np.bitwise_or),
    tirx.BitwiseXor: _arith(np.bitwise_xor),
    tirx.EQ: _arith(np.equal), tirx.NE: _arith(np.not_equal), tirx.LT: _arith(np.less),
    tirx.LE: _arith(np.less_equal), tirx.GT: _arith(np.greater), tirx.GE: _arith(np.greater_equal),
}


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
    value = np.asarray(value)
    lane = m.tid % ptx.WARP
    j, _ = ptx.shfl_source_lane(mode, lane, np.asarray(b).astype(np.int64), ptx.shfl_c(mode, width))
    src = (m.tid - lane) + j
    mm = np.asarray(membermask).astype(np.uint64)
    in_mask = ((mm >> (src % ptx.WARP).astype(np.uint64)) & np.uint64(1)).astype(bool)
    bad = m.mask & (~m.mask[src] | ~in_mask)
    if bad.any():
        raise m._err(SimulationError, f"shfl.sync.{mode} reads a lane that is inactive or not in the member "
                     f"mask", m._threads_of(bad))
    return value[src]


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
    lane = m.tid % ptx.WARP
    j, pval = ptx.shfl_source_lane(mode, lane, np.asarray(b).astype(np.int64), np.asarray(c).astype(np.int64))
    src = (m.tid - lane) + j
    mm = np.asarray(membermask).astype(np.uint64)
    in_mask = ((mm >> (src % ptx.WARP).astype(np.uint64)) & np.uint64(1)).astype(bool)
    bad = m.mask & (~m.mask[src] | ~in_mask)
    if bad.any():
        raise m._err(SimulationError, f"shfl.sync.{mode} reads a lane that is inactive or not in the member "
                     f"mask", m._threads_of(bad))
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


_CALLS = {
    "reinterpret": _c_reinterpret, "if_then_else": _c_if_then_else, "address_of": _c_address_of,
    "buffer_data": _c_buffer_data, "cuda.cvta_generic_to_shared": _c_passthrough,
    "break_loop": lambda m, e, a: m._s_break(None), "continue_loop": lambda m, e, a: m._s_continue(None),
    "likely": _c_passthrough, "assume": lambda m, e, a: None,
    "tvm_storage_sync": _c_sync, "cuda.cta_sync": _c_cta_sync, "ptx.bar_sync": _c_cta_sync,
    "ptx.barrier_sync": _c_cta_sync, "cuda.warp_sync": lambda m, e, a: m.syncwarp(),
    "ptx.fence": _c_noop, "cuda.thread_fence": _c_noop, "ptx.fence_proxy": _c_noop,
    "ptx.cp_async_cg": _c_cp_async, "ptx.cp_async_ca": _c_cp_async,
    "ptx.cp_async_cg_src_size": _c_cp_async, "ptx.cp_async_ca_src_size": _c_cp_async,
    "ptx.cp_async_cg_ignore_src": _c_cp_async_ignore_src, "ptx.cp_async_ca_ignore_src": _c_cp_async_ignore_src,
    "ptx.cp_async_commit_group": _c_commit, "ptx.cp_async_wait_group": _c_wait_group,
    "ptx.cp_async_wait_all": _c_wait_all,
    "ptx.ldmatrix": _c_ldmatrix, "ptx.mma": _c_mma, "ptx.mma_int": _c_mma,
    "ptx.lop3": _c_lop3, "ptx.prmt": _c_prmt, "ptx.fma_half": _c_fma_half,
    "ptx.shfl_sync": _c_ptx_shfl, "ptx.shfl_sync_p": _c_ptx_shfl,
    "tvm_warp_shuffle": _shfl_call("idx"), "tvm_warp_shuffle_xor": _shfl_call("bfly"),
    "tvm_warp_shuffle_up": _shfl_call("up"), "tvm_warp_shuffle_down": _shfl_call("down"),
    "cuda.__shfl_sync": _shfl_call("idx"), "cuda.__shfl_xor_sync": _shfl_call("bfly"),
    "cuda.__shfl_up_sync": _shfl_call("up"), "cuda.__shfl_down_sync": _shfl_call("down"),
    "atomic_add": _atomic("add"), "cuda.atomic_add": _atomic("add"), "cuda.atomic_cas": _atomic("cas"),
    "exp": _math(np.exp), "exp2": _math(np.exp2), "log": _math(np.log), "log2": _math(np.log2),
    "sqrt": _math(np.sqrt), "rsqrt": _math(lambda x: 1.0 / np.sqrt(x)), "tanh": _math(np.tanh),
    "sin": _math(np.sin), "cos": _math(np.cos), "fabs": _math(np.abs), "abs": _math(np.abs),
    "floor": _math(np.floor), "ceil": _math(np.ceil), "round": _math(np.rint), "nearbyint": _math(np.rint),
    "trunc": _math(np.trunc), "erf": _math(_erf), "sigmoid": _math(lambda x: 1 / (1 + np.exp(-x))),
    "pow": _math(np.power), "fmod": _math(np.fmod), "isnan": lambda m, e, a: np.isnan(m.eval(a[0]).astype(np.float64)),
    "isinf": lambda m, e, a: np.isinf(m.eval(a[0]).astype(np.float64)), "popcount": _math(_popcount),
}

_EXTERNS = {
    "atomicAdd": _atomic("add"), "atomicCAS": _atomic("cas"), "atomicExch": _atomic("exch"),
    "atomicMax": _atomic("max"), "atomicMin": _atomic("min"), "atomicSub": _atomic("sub"),
    "atomicAnd": _atomic("and"), "atomicOr": _atomic("or"), "atomicXor": _atomic("xor"),
    "__nanosleep": _c_noop,
    "__shfl_sync": _shfl_call("idx"), "__shfl_xor_sync": _shfl_call("bfly"),
    "__shfl_up_sync": _shfl_call("up"), "__shfl_down_sync": _shfl_call("down"),
    "__syncthreads": _c_cta_sync, "__threadfence": _c_noop, "__threadfence_block": _c_noop,
    "__syncwarp": lambda m, e, a: m.syncwarp(),
    "expf": _math(np.exp), "exp2f": _math(np.exp2), "logf": _math(np.log), "sqrtf": _math(np.sqrt),
    "rsqrtf": _math(lambda x: 1.0 / np.sqrt(x)), "fabsf": _math(np.abs), "tanhf": _math(np.tanh),
    "__expf": _math(np.exp), "fmaxf": _math(np.fmax), "fminf": _math(np.fmin),
    "fmaf": _fma, "__hfma": _fma,
}


# ---------------------------------------------------------------------- entry points

def run_prim_func(func, args, grid=None, uninit="error", races=True,
                  max_while_iterations=100_000) -> SimulationReport:
    if not isinstance(func, tirx.PrimFunc):
        raise SimulationError(f"expected a tvm.tirx PrimFunc, got {type(func).__name__}")
    return Machine(func, uninit=uninit, races=races,
                   max_while_iterations=max_while_iterations).run(list(args), grid=grid)


def as_prim_func(kernel, arch="sm_80"):
    """The PrimFunc to simulate for ``kernel``: a PrimFunc as is; anything with a ``.prim_func``
    (the CompiledKernel ``tilus.build`` returns); a Program or Script goes through the same steps
    as ``tilus.build`` (passes, then the lowering to tirx) without running nvcc."""
    if isinstance(kernel, tirx.PrimFunc):
        return kernel
    pf = getattr(kernel, "prim_func", None)
    if pf is not None:
        return pf
    try:
        from tilus.backend.build_program import as_program, prepare
        from tilus.backend.codegen import lower_program
    except ImportError:
        raise UnsupportedError("tilus.build (the IR -> tirx lowering) is not available in this tree; "
                               "pass a tvm.tirx PrimFunc") from None
    return lower_program(prepare(as_program(kernel))).prim_func
