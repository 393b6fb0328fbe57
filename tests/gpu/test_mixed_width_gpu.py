"""Mixed-width weights (uint8 salient output features, uint4 the rest) through tilus.ops.matmul on
a real GPU (skipped where none is visible): one compiled MixedQuantMatmul launch against
``mw.dequantize(dtype)`` + a float32 torch matmul with bias, for decode and prefill M, N and K
that do not divide the tiles, fp16 and bf16 (tests/gpu/kernels.py MIXED_CASES; the kernels are
in the bundle: ``mixed_kernels``)."""
from __future__ import annotations

import pytest

from tests.gpu.checks import check_output, reference
from tests.gpu.kernels import MIXED_CASES, OPS_SMS, mixed_weight

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("m, n, k, salient, act", MIXED_CASES,
                         ids=[f"m{c[0]}-n{c[1]}-s{c[3]}-{c[4]}" for c in MIXED_CASES])
def test_mixed_matmul_on_cuda(m, n, k, salient, act):
    import torch

    import tilus

    if torch.cuda.get_device_properties(0).multi_processor_count != OPS_SMS:
        pytest.skip(f"the bundle holds the schedules of a {OPS_SMS}-SM GPU (H100 SXM, H200)")
    torch.backends.cuda.matmul.allow_tf32 = False
    dt = getattr(torch, act)
    mw = mixed_weight(n, k, salient, act, "cuda")
    g = torch.Generator(device="cuda").manual_seed(m)
    a = torch.randn(m, k, generator=g, device="cuda").to(dt)
    bias = torch.randn(n, generator=g, device="cuda").to(dt)
    out = tilus.ops.matmul(a, mw, bias, engine="compiled")
    check_output(out, reference(a, mw, bias), f"mixed m={m} n={n} salient={salient} {act}")


