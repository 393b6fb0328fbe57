"""The bit-sliced kernel (``tilus.ops.sliced_kernels.SlicedMatmul``) lowered and run by
tilus.simulator against the interpreter on the same arguments, once, at 8 bits (all three slices,
the cp.async ring, k-tiles of two groups), then against ``dequantize(8)`` + torch; and built
for sm_80 and sm_90 at every served width with no spills."""
import importlib

import pytest
import torch

import tilus
from tests.backend.quant_matmul_sim import C_ARG
from tests.backend.simulated_kernel import SimulatedKernel


def test_sliced_matmul_simulated_equals_interpreter(monkeypatch):
    pytest.importorskip("tilus.simulator")
    sl = importlib.import_module("tilus.ops.sliced")
    seen: list = []
    original = sl.kernel_for
    monkeypatch.setattr(sl, "kernel_for",
                        lambda *a, **kw: SimulatedKernel(original(*a, **kw), [C_ARG], seen))
    torch.manual_seed(0)
    sw = tilus.ops.quantize_sliced(torch.randn(136, 192), group_size=64)
    a = torch.randn(3, 192).half()
    sched = dict(block_m=16, block_n=128, block_k=128, stages=2, split_k=1, warps=4)
    out = tilus.ops.matmul_sliced(a, sw, bits=8, engine="interpreter", schedule=sched)
    ref = (a.float() @ sw.dequantize(8, torch.float16).float().t()).half()
    torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)
    assert seen == ["SlicedMatmul"]


@pytest.mark.parametrize("arch, bits", [("sm_90", 2), ("sm_90", 4), ("sm_90", 8), ("sm_80", 8)])
def test_sliced_decode_kernel_builds_without_spills(need_nvcc, need_disassembler, arch, bits):
    """The decode schedule (M = 1, N = K = 4096, group 128): no spills or stack, HMMA and
    16-byte cp.async, and one packed cast per slice (no I2F/F2F per weight)."""
    from tilus.ops.matmul import default_schedule
    from tilus.ops.sliced import kernel_for

    sched = default_schedule(1, 4096, 4096, 128, "compiled", 132, bits)
    built = tilus.build(kernel_for(bits, 128, 4096, "float16", False, sched), arch=arch)
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    assert "HMMA.16816.F32" in built.sass and "LDGSTS.E.BYPASS.128" in built.sass
    ops = built.main_loop_cost().by_opcode
    assert not any(op.startswith(("I2F", "F2F")) for op in ops), ops
