"""The lowering driver: a Tilus Program (layouts inferred) -> one ``tvm.tirx`` PrimFunc.

Shape of the result::

    kernel(<params>):                       pointers: flat 1-D buffers, scalars: int32/float...
      for bx in thread_binding(grid_x, "blockIdx.x"):  (and y, z)
        for tx in thread_binding(warps*32, "threadIdx.x"):
          <the dynamic shared memory pool, when shared memory is used: its size and every shared
           tensor's offset are PlanSharedMemory's (AllocateSharedInst.offset)>
          <register tensors: one local buffer of layout.local_size elements each>
          <the body: statements lowered one by one, instructions through their emitters>

Statements: For -> For (serial; unrolled when asked), If -> IfThenElse, While -> While,
Break/Continue -> Break/Continue, Let -> Bind (or a one-element local buffer when the variable is
assigned later), Assign -> BufferStore into that buffer.

The TIR constructs emitted (what tilus.simulator must model) are listed in docs/codegen.md.
The lowering plans nothing: shared memory (including the scratch tiles of layout conversions) is
where the IR's plan put it, and data moves between threads only where the IR says so
(``convert_layout``, reductions, shared memory instructions).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from tilus import dtypes
from tilus.backend.codegen import scalar
from tilus.backend.codegen.arith import common_binary
from tilus.backend.codegen.dtypes_map import is_native, pointer_storage, storage
from tilus.backend.codegen.registry import emitter_for
from tilus.backend.tvm_shim import default_layout, dt, tirx
from tilus.backend.tvm_shim import IRBuilder, TB
from tilus.dtypes import DataType
from tilus.errors import CompilationError
from tilus.ir import expr as E
from tilus.ir import stmt as S
from tilus.ir.functor import instructions, walk
from tilus.ir.inst import AllocateGlobalInst, AllocateSharedInst, Instruction, ReinterpretInst, ViewInst
from tilus.ir.layout import RegisterLayout, SharedLayout
from tilus.ir.program import Program
from tilus.ir.types import REGISTER, PointerType, Tensor

_MISSING = object()
THREAD = E.Var("threadIdx.x", dtypes.int32)     # the thread index in layout index expressions


@dataclass
class RegStorage:
    buf: Any
    layout: RegisterLayout
    dtype: DataType


@dataclass(frozen=True, slots=True)
class SharedStorage:
    """``offset(index)`` (tilus exprs) gives the element offset in ``buf``'s element stream;
    sub-byte tensors live in a uint32 word buffer as a bit stream.

    For the compile-time checks of the fast paths (contiguous, aligned runs): ``base_static`` when
    ``check_offset`` (numpy indices -> offsets) gives the tile's placement up to a shift that keeps
    16-element runs where they are; ``layout`` is the shared layout of an allocation (None for a
    slice); ``root_strides``/``root_period``: the strides and swizzle period of the allocation a
    slice's run-time offsets move through (None when unknown)."""
    buf: Any
    dtype: DataType
    shape: tuple
    offset: Callable[[tuple], Any]
    nbytes: int
    layout: Optional[SharedLayout] = None
    base_static: bool = False
    check_offset: Optional[Callable[[tuple], Any]] = None
    root_strides: Optional[tuple] = None
    root_period: int = 1

    def aligned_runs(self, index: tuple, vec: int) -> bool:
        """Whether the offsets of ``index`` (numpy arrays, one per dimension) form runs of ``vec``
        consecutive, ``vec``-aligned elements along the last axis, by the compile-time placement
        (False where it is not known). An error in the offset function propagates: a bug is not a
        slow path."""
        if not self.base_static or self.check_offset is None:
            return False
        runs = np.asarray(self.check_offset(index), dtype=np.int64).reshape(-1, vec)
        return bool((np.diff(runs, axis=1) == 1).all() and (runs[:, 0] % vec == 0).all())


@dataclass
class GlobalStorage:
    buf: Any            # flat buffer over the pointer (uint8 for sub-byte/low-bit types)
    words: Any          # uint32 alias of the same data (sub-byte stores), or None
    dtype: DataType
    shape: tuple        # tilus exprs
    strides: tuple      # tilus exprs

    def offset(self, index) -> Any:
        total: Any = 0
        for i, st in zip(index, self.strides):
            total = total + i * st
        return total


@dataclass
class Lowered:
    prim_func: Any
    name: str
    grid: tuple          # tilus exprs
    threads: int
    shared_bytes: int
    assumptions: list = field(default_factory=list)


class Lowerer:
    def __init__(self, program: Program):
        self.program = program
        self.shared_bytes = planned_pool_bytes(program)
        self.pool = None
        self.threads = program.num_threads
        self.vars: dict[Any, Any] = {}             # tilus Var/BlockIdx -> TIR expr
        self.mutable: dict[Any, Any] = {}          # tilus Var -> one-element local buffer
        self.tensors: dict[str, Any] = {}          # tensor name -> *Storage
        self.param_buffers: dict[str, Any] = {}    # pointer param name -> flat buffer
        self.aliases: dict[tuple, Any] = {}
        self.versions: dict[str, int] = {}        # tensor name -> number of writes lowered so far
        self.views: dict[str, tuple] = {}          # view output -> (source, its version, reinterpret?)
        self.fused_casts: list[tuple[str, bool]] = []
        self.assumptions: list[str] = []
        self.tx = None
        self._counter = 0
        self._lowered: dict[Any, Any] = {}         # see expr() and lowered()
        self._derived: dict[tuple, Any] = {}       # see derived()
        self.assigned = {s.var for s in walk(program.body) if isinstance(s, S.AssignStmt)}

    # ------------------------------------------------------------------ names and helpers
    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def name(self, name: str, obj):
        return IRBuilder.name(_c_name(name), obj)

    def derived(self, fn: Callable, *args) -> Any:
        """``fn(*args)`` computed once per lowering: for the pure functions of immutable, hashable
        IR values (layouts, shapes, dtypes, ints) that emitters ask about every instruction of a
        kind, e.g. the mma tilings of one dot shape. Keyed by the function and its arguments;
        the result is shared, so callers must not mutate it."""
        key = (fn, *args)
        out = self._derived.get(key, _MISSING)
        if out is _MISSING:
            out = self._derived[key] = fn(*args)
        return out

    def assume(self, text: str) -> None:
        if text not in self.assumptions:
            self.assumptions.append(text)

    def emit(self, call) -> None:
        TB.evaluate(call)

    def store(self, buf, value, indices) -> None:
        if dt(value) != dt(buf):
            value = tirx.Cast(dt(buf), value)
        TB.buffer_store(buf, value, [self.index(i) for i in indices])

    def index(self, i):
        if isinstance(i, (int, np.integer)):
            return tirx.const(int(i), "int32")
        if isinstance(i, E.Expr):
            return self.expr(i)
        return i

    def sync(self) -> None:
        TB.evaluate(TB.tvm_storage_sync("shared"))

    def alloc_local(self, n: int, dtype: str, name: str):
        shape = (max(1, n),)
        buf = TB.alloc_buffer(shape, dtype, scope="local", layout=buffer_layout(shape))
        return self.name(name, buf)

    def shared_at(self, offset: int, n: int, dtype: str, name: str):
        """A view of ``n`` elements of ``dtype`` at byte ``offset`` of the pool (where the
        PlanSharedMemory pass placed the tensor)."""
        if self.pool is None:
            raise CompilationError("internal: shared memory used before the pool exists")
        eb = tirx_dtype_bytes(dtype)
        shape = (max(1, n),)
        buf = TB.decl_buffer(shape, dtype, data=self.pool.data, elem_offset=offset // eb,
                             scope="shared.dyn", layout=buffer_layout(shape))
        return self.name(name, buf)

    # ------------------------------------------------------------------ expressions
    def expr(self, e) -> Any:
        """The TIR of a Tilus expression (a Python number: an int32/float32/bool constant).

        Layout index maps and offsets rebuild the same subexpressions many times, so the TIR of
        each compound expression is memoized for this lowering, keyed by the expression (they
        compare structurally): a TIR expression is immutable and the same node may appear in
        several places. A variable's TIR is where the memo can go stale, so :meth:`define`
        clears it whenever a variable is (re)bound."""
        if not isinstance(e, E.Expr):
            return tirx_const(e)
        if isinstance(e, (E.Var, E.BlockIdx)):
            if e in self.mutable:
                return self.mutable[e][0]
            if e not in self.vars:
                raise CompilationError(f"the variable {e} is not defined where it is used")
            return self.vars[e]
        out = self._lowered.get(e)
        if out is None:
            out = self._lowered[e] = self._lower_expr(e)
        return out

    def lowered(self, key: tuple, build: Callable[[], Any]) -> Any:
        """``build()``: TIR made from the IR values in ``key`` (through :meth:`expr`), memoized
        with the expressions' TIR, so it holds while no variable is rebound."""
        out = self._lowered.get(key)
        if out is None:
            out = self._lowered[key] = build()
        return out

    def define(self, var: E.Expr, value) -> None:
        """Bind the IR variable (or block index) ``var`` to the TIR ``value`` from here on."""
        self.vars[var] = value
        self._lowered.clear()

    def _lower_expr(self, e: E.Expr) -> Any:
        if isinstance(e, E.Const):
            if not is_native(e.dtype):  # a low-bit scalar is its stored code
                return tirx.const(int(e.dtype.encode(np.array([e.value]))[0]), storage(e.dtype))
            return tirx.const(e.value, _scalar_dtype(e.dtype))
        if isinstance(e, E.BinaryOp):
            return self._binary(e)
        if isinstance(e, E.UnaryOp):
            a = self.expr(e.a)
            if e.op == "neg":
                return tirx.const(0, dt(a)) - a if not dt(a).startswith("float") else -a
            if e.op == "not":
                return tirx.Not(_as_bool(a))
            bits = int("".join(ch for ch in dt(a) if ch.isdigit()))
            ones = tirx.const(-1 if dt(a).startswith("int") else (1 << bits) - 1, dt(a))
            return tirx.bitwise_xor(a, ones)            # ~a
        if isinstance(e, E.Cast):
            if isinstance(e.a, E.Const) and e.dtype.is_float and not is_native(e.dtype):
                return self.expr(E.Const(e.a.value, e.dtype))  # encoded now (inf saturates)
            a = self.expr(e.a)
            if not (is_native(e.dtype) and is_native(e.a.dtype)):  # low-bit scalars: stored codes
                return scalar.convert(e.a.dtype, e.dtype, a)
            d = _scalar_dtype(e.dtype)
            if d == "bool":
                return tirx.NE(a, tirx.const(0, dt(a))) if dt(a) != "bool" else a
            return a if dt(a) == d else tirx.Cast(d, a)
        if isinstance(e, E.Select):
            d = _scalar_dtype(e.dtype)
            return tirx.Select(_as_bool(self.expr(e.cond)), _to(self.expr(e.a), d), _to(self.expr(e.b), d))
        raise CompilationError(f"cannot lower the expression {e}")

    def _binary(self, e: E.BinaryOp):
        op = e.op
        a, b = self.expr(e.a), self.expr(e.b)
        if op in ("and", "or"):
            return (tirx.And if op == "and" else tirx.Or)(_as_bool(a), _as_bool(b))
        operand = _scalar_dtype(E.promote(e.a.dtype, e.b.dtype)) if op in E.COMPARISONS \
            else _scalar_dtype(e.dtype)
        if op in ("shl", "shr"):
            a = _to(a, operand)
            b = _to(b, operand)
        else:
            a, b = _to(a, operand), _to(b, operand)
        is_float = operand.startswith("float") or operand == "bfloat16"
        if op == "floordiv":
            return tirx.floor(a / b) if is_float else tirx.floordiv(a, b)
        if op == "mod":
            return tirx.fmod(a, b) if is_float else tirx.floormod(a, b)
        if op == "cdiv":
            return tirx.floordiv(a + b - tirx.const(1, operand), b)
        if op == "min":
            return tirx.min(a, b)
        if op == "max":
            return tirx.max(a, b)
        out = common_binary(op, a, b, is_float)
        if out is not None:
            return out
        raise CompilationError(f"cannot lower the operator {op}")

    # ------------------------------------------------------------------ tensors
    def reg(self, t: Tensor) -> RegStorage:
        st = self.tensors.get(t.name)
        if not isinstance(st, RegStorage):
            raise CompilationError(f"register tensor {t} used before it is defined")
        return st

    def shared(self, t: Tensor) -> SharedStorage:
        st = self.tensors.get(t.name)
        if not isinstance(st, SharedStorage):
            raise CompilationError(f"shared tensor {t} used before it is allocated")
        return st

    def glob(self, t: Tensor) -> GlobalStorage:
        st = self.tensors.get(t.name)
        if not isinstance(st, GlobalStorage):
            raise CompilationError(f"global tensor {t} used before its global_view")
        return st

    def _allocate_registers(self) -> None:
        seen = set()
        for inst in instructions(self.program.body):
            out = getattr(inst, "output", None)
            if isinstance(out, Tensor) and out.scope == REGISTER and out.name not in seen:
                seen.add(out.name)
                if not isinstance(out.layout, RegisterLayout):
                    raise CompilationError(f"register tensor {out} has no layout (run layout inference)")
                if out.layout.num_threads != self.threads:
                    raise CompilationError(f"register tensor {out}: layout {out.layout} is for "
                                           f"{out.layout.num_threads} threads, the block has {self.threads}")
                buf = self.alloc_local(out.layout.local_size, storage(out.dtype), out.name)
                self.tensors[out.name] = RegStorage(buf, out.layout, out.dtype)

    # ------------------------------------------------------------------ statements
    def lower_stmt(self, s: S.Stmt) -> None:
        if isinstance(s, Instruction):
            emitter_for(type(s))(self, s)
            out = getattr(s, "output", None)
            if isinstance(out, Tensor):
                self.versions[out.name] = self.versions.get(out.name, 0) + 1
                self.views.pop(out.name, None)
                if isinstance(s, (ViewInst, ReinterpretInst)) and s.x.dtype is dtypes.uint8:
                    self.views[out.name] = (s.x, self.versions.get(s.x.name, 0),
                                            isinstance(s, ReinterpretInst))
        elif isinstance(s, S.SeqStmt):
            for x in s.stmts:
                self.lower_stmt(x)
        elif isinstance(s, S.ForStmt):
            self._for(s)
        elif isinstance(s, S.IfStmt):
            with TB.If(_as_bool(self.expr(s.cond))):
                with TB.Then():
                    self.lower_stmt(s.then_body)
                if s.else_body is not None:
                    with TB.Else():
                        self.lower_stmt(s.else_body)
        elif isinstance(s, S.WhileStmt):
            with TB.While(_as_bool(self.expr(s.cond))):
                self.lower_stmt(s.body)
        elif isinstance(s, S.BreakStmt):
            TB.Break()
        elif isinstance(s, S.ContinueStmt):
            TB.Continue()
        elif isinstance(s, S.LetStmt):
            self.bind(s.var, self.expr(s.value))
        elif isinstance(s, S.AssignStmt):
            if s.var not in self.mutable:
                raise CompilationError(f"assignment to {s.var}, which no let declares before it")
            buf = self.mutable[s.var][1]
            TB.buffer_store(buf, _to(self.expr(s.value), dt(buf)), [tirx.const(0, "int32")])
        else:
            raise CompilationError(f"cannot lower the statement {type(s).__name__}")

    def bind(self, var: E.Var, value) -> None:
        """Declares the IR scalar ``var`` with the TIR ``value`` (a let; a one-element local
        buffer when an assignment overwrites it later)."""
        d = _scalar_dtype(var.dtype)
        value = _to(value, d)
        if var in self.assigned:
            buf = self.alloc_local(1, d, var.name)
            TB.buffer_store(buf, value, [tirx.const(0, "int32")])
            self.mutable[var] = (buf[0], buf)
            self._lowered.clear()
        else:
            v = tirx.Var(_c_name(var.name), d)
            TB.Bind(value, var=v)
            self.define(var, v)

    @staticmethod
    def _trip_count(s: S.ForStmt, start, stop, step, d: str):
        """Iterations of ``range(start, stop, step)`` (0 when it runs none), for either sign of step."""
        if all(isinstance(x, E.Const) for x in (s.start, s.stop, s.step)):
            return tirx.const(len(range(s.start.value, s.stop.value, s.step.value)), d)
        one = tirx.const(1, d)
        up = tirx.floordiv(stop - start + step - one, step)
        down = tirx.floordiv(start - stop - step - one, tirx.const(0, d) - step)
        if isinstance(s.step, E.Const):
            extent = up if s.step.value > 0 else down
        else:
            extent = tirx.Select(step > tirx.const(0, d), up, down)
        return tirx.max(extent, tirx.const(0, d))

    def _for(self, s: S.ForStmt) -> None:
        start, stop, step = self.expr(s.start), self.expr(s.stop), self.expr(s.step)
        d = _scalar_dtype(s.var.dtype)
        start, stop, step = _to(start, d), _to(stop, d), _to(step, d)
        one = isinstance(s.step, E.Const) and s.step.value == 1
        extent = self._trip_count(s, start, stop, step, d)
        # a run-time extent cannot be a TIR unrolled loop (TVM refuses it): a serial loop whose
        # annotation asks the CUDA printer for ``#pragma unroll`` (0) or ``#pragma unroll n``
        if s.unroll is True:
            frame = TB.unroll(0, extent, dtype=d) if isinstance(extent, tirx.IntImm) \
                else TB.serial(0, extent, annotations={"pragma_unroll_explicit": 0}, dtype=d)
        elif isinstance(s.unroll, int) and s.unroll > 1:
            frame = TB.serial(0, extent, annotations={"pragma_unroll_explicit": s.unroll}, dtype=d)
        else:
            frame = TB.serial(0, extent, dtype=d)
        with frame as i:
            i = self.name(s.var.name + "_i", i) if not one else i
            if one and isinstance(s.start, E.Const) and s.start.value == 0:
                self.define(s.var, i)
            else:
                v = tirx.Var(_c_name(s.var.name), d)
                TB.Bind(start + i * step if not one else start + i, var=v)
                self.define(s.var, v)
            self.lower_stmt(s.body)

    def view_source(self, t: Tensor, reinterpreted: bool = False):
        """The uint8 tile ``t`` was last ``view``-ed (``reinterpret``-ed) from, when neither changed
        since."""
        entry = self.views.get(t.name)
        if entry is None or self.versions.get(entry[0].name, 0) != entry[1] \
                or entry[2] != reinterpreted:
            return None
        return entry[0]

    # ------------------------------------------------------------------ the function
    def build(self) -> Lowered:
        p = self.program
        with IRBuilder() as ib:
            with TB.prim_func():
                TB.func_name(_c_name(p.name))
                for param in p.params:
                    if isinstance(param.dtype, PointerType):
                        h = TB.arg(param.name, TB.handle())
                        n = tirx.Var(_c_name(param.name) + "_len", "int32")
                        buf = TB.match_buffer(h, (n,), pointer_storage(param.dtype.dtype))
                        self.name(param.name, buf)
                        self.param_buffers[param.name] = buf
                        self.define(param, buf.data)
                    else:
                        v = TB.arg(param.name, tirx.Var(_c_name(param.name), _scalar_dtype(param.dtype)))
                        self.define(param, v)
                for ws, name in workspace_params(p):
                    # a global_tensor's workspace: a hidden pointer parameter after the others
                    h = TB.arg(name, TB.handle())
                    n = tirx.Var(_c_name(name) + "_len", "int32")
                    buf = TB.match_buffer(h, (n,), pointer_storage(ws.output.dtype))
                    self.name(name, buf)
                    self.param_buffers[workspace_key(ws)] = buf
                self._open_grid(list(enumerate(p.blocks)))
        func = ib.get()
        return Lowered(func, _c_name(p.name), tuple(p.blocks), self.threads, self.shared_bytes,
                       self.assumptions)

    def _open_grid(self, frames) -> None:
        if frames:
            axis, g = frames[0]
            ext = _to(self.expr(g), "int32")
            with TB.thread_binding(0, ext, thread=f"blockIdx.{'xyz'[axis]}") as b:
                self.define(E.BlockIdx(axis), b)
                self._open_grid(frames[1:])
            return
        for axis in range(3):
            if E.BlockIdx(axis) not in self.vars:
                self.define(E.BlockIdx(axis), tirx.const(0, "int32"))
        with TB.thread_binding(0, self.threads, thread="threadIdx.x") as tx:
            self.tx = tx
            self.define(THREAD, tx)
            # the dynamic shared memory pool, sized by the IR's plan
            if self.shared_bytes:
                shape = (self.shared_bytes,)
                self.pool = self.name("smem", TB.alloc_buffer(shape, "uint8", scope="shared.dyn",
                                                              layout=buffer_layout(shape)))
            self._allocate_registers()
            self.lower_stmt(self.program.body)

    # ------------------------------------------------------------------ parameter buffers
    def param_buffer(self, ptr: E.Expr):
        if not isinstance(ptr, E.Var) or ptr.name not in self.param_buffers:
            raise CompilationError(f"global_view over {ptr}: only pointer parameters can be viewed")
        return self.param_buffers[ptr.name]

    def alias_local(self, buf, dtype: str):
        """A ``dtype`` view of a local buffer's registers (declared where used)."""
        nbytes = int(buf.shape[0]) * tirx_dtype_bytes(dt(buf))
        shape = (nbytes // tirx_dtype_bytes(dtype),)
        alias = TB.decl_buffer(shape, dtype, data=buf.data, scope="local",
                               layout=buffer_layout(shape))
        return self.name(f"{buf.name}_{dtype}", alias)

    def alias(self, buf, dtype: str):
        """A buffer of ``dtype`` over ``buf``'s elements: a DeclBuffer in the current scope
        (declared at each use site; a cached one could be out of scope). A shared tensor's view
        is declared over the pool with the tensor's offset in the new elements: a view over a
        view at an offset would mean different things to TVM (the offset left out) and to the
        simulator (kept), so none is emitted."""
        if dt(buf) == dtype:
            return buf
        n = buf.shape[0]
        eb, ab = tirx_dtype_bytes(dt(buf)), tirx_dtype_bytes(dtype)
        if eb != ab:
            n = tirx.floordiv(n * eb + (ab - 1), ab) if not isinstance(n, tirx.IntImm) \
                else tirx.const(-(-int(n) * eb // ab), "int32")
        data, offset = buf.data, None
        eo = buf.elem_offset
        if eo is not None and not (isinstance(eo, tirx.IntImm) and int(eo.value) == 0):
            if self.pool is None or not (buf.scope() or "").startswith("shared"):
                raise CompilationError(f"internal: a {dtype} view of {buf.name}, which starts at "
                                       f"an offset outside the shared pool")
            if not isinstance(eo, tirx.IntImm) or int(eo.value) * eb % ab:
                raise CompilationError(f"internal: {buf.name} starts at element {eo} of "
                                       f"{dt(buf)}, not at a whole {dtype}")
            data, offset = self.pool.data, int(eo.value) * eb // ab
        alias = TB.decl_buffer((n,), dtype, data=data, scope=buf.scope(),
                               layout=buffer_layout((n,)),
                               **({"elem_offset": offset} if offset is not None else {}))
        return self.name(f"{buf.name}_{dtype}", alias)


def workspaces(program: Program) -> list[AllocateGlobalInst]:
    """The program's ``global_tensor`` instructions, in program order: the kernel's hidden pointer
    parameters, one per instruction, after the program's own."""
    return [x for x in instructions(program) if isinstance(x, AllocateGlobalInst)]


def workspace_params(program: Program) -> list[tuple[AllocateGlobalInst, str]]:
    """Each workspace with the name of its hidden parameter: the tensor's name, with ``_ws``
    appended until it differs from the program's parameters and the earlier workspaces (the
    CUDA kernel's ``<name>_ptr``, the name the launcher's metadata uses)."""
    taken = {param.name for param in program.params}
    out = []
    for ws in workspaces(program):
        name = ws.output.name
        while name in taken:
            name += "_ws"
        taken.add(name)
        out.append((ws, _c_name(name)))
    return out


def workspace_key(inst: AllocateGlobalInst) -> str:
    """The ``param_buffers`` key of a workspace (never a parameter name: it has a space)."""
    return f"workspace {inst.output.name}"


def planned_pool_bytes(program: Program) -> int:
    """Bytes of the pool: the arena PlanSharedMemory laid out, each tensor's end rounded up to a
    word (sub-byte tensors are word buffers). A shared tensor without an offset is an error: the
    program did not go through the planner."""
    total = 0
    for inst in instructions(program.body):
        if isinstance(inst, AllocateSharedInst):
            if inst.offset is None:
                raise CompilationError(f"shared tensor %{inst.output.name} has no offset: plan "
                                       f"shared memory first (tilus.transforms.PlanSharedMemory)")
            layout = inst.output.layout
            nbytes = layout.nbytes(inst.output.dtype) if layout is not None \
                else -(-inst.output.type.size * inst.output.dtype.nbits // 8)
            total = max(total, inst.offset + (-(-nbytes // 4) * 4))
    return total


def tirx_dtype_bytes(d: str) -> int:
    """Bytes of one element of a TIR dtype (``uint32x4``: 16)."""
    if d == "bool":
        return 1
    base, _, lanes = d.partition("x")
    bits = int("".join(ch for ch in base if ch.isdigit()) or 8)
    return max(1, bits // 8) * (int(lanes) if lanes else 1)


def buffer_layout(shape: tuple):
    """``default_layout(shape)``, the layout of a buffer declared in the IR builder; one object per
    shape of plain ints, shared by every such buffer (a TVM layout is immutable, and building one
    is a TVM call per buffer otherwise)."""
    if all(type(n) is int for n in shape):
        return _int_shape_layout(tuple(shape))
    return default_layout(shape)


@functools.lru_cache(maxsize=1024)
def _int_shape_layout(shape: tuple[int, ...]):
    return default_layout(shape)


def _c_name(name: str) -> str:
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return out if out and not out[0].isdigit() else "v_" + out


def _scalar_dtype(dtype) -> str:
    if isinstance(dtype, PointerType):
        return "handle"
    if not is_native(dtype):
        raise CompilationError(f"scalar expressions of the low-bit type {dtype} are not supported "
                               f"by the CUDA backend (use tiles and cast)")
    return dtype.name


def tirx_const(value):
    if isinstance(value, bool):
        return tirx.const(value, "bool")
    if isinstance(value, (int, np.integer)):
        return tirx.const(int(value), "int32")
    return tirx.const(float(value), "float32")


def _to(x, dtype: str):
    if dt(x) == dtype:
        return x
    if dtype == "bool":
        return tirx.NE(x, tirx.const(0, dt(x)))
    return tirx.Cast(dtype, x)


def _as_bool(x):
    return x if dt(x) == "bool" else tirx.NE(x, tirx.const(0, dt(x)))


def lower_program(program: Program) -> Lowered:
    """Lower a Program whose tensors all have layouts (see tilus.transforms) to a PrimFunc (on a
    deep stack: the IR builder re-enters Python once per nested statement)."""
    from tilus.backend.codegen import emitters  # noqa: F401  (registers the emitters)
    from tilus.backend.tvm_shim import with_deep_stack

    return with_deep_stack(lambda: Lowerer(program).build())
