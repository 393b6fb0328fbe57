"""Every example kernel: tilus.build -> tirx PrimFunc -> CUDA -> nvcc, for sm_80 and sm_90.

Checks resources (no spills, no stack frame), the fast paths in SASS, and the structure of the
emitted TIR/CUDA (bounds masks, barriers, the TIR node kinds the simulator must support).
"""
import pathlib
import sys

import pytest

import tilus

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
ARCHES = ("sm_80", "sm_90")
LOWBIT = ("uint3", "int4", "uint6", "float6_e3m2", "float4_e2m1")

# the TIR statement kinds the lowering may emit (see tilus/backend/codegen/lower.py)
ALLOWED_STMTS = {"AllocBuffer", "DeclBuffer", "Evaluate", "Bind", "For", "IfThenElse", "SeqStmt",
                 "BufferStore", "While", "Break", "Continue"}


def _example(name):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return __import__(name)


def _kernel(name):
    if name == "vector_add":
        return _example("vector_add").VecAdd(256)
    if name == "softmax":
        return _example("softmax").Softmax(16, 128)
    if name == "matmul_fp16":
        return _example("matmul_fp16").MatmulFp16()
    if name == "matmul_splitk":
        return _example("matmul_splitk").MatmulSplitK()
    if name.startswith("matmul_lowbit_"):
        return _example("matmul_lowbit").MatmulLowBit(name[len("matmul_lowbit_"):])
    raise KeyError(name)


NAMES = ["vector_add", "softmax", "matmul_fp16", "matmul_splitk"] + [f"matmul_lowbit_{t}" for t in LOWBIT]


@pytest.fixture(scope="module")
def built(need_nvcc):
    cache = {}

    def get(name, arch):
        if (name, arch) not in cache:
            cache[(name, arch)] = tilus.build(_kernel(name), arch=arch)
        return cache[(name, arch)]
    return get


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("name", NAMES)
def test_example_builds_without_spills(built, name, arch):
    k = built(name, arch)
    r = k.resources
    assert r.registers > 0
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0, r
    assert r.stack_frame_bytes == 0, r
    assert k.arch == arch
    assert k.launch["block"] == [128, 1, 1]
    assert k.prim_func is not None
    from tilus.backend import tvm_shim

    kinds, _ = tvm_shim.stmt_kinds(k.prim_func)
    assert kinds <= ALLOWED_STMTS, kinds - ALLOWED_STMTS


def test_vector_add_sass_and_masks(built, need_disassembler):
    k = built("vector_add", "sm_90")
    assert "LDG.E.128" in k.sass and "STG.E.128" in k.sass
    src = k.cuda_source
    assert "< n" in src                      # the tail block is masked
    assert k.launch["grid"] == ["cdiv(n, 256)", 1, 1]
    assert "global tensors are 16-byte aligned" in k.assumptions


def test_softmax_reduces_with_warp_shuffles(built, need_disassembler):
    k = built("softmax", "sm_90")
    assert "SHFL.BFLY" in k.sass
    assert "LDG.E.128" in k.sass and "STG.E.128" in k.sass
    assert k.resources.shared_memory_bytes == 0      # no trip through shared memory
    assert "__uint_as_float(0xff800000u)" in k.cuda_source   # other=-inf for the masked columns


def test_matmul_fp16_uses_mma_and_cp_async(built, need_disassembler):
    k = built("matmul_fp16", "sm_90")
    sass = k.sass
    assert "HMMA.16816.F32" in sass
    assert "LDGSTS" in sass
    assert "LDSM.16.M88.4" in sass and "LDSM.16.MT88.2" in sass     # A and B fragments by ldmatrix
    assert "LDGSTS.E.BYPASS.128.ZFILL" in sass                       # K tails: cp.async src-size
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in k.cuda_source
    assert "cp.async" in k.cuda_source and "__syncthreads" in k.cuda_source
    # K = 90 does not divide 16: the copies are masked
    assert "< k" in k.cuda_source


@pytest.mark.parametrize("wtype", LOWBIT)
def test_matmul_lowbit_sass(built, need_disassembler, wtype):
    k = built(f"matmul_lowbit_{wtype}", "sm_90")
    sass = k.sass
    assert "HMMA.16816.F32" in sass
    assert "LOP3" in sass


def test_matmul_splitk_semaphores(built):
    k = built("matmul_splitk", "sm_90")
    from tilus.backend import tvm_shim

    _, calls = tvm_shim.stmt_kinds(k.prim_func)
    assert {"extern:atomicExch", "extern:__threadfence", "tirx.tvm_storage_sync"} <= calls
    assert "atomicCAS" in k.cuda_source
    assert k.launch["grid"][2] == 3
