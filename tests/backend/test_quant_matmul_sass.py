"""The ready low-bit matmul (tilus.ops.QuantMatmul) for the weight types of the issue's list:
no spills, no stack frame, and the SASS of a fast kernel: tensor cores (HMMA), ldmatrix (LDSM),
16-byte async copies (LDGSTS.E.BYPASS.128) and bit-level dequantization (LOP3, PRMT)."""
import pytest

import tilus
from tilus.ops.kernels import QuantMatmul

TYPES = ("uint1", "uint2", "uint3", "int4", "uint5", "uint6", "uint7", "int8", "float4_e2m1",
         "float6_e3m2", "float8_e4m3")


@pytest.mark.parametrize("wtype", TYPES)
def test_quant_matmul_sm90(need_nvcc, need_disassembler, wtype):
    kernel = tilus.build(QuantMatmul(wtype, 128, block_m=16, block_n=128, block_k=64, stages=2),
                         arch="sm_90")
    r = kernel.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    sass = kernel.sass
    for opcode in ("HMMA.16816.F32", "LDSM.16", "LDGSTS.E.BYPASS.128", "LOP3", "PRMT"):
        assert opcode in sass, (wtype, opcode)
