"""Transpiled kernels run in the interpreter with the meaning Python gives their source."""
import numpy as np
import pytest
import torch

import tilus
from tilus.errors import ArgumentError, TilusError


class LoopCarried(tilus.Script):
    def __call__(self, n: tilus.int32, out: ~tilus.int32, rows: int):
        g = self.global_view(out, dtype=tilus.int32, shape=[rows, 4])
        acc = self.register_tensor(dtype=tilus.int32, shape=[rows, 4], init=0)
        s = 0
        for i in self.range(n):
            if i % 3 == 0:
                continue
            if i >= 10:
                break
            s = s + i                 # loop-carried scalar
            acc = acc + i             # loop-carried tensor
        j = 0
        while j * j < n:
            j += 1
        acc += s * 1000 + j * 100000
        for r in range(rows):         # compile-time loop: unrolled
            acc = acc + r
        self.store_global(g, acc, offsets=[0, 0])


def reference(n, rows):
    s = sum(i for i in range(min(n, 10)) if i % 3 != 0)
    j = 0
    while j * j < n:
        j += 1
    return s + s * 1000 + j * 100000 + sum(range(rows))


@pytest.mark.parametrize("n", [0, 1, 5, 9, 30])
def test_loop_carried_values(n):
    out = np.zeros((2, 4), np.int32)
    LoopCarried()(n, out, 2)       # `rows` (int) is a compile-time parameter, given positionally
    assert (out == reference(n, 2)).all()


def test_compile_time_argument_by_keyword_and_cache():
    k = LoopCarried()
    out = np.zeros((3, 4), np.int32)
    k(7, out, rows=3)
    assert (out == reference(7, 3)).all()
    assert len(k.__dict__["_tilus_programs"]) == 1
    with pytest.raises(ArgumentError, match="compile-time int"):
        k(7, out, 2.5)


class CarriedList(tilus.Script):
    """Loop-carried tiles kept in a Python list, updated with the explicit assign(out, x): a
    Fibonacci pair per element, so a wrong copy order or a missing copy shows."""

    def __call__(self, n: tilus.int32, out: ~tilus.int32):
        g = self.global_view(out, dtype=tilus.int32, shape=[2, 4])
        pair = [self.register_tensor(dtype=tilus.int32, shape=[1, 4], init=0),
                self.register_tensor(dtype=tilus.int32, shape=[1, 4], init=1)]
        for i in self.range(n):
            following = [pair[1], pair[0] + pair[1]]
            for cur, nxt in zip(pair, following):
                self.assign(cur, nxt)
        self.store_global(g, pair[0], offsets=[0, 0])
        self.store_global(g, pair[1], offsets=[1, 0])


@pytest.mark.parametrize("n", [0, 1, 7])
def test_assign_updates_tiles_held_in_a_list(n):
    out = np.zeros((2, 4), np.int32)
    CarriedList()(n, out)
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    assert (out[0] == a).all() and (out[1] == b).all()
    with pytest.raises(TilusError, match="assign's destination"):
        class Bad(tilus.Script):
            def __call__(self, out: ~tilus.int32):
                g = self.global_view(out, dtype=tilus.int32, shape=[4])
                self.assign(g, self.register_tensor(dtype=tilus.int32, shape=[4], init=0))
        Bad()(np.zeros(4, np.int32))


class Branches(tilus.Script):
    def __call__(self, n: tilus.int32, out: ~tilus.float32):
        g = self.global_view(out, dtype=tilus.float32, shape=[8])
        x = self.register_tensor(dtype=tilus.float32, shape=[8], init=1.0)
        k = 0
        if n > 5:
            x = x * 3.0
            k = 1
        elif n > 2:
            x = -x
            k = 2
        else:
            k = 3
        y = self.where(x > 0.0, x, 0.5 * x) + k
        self.store_global(g, y, offsets=[0])


@pytest.mark.parametrize("n,expected", [(7, 4.0), (3, 1.5), (0, 4.0)])
def test_branches(n, expected):
    out = torch.zeros(8)
    Branches()(n, out)
    assert torch.all(out == expected)


class CallsHelper(tilus.Script):
    def bump(self, t, times):
        for _ in self.range(times):
            t = t + 1.0        # a parameter rebound in a loop: the caller's tensor is not changed
        return t

    def __call__(self, out: ~tilus.float32):
        g = self.global_view(out, dtype=tilus.float32, shape=[2, 4])
        x = self.register_tensor(dtype=tilus.float32, shape=[4], init=0.0)
        y = self.bump(x, 3)
        self.store_global(g, self.unsqueeze(x, dim=0), offsets=[0, 0])
        self.store_global(g, self.unsqueeze(y, dim=0), offsets=[1, 0])


def test_helper_method_semantics():
    out = np.full((2, 4), -1, np.float32)
    CallsHelper()(out)
    assert (out[0] == 0).all() and (out[1] == 3).all()


class Reductions(tilus.Script):
    def __call__(self, m: tilus.int32, x: ~tilus.float32, y: ~tilus.float32):
        gx = self.global_view(x, dtype=tilus.float32, shape=[m, 8])
        gy = self.global_view(y, dtype=tilus.float32, shape=[3, m])
        t = self.load_global(gx, offsets=[0, 0], shape=[4, 8])
        tt = self.transpose(t)
        self.store_global(gy, self.unsqueeze(self.sum(tt, dim=0), dim=0), offsets=[0, 0])
        self.store_global(gy, self.unsqueeze(self.max(t, dim=-1), dim=0), offsets=[1, 0])
        r = self.min(t, dim=1, keepdim=True)
        self.store_global(gy, self.transpose(self.abs(r) * 2.0 - 1.0), offsets=[2, 0])


def test_reductions_and_shapes():
    x = torch.randn(4, 8)
    y = torch.zeros(3, 4)
    Reductions()(4, x, y)
    assert torch.allclose(y[0], x.sum(1), atol=1e-6)
    assert torch.equal(y[1], x.max(1).values)
    assert torch.allclose(y[2], x.min(1).values.abs() * 2 - 1)


def test_cuda_tensors_take_the_compiled_path(monkeypatch):
    from tilus import jit
    from tilus.ir.program import as_program

    class FakeCuda:
        is_cuda = True

    seen = []

    def fake_compiled_kernel(kernel, arch=None, **consts):
        seen.append(as_program(kernel, **consts).name)
        return lambda *args: ("launched", len(args))

    monkeypatch.setattr(jit, "compiled_kernel", fake_compiled_kernel)
    monkeypatch.setenv("TILUS_ARCH", "sm_90")
    assert Branches()(3, FakeCuda()) == ("launched", 2)
    assert seen == ["Branches"]


def test_kernel_params_are_classified():
    params = {p.name: p for p in LoopCarried.kernel_params()}
    assert params["rows"].is_const and not params["n"].is_const
    assert tilus.Script.__call__ is LoopCarried.__call__  # the body was moved aside


def _typed_copy(dtype):
    """A kernel class made by a factory: each one's closure holds its own dtype."""

    class Copy(tilus.Script):
        def __call__(self, n: tilus.int32, a: ~tilus.uint8):
            self.attrs.warps = 1
            g = self.global_view(a, dtype=dtype, shape=[n])
            self.store_global(g, self.load_global(g, offsets=[0], shape=[32]), offsets=[0])

    return Copy()


def test_kernels_made_by_one_factory_keep_their_own_closures():
    f16, i4 = _typed_copy(tilus.float16).program(), _typed_copy(tilus.int4).program()
    assert "global[float16" in str(f16) and "global[int4" in str(i4)
