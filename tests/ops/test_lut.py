"""LUT GEMM (``tilus.ops.lut``): the bit planes hold the codes, the DSL kernel in the interpreter
equals the float64 reference exactly on data whose sums are exact (integer activations, power-of-
two scales, quarter offsets) for 1 and 2 bits, one and two rows per block, and sizes that divide
no tile; on random data it agrees with dequantize() + torch."""
import pytest
import torch

import tilus
from tilus.errors import ArgumentError, QuantizationError
from tilus.ops.lut import lut_reference, matmul_lut, pack_lut

N, K, GROUP = 136, 192, 64           # 136 columns: two column tiles of 128, the second masked


def exact_weight(bits: int, seed: int):
    """A LutWeight whose scales are powers of two and offsets multiples of 1/4 (every partial
    sum of integer activations is exact in float32, so any summation order gives one result)."""
    torch.manual_seed(seed)
    lw = pack_lut(tilus.ops.quantize(torch.randn(N, K), f"uint{bits}", group_size=GROUP))
    lw.scales = (2.0 ** torch.randint(-3, 2, lw.scales.shape)).half()
    lw.offsets = (torch.randint(-8, 8, lw.offsets.shape) * 0.25).half()
    return lw


def test_planes_hold_the_codes_bits():
    lw = pack_lut(tilus.ops.quantize(torch.randn(N, K), "uint2", group_size=GROUP))
    assert lw.planes.shape == (2, K // 32, N, 4)
    words = lw.planes.long()
    words = words[..., 0] | words[..., 1] << 8 | words[..., 2] << 16 | words[..., 3] << 24
    for p in range(2):
        for t in (0, 5, 31):
            assert torch.equal((words[p] >> t) & 1, (lw.codes.long()[t::32] >> p) & 1)


@pytest.mark.parametrize("bits, block_m, m", [(1, 1, 3), (2, 1, 1), (2, 2, 3)])
def test_interpreter_kernel_is_exact(bits, block_m, m):
    lw = exact_weight(bits, bits)
    a = torch.randint(-3, 4, (m, K)).half()
    out = matmul_lut(a, lw, engine="interpreter", schedule=dict(block_m=block_m))
    assert torch.equal(out, lut_reference(a, lw))


def test_agrees_with_dequantize_then_matmul_on_random_data():
    torch.manual_seed(0)
    qw = tilus.ops.quantize(torch.randn(N, K), "uint2", group_size=GROUP)
    a = torch.randn(2, K).half()
    out = matmul_lut(a, pack_lut(qw), engine="interpreter")
    ref = (a.float() @ qw.dequantize(torch.float16).float().t()).half()
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)


def test_bad_arguments_are_reported():
    with pytest.raises(QuantizationError, match="uint1/uint2"):
        pack_lut(tilus.ops.quantize(torch.randn(N, K), "uint4", group_size=GROUP))
    lw = exact_weight(1, 0)
    with pytest.raises(ArgumentError, match=r"float16/bfloat16 \[M, 192\]"):
        matmul_lut(torch.randn(1, K + 1).half(), lw)


def test_matmul_selects_the_lut_schedule_only_where_it_wins():
    """schedule="lut": uint1 at M = 1 runs the LUT kernel (interpreter) and the reference
    (CPU auto); uint2, M = 2 and a bias are refused with the reason."""
    torch.manual_seed(3)
    qw = tilus.ops.quantize(torch.randn(N, K), "uint1", group_size=GROUP)
    a = torch.randn(1, K).half()
    ref = (a.float() @ qw.dequantize(torch.float16).float().t()).half()
    out = tilus.ops.matmul(a, qw, schedule="lut", engine="interpreter")
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(tilus.ops.matmul(a, qw, schedule="lut"), out, rtol=1e-3, atol=2e-3)
    with pytest.raises(ArgumentError, match="wins only for weights with float offsets of uint1"):
        tilus.ops.matmul(torch.randn(2, K).half(), qw, schedule="lut")
    with pytest.raises(ArgumentError, match="at M = 1"):
        tilus.ops.matmul(a, tilus.ops.quantize(torch.randn(N, K), "uint2", group_size=GROUP),
                         schedule="lut")
    with pytest.raises(ArgumentError, match="no bias"):
        tilus.ops.matmul(a, qw, torch.zeros(N).half(), schedule="lut")
