"""The activation-quantized kernels on a real GPU (skipped where none is visible): per-row
quantization to int8, int4 and e4m3, and the W8A8, W4A4 and FP8 matmuls and layers, each against
its torch reference (tilus.ops.rowquant / w8a8 / w4a4 / fp8) at decode and prefill M, N and K that
divide no tile. The e4m3 kernels need sm_89 or newer (Ada, Hopper)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

SHAPES = [(1, 72, 160), (20, 72, 160), (133, 200, 1056)]


def fp8_capable() -> bool:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor >= 89


def data(m, n, k):
    import torch

    g = torch.Generator(device="cuda").manual_seed(m * 7 + n)
    x = torch.randn(m, k, generator=g, device="cuda").half()
    w = torch.randn(n, k, generator=g, device="cuda")
    return x, w, torch.randn(n, generator=g, device="cuda").half()


@pytest.mark.parametrize("dtype", ["int8", "int4", "float8_e4m3"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_quantize_rows_equals_the_rule(dtype, m, n, k):
    import torch

    from tilus.ops import rowquant

    x, _, _ = data(m, n, k)
    x[0, 3] = 0
    q, s = rowquant.quantize_rows(x, dtype=dtype)
    want_q, want_s = rowquant.rows_reference(x, dtype)
    assert torch.equal(s, want_s)
    assert torch.equal(q.view(torch.uint8), want_q.view(torch.uint8))


@pytest.mark.parametrize("scheme", ["w8a8", "w4a4", "fp8"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matmul_equals_the_reference(scheme, m, n, k):
    import torch

    from tilus.ops import fp8, w4a4, w8a8

    if scheme == "fp8" and not fp8_capable():
        pytest.skip("mma.m16n8k32.e4m3 needs sm_89 or newer")
    x, w, bias = data(m, n, k)
    quantize, matmul, ref = {
        "w8a8": (w8a8.quantize_weight_int8, w8a8.matmul_w8a8, w8a8.matmul_w8a8_reference),
        "w4a4": (w4a4.quantize_weight_int4, w4a4.matmul_w4a4, w4a4.matmul_w4a4_reference),
        "fp8": (fp8.quantize_weight_fp8, fp8.matmul_fp8, fp8.matmul_fp8_reference)}[scheme]
    qw = quantize(w)
    out = matmul(x, qw, bias)
    want = ref(x, qw, bias)
    if scheme == "fp8":     # float32 accumulation: within a float16 ulp or two of the exact sum
        torch.testing.assert_close(out, want, rtol=2e-3, atol=2e-3)
    else:                   # exact int32 products: at most one float16 rounding apart
        torch.testing.assert_close(out, want, rtol=2 ** -10, atol=2 ** -14)


@pytest.mark.parametrize("m", [1, 133])
def test_group_wise_w4a4_equals_the_reference(m):
    import torch

    from tilus.ops import w4a4

    x, w, bias = data(m, 200, 1024)
    w4 = w4a4.quantize_weight_int4(w, group_size=128)
    torch.testing.assert_close(w4a4.matmul_w4a4(x, w4, bias),
                               w4a4.matmul_w4a4_reference(x, w4, bias), rtol=2e-3, atol=2e-3)


def test_fp8_on_an_older_gpu_says_so():
    import torch

    from tilus.errors import UnsupportedLaunchError
    from tilus.ops import fp8

    if fp8_capable():
        pytest.skip("this GPU has e4m3 mma")
    x, w, _ = data(4, 72, 160)
    with pytest.raises(UnsupportedLaunchError, match="sm_89"):
        fp8.matmul_fp8(x, fp8.quantize_weight_fp8(w))
    assert torch.isfinite(fp8.matmul_fp8(x, fp8.quantize_weight_fp8(w), engine="fallback")).all()


@pytest.mark.parametrize("act", ["int8", "int4", "float8_e4m3"])
def test_layer_on_the_gpu_matches_the_cpu_layer(act):
    import torch
    from torch import nn

    import tilus

    if act == "float8_e4m3" and not fp8_capable():
        pytest.skip("mma.m16n8k32.e4m3 needs sm_89 or newer")
    torch.manual_seed(0)
    lin = nn.Linear(160, 72)
    layer = tilus.nn.QuantLinear.from_linear(lin, act, None, act_dtype=act)
    x = torch.randn(2, 9, 160).half()
    cpu = layer(x)
    gpu = layer.to("cuda")(x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-3, atol=2e-3)
