"""tilus.ops.attention_decode and quantize_kv on a real GPU (skipped where none is visible): the
compiled split + combine kernels against the torch reference (dequantize, float32 softmax
attention) for int and float cache types, float16 and bfloat16 queries, GQA, lengths that divide no
tile (0 included) and the default split heuristic; a decode loop appending with quantize_kv on
the device; and attention_decode_paged over shuffled pages against the reference and the
contiguous cache holding the same tokens."""
from __future__ import annotations

import pytest

from tests.gpu.kernels import (ATTENTION_GROUPED, ATTENTION_LOOP, ATTENTION_SHAPES, ATTENTION_TYPES,
                               PAGED_ATTENTION_CASES, attention_act)

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", ATTENTION_TYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim", ATTENTION_SHAPES)
def test_attention_decode_compiled_matches_reference(dtype, heads, kv_heads, head_dim):
    import torch

    import tilus

    g = torch.Generator(device="cuda").manual_seed(0)
    batch, max_seq = 3, 1000
    act = getattr(torch, attention_act(dtype))
    cache = tilus.ops.QuantKVCache.empty(batch, kv_heads, max_seq, head_dim, dtype,
                                         device="cuda", scale_dtype=act)
    k = torch.randn(batch, kv_heads, max_seq, head_dim, generator=g, device="cuda")
    v = torch.randn(batch, kv_heads, max_seq, head_dim, generator=g, device="cuda")
    tilus.ops.quantize_kv(k, v, cache, torch.zeros(batch, dtype=torch.int32, device="cuda"))
    q = torch.randn(batch, heads, head_dim, generator=g, device="cuda").to(act)
    tol = dict(rtol=1e-2, atol=2e-3) if act == torch.float16 else dict(rtol=2e-2, atol=1e-2)
    for lens in ([999, 1, 0], [1000, 517, 33]):
        seq_lens = torch.tensor(lens, device="cuda", dtype=torch.int32)
        out = tilus.ops.attention_decode_cache(q, cache, seq_lens)
        ref = tilus.ops.attention_decode_cache(q, cache, seq_lens, engine="reference")
        torch.testing.assert_close(out, ref, **tol)
        one = tilus.ops.attention_decode_cache(q, cache, seq_lens, num_splits=1)
        torch.testing.assert_close(out, one, **tol)


def test_decode_loop_appends_on_device():
    import torch

    import tilus
    from tilus.ops.kv_cache import attention_reference

    g = torch.Generator(device="cuda").manual_seed(1)
    case = ATTENTION_LOOP
    cache = tilus.ops.QuantKVCache.empty(2, case.kv_heads, 256, case.head_dim, case.dtype,
                                         device="cuda")
    k = torch.randn(2, case.kv_heads, 200, case.head_dim, generator=g, device="cuda")
    v = torch.randn(2, case.kv_heads, 200, case.head_dim, generator=g, device="cuda")
    tilus.ops.quantize_kv(k[:, :, :190], v[:, :, :190], cache, torch.tensor([0, 0], device="cuda"))
    for n in range(190, 200):
        tilus.ops.quantize_kv(k[:, :, n:n + 1], v[:, :, n:n + 1], cache,
                              torch.tensor([n, n], device="cuda"))
        q = torch.randn(2, case.heads, case.head_dim, generator=g, device="cuda").half()
        lens = torch.tensor([n + 1, n + 1], device="cuda")
        out = tilus.ops.attention_decode_cache(q, cache, lens, max_seq_len=n + 1)
        torch.testing.assert_close(out.float(), attention_reference(q, k, v, lens), rtol=0,
                                   atol=2e-2)


@pytest.mark.parametrize("dtype,group_size", ATTENTION_GROUPED)
def test_scales_per_group_compiled(dtype, group_size):
    import torch

    import tilus

    g = torch.Generator(device="cuda").manual_seed(2)
    cache = tilus.ops.QuantKVCache.empty(2, 8, 700, 128, dtype, device="cuda",
                                         group_size=group_size)
    k = torch.randn(2, 8, 700, 128, generator=g, device="cuda")
    tilus.ops.quantize_kv(k, k.flip(-1), cache, torch.tensor([0, 0], device="cuda"))
    q = torch.randn(2, 32, 128, generator=g, device="cuda").half()
    seq_lens = torch.tensor([700, 301], device="cuda")
    out = tilus.ops.attention_decode_cache(q, cache, seq_lens)
    ref = tilus.ops.attention_decode_cache(q, cache, seq_lens, engine="reference")
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize("case", PAGED_ATTENTION_CASES)
def test_paged_attention_compiled_matches_reference_and_contiguous(case):
    import torch

    import tilus

    g = torch.Generator(device="cuda").manual_seed(3)
    act = getattr(torch, case.act)
    lens = [999, 0, 517, 33]
    ps, batch, longest = case.page_size, len(lens), max(lens)
    max_pages = -(-longest // ps) + 1
    need = [-(-n // ps) for n in lens]
    num_pages = sum(need) + 5
    perm = torch.randperm(num_pages, generator=g, device="cuda").int()
    table = torch.full((batch, max_pages), -1, dtype=torch.int32, device="cuda")
    at = 0
    for b, n in enumerate(need):
        table[b, :n] = perm[at:at + n]
        at += n
    group_size = case.group_size or None
    pool = tilus.ops.PagedQuantKVCache.empty(num_pages, case.kv_heads, ps, case.head_dim,
                                             case.dtype, device="cuda", scale_dtype=act,
                                             group_size=group_size)
    flat = tilus.ops.QuantKVCache.empty(batch, case.kv_heads, longest, case.head_dim, case.dtype,
                                        device="cuda", scale_dtype=act, group_size=group_size)
    k = torch.randn(batch, case.kv_heads, longest, case.head_dim, generator=g, device="cuda")
    v = torch.randn(batch, case.kv_heads, longest, case.head_dim, generator=g, device="cuda")
    zeros = torch.zeros(batch, dtype=torch.int32, device="cuda")
    tilus.ops.quantize_kv(k, v, flat, zeros)
    for b, n in enumerate(lens):
        if n:
            tilus.ops.quantize_kv(k[b:b + 1, :, :n], v[b:b + 1, :, :n], pool, zeros[:1],
                                  block_table=table[b:b + 1])
    q = torch.randn(batch, case.heads, case.head_dim, generator=g, device="cuda").to(act)
    seq_lens = torch.tensor(lens, device="cuda", dtype=torch.int32)
    tol = dict(rtol=1e-2, atol=2e-3) if act == torch.float16 else dict(rtol=2e-2, atol=1e-2)
    out = tilus.ops.attention_decode_paged(q, pool, table, seq_lens)
    ref = tilus.ops.attention_decode_paged(q, pool, table, seq_lens, engine="reference")
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(out, tilus.ops.attention_decode_cache(q, flat, seq_lens), **tol)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
