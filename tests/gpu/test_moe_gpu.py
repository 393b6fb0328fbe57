"""tilus.ops.moe_matmul and tilus.nn.QuantMoE on a real GPU (skipped where none is visible): the
compiled one-launch mixed-bit kernel against a torch reference (each expert dequantized, the
tokens' top_k products weighted and summed in float32), decode and prefill token counts, float16
and bfloat16, an expert without tokens, and N, K that divide no tile."""
from __future__ import annotations

import pytest

from tests.gpu.kernels import MOE_CALLS, MOE_TYPES

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("tokens", [1, 37, 300])
@pytest.mark.parametrize("group,k,act", MOE_CALLS[:2])
def test_moe_matmul_compiled_matches_reference(tokens, group, k, act):
    import torch

    import tilus

    g = torch.Generator(device="cuda").manual_seed(0)
    dt = getattr(torch, act)
    n, top_k = 1000, 2
    experts = [tilus.ops.quantize((torch.randn(n, k, generator=g, device="cuda") * 0.05).to(dt),
                                  dtype=t, group_size=group) for t in MOE_TYPES]
    x = torch.randn(tokens, k, generator=g, device="cuda").to(dt)
    scores = torch.randn(tokens, len(MOE_TYPES), generator=g, device="cuda")
    scores[:, 6] = -1e9                                      # expert 6 receives no token
    weights, ids = torch.softmax(scores, -1).topk(top_k, dim=-1)
    y = tilus.ops.moe_matmul(x, experts, (ids, weights))
    deq = torch.stack([qw.dequantize(dt).float() for qw in experts])    # [E, N, K]
    per_pair = torch.einsum("tk,tjnk->tjn", x.float(), deq[ids])
    ref = (per_pair * weights.unsqueeze(-1)).sum(1)
    tol = dict(rtol=2e-3, atol=2e-3) if dt == torch.float16 else dict(rtol=1.6e-2, atol=1.6e-2)
    torch.testing.assert_close(y.float(), ref, **tol)
    cpu = tilus.ops.moe_matmul(x[:3].cpu(), [qw.to("cpu") for qw in experts],
                               (ids[:3].cpu(), weights[:3].cpu()))
    torch.testing.assert_close(y[:3].cpu().float(), cpu.float(), **tol)


def test_quant_moe_on_cuda():
    import torch
    from torch import nn

    import tilus

    torch.manual_seed(0)
    group, k, _ = MOE_CALLS[2]
    linears = [nn.Linear(k, 384) for _ in range(4)]
    moe = tilus.nn.QuantMoE.from_linears(linears, dtypes=list(MOE_TYPES[:4]), group_size=group)
    x = torch.randn(2, 5, k).half()
    ids = torch.randint(0, 4, (2, 5, 2))
    weights = torch.rand(2, 5, 2)
    cpu = moe(x, (ids, weights))
    gpu = moe.cuda()(x.cuda(), (ids.cuda(), weights.cuda()))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-3, atol=2e-3)
