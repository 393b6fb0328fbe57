"""The mixed-width kernel (MixedQuantMatmul: uint8 salient features and uint4 the rest in one
launch) builds for sm_80 and sm_90 with no spills and no stack frame, and keeps the fast SASS of
the single-width kernel (HMMA, ldmatrix, cp.async, LOP3/PRMT casts, HFMA2, no I2F): the decode
kernel tilus.ops.compile_matmul builds for M = 1, and a short pipelined schedule on both archs."""
import pytest
import torch

import tilus
from tilus.ops.matmul import weight_meta
from tilus.ops.mixed_matmul import mixed_kernel_for


def _weight(n=1024, k=1024):
    w = torch.linspace(-1, 1, n * k).reshape(n, k)
    return tilus.ops.quantize(w, dtype={"uint8": torch.arange(0, n, 10), "uint4": "rest"},
                              group_size=128)


def _check(built):
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0, r
    sass = built.sass
    for opcode in ("HMMA.16816.F32", "LDSM.16", "LDGSTS.E.BYPASS.128", "LOP3", "PRMT", "HFMA2"):
        assert opcode in sass, opcode
    assert "I2F" not in sass


def test_decode_kernel_sm90(need_nvcc, need_disassembler):
    built = tilus.ops.compile_matmul(_weight(), 1, arch="sm_90")
    assert type(built.script).__name__ == "MixedQuantMatmul"
    assert built.schedule["block_k"] == 256 and built.schedule["stages"] >= 2
    _check(built)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_pipelined_schedule_builds(need_nvcc, need_disassembler, arch):
    mw = _weight()
    sched = dict(block_m=16, block_n=128, block_k=64, split_k=2, warps=4, stages=3)
    kern = mixed_kernel_for(weight_meta(mw.wide, torch.float16),
                            weight_meta(mw.narrow, torch.float16), "float16", True, sched)
    _check(tilus.build(kern, arch=arch))
