"""A mixture-of-experts layer whose experts are quantized to different widths (hot experts 4-bit,
cold ones 2- and 3-bit), run by one Tilus kernel launch on the CPU interpreter: the tokens are
routed top-2, and the output is compared with torch (float64, the dequantized experts: what the
kernel must compute) and with the float experts (what quantization costs)."""
import torch
from torch import nn

import tilus


def main() -> None:
    torch.manual_seed(0)
    num_experts, k, n, tokens, top_k = 6, 256, 96, 24, 2
    experts = [nn.Linear(k, n, bias=False) for _ in range(num_experts)]
    router = nn.Linear(k, num_experts, bias=False)
    x = torch.randn(tokens, k)
    topk_weights, topk_ids = torch.softmax(router(x), dim=-1).topk(top_k, dim=-1)
    counts = torch.bincount(topk_ids.reshape(-1), minlength=num_experts)
    busiest = counts.argsort(descending=True).tolist()
    dtypes = {e: "uint3" if e % 2 else "uint2" for e in range(num_experts)}   # cold experts
    dtypes[busiest[0]], dtypes[busiest[1]] = "uint4", "int4"                  # the two hottest
    moe = tilus.nn.QuantMoE.from_linears(experts, dtypes=dtypes, group_size=128)
    with torch.no_grad():
        y = moe(x.half(), (topk_ids, topk_weights)).double()
        deq = [tilus.ops.quantize(m.weight, dtype=dtypes[e], group_size=128)
               .dequantize(torch.float16).double() for e, m in enumerate(experts)]
        exact = torch.zeros(tokens, n, dtype=torch.float64)
        floats = torch.zeros(tokens, n, dtype=torch.float64)
        for t in range(tokens):
            for j in range(top_k):
                e, w = int(topk_ids[t, j]), float(topk_weights[t, j])
                exact[t] += w * (x[t].half().double() @ deq[e].T)
                floats[t] += w * (x[t].double() @ experts[e].weight.double().T)
    print(f"experts: {moe.dtypes}  (tokens per expert {counts.tolist()})")
    print(f"kernel variants (one static dequantize branch each): {[v[0] for v in moe.variants]}")
    print(f"max |y - torch(dequantized experts)| = {(y - exact).abs().max().item():.2e} "
          f"(max |y| = {exact.abs().max().item():.2f})")
    print(f"relative error vs the float experts = "
          f"{((y - floats).norm() / floats.norm()).item():.3f}")


if __name__ == "__main__":
    main()
