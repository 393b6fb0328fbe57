"""Memory accesses of the block's threads and their checks: bounds, alignment, uninitialised
reads, shared-memory races (barrier epochs, __syncwarp), buffer views, cp.async groups."""
from __future__ import annotations

import warnings

import numpy as np

from tilus.backend.tvm_shim import ir
from tilus.simulator import ptx
from tilus.simulator.errors import (MisalignedAccessError, OutOfBoundsError, RaceError, SimulationError,
                                    UninitializedReadError, UninitializedReadWarning, UnsupportedError)
from tilus.simulator.memory import Pointer, View
from tilus.simulator.scalars import np_dtype


class MemoryAccess:
    """Reads, writes and their checks (a mixin of the Machine)."""

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
