"""The interpreter's whole-kernel test programs (built with ProgramBuilder), lowered and simulated:
equal to the interpreter, including degenerate sizes."""
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes

from tests.interpreter.oracles import pack_bits
from tests.interpreter.test_programs import lowbit_matmul_program, matmul_program


@pytest.mark.parametrize("m,n,k", [(50, 40, 70), (1, 1, 1), (33, 17, 32)])
def test_fp16_matmul_program(m, n, k):
    g = torch.Generator().manual_seed(m * n * k)
    a, b = torch.randn(m, k, generator=g).half(), torch.randn(k, n, generator=g).half()
    c_sim = torch.full((m, n), float("nan"), dtype=torch.float16)
    c_ref = c_sim.clone()
    tilus.simulate(matmul_program(), m, n, k, a, b, c_sim)
    tilus.interpret(matmul_program(), m, n, k, a, b, c_ref)
    assert torch.equal(c_sim, c_ref)


@pytest.mark.parametrize("wtype", [dtypes.uint4, dtypes.int4, dtypes.float4_e2m1], ids=lambda t: t.name)
@pytest.mark.parametrize("mode", ["view", "global"])
def test_lowbit_matmul_program(wtype, mode):
    m, n, k = 20, 64, 96
    rng = np.random.default_rng(5)
    a = rng.standard_normal((m, k)).astype(np.float16)
    packed = pack_bits(rng.integers(0, 16, size=(k, n)), 4)
    scale = (rng.uniform(0.5, 2, (1, n)) / 8).astype(np.float16)
    c_sim, c_ref = np.zeros((m, n), np.float16), np.zeros((m, n), np.float16)
    tilus.simulate(lowbit_matmul_program(wtype, mode), m, n, k, a, packed, scale, c_sim)
    tilus.interpret(lowbit_matmul_program(wtype, mode), m, n, k, a, packed, scale, c_ref)
    # the mma sums products exactly and rounds once; the interpreter's dot rounds in float32 as it
    # goes: the fp16 outputs may differ in the last place
    np.testing.assert_allclose(c_sim.astype(np.float32), c_ref.astype(np.float32), rtol=1e-3, atol=1e-3)
