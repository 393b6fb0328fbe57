"""Tilus runs the steps of ``tvm.compile`` itself (tilus.backend.tvm_shim.compile_module), stopping at
the device code: the host code is generated only when a library is exported. The CUDA it gives
must be byte for byte what ``tvm.compile(..., tir_pipeline="tirx")`` gives, the reference here, for
kernels of every kind (TVM-unrolled loops, bf16, shared-memory pipelines, low-bit casts,
run-time divisions, semaphores)."""
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example(name):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return __import__(name)


def _kernels():
    from tilus.ops.attention import combine_kernel, split_kernel
    from tilus.ops.kernels import QuantMatmul

    return {
        "vector_add": lambda: _example("vector_add").VecAdd(256),
        "softmax": lambda: _example("softmax").Softmax(16, 128),
        "matmul_splitk": lambda: _example("matmul_splitk").MatmulSplitK(),
        "matmul_lowbit_uint3": lambda: _example("matmul_lowbit").MatmulLowBit("uint3"),
        "quant_matmul_int4_bf16": lambda: QuantMatmul("int4", 128, act="bfloat16",
                                                      scale="bfloat16", block_m=16, block_n=128,
                                                      block_k=64, split_k=2, stages=2),
        "attention_split_uint4": lambda: split_kernel("uint4", "uint4", 64, 4, 0.125),
        "attention_combine": lambda: combine_kernel(64, 4),
    }


def _reference_cuda(prim_func, arch: str) -> str:
    """The CUDA source ``tvm.compile`` generates with TVM's own tirx pipeline."""
    from tilus.backend import tvm_shim

    exe = tvm_shim.with_deep_stack(tvm_shim.tvm.compile, tvm_shim.as_module(prim_func),
                                   target=tvm_shim.cuda_target(arch), tir_pipeline="tirx")
    return "\n".join(m.inspect_source("cuda") for m in exe.mod.imports if m.kind == "cuda")


@pytest.mark.parametrize("name", sorted(_kernels()))
def test_cuda_is_the_tirx_pipelines(name):
    from tilus.backend import tvm_shim
    from tilus.backend.build_program import as_program, prepare
    from tilus.backend.codegen import lower_program

    prim_func = lower_program(prepare(as_program(_kernels()[name]()), "sm_90")).prim_func
    ours = tvm_shim.cuda_source(tvm_shim.compile_module(prim_func, "sm_90"))
    assert ours == _reference_cuda(prim_func, "sm_90")


def test_host_code_is_generated_only_for_a_library(tmp_path, monkeypatch):
    """compile_module stops at the device code; exporting generates the host launcher once."""
    import shutil

    from tilus.backend import testing, tvm_shim

    compiled = tvm_shim.compile_module(testing.vector_add_f32x4(), "sm_90")
    assert compiled._executable is None
    if shutil.which("g++") is None and shutil.which("gcc") is None:
        pytest.skip("no host C++ compiler for export_library")
    tvm_shim.export_library(compiled, tmp_path / "k.so")
    exe = compiled._executable
    assert exe is not None and compiled.executable() is exe
    assert [m.kind for m in exe.mod.imports] == ["cuda"]
    assert b"vector_add_kernel" in (tmp_path / "k.so").read_bytes()
