"""The decode kernel ``tilus.ops.matmul`` launches (M=1, N=K=4096, group 128, sm_90) for the
weight types of the issue's list: no spills, no stack frame, the SASS of a fast kernel (HMMA,
ldmatrix, 16-byte cp.async, LOP3/PRMT casts, HFMA2/HMUL2 scaling, no I2F/F2F), and the static
cost of its main loop (tilus.backend.sass_cost) within the budget that keeps it memory-bound on
an H200: instruction issue time below the time to move the weight's bytes."""
import pytest
import torch

import tilus
from benchmarks.bench_decode_cost import memory_over_issue

TYPES = ("uint1", "uint2", "uint3", "int4", "uint5", "uint6", "uint7", "int8", "float4_e2m1",
         "float6_e3m2", "float8_e4m3")


def _build(wtype):
    qw = tilus.ops.quantize(torch.linspace(-1, 1, 4096 * 4096).reshape(4096, 4096), wtype,
                            group_size=128)
    return qw, tilus.ops.compile_matmul(qw, 1, arch="sm_90")


@pytest.mark.parametrize("wtype", TYPES)
def test_decode_kernel_sm90(need_nvcc, need_disassembler, wtype):
    qw, built = _build(wtype)
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    sass = built.sass
    for opcode in ("HMMA.16816.F32", "LDSM.16", "LDGSTS.E.BYPASS.128"):
        assert opcode in sass, (wtype, opcode)
    assert "LOP3" in sass or "PRMT" in sass
    assert ("HFMA2" if qw.offsets is not None else "HMUL2") in sass     # scale (and offset)
    cost = built.loop_cost()
    assert not any(op.startswith(("I2F", "F2F")) for op in cost["by_opcode"]), cost["by_opcode"]
    ipe = cost["instructions_per_weight_element"]
    nbits = tilus.dtypes.get(wtype).nbits
    if wtype in ("int4", "uint4"):
        assert ipe <= 3.0, ipe
    if nbits >= 3:
        params = 2 * (1 + (qw.offsets is not None)) / 128           # scale (+ offset) bytes
        assert memory_over_issue(nbits, params, ipe) >= 1.1, (wtype, ipe)


def test_build_op_cli_shows_the_kernel_matmul_launches(need_nvcc, need_disassembler, capsys):
    """`tilus build-op matmul` builds what tilus.ops.matmul launches and prints its cost."""
    import json

    from tilus.__main__ import main

    assert main(["build-op", "matmul", "--dtype", "int4", "--m", "1", "--n", "512", "--k", "512",
                 "--emit", "cost"]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["schedule"]["block_m"] == 16 and cost["schedule"]["block_n"] == 128
    assert cost["by_class"]["mma"] * 4 == cost["weight_elements_per_thread"]
    assert 1.0 < cost["instructions_per_weight_element"] <= 3.0
    assert main(["build-op", "matmul", "--dtype", "int4", "--m", "64", "--n", "512", "--k",
                 "512", "--emit", "resources"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["schedule"]["block_m"] == 64 and res["spill_store_bytes"] == 0


@pytest.mark.parametrize("wtype, m, act", [("uint4", 1, torch.float16),
                                           ("uint3", 1, torch.bfloat16),
                                           ("uint4", 128, torch.float16)])
def test_integer_zero_point_kernels_sm90(need_nvcc, need_disassembler, wtype, m, act):
    """zero_mode="int" ((v - z) * s: one half subtract and one multiply per two weights after
    the cast): no spills, conversions only for the zero points (one per loaded uint8, none per
    weight), and the uint4 decode loop still memory-bound."""
    w = torch.linspace(-1, 1, 4096 * 4096).reshape(4096, 4096)
    qw = tilus.ops.quantize(w, wtype, group_size=128, zero_mode="int", scale_dtype=act)
    built = tilus.ops.compile_matmul(qw, m, arch="sm_90", act=act)
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    cost = built.loop_cost()
    ops = cost["by_opcode"]
    zeros = sum(v for op, v in ops.items() if op.startswith("LDG.E.U8"))
    for kind in ("I2F", "F2F"):
        assert sum(v for op, v in ops.items() if op.startswith(kind)) <= zeros, ops
    if m == 1 and wtype == "uint4":
        ipe = cost["instructions_per_weight_element"]
        assert ipe <= 3.3, ipe
        assert memory_over_issue(4, 3 / 128, ipe) >= 1.1, ipe      # fp16 scale + uint8 zero


@pytest.mark.parametrize("scheme, arch", [("mx", "sm_90"), ("nvfp4", "sm_90"), ("nvfp4", "sm_80")])
def test_block_scaled_decode_kernels(need_nvcc, need_disassembler, scheme, arch):
    """MXFP4 and NVFP4 at M=1 take the fast path (scales applied to the weights in float16): no
    spills, no float32 partials (FFMA) or conversions in the loop, scale codes read from shared
    memory, and at most 4 instructions per weight (H200: memory / issue >= 1.1)."""
    w = torch.linspace(-1, 1, 4096 * 4096).reshape(4096, 4096)
    qw = tilus.ops.quantize(w, "float4_e2m1", scheme=scheme)
    built = tilus.ops.compile_matmul(qw, 1, arch=arch)
    assert built.script.fold_scale and built.schedule["block_k"] == 512
    r = built.resources
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0 and r.stack_frame_bytes == 0
    cost = built.loop_cost()
    ops = cost["by_opcode"]
    assert not any(op.startswith(("FFMA", "I2F", "F2F", "LDG.E")) for op in ops), ops
    assert ops.get("LDS.U8", 0) == 512 // qw.group_size * 4, ops      # 4 columns per row
    ipe = cost["instructions_per_weight_element"]
    assert ipe <= 4.0, ipe
    assert memory_over_issue(4, 1 / qw.group_size, ipe) >= 1.1, ipe
