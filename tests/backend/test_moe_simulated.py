"""The mixed-bit MoE kernel (tilus.ops.moe_kernels.MoEQuantMatmul) lowered to CUDA: the simulator
running its PrimFunc equals the interpreter on a small routing (three expert types in one
launch, one expert without tokens), and it builds for sm_80 and sm_90 without spills."""
import pytest
import torch

import tilus
from tests.backend.simulated_kernel import SimulatedKernel
from tests.ops.test_moe import check, make_experts, reference, routing
from tilus.ops import moe as moe_mod
from tilus.ops.moe_kernels import MoEQuantMatmul

pytest.importorskip("tvm")

OUT_ARG = 14        # MoEQuantMatmul's output argument (out)
VARIANTS = (("uint4", "tensor", 0.0, 0), ("int4", "none", 0.0, 0), ("uint2", "tensor", 0.0, 0),
            ("uint3", "tensor", 0.0, 0))


@pytest.mark.parametrize("schedule", [dict(block_k=32, stages=1), dict(block_k=64, stages=3)])
def test_simulated_matches_the_interpreter(monkeypatch, schedule):
    """The direct loop and the copy_async pipeline (k-steps of two units, three stages over
    three k-tiles; the experts' rings differ in size)."""
    seen: list = []
    real = moe_mod.kernel_for
    monkeypatch.setattr(moe_mod, "kernel_for",
                        lambda *a: SimulatedKernel(real(*a), [OUT_ARG], seen))
    tokens, top_k, k, n = 5, 2, 192, 40
    experts = make_experts(["uint4", "int4", "uint2", "int4"], n, k, group_size=64)
    x = torch.randn(tokens, k, generator=torch.Generator().manual_seed(5)).half()
    ids, weights = routing(tokens, top_k, 4, seed=6, skip=3)
    y = tilus.ops.moe_matmul(x, experts, (ids, weights), schedule=schedule)
    assert seen == ["MoEQuantMatmul"]
    check(y, reference(x, experts, ids, weights), torch.float16)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_builds_without_spills(arch):
    """The CUDA default (block_k 128, 3 stages) with four expert types in one kernel."""
    built = tilus.build(MoEQuantMatmul(VARIANTS, 128, block_k=128, stages=3), arch=arch)
    res = built.resources
    assert res.spill_store_bytes == 0 and res.spill_load_bytes == 0 and res.registers <= 128
