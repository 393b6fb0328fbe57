"""tilus.ops.attention_prefill on a real GPU (skipped where none is visible): the compiled flash
attention kernel against the torch reference (float32 softmax(Q K^T * scale + mask) V, over
the dequantized K/V for the quantized variant) for float16 and bfloat16, GQA, causal and not,
head_dim 32/64/128, sequence lengths that divide no tile (seq_q above, equal to and below
seq_kv); and float16 causal self-attention against torch's scaled_dot_product_attention."""
from __future__ import annotations

import pytest

from tests.gpu.kernels import PREFILL_CASES

pytestmark = pytest.mark.gpu


def _inputs(case, batch, seq_q, seq_kv, g):
    import torch

    from tilus.ops.kv_cache import quantize_rows

    act = getattr(torch, case.act)
    q = torch.randn(batch, case.heads, seq_q, case.head_dim, generator=g, device="cuda").to(act)
    k = torch.randn(batch, case.kv_heads, seq_kv, case.head_dim, generator=g, device="cuda")
    v = torch.randn(batch, case.kv_heads, seq_kv, case.head_dim, generator=g, device="cuda")
    if case.kv_dtype is None:
        return q, k.to(act), v.to(act), {}
    kc, ks, kz = quantize_rows(k, case.kv_dtype, act)
    vc, vs, vz = quantize_rows(v, case.kv_dtype, act)
    return q, kc, vc, dict(kv_dtype=case.kv_dtype, k_scales=ks, v_scales=vs, k_zeros=kz,
                           v_zeros=vz)


@pytest.mark.parametrize("case", PREFILL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_attention_prefill_compiled_matches_reference(case):
    import torch

    import tilus

    g = torch.Generator(device="cuda").manual_seed(0)
    tol = dict(rtol=1e-2, atol=3e-3) if case.act == "float16" else dict(rtol=2e-2, atol=2e-2)
    for batch, seq_q, seq_kv in ((2, 1000, 1000), (1, 300, 1037), (3, 1037, 300), (1, 1, 77)):
        q, k, v, quant = _inputs(case, batch, seq_q, seq_kv, g)
        out = tilus.ops.attention_prefill(q, k, v, causal=case.causal, **quant)
        ref = tilus.ops.attention_prefill(q, k, v, causal=case.causal, engine="reference",
                                          **quant)
        assert out.dtype == q.dtype and out.shape == q.shape
        torch.testing.assert_close(out, ref, **tol)


def test_causal_self_attention_matches_torch_sdpa():
    import torch
    import torch.nn.functional as F

    import tilus

    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(2, 16, 777, 128, generator=g, device="cuda").half() for _ in range(3))
    out = tilus.ops.attention_prefill(q, k, v, causal=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True),
                               rtol=1e-2, atol=3e-3)
