"""Decode attention over a 4-bit KV cache: prefill a cache with `quantize_kv`, then decode steps
that append one token per sequence and attend with `tilus.ops.attention_decode` (the Tilus DSL
split + combine kernels; on CPU tensors the interpreter runs them, on CUDA tensors a compiled
build). Each step prints the error
against float32 attention over the unquantized K/V and against the torch reference over the
dequantized cache (what the kernels should compute up to rounding).

Sizes divide no tile: 3 sequences of lengths 37, 5 and 60 (32-token tiles), 2 KV heads with 3
query heads each (GQA), head_dim 32."""
import torch

import tilus
from tilus.ops.kv_cache import attention_reference


def run(dtype: str = "uint4", steps: int = 2, lengths=(37, 5, 60), kv_heads: int = 2,
        group: int = 3, head_dim: int = 32, max_seq: int = 64) -> list[tuple[list, float, float]]:
    """(lengths, error vs float attention, error vs the dequantized reference) per decode
    step."""
    torch.manual_seed(0)
    batch = len(lengths)
    cache = tilus.ops.QuantKVCache.empty(batch, kv_heads, max_seq, head_dim, dtype)
    k = torch.randn(batch, kv_heads, max_seq, head_dim)
    v = torch.randn(batch, kv_heads, max_seq, head_dim)
    lens = torch.tensor(lengths)
    longest = max(lengths)          # a padded prefill: rows past a sequence's length are masked
    tilus.ops.quantize_kv(k[:, :, :longest], v[:, :, :longest], cache,
                          torch.zeros(batch, dtype=torch.long))
    errors = []
    for _ in range(steps):
        at = lens.clone()
        tilus.ops.quantize_kv(k[torch.arange(batch), :, at][:, :, None],
                              v[torch.arange(batch), :, at][:, :, None], cache, at)
        lens = lens + 1
        q = torch.randn(batch, kv_heads * group, head_dim).half()
        out = tilus.ops.attention_decode_cache(q, cache, lens)
        exact = attention_reference(q, k, v, lens)
        ref = tilus.ops.attention_decode_cache(q, cache, lens, engine="reference")
        errors.append((lens.tolist(), (out.float() - exact).abs().max().item(),
                       (out.float() - ref.float()).abs().max().item()))
        assert errors[-1][2] < 5e-3, errors[-1]
    return errors


def main() -> None:
    for dtype in ("uint4", "int4", "uint8"):
        for step, (lens, exact, ref) in enumerate(run(dtype)):
            print(f"attention_decode {dtype:6s} step {step}: lengths {lens}, GQA 2x3, d=32: "
                  f"max |out - float attention| {exact:.3g}, |out - dequantized reference| "
                  f"{ref:.2g}")


if __name__ == "__main__":
    main()
