"""Hypothesis strategies for random valid Tilus programs, built with ProgramBuilder.

``programs()`` draws a kernel with scalar and pointer parameters (sub-byte pointees included), global
views, loads and stores, elementwise instructions with tensor and scalar operands, reductions, dot,
view, cast, shared memory, loops, branches, while loops with break, lets and assignments, nested.
Every program it draws passes ``tilus.ir.verify``.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

from tilus import dtypes
from tilus.errors import IRError
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import (BlockIdx, Const, Var, cast, cdiv, const, fits, logical_and, logical_not,
                           logical_or)
from tilus.ir.expr import maximum, minimum, select
from tilus.ir.types import PointerType, Tensor

D = dtypes
POINTEE = [D.float32, D.float16, D.bfloat16, D.int8, D.uint8, D.int32, D.uint4, D.int3,
           D.uint1, D.float6_e3m2, D.float4_e2m1, D.float8_e4m3, D.int16]
SCALAR_PARAM = [D.int32, D.int64, D.uint8, D.int16, D.float32, D.float16, D.bool]
TILE = [1, 2, 4, 8, 16]
INT32 = D.int32
# repeat and broadcast grow tiles only this small, so that every tile fits one warp's registers
MAX_GROWN = 256


class _Gen:
    def __init__(self, draw):
        self.draw = draw
        self.b = ProgramBuilder(draw(st.sampled_from(["k", "kern", "vec_add", "matmul_q4"])))
        self.scalars: list[list[Var]] = [[]]     # readable int/float/bool scalars, per scope
        self.lets: list[list[Var]] = [[]]        # assignable scalars, per scope
        self.tensors: list[list[Tensor]] = [[]]  # visible tensors, per scope
        self.pointers: list[Var] = []
        self.loop = 0

    # ----- picking ---------------------------------------------------------------------------
    def pick(self, items):
        return self.draw(st.sampled_from(list(items)))

    def flag(self) -> bool:
        return self.draw(st.booleans())

    def visible(self, scope=None, pred=lambda t: True) -> list[Tensor]:
        out = [t for level in self.tensors for t in level]
        return [t for t in out if (scope is None or t.scope == scope) and pred(t)]

    def ints(self) -> list[Var]:
        return [v for level in self.scalars for v in level if v.dtype.is_integer]

    def add(self, t: Tensor) -> Tensor:
        self.tensors[-1].append(t)
        return t

    # ----- expressions -----------------------------------------------------------------------
    def int_expr(self, depth: int = 2, block_idx: bool = True, big: bool = True):
        """An int32 expression; ``big`` allows constants of any int32 size (not for loop bounds:
        TVM takes minutes over loops it folds to ~1e9 iterations)."""
        leaves = self.ints()
        choice = self.draw(st.integers(0, 9 if depth > 0 else 3))
        if choice == 0 or (choice == 1 and not leaves):
            return const(self.draw(st.integers(-300, 300)))
        if choice == 1:
            v = self.pick(leaves)
            return v if v.dtype is D.int32 else cast(v, D.int32)
        if choice == 2:
            return BlockIdx(self.draw(st.integers(0, 2))) if block_idx else const(3)
        if choice == 3:
            wide = (INT32.min_value, INT32.max_value) if big else (-300, 300)
            return const(self.draw(st.integers(*wide)), D.int64) if self.flag() \
                else const(self.draw(st.integers(0, 100)))
        a = self.int_expr(depth - 1, block_idx, big)
        b = self.int_expr(depth - 1, block_idx, big)
        op = self.pick(["+", "-", "*", "//", "%", "min", "max", "cdiv", "select", "shl", "&"])
        if op in ("//", "%", "cdiv"):
            b = const(self.draw(st.integers(1, 9)))
        try:
            e = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                 "//": lambda: a // b, "%": lambda: a % b, "min": lambda: minimum(a, b),
                 "max": lambda: maximum(a, b), "cdiv": lambda: cdiv(a, b),
                 "select": lambda: select(self.bool_expr(0), a, b),
                 "shl": lambda: a << 2, "&": lambda: a & b}[op]()
        except IRError:  # constant folding that overflows: keep it simple
            return a
        # indices are int32 on the GPU: keep every constant in int32's range
        return e if not isinstance(e, Const) or fits(e.value, INT32) else a

    def bool_expr(self, depth: int = 1):
        choice = self.draw(st.integers(0, 4 if depth > 0 else 1))
        if choice == 0:
            return const(self.flag())
        if choice == 1:
            a, b = self.int_expr(1), self.int_expr(1)
            return self.pick([a < b, a <= b, a > b, a >= b, (a - b) < 1])
        if choice == 2:
            return logical_not(self.bool_expr(depth - 1))
        if choice == 3:
            return logical_and(self.bool_expr(depth - 1), self.bool_expr(depth - 1))
        return logical_or(self.bool_expr(depth - 1), self.bool_expr(depth - 1))

    def scalar_value(self, dtype):
        if dtype.is_bool:
            return self.flag()
        if dtype.is_float:
            v = self.draw(st.floats(allow_nan=False, width=16))
            return v
        lo, hi = (-(1 << (dtype.nbits - 1)), (1 << (dtype.nbits - 1)) - 1) if dtype.is_signed \
            else (0, (1 << min(dtype.nbits, 16)) - 1)
        return self.draw(st.integers(lo, hi))

    # ----- statements --------------------------------------------------------------------------
    def global_view(self):
        ptr = self.pick(self.pointers)
        n = self.pick(self.ints()[:3] or [const(64)])
        rank = self.draw(st.integers(1, 2))
        shape = [n] if rank == 1 else [n, const(self.pick([16, 32, 64]))]
        strides = None if self.flag() else [const(1)] * rank
        self.add(self.b.global_view(ptr, ptr.dtype.dtype, shape, strides))

    def load(self):
        gs = self.visible("global")
        if not gs:
            return self.global_view()
        g = self.pick(gs)
        rank = self.draw(st.integers(0 if g.type.rank == 1 else 1, g.type.rank))
        shape = [self.pick(TILE) for _ in range(rank)]
        dims = None
        if rank == 1 and g.type.rank == 2 and self.flag():
            dims = [self.draw(st.integers(0, 1))]
        other = None
        if self.flag() and not g.dtype.is_lowbit:
            other = self.scalar_value(g.dtype)
        offsets = [self.int_expr() for _ in range(g.type.rank)]
        self.add(self.b.load_global(g, offsets, shape, dims=dims, other=other))

    def store(self):
        pairs = [(g, x) for g in self.visible("global") for x in self.visible("register")
                 if x.dtype is g.dtype and x.type.rank <= g.type.rank]
        if not pairs:
            return self.load()
        g, x = self.pick(pairs)
        self.b.store_global(g, x, [self.int_expr() for _ in range(g.type.rank)])

    def register(self):
        dtype = self.pick([D.float32, D.float16, D.int32, D.uint4, D.int8, D.bool, D.float6_e3m2])
        shape = [self.pick(TILE) for _ in range(self.draw(st.integers(1, 2)))]
        init = None if self.flag() else self.scalar_value(dtype)
        self.add(self.b.register_tensor(dtype, shape, init=init))

    def elementwise(self):
        regs = self.visible("register", lambda t: not t.dtype.is_bool)
        if not regs:
            return self.register()
        x = self.pick(regs)
        kind = self.draw(st.integers(0, 4))
        if kind == 0:
            ops = ["neg", "abs"] + (["exp", "log", "sqrt", "rsqrt"] if x.dtype.is_float else []) \
                + (["bitnot"] if x.dtype.is_integer else [])
            self.add(self.b.unary(self.pick(ops), x))
            return
        ops = ["add", "sub", "mul", "maximum", "minimum", "lt", "ge", "eq", "ne"] + \
              (["div"] if x.dtype.is_float else ["bitand", "bitor", "bitxor", "shl", "shr", "mod"])
        op = self.pick(ops)
        partners = self.visible("register", lambda t: t.dtype is x.dtype and (
            t.shape == x.shape or t.shape == x.shape[-1:] or math.prod(t.shape) == 1 and t.type.rank <= x.type.rank))
        if kind == 1 and partners:
            y = self.pick(partners)
            a, b = (x, y) if self.flag() else (y, x)
        else:
            s = self.scalar_value(x.dtype) if not x.dtype.is_float else self.draw(
                st.sampled_from([2.0, -1.5, 0.0, 1e-05, float("inf"), 3.0]))
            if op in ("shl", "shr"):  # a constant amount is below the width shifts compute in
                s = self.draw(st.integers(0, 31))
            a, b = (x, s) if self.flag() else (s, x)
        # Sometimes write the result back into x (in place), when it has x's type.
        out = x if (op not in ("lt", "ge", "eq", "ne") and a is x and not isinstance(b, Tensor)
                    and self.flag()) else None
        t = self.b.binary(op, a, b, out=out)
        if out is None:
            self.add(t)

    def where(self):
        conds = self.visible("register", lambda t: t.dtype.is_bool)
        if not conds:
            regs = self.visible("register", lambda t: not t.dtype.is_bool)
            if not regs:
                return self.register()
            x = self.pick(regs)
            self.add(self.b.binary("lt", x, self.scalar_value(x.dtype) if not x.dtype.is_float else 0.5))
            return
        c = self.pick(conds)
        values = self.visible("register", lambda t: not t.dtype.is_bool and t.shape == c.shape)
        if not values:
            return self.register()
        a = self.pick(values)
        other = self.scalar_value(a.dtype) if not a.dtype.is_float else -2.5
        self.add(self.b.where(c, a, other) if self.flag() else self.b.where(c, other, a))

    def reshape_like(self):
        regs = self.visible("register")
        if not regs:
            return self.register()
        x = self.pick(regs)
        kind = self.draw(st.integers(0, 6))
        if kind == 0 and x.type.rank >= 1:
            self.add(self.b.reduce(self.pick(["sum", "max", "min"]), x,
                                   self.draw(st.integers(0, x.type.rank - 1)), keepdim=self.flag()))
        elif kind == 1:
            self.add(self.b.cast(x, self.pick([D.float32, D.float16, D.int32, D.uint4, D.float4_e2m1])))
        elif kind == 2 and x.type.rank == 2:
            self.add(self.b.transpose(x))
        elif kind == 3 and x.type.rank < 3:
            u = self.add(self.b.unsqueeze(x, self.draw(st.integers(0, x.type.rank))))
            if self.flag():
                self.add(self.b.squeeze(u, list(u.shape).index(1)))
        elif kind == 4 and x.type.rank >= 1 and x.type.size <= MAX_GROWN:
            self.add(self.b.repeat(x, [self.draw(st.integers(1, 3)) for _ in x.shape]))
        elif kind == 5 and x.type.rank >= 1 and x.type.size <= MAX_GROWN:
            self.add(self.b.broadcast(x, [2, *x.shape]))
        elif x.type.rank >= 1:
            bits = x.shape[-1] * x.dtype.nbits
            targets = [d for d in (D.uint8, D.uint4, D.int2, D.uint1, D.float16, D.int32, D.uint3)
                       if bits % d.nbits == 0]
            self.add(self.b.view(x, self.pick(targets)))
            if self.flag():
                others = self.visible("register", lambda t: t.dtype is x.dtype and t.shape == x.shape)
                self.b.assign(self.pick(others), x)

    def dot(self):
        m, n, k = self.pick([1, 16]), self.pick([8, 16]), self.pick([4, 16])
        ab = self.pick([D.float16, D.int8, D.float8_e4m3])
        acc_t = D.int32 if ab is D.int8 else D.float32
        # the operands serve the dot only: elementwise work between A and B fragments needs
        # convert_layout, which layout inference does not insert yet
        a = self.b.register_tensor(ab, [m, k], init=1)
        bb = self.b.register_tensor(ab, [k, n], init=1)
        acc = self.add(self.b.register_tensor(acc_t, [m, n], init=0))
        if self.flag():
            self.b.dot(a, bb, acc, out=acc)
        else:
            self.add(self.b.dot(a, bb, acc))

    def shared(self):
        gs = self.visible("global")
        dtype = self.pick([D.float16, D.uint4, D.int8])
        shape = [self.pick([4, 16]), self.pick([8, 16])]
        s = self.add(self.b.shared_tensor(dtype, shape))
        matching = [g for g in gs if g.dtype is dtype and g.type.rank == 2]
        if matching:
            self.b.copy_async(self.pick(matching), s, [self.int_expr(), const(0)])
            self.b.copy_async_commit_group()
            pending = self.draw(st.integers(0, 2))
            if pending:  # a wait that may leave this copy in flight, then one that ends it
                self.b.copy_async_wait_group(pending)
            self.b.copy_async_wait_group(0)
        self.b.sync()
        x = self.add(self.b.load_shared(s))
        if self.flag():
            row = const(self.draw(st.integers(0, shape[0] - 1)))
            part = self.add(self.b.slice_shared(s, [row, const(0)], [shape[1]], dims=[1]))
            self.add(self.b.load_shared(part))
        self.b.store_shared(s, x)
        if self.flag():
            self.b.free_shared(s)
            self.tensors[-1].remove(s)

    def misc(self):
        kind = self.draw(st.integers(0, 1))
        regs = self.visible("register")
        if kind == 0 and regs:
            self.b.print_tensor(self.pick(regs), self.draw(st.text(max_size=8)))
        else:
            semas = self.visible("global", lambda t: t.dtype is D.int32)
            if semas:
                g = self.pick(semas)
                f = self.b.lock_semaphore if self.flag() else self.b.release_semaphore
                f(g, [self.int_expr(1) for _ in g.shape], self.int_expr(1))
            else:
                self.b.sync()

    def let(self):
        dtype = self.pick([D.int32, D.int32, D.int64, D.float32, D.bool])
        value = self.bool_expr() if dtype.is_bool else self.int_expr()
        v = self.b.let("k", value, dtype=dtype)
        self.scalars[-1].append(v)
        self.lets[-1].append(v)

    def assign(self):
        lets = [v for level in self.lets for v in level]
        if not lets:
            return self.let()
        v = self.pick(lets)
        self.b.assign(v, self.bool_expr() if v.dtype.is_bool else self.int_expr() + 1)

    def nested(self, depth: int):
        kind = self.draw(st.integers(0, 2))
        if kind == 0:
            unroll = self.draw(st.sampled_from([None, None, 2, 4, True]))
            start, stop = self.int_expr(1, big=False), self.int_expr(1, big=False)
            with self.b.for_range(start, stop, self.pick([1, 2, const(1)]), unroll=unroll) as i:
                self.enter(i)
                self.block(depth - 1)
                if self.flag():
                    with self.b.if_then(i > 3):
                        self.b.continue_() if self.flag() else self.b.break_()
                self.leave()
        elif kind == 1:
            with self.b.if_then(self.bool_expr()):
                self.enter()
                self.block(depth - 1)
                self.leave()
            if self.flag():
                with self.b.otherwise():
                    self.enter()
                    self.block(depth - 1)
                    self.leave()
        else:
            k = self.b.let("w", 0)
            self.scalars[-1].append(k)
            with self.b.while_loop(k < self.draw(st.integers(1, 5))):
                self.enter()
                self.b.assign(k, k + 1)
                self.block(depth - 1)
                with self.b.if_then(k > 2):
                    self.b.break_()
                self.leave()

    def enter(self, var=None):
        self.scalars.append([var] if var is not None else [])
        self.lets.append([])
        self.tensors.append([])

    def leave(self):
        self.scalars.pop()
        self.lets.pop()
        self.tensors.pop()

    def block(self, depth: int, size: int = 4):
        count = self.draw(st.integers(0, size))
        makers = [self.global_view, self.load, self.store, self.register, self.elementwise,
                  self.elementwise, self.where, self.reshape_like, self.reshape_like, self.dot,
                  self.shared, self.misc, self.let, self.assign]
        for _ in range(count):
            if depth > 0 and self.draw(st.integers(0, 5)) == 0:
                self.nested(depth)
            else:
                self.pick(makers)()

    def program(self):
        b = self.b
        n = b.param("n", D.int32)
        self.scalars[0].append(n)
        for i, dtype in enumerate(self.draw(st.lists(st.sampled_from(SCALAR_PARAM), max_size=3))):
            v = b.param(f"s{i}", dtype)
            if not dtype.is_float and not dtype.is_bool:
                self.scalars[0].append(v)
        for i, dtype in enumerate(self.draw(st.lists(st.sampled_from(POINTEE), min_size=1, max_size=4))):
            self.pointers.append(b.param(f"p{i}", PointerType(dtype)))
        grid_vars = [v for v in b.params if isinstance(v.dtype, dtypes.DataType) and v.dtype.is_integer]
        rank = self.draw(st.integers(1, 3))
        b.blocks = tuple(self.pick([cdiv(n, 128), const(4), grid_vars[-1] * 2 + 1, minimum(n, 7)])
                         for _ in range(rank))
        b.warps = self.draw(st.integers(1, 32))
        if self.flag():
            b.consts = [("block", self.draw(st.integers(-5, 512))), ("dtype", self.pick(POINTEE)),
                        ("tag", self.draw(st.text(max_size=5))), ("shape", (16, 8)),
                        ("scale", 0.5), ("on", self.flag()), ("nothing", None)]
        self.global_view()
        self.block(depth=2, size=10)
        return b.finish()


@st.composite
def programs(draw):
    """A random valid Program (see the module docstring)."""
    return _Gen(draw).program()
