"""tilus.ops.attention_prefill's kernels built for sm_90 and sm_80 without a GPU (64-row Q tiles,
64-token K/V tiles, 4 warps): no spills, no stack frame, no layout conversion (P stays in the
registers the scores' mma left it in), K and V through ldmatrix from padded stages, and the
main loop's tensor-core work is exactly Q K^T and P V."""
import pytest

import tilus
from tilus.ir import inst as I
from tilus.ir.functor import instructions
from tilus.ops.prefill import prefill_kernel


@pytest.mark.parametrize("head_dim,arch,act,kv_dtype,causal", [
    (128, "sm_90", "float16", None, True),
    (64, "sm_80", "bfloat16", None, False),
    (128, "sm_80", "float16", "int8", True),
    (128, "sm_90", "bfloat16", "float8_e4m3", False),
])
def test_prefill_kernel_builds_without_spills(need_nvcc, need_disassembler, head_dim, arch, act,
                                              kv_dtype, causal):
    built = tilus.build(prefill_kernel(head_dim, 4, head_dim ** -0.5, causal, act, kv_dtype),
                        arch=arch)
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    assert r.registers <= 255
    assert not [i for i in instructions(built.program.body) if isinstance(i, I.ConvertLayoutInst)]
    # per warp and 64-token tile: Q K^T is 16 x 64 over k = head_dim (head_dim / 16 * 8 mma)
    # and P V 16 x head_dim over k = 64 (4 * head_dim / 8 mma): head_dim m16n8k16 in all
    assert built.main_loop_cost().mma == head_dim
    assert "HMMA.16816.F32" in built.sass and "LDSM.16.M88.2" in built.sass
    assert "LDSM.16.MT88.2" in built.sass and "LDGSTS" in built.sass
