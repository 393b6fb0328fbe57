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
BufferLoad (scalar and vector indices, vector-typed buffers), and calls (``tilus.simulator.intrinsics``).

The Machine is the evaluator of expressions and statements; its thread set is ``threads.Threads``,
its memory accesses and their checks ``access.MemoryAccess``, and scalar arithmetic ``scalars``.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np

from tilus.backend.tvm_shim import ir, tirx
from tilus.simulator import ptx
from tilus.simulator.access import MemoryAccess
from tilus.simulator.errors import SimulationError, UnsupportedError
from tilus.simulator.intrinsics import _CALLS, _EXTERNS
from tilus.simulator.memory import Memory, Pointer
from tilus.simulator.scalars import _BINARY, _as_bytes, _cast, _expr_dtype, _var_np, np_dtype
from tilus.simulator.threads import Threads, _Loop


@dataclass
class SimulationReport:
    blocks: int
    threads: int
    statements: int
    seconds: float
    warnings: list = field(default_factory=list)


class Machine(Threads, MemoryAccess):
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
        key = (repr(e.value), npdt)
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
        values = np.broadcast_to(value.reshape(self.T, -1), off.reshape(self.T, -1).shape)
        self.mem_write(view.mem, off, values.reshape(off.shape))

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
            g = (int(grid), 1, 1) if isinstance(grid, (int, np.integer)) \
                else tuple(int(x) for x in grid) + (1,) * (3 - len(grid))
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


# ---------------------------------------------------------------------- entry points

def run_prim_func(func, args, grid=None, uninit="error", races=True,
                  max_while_iterations=100_000) -> SimulationReport:
    if not isinstance(func, tirx.PrimFunc):
        raise SimulationError(f"expected a tvm.tirx PrimFunc, got {type(func).__name__}")
    return Machine(func, uninit=uninit, races=races,
                   max_while_iterations=max_while_iterations).run(list(args), grid=grid)


def as_prim_func(kernel, arch=None):
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
        from tilus.backend.toolchain import normalize_arch
    except ImportError:
        raise UnsupportedError("tilus.build (the IR -> tirx lowering) is not available in this tree; "
                               "pass a tvm.tirx PrimFunc") from None
    return lower_program(prepare(as_program(kernel), normalize_arch(arch))).prim_func
