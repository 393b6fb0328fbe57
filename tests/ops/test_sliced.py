"""Bit-sliced weights (``tilus.ops.quantize_sliced`` / ``matmul_sliced``): the slices hold the
uint8 codes' top bits, the DSL kernel in the interpreter equals the torch reference at every
served width (sizes that divide no tile), the served error against the float weight, and the
bytes each width reads."""
import pytest
import torch

import tilus
from tilus.errors import ArgumentError
from tilus.ops.sliced import serving_errors

N, K, GROUP = 136, 192, 64          # 136 columns: two column tiles, the second mostly masked


@pytest.fixture(scope="module")
def weight():
    torch.manual_seed(0)
    return torch.randn(N, K)


@pytest.fixture(scope="module")
def sliced(weight):
    return tilus.ops.quantize_sliced(weight, group_size=GROUP)


def test_slices_hold_the_top_bits_of_the_uint8_codes(weight, sliced):
    q = tilus.ops.quantize(weight, "uint8", group_size=GROUP, symmetric=False).codes()
    for bits in (2, 4, 8):
        assert torch.equal(sliced.codes(bits), q >> (8 - bits))


def test_dequantize_is_the_middle_of_the_truncated_bin(weight, sliced):
    """w'_b = ((q >> (8-b)) * 2^(8-b) + (2^(8-b) - 1) / 2) * s + off, rounded once (float64
    here, so only the scale dtype's rounding of S_b, B_b is left: S_b is exact)."""
    qw = tilus.ops.quantize(weight, "uint8", group_size=GROUP, symmetric=False)
    q = qw.codes().double()
    s = qw.scales.double().repeat_interleave(GROUP, dim=0)
    off = qw.offsets.double().repeat_interleave(GROUP, dim=0)
    for bits in (2, 4, 8):
        step = 2.0 ** (8 - bits)
        ref = (torch.floor(q / step) * step + (step - 1) / 2) * s + off
        got = sliced.dequantize(bits, torch.float64).t()
        assert torch.allclose(got, ref, rtol=0, atol=float(s.max()) * 2 ** -10)
    assert torch.equal(sliced.dequantize(8), qw.dequantize())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_interpreter_kernel_equals_torch_reference(sliced, bits):
    torch.manual_seed(bits)
    a = torch.randn(5, K).half()
    bias = torch.randn(N).half()
    out = tilus.ops.matmul_sliced(a, sliced, bits=bits, bias=bias, engine="interpreter")
    ref = (a.float() @ sliced.dequantize(bits, torch.float16).float().t() + bias.float()).half()
    torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)
    fallback = tilus.ops.matmul_sliced(a, sliced, bits=bits, bias=bias)
    torch.testing.assert_close(fallback, ref, rtol=2e-3, atol=2e-3)


def test_interpreter_pipelined_split_k_bfloat16(sliced):
    """bfloat16 activations (S_b, B_b rounded once to bfloat16), a 2-stage copy_async ring,
    k-tiles of two groups and split-k 2 at 4 bits."""
    torch.manual_seed(1)
    a = torch.randn(3, K).bfloat16()
    sched = dict(block_m=16, block_n=128, block_k=128, stages=2, split_k=2, warps=4)
    out = tilus.ops.matmul_sliced(a, sliced, bits=4, engine="interpreter", schedule=sched)
    ref = (a.float() @ sliced.dequantize(4, torch.bfloat16).float().t()).bfloat16()
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)


def test_error_per_width_against_the_float_weight():
    """Relative RMS error of a Gaussian weight served at 8, 4, 2 bits: each narrower width is
    worse (8 -> 4 by more than 8x, 4 -> 2 by more than 2x); the kernel's rule (truncation to
    the middle of the bin) beats truncation to the bin's bottom and rounding the code to the
    nearest multiple of 2^(8-b), and is no worse than a separately quantized uint4/uint2
    weight."""
    torch.manual_seed(2)
    errs = serving_errors(torch.randn(256, 512), group_size=128)
    assert errs[8]["truncate_mid"] < 0.01
    assert errs[8]["truncate_mid"] < errs[4]["truncate_mid"] / 8 < errs[2]["truncate_mid"] / 16
    for b in (2, 4):
        e = errs[b]
        assert e["truncate_mid"] < 0.6 * e["truncate"]
        assert e["truncate_mid"] <= e["nearest"] <= e["truncate"]
        assert e["truncate_mid"] <= e["direct"] * 1.01


def test_bytes_read_per_width(sliced):
    """A width reads its leading slices only: b/8 of the padded codes, plus the fp16 scale and
    offset rows."""
    codes = 2 * 192 * 128                     # uint8 bytes of the padded codes
    params = 2 * (K // GROUP) * N * 2
    for bits in (2, 4, 8):
        assert sliced.bytes_read(bits) == codes * bits // 8 + params
    assert sliced.nbytes() == sliced.bytes_read(8)


def test_bad_arguments_are_reported(sliced):
    a = torch.randn(2, K).half()
    with pytest.raises(ArgumentError, match="bits must be one of"):
        tilus.ops.matmul_sliced(a, sliced, bits=3)
    with pytest.raises(ArgumentError, match="last dimension must be K"):
        tilus.ops.matmul_sliced(torch.randn(2, K + 1).half(), sliced, bits=4)
    with pytest.raises(ArgumentError, match="float16 or bfloat16"):
        tilus.ops.matmul_sliced(a.float(), sliced, bits=4)
