"""A small tensor-core matmul (a few blocks of 128 threads) simulated end to end, and fast."""

import numpy as np
import pytest

from tilus.simulator import RaceError, run_prim_func, simulate

from tests.simulator.kernels import matmul_f16


def operands(M, N, K, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(np.float16)
    b = rng.standard_normal((N, K)).astype(np.float16)
    return a, b, a.astype(np.float32) @ b.astype(np.float32).T


@pytest.mark.parametrize("M,N,K", [(64, 64, 64), (50, 40, 32)])
def test_matmul(M, N, K):
    a, b, ref = operands(M, N, K)
    c = np.full((M, N), np.nan, np.float32)
    report = simulate(matmul_f16(M, N, K), a, b, c)
    assert report.blocks == ((M + 31) // 32) * ((N + 31) // 32) and report.threads == 128
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-4)


def test_missing_barrier_before_the_next_tile_is_a_race():
    a, b, _ = operands(32, 32, 32)
    c = np.zeros((32, 32), np.float32)
    with pytest.raises(RaceError) as ei:
        run_prim_func(matmul_f16(32, 32, 32, barrier_after_mma=False), [a, b, c])
    # the second iteration's cp.async lands over A_s values other warps read by ldmatrix
    assert "read by thread" in str(ei.value) and ei.value.buffer in ("A_s", "B_s")
