"""Every example kernel, lowered by the codegen exactly as tilus.build does, simulated on the CPU
and compared with tilus.interpret at sizes that don't divide the tiles."""
import numpy as np
import pytest
import torch

import tilus
from tests.examples.test_examples import load


def check(kernel, args, outputs, exact=True):
    ref_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    report = tilus.simulate(kernel, *args)
    tilus.interpret(kernel, *ref_args)
    for i in outputs:
        if exact:
            assert torch.equal(args[i], ref_args[i]), (args[i] - ref_args[i]).abs().max()
        else:
            torch.testing.assert_close(args[i], ref_args[i], rtol=1e-5, atol=1e-6)
    return report


def test_vector_add():
    n = 777
    a, b = torch.randn(n), torch.randn(n)
    c = torch.full((n,), float("nan"))
    report = check(load("vector_add").VecAdd(128), [n, a, b, c], [3])
    assert report.blocks == 7
    assert torch.equal(c, a + b)


def test_softmax():
    torch.manual_seed(1)
    m, n = 21, 37
    x, y = torch.randn(m, n) * 3, torch.zeros(m, n)
    check(load("softmax").Softmax(8, 64), [m, n, x, y], [3], exact=False)
    torch.testing.assert_close(y, torch.softmax(x, dim=1), rtol=1e-5, atol=1e-6)


def test_matmul_fp16():
    torch.manual_seed(2)
    m, n, k = 70, 50, 90
    a, b = torch.randn(m, k).half(), torch.randn(k, n).half()
    c = torch.zeros(m, n, dtype=torch.float16)
    report = check(load("matmul_fp16").MatmulFp16(), [m, n, k, a, b, c], [5])
    assert report.blocks == 6 and report.threads == 128


def test_matmul_splitk_with_semaphores():
    torch.manual_seed(3)
    mod = load("matmul_splitk")
    m, n, k = 40, 50, 100
    a, b, c = torch.randn(m, k).half(), torch.randn(k, n).half(), torch.zeros(m, n)
    kernel = mod.MatmulSplitK(3)
    sema = torch.zeros(-(-m // kernel.block_m) * -(-n // kernel.block_n), dtype=torch.int32)
    check(kernel, [m, n, k, a, b, c, sema], [5, 6])


@pytest.mark.parametrize("wtype", ["int4", "uint3", "float6_e3m2", "uint1"])
def test_matmul_lowbit(wtype):
    mod = load("matmul_lowbit")
    m, n, k = 20, 40, 80
    a, w, scales, ref = mod.make_inputs(wtype, m, n, k, 32)
    c = torch.zeros(m, n, dtype=torch.float16)
    check(mod.MatmulLowBit(wtype, group_size=32), [m, n, k, a, w, scales, c], [6])
    torch.testing.assert_close(c.float(), ref, atol=2e-2, rtol=1e-2)


def test_simulate_takes_program_and_built_kernel_like_objects():
    vec = load("vector_add").VecAdd(128)
    n = 300
    a, b = np.arange(n, dtype=np.float32), np.ones(n, np.float32)
    c = np.zeros(n, np.float32)
    tilus.simulate(vec.program(), n, a, b, c)            # a Program, numpy arrays
    np.testing.assert_array_equal(c, a + b)

    from tilus.simulator.machine import as_prim_func

    class Built:                                         # what tilus.build returns
        prim_func = as_prim_func(vec)
    c[:] = 0
    tilus.simulate(Built(), n, a, b, c)
    np.testing.assert_array_equal(c, a + b)
