"""The LUT-GEMM kernel (tilus.ops.lut) on a real GPU (skipped where none is visible): compiled,
against the float64 reference of its formula, for 1 and 2 bits, one and two rows per block, N and
K that divide no tile; and ``matmul(schedule="lut")`` at uint1, M = 1. The kernels are in the
bundle (tests/gpu/kernels.py: ``lut_kernels``)."""
from __future__ import annotations

import pytest

from tests.gpu.kernels import LUT_CALLS

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("bits, block_m, m", LUT_CALLS)
def test_lut_compiled_equals_reference(bits, block_m, m):
    import torch

    import tilus
    from tilus.ops.lut import lut_reference, matmul_lut, pack_lut

    g = torch.Generator(device="cuda").manual_seed(bits)
    qw = tilus.ops.quantize(torch.randn(1000, 1536, generator=g, device="cuda"), f"uint{bits}",
                            group_size=128)
    lw = pack_lut(qw)
    x = torch.randn(m, 1536, generator=g, device="cuda").half()
    out = matmul_lut(x, lw, engine="compiled", schedule=dict(block_m=block_m))
    torch.testing.assert_close(out, lut_reference(x, lw), rtol=2e-3, atol=2e-3)
    if bits == 1 and m == 1:
        torch.testing.assert_close(tilus.ops.matmul(x, qw, schedule="lut"), out)
