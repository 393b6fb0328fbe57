"""The TVM 0.27 path on a CPU machine: tirx PrimFunc -> tvm.compile -> CUDA source -> nvcc -> SASS."""
import pytest

ARCHES = ("sm_80", "sm_90")


def _sass_ops(kernel):
    return kernel.sass


@pytest.mark.parametrize("arch", ARCHES)
def test_vector_add_uses_128_bit_loads(fixture_kernels, need_disassembler, arch):
    k = fixture_kernels[("vector_add", arch)]
    assert "float4" in k.cuda_source and "vector_add_kernel" in k.cuda_source
    assert "ld.global.nc.v4.f32" in k.ptx or "ld.global.v4.f32" in k.ptx
    assert "LDG.E.128" in k.sass and "STG.E.128" in k.sass
    r = k.resources
    assert r.registers > 0 and not r.spills and r.stack_frame_bytes == 0


@pytest.mark.parametrize("arch", ARCHES)
def test_mma_kernel_uses_tensor_cores_ldmatrix_cp_async(fixture_kernels, need_disassembler, arch):
    k = fixture_kernels[("mma", arch)]
    src = k.cuda_source
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in src
    assert "ldmatrix.sync.aligned.m8n8.x4.shared.b16" in src and "cp.async.cg.shared.global" in src
    sass = k.sass
    assert "HMMA.16816.F32" in sass
    assert "LDSM.16.M88.4" in sass and "LDSM.16.M88.2" in sass
    assert "LDGSTS.E.BYPASS.128" in sass
    r = k.resources
    assert not r.spills and r.stack_frame_bytes == 0
    assert r.shared_memory_bytes == 768      # 256 + 128 halves: the tirx pipeline keeps the sizes
    assert r.barriers == 1


@pytest.mark.parametrize("arch", ARCHES)
def test_lop3_prmt_reach_sass(fixture_kernels, need_disassembler, arch):
    sass = fixture_kernels[("lop3_prmt", arch)].sass
    assert "LOP3.LUT" in sass and "0x6a" in sass and "PRMT" in sass


def test_tvm_shim_api():
    from tilus.backend import testing, tvm_shim

    exe = tvm_shim.compile_module(testing.vector_add_f32x4(), "sm_80")
    (dev,) = tvm_shim.device_modules(exe)
    assert dev.kind == "cuda"
    assert 'extern "C" __global__' in tvm_shim.cuda_source(exe)
    with pytest.raises(Exception, match="PrimFunc"):
        tvm_shim.as_module(42)


def test_only_the_shim_imports_tvm():
    import pathlib
    import re

    import tilus
    root = pathlib.Path(tilus.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name != "tvm_shim.py" and re.search(r"^\s*(import|from) tvm(\.|\s|$)", p.read_text(), re.M)]
    assert offenders == []


def test_export_library(tmp_path):
    import shutil

    if shutil.which("g++") is None and shutil.which("gcc") is None:
        pytest.skip("no host C++ compiler for export_library")
    from tilus.backend import testing, tvm_shim

    exe = tvm_shim.compile_module(testing.vector_add_f32x4(), "sm_80")
    path = tmp_path / "vadd.so"
    tvm_shim.export_library(exe, path)
    blob = path.read_bytes()
    assert path.stat().st_size > 0 and b"vector_add_kernel" in blob
    # the device code travels as CUDA source (format "cuda"), JIT-compiled by the runtime
    assert b"__global__" in blob


def test_export_library_link_is_time_limited(tmp_path, monkeypatch):
    """The C++ link export_library runs goes through run_tool: a hung linker is killed."""
    from tilus.backend import testing, tvm_shim
    from tilus.errors import CompilationError
    from tests.runtime.runtime_helpers import time_limit

    linker = tmp_path / "hung-c++"
    linker.write_text("#!/bin/sh\necho 'ld: thinking' >&2\nexec sleep 300\n")
    linker.chmod(0o755)
    monkeypatch.setenv("CXX", str(linker))
    monkeypatch.setenv("TILUS_TOOLCHAIN_TIMEOUT", "1")
    exe = tvm_shim.compile_module(testing.vector_add_f32x4(), "sm_80")
    with time_limit(30), pytest.raises(CompilationError, match="did not finish within 1 s"):
        tvm_shim.export_library(exe, tmp_path / "vadd.so")
