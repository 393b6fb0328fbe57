"""tilus.ops.matmul with block-scaled weights (MX, NVFP4) in the interpreter against
dequantize() + torch, including E8M0 scales far outside float16's range."""
import pytest
import torch

import tilus

MX_TYPES = ["float4_e2m1", "float6_e2m3", "float6_e3m2", "float8_e4m3", "float8_e5m2", "int8"]


@pytest.mark.parametrize("scheme, name", [("mx", t) for t in MX_TYPES] + [("nvfp4", "float4_e2m1")])
def test_matmul_interpreter_equals_dequantize_then_matmul(scheme, name):
    """N = 136 and K = 64 do not divide the 128-wide tiles."""
    torch.manual_seed(1)
    qw = tilus.ops.quantize(torch.randn(136, 64), dtype=name, scheme=scheme)
    a = torch.randn(3, 64).half()
    ref = a.float() @ qw.dequantize(torch.float32).t()
    out = tilus.ops.matmul(a, qw, engine="interpreter")
    torch.testing.assert_close(out.float(), ref, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(tilus.ops.matmul(a, qw).float(), ref, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("factor", [2.0 ** -70, 2.0 ** 70])
def test_matmul_mx_scales_beyond_float16_are_exact(factor):
    """The E8M0 scale multiplies the float32 accumulator (bf16 activations keep the result in
    range): no weight is rounded to the activation dtype."""
    torch.manual_seed(2)
    qw = tilus.ops.quantize(torch.randn(136, 64) * factor, dtype="float4_e2m1", scheme="mx")
    assert int(qw.scales.min()) > 127 + 60 or int(qw.scales.max()) < 127 - 60
    a = torch.randn(2, 64).bfloat16()
    ref = (a.float() @ qw.dequantize(torch.float32).t())
    out = tilus.ops.matmul(a, qw, engine="interpreter")
    assert torch.isfinite(out).all() and (out != 0).all()
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=0)


def test_matmul_nvfp4_with_bias_applies_the_global_scale():
    """The epilogue multiplies the accumulator by the per-tensor scale before adding the bias."""
    torch.manual_seed(3)
    qw = tilus.ops.quantize(torch.randn(136, 64) * 5.0, scheme="nvfp4")
    assert qw.global_scale != 1.0
    a, bias = torch.randn(2, 64).half(), torch.randn(136).half()
    ref = a.float() @ qw.dequantize(torch.float32).t() + bias.float()
    out = tilus.ops.matmul(a, qw, bias, engine="interpreter")
    torch.testing.assert_close(out.float(), ref, rtol=1e-3, atol=1e-3)


def test_block_scaled_kernels_take_no_integer_zero_points():
    from tilus.errors import TilusError
    from tilus.ops.kernels import QuantMatmul

    with pytest.raises(TilusError, match="zero_mode 'int'"):
        QuantMatmul("float4_e2m1", 32, act="float16", scale="float8_e8m0", zero_mode="int",
                    scheme="mx")
