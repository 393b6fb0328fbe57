"""tilus.ops.attention_decode_paged and quantize_kv into a PagedQuantKVCache: the DSL kernels run
by the interpreter against the torch reference of test_attention.py (codes unpacked by that file,
the pages walked here with Python loops, not PagedQuantKVCache.gather) and against the
contiguous cache holding the same tokens; shuffled page ids from a pool with unused pages,
lengths that divide neither the page nor the tile (0 included), GQA, stale or NaN data past a
sequence's end; BlockTableError for a table that is too short or names a page outside the pool."""
from types import SimpleNamespace

import pytest
import torch

from tilus.errors import ArgumentError, BlockTableError
from tilus.ops import PagedQuantKVCache, QuantKVCache, quantize_kv
from tilus.ops.attention import attention_decode_cache, attention_decode_paged

from tests.ops.test_attention import _reference

KV_HEADS, GROUP, D = 2, 3, 32


def _table(lens, page_size, max_pages, num_pages, seed):
    """A block table whose sequences own disjoint, shuffled pages of the pool (unused columns
    -1, pages no sequence owns left over)."""
    perm = torch.randperm(num_pages, generator=torch.Generator().manual_seed(seed))
    table = torch.full((len(lens), max_pages), -1, dtype=torch.int32)
    at = 0
    for b, n in enumerate(lens):
        need = -(-n // page_size)
        table[b, :need] = perm[at:at + need].int()
        at += need
    assert at < num_pages                       # some pages stay unused
    return table


def _filled(lens, dtype, page_size, act=torch.float16, group_size=None, seed=0):
    """(paged cache, its table, the contiguous cache of the same tokens, q): every sequence's
    tokens written by quantize_kv, in two appends (a prefill and the rest)."""
    g = torch.Generator().manual_seed(seed)
    batch, longest = len(lens), max(max(lens), 1)
    max_pages = -(-longest // page_size) + 1
    num_pages = sum(-(-n // page_size) for n in lens) + 3
    table = _table(lens, page_size, max_pages, num_pages, seed)
    paged = PagedQuantKVCache.empty(num_pages, KV_HEADS, page_size, D, dtype, scale_dtype=act,
                                    group_size=group_size)
    contiguous = QuantKVCache.empty(batch, KV_HEADS, longest, D, dtype, scale_dtype=act,
                                    group_size=group_size)
    k = torch.randn(batch, KV_HEADS, longest, D, generator=g)
    v = torch.randn(batch, KV_HEADS, longest, D, generator=g)
    for b, n in enumerate(lens):
        half = n // 2
        for lo, hi in ((0, half), (half, n)):
            if hi > lo:
                kb, vb, at = k[b:b + 1, :, lo:hi], v[b:b + 1, :, lo:hi], torch.tensor([lo])
                quantize_kv(kb, vb, paged, at, block_table=table[b:b + 1])
                c = contiguous          # its row b, a view: writes land in the cache
                row = QuantKVCache(c.k[b:b + 1], c.v[b:b + 1], c.k_scales[b:b + 1],
                                   c.k_zeros[b:b + 1], c.v_scales[b:b + 1], c.v_zeros[b:b + 1],
                                   c.dtype, D, group_size)
                quantize_kv(kb, vb, row, at)
    q = torch.randn(batch, KV_HEADS * GROUP, D, generator=g).to(act)
    return paged, table, contiguous, q


def _walked(paged, table, lens):
    """The contiguous rows of every sequence, read through the table with Python loops."""
    longest = max(max(lens), 1)
    ps = paged.page_size
    out = {}
    for name in ("k", "v", "k_scales", "k_zeros", "v_scales", "v_zeros"):
        pool = getattr(paged, name)
        x = torch.zeros(len(lens), pool.shape[1], longest, *pool.shape[3:], dtype=pool.dtype)
        for b, n in enumerate(lens):
            for s in range(n):
                x[b, :, s] = pool[int(table[b, s // ps]), :, s % ps]
        out[name] = x
    return SimpleNamespace(**out, dtype=paged.dtype, head_dim=D)


@pytest.mark.parametrize("dtype,page_size,act,group_size", [
    ("uint4", 16, torch.float16, None), ("int8", 32, torch.float16, None),
    ("float8_e4m3", 16, torch.bfloat16, 8), ("uint3", 48, torch.bfloat16, None)])
def test_paged_matches_reference_and_the_contiguous_cache(dtype, page_size, act, group_size):
    lens = [37, 0, 50, 3]
    paged, table, contiguous, q = _filled(lens, dtype, page_size, act, group_size)
    seq_lens = torch.tensor(lens)
    out = attention_decode_paged(q, paged, table, seq_lens, num_splits=2)
    ref = _reference(q, _walked(paged, table, lens), seq_lens)
    tol = dict(rtol=1e-2, atol=2e-3) if act == torch.float16 else dict(rtol=2e-2, atol=1e-2)
    torch.testing.assert_close(out.double(), ref, **tol)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    flat = attention_decode_cache(q, contiguous, seq_lens, num_splits=2)
    if page_size % 32 == 0:         # the same 32-token tiles in the same order: the same bits
        assert torch.equal(out, flat)
    else:
        torch.testing.assert_close(out, flat, **tol)
    by_cache = attention_decode_cache(q, paged, seq_lens, block_table=table, engine="reference")
    torch.testing.assert_close(by_cache.double(), ref, **tol)


def test_quantize_kv_writes_the_rows_the_contiguous_cache_gets():
    lens = [21, 40, 16]
    paged, table, contiguous, _ = _filled(lens, "uint4", 16)
    walked = _walked(paged, table, lens)
    for name in ("k", "v", "k_scales", "k_zeros", "v_scales", "v_zeros"):
        for b, n in enumerate(lens):
            assert torch.equal(getattr(walked, name)[b, :, :n], getattr(contiguous, name)[b, :, :n])
    gathered = paged.gather(table)
    assert torch.equal(gathered.k[0, :, :21], contiguous.k[0, :, :21])
    owned = {int(p) for p in table.flatten() if p >= 0}
    unused = [p for p in range(paged.k.shape[0]) if p not in owned]
    assert unused and not paged.k[unused].any() and not paged.k_scales[unused].any()


def test_decode_steps_append_across_page_boundaries():
    """One token per step into pages of 16: lengths 15 -> 18 and 31 -> 34 cross a page."""
    g = torch.Generator().manual_seed(3)
    table = torch.tensor([[4, 0, -1], [2, 5, 1]], dtype=torch.int32)
    paged = PagedQuantKVCache.empty(6, KV_HEADS, 16, D, "int4")
    k = torch.randn(2, KV_HEADS, 34, D, generator=g)
    v = torch.randn(2, KV_HEADS, 34, D, generator=g)
    lens = torch.tensor([15, 31])
    quantize_kv(k[:, :, :15], v[:, :, :15], paged, torch.tensor([0, 0]), block_table=table)
    quantize_kv(k[1:, :, 15:31], v[1:, :, 15:31], paged, torch.tensor([15]), block_table=table[1:])
    for _ in range(3):
        at = lens.clone()
        quantize_kv(k[torch.arange(2), :, at][:, :, None], v[torch.arange(2), :, at][:, :, None],
                    paged, at, block_table=table)
        lens = lens + 1
        q = torch.randn(2, KV_HEADS * GROUP, D, generator=g).half()
        out = attention_decode_paged(q, paged, table, lens)
        ref = _reference(q, _walked(paged, table, lens.tolist()), lens)
        torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=2e-3)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_stale_and_nan_rows_past_a_sequences_end_are_ignored():
    lens = [21, 9]
    paged, table, _, q = _filled(lens, "uint4", 16, seed=4)
    seq_lens = torch.tensor(lens)
    before = attention_decode_paged(q, paged, table, seq_lens)
    last = int(table[0, 1])                      # sequence 0's second page: slots 5.. unused
    for t in (paged.k_scales, paged.v_scales, paged.k_zeros, paged.v_zeros):
        t[last, :, 5:] = float("nan")
    paged.k[last, :, 5:] = 0xA5
    table[1, 1:] = 10 ** 6                       # columns past sequence 1's only page
    after = attention_decode_paged(q, paged, table, seq_lens)
    assert torch.isfinite(after).all() and torch.equal(before, after)


def test_an_empty_batch_and_all_empty_sequences_give_zeros():
    paged = PagedQuantKVCache.empty(2, KV_HEADS, 16, D, "uint4")
    q = torch.randn(3, KV_HEADS * GROUP, D).half()
    table = torch.full((3, 2), -1, dtype=torch.int32)
    out = attention_decode_paged(q, paged, table, torch.zeros(3, dtype=torch.int32))
    assert torch.equal(out, torch.zeros_like(q))
    none = attention_decode_paged(q[:0], paged, table[:0], torch.zeros(0, dtype=torch.int32))
    assert none.shape == (0, KV_HEADS * GROUP, D)


def test_block_table_errors_are_raised_on_the_host_before_anything_is_written():
    lens = [20, 5]
    paged, table, _, q = _filled(lens, "uint4", 16)
    snapshot = [t.clone() for t in (paged.k, paged.v, paged.k_scales, paged.v_scales)]
    assert table.shape[1] == 3
    with pytest.raises(BlockTableError, match="too short: sequence 0 needs page 3"):
        attention_decode_paged(q, paged, table, torch.tensor([60, 5]))
    bad = table.clone()
    bad[1, 0] = paged.k.shape[0]
    with pytest.raises(BlockTableError, match=r"block_table\[1, 0\] = 6 is not a page of the pool"):
        attention_decode_paged(q, paged, bad, torch.tensor(lens))
    bad[1, 0] = -1
    with pytest.raises(BlockTableError, match=r"block_table\[1, 0\] = -1"):
        attention_decode_paged(q, paged, bad, torch.tensor(lens))
    new = torch.randn(2, KV_HEADS, 2, D)
    with pytest.raises(BlockTableError, match="too short: sequence 0 needs page 3"):
        quantize_kv(new, new, paged, torch.tensor([47, 0]), block_table=table)
    with pytest.raises(BlockTableError, match=r"block_table\[0, 2\] = -1"):
        quantize_kv(new, new, paged, torch.tensor([32, 0]), block_table=table)
    with pytest.raises(BlockTableError, match=r"block_table\[1, 0\] = -1"):
        quantize_kv(new, new, paged, torch.tensor([0, 0]), block_table=bad)
    assert all(torch.equal(a, b) for a, b in zip(
        snapshot, (paged.k, paged.v, paged.k_scales, paged.v_scales)))
    assert issubclass(BlockTableError, ArgumentError)


def test_arguments_are_checked():
    paged, table, contiguous, q = _filled([5, 7], "uint4", 16)
    lens = torch.tensor([5, 7])
    with pytest.raises(ArgumentError, match="block_table must be an integer tensor"):
        attention_decode_paged(q, paged, table.float(), lens)
    with pytest.raises(ArgumentError, match=r"block_table must be an integer tensor \[batch=2"):
        attention_decode_paged(q, paged, table[:1], lens)
    with pytest.raises(ArgumentError, match="cache must be a PagedQuantKVCache"):
        attention_decode_paged(q, contiguous, table, lens)
    with pytest.raises(ArgumentError, match="head_dim=32 and torch.float16 scales"):
        attention_decode_paged(q.bfloat16(), paged, table, lens)
    with pytest.raises(ArgumentError, match="a block_table goes with a PagedQuantKVCache"):
        attention_decode_cache(q, contiguous, lens, block_table=table)
    with pytest.raises(ArgumentError, match="block_table must be"):
        quantize_kv(torch.randn(2, KV_HEADS, 1, D), torch.randn(2, KV_HEADS, 1, D), paged,
                    torch.tensor([0, 0]))
    with pytest.raises(ArgumentError, match="page_size=24 must be a positive multiple of 16"):
        PagedQuantKVCache.empty(4, 1, 24, D)
