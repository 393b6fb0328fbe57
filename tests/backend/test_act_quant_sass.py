"""The activation-quantized kernels built without a GPU: per-row int4/e4m3 quantization for sm_80
and sm_90, the e4m3 matmul for sm_89 (QMMA.16832, Ada's fp8 tensor cores) and sm_90 (where ptxas
runs mma.sync e4m3 as HMMA.16816 on converted operands), the W4A4 matmul for sm_80/sm_89 (int4
tensor cores, IMMA.16864.S4.S4) and sm_90 (int4 widened to int8, IMMA.16832.S8.S8), per channel
also split-k, the W8A8 matmul (also split-k) for sm_80 and sm_90; no spills, no stack frame."""
import pytest

import tilus
from tilus.errors import CompilationError
from tilus.ops import fp8, rowquant, w4a4, w8a8


def _no_spills(built) -> None:
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    assert r.registers <= 64


@pytest.mark.parametrize("dtype", ["int4", "float8_e4m3"])
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_quantize_rows_builds(need_nvcc, need_disassembler, dtype, arch):
    _no_spills(tilus.build(rowquant.QuantizeRows(dtype), arch=arch))


@pytest.mark.parametrize("arch,mma", [("sm_89", "QMMA.16832.F32.E4M3.E4M3"),
                                      ("sm_90", "HMMA.16816.F32")])
def test_matmul_fp8_builds(need_nvcc, need_disassembler, arch, mma):
    built = tilus.build(fp8.MatmulFP8(has_bias=True), arch=arch)
    _no_spills(built)
    assert mma in built.sass


@pytest.mark.parametrize("split_k", [1, 2])
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_matmul_w8a8_builds(need_nvcc, need_disassembler, arch, split_k):
    built = tilus.build(w8a8.MatmulW8A8(has_bias=True, split_k=split_k), arch=arch)
    _no_spills(built)
    assert "IMMA.16832.S8.S8" in built.sass


def test_matmul_fp8_for_sm_80_is_refused_in_words():
    with pytest.raises(CompilationError, match="needs sm_89 or newer"):
        tilus.build(fp8.MatmulFP8(has_bias=True), arch="sm_80")


@pytest.mark.parametrize("arch,s4_mma,mma", [("sm_80", True, "IMMA.16864.S4.S4"),
                                              ("sm_89", True, "IMMA.16864.S4.S4"),
                                              ("sm_90", False, "IMMA.16832.S8.S8")])
@pytest.mark.parametrize("group_size,split_k", [(0, 1), (0, 2), (128, 1)])
def test_matmul_w4a4_builds(need_nvcc, need_disassembler, arch, s4_mma, mma, group_size, split_k):
    built = tilus.build(w4a4.MatmulW4A4(has_bias=True, s4_mma=s4_mma, group_size=group_size,
                                        split_k=split_k), arch=arch)
    _no_spills(built)
    assert mma in built.sass
