"""Issue 14, item 13: programs the verifier accepts that the backend used to fail on (or get
wrong), found by tests/reliability/test_verifier_property.py. Each is lowered, run by the CPU
simulator of the lowered code and compared with the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import tilus

pytest.importorskip("tilus.simulator")


def run_both(kernel, n: int) -> np.ndarray:
    """``kernel(n, out)`` in the simulator and in the interpreter; returns the ``out`` they agree on."""
    from tilus.simulator import run_prim_func
    from tilus.simulator.machine import as_prim_func

    simulated, interpreted = np.zeros(8, np.int32), np.zeros(8, np.int32)
    run_prim_func(as_prim_func(kernel), [n, simulated])
    tilus.interpret(kernel, n, interpreted)
    np.testing.assert_array_equal(simulated, interpreted)
    return simulated


class Loop(tilus.Script):
    """out[0] = iterations of range(start, stop, step), out[1] = the sum of the loop variable; a
    None bound is the run-time n (a None step is 3 - n)."""

    def __init__(self, start, stop, step):
        super().__init__()
        self.start, self.stop, self.step = start, stop, step

    def __call__(self, n: tilus.int32, out: ~tilus.int32):
        self.attrs.warps = 1
        stop = n if self.stop is None else self.stop
        step = 3 - n if self.step is None else self.step
        count = 0
        total = 0
        for i in self.range(self.start, stop, step):
            count = count + 1
            total = total + i
        g = self.global_view(out, dtype=tilus.int32, shape=[8])
        self.store_global(g, self.register_tensor(dtype=tilus.int32, shape=[1], init=count), offsets=[0])
        self.store_global(g, self.register_tensor(dtype=tilus.int32, shape=[1], init=total), offsets=[1])


@pytest.mark.parametrize("start, stop, step, n", [
    (10, 0, -3, 0), (10, 0, -1, 0), (3, -26, 1, 0), (0, 5, 2, 0), (2, None, -2, 9), (9, 0, None, 6), (0, 9, None, 1),
])
def test_loops_of_any_step_sign_run_their_python_range(start, stop, step, n):
    expected = range(start, n if stop is None else stop, 3 - n if step is None else step)
    assert list(run_both(Loop(start, stop, step), n)[:2]) == [len(expected), sum(expected)]


class LowBitScalars(tilus.Script):
    """Low-bit tiles with scalar constants: initial values, operands, inf saturating."""

    def __call__(self, n: tilus.int32, out: ~tilus.int32):
        self.attrs.warps = 1
        q = self.register_tensor(dtype=tilus.int3, shape=[8], init=3)
        h = self.register_tensor(dtype=tilus.float6_e3m2, shape=[8], init=float("inf"))
        r = self.cast(q + (-4), dtype=tilus.int32) * 100 + \
            self.cast(self.cast(h, dtype=tilus.float32), dtype=tilus.int32)
        self.store_global(self.global_view(out, dtype=tilus.int32, shape=[8]), r, offsets=[0])


def test_low_bit_scalar_constants_are_lowered():
    assert list(run_both(LowBitScalars(), 0)) == [-100 + 28] * 8  # 28: float6_e3m2's largest


class RankZero(tilus.Script):
    def __call__(self, n: tilus.int32, out: ~tilus.int32):
        self.attrs.warps = 1
        g = self.global_view(out, dtype=tilus.int32, shape=[8])
        x = self.load_global(g, offsets=[n], shape=[])
        self.store_global(g, x + 1, offsets=[0])


def test_rank_zero_tiles_are_loaded():
    from tilus.simulator import run_prim_func
    from tilus.simulator.machine import as_prim_func

    out = np.arange(8, dtype=np.int32)
    run_prim_func(as_prim_func(RankZero()), [5, out])
    assert out[0] == 6


INT64_COPY = """kernel k(n: int32, p0: ~int8)
    blocks [4] warps 1
{
    %g: global[int8, (n, 16)] = global_view(ptr=p0, strides=[16, 1])
    %s: shared[int8, (4, 8)] = shared_tensor()
    copy_async(%s, %g, offsets=[cast(blockIdx.x, int64) * int64(4), int64(0)])
    copy_async_commit_group()
    copy_async_wait_group(n=0)
    sync()
    %x: register[int8, (4, 8)] = load_shared(%s)
}
"""


def test_copy_async_takes_int64_offsets():
    from tilus.backend.build import tir_to_cuda
    from tilus.backend.build_program import prepare
    from tilus.backend.codegen import lower_program

    program = tilus.ir.parse(INT64_COPY)
    assert "__global__" in tir_to_cuda(lower_program(prepare(program)).prim_func, "sm_90")


class DivideByZero(tilus.Script):
    """out = x / 0.0 / -0.0: IEEE division by a constant zero (inf, nan), which TVM's constant
    folder used to reject (found by the property test: a float tile divided by 0.0)."""

    def __call__(self, x: ~tilus.float32, out: ~tilus.float32):
        self.attrs.warps = 1
        gx = self.global_view(x, dtype=tilus.float32, shape=[4])
        go = self.global_view(out, dtype=tilus.float32, shape=[4])
        v = self.load_global(gx, offsets=[0], shape=[4])
        self.store_global(go, v / 0.0 / -0.0, offsets=[0])


def test_float_division_by_a_constant_zero_lowers_and_matches():
    from tilus.simulator import run_prim_func
    from tilus.simulator.machine import as_prim_func

    x = np.array([1.0, -2.0, 0.0, 3.0], np.float32)
    simulated, interpreted = np.zeros(4, np.float32), np.zeros(4, np.float32)
    run_prim_func(as_prim_func(DivideByZero()), [x, simulated])
    tilus.interpret(DivideByZero(), x, interpreted)
    want = np.array([-np.inf, np.inf, np.nan, -np.inf], np.float32)
    np.testing.assert_array_equal(simulated, want)
    np.testing.assert_array_equal(interpreted, want)
