"""The transpiler: constant folding, compile-time parameters, control flow, rebinding, operators."""
import pytest

import tilus
from tilus.ir import inst as I
from tilus.ir import parse, verify
from tilus.ir.functor import instructions, walk
from tilus.ir.stmt import (AssignStmt, ForStmt, LetStmt)
from tilus.ir.types import PointerType


def kinds(program):
    return [type(s).__name__ for s in walk(program)]


def insts(program, cls):
    return [x for x in instructions(program) if isinstance(x, cls)]


def check(program):
    verify(program)
    assert str(parse(str(program))) == str(program)  # the text form round-trips
    return program


class Scale(tilus.Script):
    def __init__(self, block: int):
        super().__init__()
        self.block = block

    def __call__(self, n: tilus.int32, x: ~tilus.float32, y: ~tilus.float32, reps: int):
        self.attrs.blocks = tilus.cdiv(n, self.block * 2)
        self.attrs.warps = 2
        gx = self.global_view(x, dtype=tilus.float32, shape=[n])
        gy = self.global_view(y, dtype=tilus.float32, shape=[n])
        size = self.block * 2          # folds to a Python int
        t = self.load_global(gx, offsets=[self.blockIdx.x * size], shape=[size])
        for _ in range(reps):          # compile-time loop: unrolled
            t = t * 2.0
        self.store_global(gy, t, offsets=[self.blockIdx.x * size])


def test_parameters_and_constant_folding():
    p = check(Scale(64).program(reps=3))
    assert [v.name for v in p.params] == ["n", "x", "y"]
    assert p.params[0].dtype is tilus.int32 and p.params[1].dtype == PointerType(tilus.float32)
    assert p.warps == 2 and str(p.blocks[0]) == "cdiv(n, 128)"
    (load,) = insts(p, I.LoadGlobalInst)
    assert load.output.shape == (128,) and load.output.name == "t"
    assert len(insts(p, I.BinaryInst)) == 3
    assert dict(p.consts) == {"block": 64, "reps": 3}


def test_one_program_per_compile_time_value():
    k = Scale(32)
    assert k.program(reps=1) is k.program(reps=1)
    assert k.program(reps=2) is not k.program(reps=1)
    assert len(insts(k.program(reps=2), I.BinaryInst)) == 2
    prog, args = k.instantiate(10, "X", "Y", 2)
    assert prog is k.program(reps=2) and args == [10, "X", "Y"]
    with pytest.raises(tilus.errors.TilusError, match="reps"):
        k.program()


class Control(tilus.Script):
    def __call__(self, n: tilus.int32, out: ~tilus.int32):
        self.attrs.blocks = 1
        g = self.global_view(out, dtype=tilus.int32, shape=[4])
        acc = self.register_tensor(dtype=tilus.int32, shape=[4], init=0)
        s = 0
        k = n * 2
        for i in self.range(n, unroll=2):
            if i % 2 == 0:
                continue
            if i > 10:
                break
            s = s + i
            acc = acc + i
        j = 0
        while j < n:
            j += 1
            acc += 1
        if n > 3:
            k = k + 1
        else:
            k = k - 1
        acc = acc + k + s + j
        self.store_global(g, acc, offsets=[0])


def test_control_flow_statement_kinds():
    p = check(Control().program())
    ks = kinds(p)
    for kind in ("ForStmt", "IfStmt", "WhileStmt", "BreakStmt", "ContinueStmt", "LetStmt",
                 "AssignStmt", "AssignInst"):
        assert kind in ks, kind
    (loop,) = [s for s in walk(p) if isinstance(s, ForStmt)]
    assert loop.unroll == 2 and str(loop.stop) == "n"
    lets = {s.var.name: s for s in walk(p) if isinstance(s, LetStmt)}
    assert set(lets) >= {"s", "k", "j"}  # loop-carried Python 0s become variables
    assigns = [s for s in walk(p) if isinstance(s, AssignStmt)]
    assert {a.var.name for a in assigns} >= {"s", "j", "k"}
    # acc stays one tensor: updated in place inside the loops
    assert [a.output.name for a in insts(p, I.AssignInst)] == ["acc"]
    inplace = [b for b in insts(p, I.BinaryInst) if b.output.name == "acc"]
    assert len(inplace) == 1 and inplace[0].a.name == "acc"  # acc += 1 in the while loop


class PyBranches(tilus.Script):
    def __init__(self, flag: bool):
        super().__init__()
        self.flag = flag

    def __call__(self, out: ~tilus.float32):
        g = self.global_view(out, dtype=tilus.float32, shape=[8])
        x = self.register_tensor(dtype=tilus.float32, shape=[8], init=1.0)
        if self.flag and 3 > 2:
            x = self.exp(x)
        else:
            x = self.sqrt(x)
        i = 0
        while i < 3:   # compile-time while: unrolled
            x = x + 1.0
            i += 1
        self.store_global(g, x, offsets=[0])


def test_python_branches_and_loops_are_decided_at_build_time():
    p1, p2 = PyBranches(True).program(), PyBranches(False).program()
    assert [u.op for u in insts(p1, I.UnaryInst)] == ["exp"]
    assert [u.op for u in insts(p2, I.UnaryInst)] == ["sqrt"]
    assert "IfStmt" not in kinds(p1) and "WhileStmt" not in kinds(p1)
    assert len(insts(p1, I.BinaryInst)) == 3


class Operators(tilus.Script):
    def __call__(self, out: ~tilus.int32, f: ~tilus.float32):
        g = self.global_view(out, dtype=tilus.int32, shape=[4, 4])
        gf = self.global_view(f, dtype=tilus.float32, shape=[4, 4])
        a = self.load_global(g, offsets=[0, 0], shape=[4, 4])
        b = self.load_global(g, offsets=[0, 0], shape=[1, 4])
        r = [a + b, a - b, a * b, a // b, a % b, a & b, a | b, a ^ b, a << 1, a >> 1,
             a < b, a <= b, a > b, a >= b, a == b, a != b, 3 - a, 2 * a, -a, ~a]
        x = self.load_global(gf, offsets=[0, 0], shape=[4, 4])
        y = 1.0 / x
        z = self.where(x > 0.5, x, y)
        m = self.maximum(x, z)
        s = self.sum(m, dim=1, keepdim=True)
        w = x if x is None else self.cast(self.max(x, dim=0), dtype=tilus.float16)
        self.store_global(gf, m - s, offsets=[0, 0])


def test_operators_on_tensors():
    p = check(Operators().program())
    ops = [(b.op, type(b.a).__name__, type(b.b).__name__) for b in insts(p, I.BinaryInst)]
    names = [o[0] for o in ops]
    assert names[:16] == ["add", "sub", "mul", "div", "mod", "bitand", "bitor", "bitxor", "shl",
                          "shr", "lt", "le", "gt", "ge", "eq", "ne"]
    assert ops[16] == ("sub", "Const", "Tensor") and ops[17] == ("mul", "Const", "Tensor")
    assert ops[18][:2] == ("div", "Const")          # 1.0 / x: reversed scalar
    assert [u.op for u in insts(p, I.UnaryInst)] == ["neg", "bitnot"]
    cmp = [b for b in insts(p, I.BinaryInst) if b.op == "lt"][0]
    assert cmp.output.dtype is tilus.bool and cmp.output.shape == (4, 4)
    assert insts(p, I.WhereInst) and insts(p, I.CastInst)
    (red_sum,) = [r for r in insts(p, I.ReduceInst) if r.op == "sum"]
    assert red_sum.output.shape == (4, 1)
    assert any(b.op == "maximum" for b in insts(p, I.BinaryInst))


class Scalars(tilus.Script):
    def __call__(self, n: tilus.int32, m: tilus.int32, out: ~tilus.int32):
        g = self.global_view(out, dtype=tilus.int32, shape=[n])
        a = n + m * 2 - 1
        b = min(n, m, 7)
        c = (n > 2 and m < 3) or not (n == m)
        d = n if c else m
        e: tilus.int64 = n
        self.attrs.blocks = [tilus.cdiv(n, 4), 2]
        x = self.register_tensor(dtype=tilus.int32, shape=[4], init=a + b + d)
        self.store_global(g, x, offsets=[self.blockIdx.y * 4 + e])


def test_scalar_expressions():
    p = check(Scalars().program())
    lets = {s.var.name: s.value for s in walk(p) if isinstance(s, LetStmt)}
    assert str(lets["a"]) == "n + m * 2 - 1"
    assert str(lets["b"]) == "min(min(n, m), 7)"
    assert lets["c"].dtype is tilus.bool and "||" in str(lets["c"])
    assert str(lets["d"]).startswith("select(")
    assert lets["e"].dtype is tilus.int64
    assert len(p.blocks) == 2


class Layouts(tilus.Script):
    def __call__(self, out: ~tilus.float32):
        from_layout = tilus.ir.layout.local(2, 1) * tilus.ir.layout.spatial(8, 4) \
            * tilus.ir.layout.local(1, 2)
        g = self.global_view(out, dtype=tilus.float32, shape=[16, 8])
        acc = self.register_tensor(dtype=tilus.float32, shape=[16, 8], init=0.0)
        self.annotate_layout(acc, from_layout)
        acc = acc + 1.0
        self.store_global(g, acc, offsets=[0, 0])


def test_annotate_layout_reaches_the_tensor_type():
    import tilus.ir.layout  # noqa: F401

    p = Layouts().program()
    alloc = insts(p, I.AllocateRegisterInst)[0]
    assert alloc.output.layout is not None and alloc.output.layout.shape == (16, 8)
    add = insts(p, I.BinaryInst)[0]
    assert add.a.layout == alloc.output.layout      # every use of %acc carries it
    assert add.output.layout is None


class Helpers(tilus.Script):
    def __init__(self):
        super().__init__()
        self.tile = [4, 8]

    def load_tile(self, g, row):
        rows, cols = self.tile
        x = self.load_global(g, offsets=[row * rows, 0], shape=[rows, cols])
        for k in self.range(2):
            x = x * 2.0
        return x

    def __call__(self, m: tilus.int32, a: ~tilus.float32):
        ga = self.global_view(a, dtype=tilus.float32, shape=[m, 8])
        x = self.load_tile(ga, self.blockIdx.x)
        y = twice(self, x)
        sizes = [s * 2 for s in self.tile if s > 4]
        self.store_global(ga, self.repeat(y, repeats=[1, 1]), offsets=[sizes[0] * 0, 0])


def twice(script, x):      # a plain Python helper: runs as Python
    return script.cast(script.cast(x, dtype=tilus.float16), dtype=tilus.float32)


def test_helper_methods_are_transpiled_and_functions_run():
    p = check(Helpers().program())
    assert "ForStmt" in kinds(p)
    assert len(insts(p, I.CastInst)) == 2
    assert [a.output.name for a in insts(p, I.AssignInst)] == ["x"]  # the loop updates x in place
