"""Decode attention over a paged 4-bit KV cache (vLLM style): a pool of 16-token pages, a block
table of page ids per sequence that a tiny host-side allocator fills from a shuffled free list
(the cache takes the table as given: allocating is the caller's job), `quantize_kv` writing new
tokens into their pages, and `tilus.ops.attention_decode_paged` reading K/V through the table
(the DSL kernel loads each tile's page id with `load_scalar`; on CPU tensors the interpreter
runs it, on CUDA tensors a compiled build). Each decode step appends one token per sequence
(allocating a page when a sequence crosses into a new one) and prints the error against float32
attention over the unquantized K/V, against the torch reference over the dequantized pages, and
against the contiguous cache holding the same tokens.

Sizes divide no tile: 3 sequences of lengths 30, 5 and 47 that grow across page boundaries, 2 KV
heads with 3 query heads each (GQA), head_dim 32."""
import torch

import tilus
from tilus.ops.kv_cache import attention_reference


class PageAllocator:
    """Pages of a pool handed out from a free list (shuffled, so a sequence's pages are not
    contiguous) into a block table ``int32 [batch, max_pages]`` (-1: no page yet)."""

    def __init__(self, num_pages: int, batch: int, max_pages: int, seed: int = 0):
        self.free = torch.randperm(num_pages, generator=torch.Generator().manual_seed(seed)).tolist()
        self.table = torch.full((batch, max_pages), -1, dtype=torch.int32)

    def reserve(self, b: int, n_tokens: int, page_size: int) -> None:
        """Give sequence ``b`` pages for its first ``n_tokens`` tokens."""
        for j in range(-(-n_tokens // page_size)):
            if self.table[b, j] < 0:
                self.table[b, j] = self.free.pop()


def run(dtype: str = "uint4", steps: int = 3, lengths=(30, 5, 47), kv_heads: int = 2,
        group: int = 3, head_dim: int = 32, page_size: int = 16
        ) -> list[tuple[list, float, float, float]]:
    """(lengths, error vs float attention, vs the dequantized reference, vs the contiguous
    cache) per decode step."""
    torch.manual_seed(0)
    batch, longest = len(lengths), max(lengths) + steps
    max_pages = -(-longest // page_size)
    pool = tilus.ops.PagedQuantKVCache.empty(batch * max_pages + 2, kv_heads, page_size,
                                             head_dim, dtype)
    flat = tilus.ops.QuantKVCache.empty(batch, kv_heads, longest, head_dim, dtype)
    pages = PageAllocator(pool.k.shape[0], batch, max_pages)
    k = torch.randn(batch, kv_heads, longest, head_dim)
    v = torch.randn(batch, kv_heads, longest, head_dim)
    lens = torch.tensor(lengths)
    for b, n in enumerate(lengths):                       # prefill, one sequence at a time
        pages.reserve(b, n, page_size)
        at = torch.tensor([0])
        tilus.ops.quantize_kv(k[b:b + 1, :, :n], v[b:b + 1, :, :n], pool, at,
                              block_table=pages.table[b:b + 1])
    tilus.ops.quantize_kv(k, v, flat, torch.zeros(batch, dtype=torch.long))
    errors = []
    for _ in range(steps):
        at = lens.clone()
        for b in range(batch):
            pages.reserve(b, int(at[b]) + 1, page_size)
        new_k = k[torch.arange(batch), :, at][:, :, None]
        new_v = v[torch.arange(batch), :, at][:, :, None]
        tilus.ops.quantize_kv(new_k, new_v, pool, at, block_table=pages.table)
        lens = lens + 1
        q = torch.randn(batch, kv_heads * group, head_dim).half()
        out = tilus.ops.attention_decode_paged(q, pool, pages.table, lens)
        exact = attention_reference(q, k, v, lens)
        ref = tilus.ops.attention_decode_paged(q, pool, pages.table, lens, engine="reference")
        contiguous = tilus.ops.attention_decode_cache(q, flat, lens)
        errors.append((lens.tolist(), (out.float() - exact).abs().max().item(),
                       (out.float() - ref.float()).abs().max().item(),
                       (out.float() - contiguous.float()).abs().max().item()))
        assert errors[-1][2] < 5e-3 and errors[-1][3] < 5e-3, errors[-1]
    return errors


def main() -> None:
    for step, (lens, exact, ref, flat) in enumerate(run()):
        print(f"attention_decode_paged uint4 step {step}: lengths {lens}, pages of 16, GQA 2x3, "
              f"d=32: max |out - float attention| {exact:.3g}, |out - dequantized reference| "
              f"{ref:.2g}, |out - contiguous cache| {flat:.2g}")


if __name__ == "__main__":
    main()
