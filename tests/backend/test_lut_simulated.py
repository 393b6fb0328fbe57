"""The LUT-GEMM kernel (``tilus.ops.lut_kernels.LutMatmul``) lowered and run by tilus.simulator,
equal to the interpreter and to the exact reference once (2 bits, two rows per block, masked
columns); and built for sm_90 (1 and 2 bits) and sm_80 with no spills, one LDS per lookup and
no tensor-core instruction in its main loop."""
import pytest
import torch

import tilus
from tests.backend.simulated_kernel import SimulatedKernel
from tests.ops.test_lut import K, exact_weight
from tilus.ops.lut import lut_reference
from tilus.ops.lut_kernels import LutMatmul


def test_lut_matmul_simulated_equals_interpreter_and_reference():
    pytest.importorskip("tilus.simulator")
    lw = exact_weight(2, 5)
    a = torch.randint(-3, 4, (3, K)).half()
    c = torch.zeros(3, lw.n).half()
    seen: list = []
    kernel = SimulatedKernel(LutMatmul(2, lw.group_size, block_m=2, block_k=64), [7], seen)
    kernel(3, lw.n, lw.k, a, lw.planes, lw.scales, lw.offsets, c)
    assert seen == ["LutMatmul"] and torch.equal(c, lut_reference(a, lw))


@pytest.mark.parametrize("arch, bits", [("sm_90", 1), ("sm_90", 2), ("sm_80", 1)])
def test_lut_decode_kernel_builds_without_spills(need_nvcc, need_disassembler, arch, bits):
    built = tilus.build(LutMatmul(bits, 128, block_m=1, block_k=128), arch=arch)
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    cost = built.main_loop_cost(("LDS",))
    lookups = bits * 128 // 4                           # per thread: one per plane and chunk
    assert lookups <= cost.by_opcode["LDS"] <= lookups + 4 and cost.mma == 0
