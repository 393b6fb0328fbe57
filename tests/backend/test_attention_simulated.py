"""tilus.ops.attention_decode's two kernels lowered to tirx and run by tilus.simulator on the same
arguments as the interpreter (every output compared), at a tiny size: batch 2, 1 KV head x 2
query heads, head_dim 16, 40 cached tokens in 32-token tiles (the second tile is partial, the
scores' warps split the tokens), two splits, lengths 37 and 5 (the second sequence's second
split is all masked); uint4 with float16 queries and a scale per row; float8_e4m3 with bfloat16 queries and
scales per group of 8."""
import importlib

import pytest
import torch

from tests.backend.simulated_kernel import SimulatedKernel
from tilus.ops.kv_cache import QuantKVCache, quantize_kv

OUTPUTS = {"split": (14, 15, 16), "combine": (6,)}


@pytest.mark.parametrize("dtype,act,group_size", [("uint4", torch.float16, None),
                                                  ("float8_e4m3", torch.bfloat16, 8)])
def test_attention_decode_simulated(dtype, act, group_size, monkeypatch):
    att = importlib.import_module("tilus.ops.attention")
    seen = []
    split, combine = att.split_kernel, att.combine_kernel
    monkeypatch.setattr(att, "split_kernel", lambda *a, **kw: SimulatedKernel(
        split(*a, **{**kw, "block_s": 32}), OUTPUTS["split"], seen))
    monkeypatch.setattr(att, "combine_kernel", lambda *a, **kw: SimulatedKernel(
        combine(*a, **kw), OUTPUTS["combine"], seen))
    g = torch.Generator().manual_seed(0)
    cache = QuantKVCache.empty(2, 1, 40, 16, dtype, scale_dtype=act, group_size=group_size)
    kv = torch.randn(2, 2, 1, 40, 16, generator=g)
    quantize_kv(kv[0], kv[1], cache, torch.tensor([0, 0]))
    q = torch.randn(2, 2, 16, generator=g).to(act)
    lens = torch.tensor([37, 5])
    out = att.attention_decode_cache(q, cache, lens, num_splits=2)
    assert seen == ["DecodeAttentionSplit", "DecodeAttentionCombine"]
    ref = att.attention_decode_cache(q, cache, lens, engine="reference")
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-3 if act == torch.float16 else 1e-2)


def test_paged_attention_decode_simulated(monkeypatch):
    """The paged split kernel (pages of 16 tokens, shuffled ids, lengths 37 and 5 in 16-token
    tiles, two splits) simulated equal to the interpreter, once."""
    from tilus.ops.kv_cache import PagedQuantKVCache

    att = importlib.import_module("tilus.ops.attention")
    seen = []
    split, combine = att.paged_split_kernel, att.combine_kernel
    monkeypatch.setattr(att, "paged_split_kernel", lambda *a, **kw: SimulatedKernel(
        split(*a, **kw), (15, 16, 17), seen))
    monkeypatch.setattr(att, "combine_kernel", lambda *a, **kw: SimulatedKernel(
        combine(*a, **kw), OUTPUTS["combine"], seen))
    g = torch.Generator().manual_seed(1)
    cache = PagedQuantKVCache.empty(6, 1, 16, 16, "uint4")
    table = torch.tensor([[4, 1, 5], [2, -1, -1]], dtype=torch.int32)
    kv = torch.randn(2, 2, 1, 48, 16, generator=g)
    quantize_kv(kv[0], kv[1], cache, torch.tensor([0, 0]), block_table=torch.tensor(
        [[4, 1, 5], [2, 0, 3]], dtype=torch.int32))
    q = torch.randn(2, 2, 16, generator=g).half()
    lens = torch.tensor([37, 5])
    out = att.attention_decode_paged(q, cache, table, lens, num_splits=2)
    assert seen == ["PagedDecodeAttentionSplit", "DecodeAttentionCombine"]
    ref = att.attention_decode_paged(q, cache, table, lens, engine="reference")
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-3)
