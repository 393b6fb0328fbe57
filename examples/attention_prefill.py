"""Flash attention over a prompt (prefill) with `tilus.ops.attention_prefill`: the Tilus DSL
kernel (64 query rows per block, 64-token K/V tiles through a cp.async pipeline, mma for Q K^T
and P V, the online softmax in fp32) on CPU tensors runs in the interpreter, on CUDA tensors a
compiled build. Prints the error against torch's float32 attention, causal and not, float16 and
bfloat16, and with K/V quantized to int8 and float8_e4m3 per (token, head) (against attention
over the dequantized K/V, and over the original K/V).

Sizes divide no tile: 37 queries, 53 keys, 4 query heads over 2 KV heads (GQA), head_dim 64."""
import torch

import tilus
from tilus.ops.kv_cache import dequantize_rows, quantize_rows
from tilus.ops.prefill import prefill_reference


def run(seq_q: int = 37, seq_kv: int = 53, heads: int = 4, kv_heads: int = 2,
        head_dim: int = 64) -> list[tuple[str, float, float]]:
    """(what, max |out - torch| over the K/V the kernel reads, max |out - torch| over the
    unquantized K/V) per configuration."""
    torch.manual_seed(0)
    q = torch.randn(1, heads, seq_q, head_dim)
    k = torch.randn(1, kv_heads, seq_kv, head_dim)
    v = torch.randn(1, kv_heads, seq_kv, head_dim)
    rows = []
    for act in (torch.float16, torch.bfloat16):
        for causal in (False, True):
            out = tilus.ops.attention_prefill(q.to(act), k.to(act), v.to(act), causal=causal)
            ref = prefill_reference(q.to(act), k.to(act), v.to(act), causal)
            exact = prefill_reference(q, k, v, causal)
            rows.append((f"{str(act)[6:]:8s} causal={causal!s:5s} K/V {str(act)[6:]}",
                         (out.float() - ref).abs().max().item(),
                         (out.float() - exact).abs().max().item()))
    for kv_dtype in ("int8", "float8_e4m3"):
        kc, ks, kz = quantize_rows(k, kv_dtype)
        vc, vs, vz = quantize_rows(v, kv_dtype)
        out = tilus.ops.attention_prefill(q.half(), kc, vc, causal=True, kv_dtype=kv_dtype,
                                          k_scales=ks, v_scales=vs, k_zeros=kz, v_zeros=vz)
        kd = dequantize_rows(kc, ks, kz, kv_dtype, head_dim)
        vd = dequantize_rows(vc, vs, vz, kv_dtype, head_dim)
        ref = prefill_reference(q.half(), kd, vd, True)
        rows.append((f"float16  causal=True  K/V {kv_dtype}", (out.float() - ref).abs().max().item(),
                     (out.float() - prefill_reference(q, k, v, True)).abs().max().item()))
    for what, err, _ in rows:
        assert err < (2e-2 if what.startswith("bfloat16") else 5e-3), (what, err)
    return rows


def main() -> None:
    print("attention_prefill: q [1, 4, 37, 64], k/v [1, 2, 53, 64] (GQA), the interpreter on the "
          "CPU")
    for what, err, exact in run():
        print(f"  {what:37s} max |out - torch| {err:.2e}   vs unquantized K/V {exact:.2e}")


if __name__ == "__main__":
    main()
