"""tilus.ops.attention_decode's kernels built for sm_90 and sm_80 without a GPU (head_dim 128,
4 query heads per KV head, 32-token tiles): no spills, no stack frame, tensor-core scores and
P V (HMMA), and the split kernel's main loop is the one the static cost benchmark counts; the
paged split kernel likewise, its loop no longer than the contiguous one's for 32-token pages."""
import pytest

import tilus
from tilus.ops.attention import combine_kernel, paged_split_kernel, split_kernel


@pytest.mark.parametrize("dtype,arch,act,group_size", [("uint4", "sm_90", "float16", 0),
                                                       ("float4_e2m1", "sm_90", "bfloat16", 32),
                                                       ("float8_e4m3", "sm_80", "float16", 0)])
def test_split_kernel_builds_without_spills(need_nvcc, need_disassembler, dtype, arch, act,
                                            group_size):
    built = tilus.build(split_kernel(dtype, dtype, 128, 4, 128 ** -0.5, act=act,
                                     group_size=group_size), arch=arch)
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    assert r.registers <= 255
    cost = built.main_loop_cost()
    # a 32-token tile: S (16 x 32 over k = 128) and P V (16 x 128 over k = 32) are 32 m16n8k16
    # each; each of the four warps runs at least its quarter of the 64
    assert 64 // 4 <= cost.mma <= 64
    assert "HMMA.16816.F32" in built.sass and "MUFU.EX2" in built.sass


def test_combine_kernel_builds_without_spills(need_nvcc, need_disassembler):
    r = tilus.build(combine_kernel(128, 4), arch="sm_90").resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0


@pytest.mark.parametrize("page_size,arch", [(32, "sm_90"), (16, "sm_80")])
def test_paged_split_kernel_builds_without_spills(need_nvcc, need_disassembler, page_size, arch):
    built = tilus.build(paged_split_kernel("uint4", "uint4", 128, 4, 128 ** -0.5, page_size),
                        arch=arch)
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    assert r.registers <= 255 and "HMMA.16816.F32" in built.sass
    cost = built.main_loop_cost()
    tile = 32 if page_size % 32 == 0 else 16
    # S (16 x tile over k = 128) and P V (16 x 128 over k = tile): tile m16n8k16 each
    assert 2 * tile // 4 <= cost.mma <= 2 * tile
    if page_size == 32:     # the same tile; no positions buffer, no bounds masks in a page
        flat = tilus.build(split_kernel("uint4", "uint4", 128, 4, 128 ** -0.5), arch=arch)
        assert cost.instructions <= flat.main_loop_cost().instructions
