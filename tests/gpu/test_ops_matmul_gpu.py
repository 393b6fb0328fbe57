"""tilus.ops.matmul and QuantLinear on a real GPU (skipped where none is visible): the compiled
format-2 kernel (the one bench_decode_cost counts) against dequantize() + torch, for decode and
small-batch M, N and K that do not divide the tiles. On a machine without TVM the kernels come
from the bundle (tests/gpu/kernels.py: ops_kernels)."""
from __future__ import annotations

import pytest

from tests.gpu.kernels import OPS_CASES, OPS_K, OPS_N, ops_weight

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("wtype,m", OPS_CASES, ids=[f"{t}-m{m}" for t, m in OPS_CASES])
def test_matmul_on_cuda_equals_dequantize_then_matmul(wtype, m):
    import torch

    import tilus

    if torch.cuda.get_device_properties(0).multi_processor_count != 132:
        pytest.skip("the bundle holds the schedules of a 132-SM GPU")
    qw = ops_weight(wtype).to("cuda")
    a = (torch.randn(m, OPS_K, generator=torch.Generator().manual_seed(m)) * 0.5).half().cuda()
    out = tilus.ops.matmul(a, qw)
    ref = (a.float() @ qw.dequantize(torch.float16).float().t()).half()
    assert out.shape == (m, OPS_N) and out.dtype == torch.float16
    torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)
