"""tilus.ops' MixedQuantMatmul (uint8 salient features, uint4 the rest, one launch) lowered and run
by tilus.simulator against the interpreter on the same arguments, then against dequantize() +
torch: N = 150 with 20 salient features (one wide tile, one narrow one), K = 160, M = 5."""
import importlib

import pytest
import torch

import tilus
from tests.backend.simulated_kernel import SimulatedKernel

pytest.importorskip("tilus.simulator")

C_ARG = 12          # MixedQuantMatmul's output buffer


def test_mixed_quant_matmul_simulated_equals_interpreter(monkeypatch):
    mm = importlib.import_module("tilus.ops.mixed_matmul")
    seen: list = []
    original = mm.mixed_kernel_for
    monkeypatch.setattr(mm, "mixed_kernel_for",
                        lambda *a, **kw: SimulatedKernel(original(*a, **kw), [C_ARG], seen))
    torch.manual_seed(0)
    w = torch.randn(150, 160)
    cols = torch.arange(3, 150, 7)[:20]
    mw = tilus.ops.quantize(w, dtype={"uint8": cols, "uint4": "rest"}, group_size=32)
    a = torch.randn(5, 160).half()
    bias = torch.randn(150).half()
    sched = dict(block_m=16, block_n=128, block_k=64, stages=2, split_k=1, warps=4)
    out = tilus.ops.matmul(a, mw, bias, engine="interpreter", schedule=sched)
    ref = (a.float() @ mw.dequantize(torch.float16).float().t() + bias.float()).half()
    torch.testing.assert_close(out, ref, rtol=4e-3, atol=4e-3)
    assert seen == ["MixedQuantMatmul"]
