"""tilus.ops.fp8's matmul (e4m3 m16n8k32, float32 accumulation) lowered and simulated against
the interpreter at M = 20, N = 72, K = 170 (none divides its tile; rows not 4-byte aligned):
both sum each 32-wide k step exactly and round it once to float32, so they agree bit for bit."""
import pytest
import torch

from tilus.ops import fp8
from tilus.ops.rowquant import rows_reference
from tests.backend.test_w8a8_simulated import simulate_and_interpret

pytest.importorskip("tilus.simulator")


def test_matmul_fp8_simulated():
    torch.manual_seed(1)
    m, n, k = 20, 72, 170                               # k: a partial 32-wide step, odd rows
    qx, sx = rows_reference(torch.randn(m, k).half(), "float8_e4m3")
    w8 = fp8.quantize_weight_fp8(torch.randn(n, k))
    args = [m, n, k, qx.view(torch.uint8), w8.data.view(torch.uint8), sx, w8.scales,
            torch.randn(n).half(), torch.zeros(m, n).half()]
    simulate_and_interpret(fp8.MatmulFP8(has_bias=True), args, [8])
    assert args[8].abs().min() > 0                      # every output written
