"""tilus.ops.matmul_sliced on a real GPU (skipped where none is visible): the compiled bit-sliced
kernel at 8, 4 and 2 bits against ``sw.dequantize(bits, dtype)`` + a float32 torch matmul, for
decode and prefill M, N and K that do not divide the tiles, float16 and bfloat16 activations and
a bias. The kernels are in the bundle (tests/gpu/kernels.py: ``sliced_kernels``, the same
calls), so the GPU machine needs no TVM."""
from __future__ import annotations

import pytest

from tests.gpu.kernels import SLICED_BITS, SLICED_CALLS, SLICED_SHAPE

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("bits", SLICED_BITS)
@pytest.mark.parametrize("m, act", SLICED_CALLS)
def test_matmul_sliced_compiled_equals_dequantize_then_matmul(bits, m, act):
    import torch

    import tilus

    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(bits)
    dtype = getattr(torch, act)
    n, k, group = SLICED_SHAPE
    sw = tilus.ops.quantize_sliced(torch.randn(n, k, generator=g, device="cuda"), group,
                                   scale_dtype=dtype)
    x = torch.randn(m, k, generator=g, device="cuda").to(dtype)
    bias = torch.randn(n, generator=g, device="cuda").to(dtype)
    out = tilus.ops.matmul_sliced(x, sw, bits=bits, bias=bias)
    ref = (x.float() @ sw.dequantize(bits, dtype).float().t() + bias.float()).to(dtype)
    tol = dict(rtol=1e-2, atol=1e-2) if act == "float16" else dict(rtol=2e-2, atol=5e-2)
    torch.testing.assert_close(out, ref, **tol)
