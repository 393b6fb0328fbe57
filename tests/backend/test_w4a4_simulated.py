"""tilus.ops.w4a4's matmul, both variants (int4 operands on m16n8k64.s4; widened to int8 for
m16n8k32.s8), lowered and simulated against the interpreter at M = 20, N = 72, K = 160 and 170
(none divides its tile; 170: rows of 85 bytes), per channel also split-k."""
import pytest
import torch

from tilus.ops import w4a4
from tilus.ops.rowquant import rows_reference
from tests.backend.test_w8a8_simulated import simulate_and_interpret

pytest.importorskip("tilus.simulator")


def _split_buffers(m, n):
    return [torch.zeros(m, n, dtype=torch.int32), torch.zeros(
        -(-m // w4a4.BLOCK_M) * -(-n // w4a4.BLOCK_N), dtype=torch.int32)]


@pytest.mark.parametrize("s4_mma,k,split_k", [(True, 160, 1), (False, 170, 1), (True, 170, 2),
                                              (False, 160, 2)])
def test_matmul_w4a4_simulated(s4_mma, k, split_k):
    """split_k = 2: three 64-wide k-tiles split two and one, summed in int32 under the
    semaphore (which ends at 0), as the interpreter."""
    torch.manual_seed(1)
    m, n = 20, 72
    qx, sx = rows_reference(torch.randn(m, k).half(), "int4")
    w4 = w4a4.quantize_weight_int4(torch.randn(n, k))
    args = [m, n, k, qx, w4.data, sx, w4.scales, torch.randn(n).half(),
            torch.zeros(m, n).half()] + _split_buffers(m, n)
    simulate_and_interpret(w4a4.MatmulW4A4(has_bias=True, s4_mma=s4_mma, split_k=split_k), args,
                           [8, 10])
    assert args[8].abs().min() > 0                      # every output written


def test_matmul_w4a4_group_wise_bfloat16_simulated():
    torch.manual_seed(2)
    m, n, k = 20, 72, 256
    qx, sx = rows_reference(torch.randn(m, k).bfloat16(), "int4")
    w4 = w4a4.quantize_weight_int4(torch.randn(n, k), group_size=128)
    args = [m, n, k, qx, w4.data, sx, w4.scales, torch.randn(n).bfloat16(),
            torch.zeros(m, n).bfloat16()] + _split_buffers(m, n)
    simulate_and_interpret(w4a4.MatmulW4A4(has_bias=True, s4_mma=True, group_size=128,
                                           act="bfloat16"), args, [8])
    assert args[8].abs().min() > 0
