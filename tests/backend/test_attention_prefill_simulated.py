"""tilus.ops.attention_prefill's kernel lowered to tirx and run by tilus.simulator on the same
arguments as the interpreter (the output compared), at a small size: batch 1, 2 query heads over
1 KV head, seq_q 20 and seq_kv 70 (one partial Q tile, two K/V tiles: the cp.async pipeline
refills a stage), causal; float16 K/V with head_dim 64 (padded rows, K through ldmatrix.x2 and
V through ldmatrix.x2.trans), and float8_e4m3 codes with bfloat16 queries and head_dim 32
(dequantized into a shared tile)."""
import importlib

import pytest
import torch

from tests.backend.simulated_kernel import SimulatedKernel
from tilus.ops.kv_cache import quantize_rows


@pytest.mark.parametrize("kv_dtype,act,d", [(None, torch.float16, 64),
                                            ("float8_e4m3", torch.bfloat16, 32)])
def test_attention_prefill_simulated(kv_dtype, act, d, monkeypatch):
    pre = importlib.import_module("tilus.ops.prefill")
    seen = []
    make = pre.prefill_kernel
    monkeypatch.setattr(pre, "prefill_kernel",
                        lambda *a, **kw: SimulatedKernel(make(*a, **kw), (6,), seen))
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 20, d, generator=g).to(act)
    k, v = (torch.randn(1, 1, 70, d, generator=g) for _ in range(2))
    kw = dict(causal=True)
    if kv_dtype is None:
        k, v = k.to(act), v.to(act)
    else:
        k, ks, kz = quantize_rows(k, kv_dtype, act)
        v, vs, vz = quantize_rows(v, kv_dtype, act)
        kw.update(kv_dtype=kv_dtype, k_scales=ks, v_scales=vs, k_zeros=kz, v_zeros=vz)
    out = pre.attention_prefill(q, k, v, **kw)
    assert seen == ["PrefillAttention" if kv_dtype is None else "PrefillAttentionQuantKV"]
    ref = pre.attention_prefill(q, k, v, engine="reference", **kw)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-3 if act == torch.float16 else 1e-2)
