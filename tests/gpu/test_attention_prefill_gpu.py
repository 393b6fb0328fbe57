"""tilus.ops.attention_prefill on a real GPU (skipped where none is visible): the compiled flash
attention kernel against the torch reference (float32 softmax(Q K^T * scale + mask) V, over
the dequantized K/V for the quantized variant) for float16 and bfloat16, GQA, causal and not,
head_dim 32/64/128, sequence lengths that divide no tile (seq_q above, equal to and below
seq_kv); and float16 causal self-attention against torch's scaled_dot_product_attention."""
from __future__ import annotations

import pytest

from tests.gpu.checks import run_prefill_case
from tests.gpu.kernels import PREFILL_CASES

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("case", PREFILL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_attention_prefill_compiled_matches_reference(case):
    for batch, seq_q, seq_kv in ((2, 1000, 1000), (1, 300, 1037), (3, 1037, 300), (1, 1, 77)):
        run_prefill_case(case, "cuda", batch, seq_q, seq_kv)


def test_causal_self_attention_matches_torch_sdpa():
    """PREFILL_CASES[0] (GQA 32/8, head_dim 128, float16, causal; a kernel of the bundle) at
    seq_q = seq_kv, where flash-attn's and torch's causal masks agree."""
    import torch
    import torch.nn.functional as F

    import tilus

    case = PREFILL_CASES[0]
    assert (case.act, case.kv_dtype, case.causal) == ("float16", None, True)
    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(2, case.heads, 777, case.head_dim, generator=g, device="cuda").half()
    k, v = (torch.randn(2, case.kv_heads, 777, case.head_dim, generator=g, device="cuda").half()
            for _ in range(2))
    out = tilus.ops.attention_prefill(q, k, v, causal=True)
    group = case.heads // case.kv_heads
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(group, dim=1),
                                          v.repeat_interleave(group, dim=1), is_causal=True)
    torch.testing.assert_close(out, want, rtol=1e-2, atol=3e-3)
