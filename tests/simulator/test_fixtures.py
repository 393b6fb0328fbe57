"""The backend's hand-written tirx kernels, simulated: results equal numpy."""
import numpy as np
import pytest

from tilus.backend import testing
from tilus.simulator import OutOfBoundsError, run_prim_func
from tilus.simulator.ptx import lop3, prmt


@pytest.mark.parametrize("n", [1000, 4, 516, 2048])
def test_vector_add(n):
    rng = np.random.default_rng(n)
    a, b = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    c = np.full(n, -1, np.float32)
    report = run_prim_func(testing.vector_add_f32x4(512), [a, b, c, n])
    assert report.blocks == (n + 511) // 512 and report.threads == 128
    np.testing.assert_array_equal(c, a + b)


def test_vector_add_torch_in_place():
    torch = pytest.importorskip("torch")
    a, b = torch.arange(1000, dtype=torch.float32), torch.ones(1000)
    c = torch.zeros(1000)
    run_prim_func(testing.vector_add_f32x4(512), [a, b, c, 1000])
    assert torch.equal(c, a + 1)


def test_vector_add_fixture_reads_past_n_when_n_is_not_a_multiple_of_4():
    """A finding: the fixture guards only the first of its 4 lanes, so n % 4 != 0 reads A[n]."""
    n = 1001
    a, b, c = (np.zeros(n, np.float32) for _ in range(3))
    with pytest.raises(OutOfBoundsError) as ei:
        run_prim_func(testing.vector_add_f32x4(512), [a, b, c, n])
    assert "1001" in str(ei.value) or "extent 1001" in str(ei.value)


def mma_inputs(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(256).astype(np.float16)
    b = rng.standard_normal(128).astype(np.float16)
    return a, b


def mma_reference(a, b):
    return a.reshape(16, 16).astype(np.float32) @ b.reshape(8, 16).astype(np.float32).T


def test_mma_fixture_equals_numpy():
    a, b = mma_inputs()
    c = np.zeros(128, np.float32)
    run_prim_func(testing.mma_m16n8k16_f16(), [a, b, c])
    np.testing.assert_allclose(c.reshape(16, 8), mma_reference(a, b), rtol=1e-5, atol=1e-5)


def test_mma_fixture_exact_on_small_integers():
    rng = np.random.default_rng(1)
    a = rng.integers(-4, 5, 256).astype(np.float16)
    b = rng.integers(-4, 5, 128).astype(np.float16)
    c = np.zeros(128, np.float32)
    run_prim_func(testing.mma_m16n8k16_f16(), [a, b, c])
    np.testing.assert_array_equal(c.reshape(16, 8), mma_reference(a, b))


def test_lop3_prmt_probe():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 2**32, 128, dtype=np.uint64).astype(np.uint32)
    c = np.zeros(256, np.uint32)
    run_prim_func(testing.lop3_prmt_probe(), [a, c])
    np.testing.assert_array_equal(c[0::2], lop3(a, 0x000F000F, 0x64006400, 0x6A))
    np.testing.assert_array_equal(c[1::2], prmt(a, 0x64646464, 0x4140))
    # by hand: lop3 0x6A = (a & b) ^ c; prmt 0x4140 = bytes {a0, 0x64, a1, 0x64}
    x = int(a[0])
    assert int(c[0]) == ((x & 0x000F000F) ^ 0x64006400)
    assert int(c[1]) == (x & 0xFF) | 0x64 << 8 | ((x >> 8) & 0xFF) << 16 | 0x64 << 24
