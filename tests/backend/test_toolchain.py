"""nvcc / ptxas resources / SASS on a machine without a GPU; tool lookup and errors."""
import os

import pytest

from tilus.backend import CompiledKernel, toolchain
from tilus.errors import CompilationError, ToolNotFoundError

PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k_kernel' for 'sm_80'
ptxas info    : Function properties for k_kernel
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 768 bytes smem, 376 bytes cmem[0], 8 bytes cmem[2]
ptxas info    : Compiling entry function 'other' for 'sm_80'
ptxas info    : Function properties for other
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers
"""

SAXPY = r'''
extern "C" __global__ void saxpy(float a, const float* __restrict__ x, float* __restrict__ y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}
'''


def test_parse_ptxas_log():
    res = toolchain.parse_ptxas_log(PTXAS_LOG)
    k = res["k_kernel"]
    assert (k.registers, k.stack_frame_bytes, k.spill_store_bytes, k.spill_load_bytes) == (40, 8, 4, 12)
    assert (k.shared_memory_bytes, k.constant_memory_bytes, k.barriers) == (768, 384, 1)
    assert k.constant_banks == {0: 376, 2: 8} and k.spills
    o = res["other"]
    assert o.registers == 8 and o.shared_memory_bytes == 0 and not o.spills


def test_arches():
    assert toolchain.normalize_arch("sm_90") == "sm_90"
    assert toolchain.normalize_arch(86) == "sm_86"
    assert toolchain.normalize_arch("sm90a") == "sm_90a"
    assert toolchain.normalize_arch(None) in toolchain.SUPPORTED_ARCHES
    with pytest.raises(CompilationError, match="sm_75"):
        toolchain.normalize_arch("sm_75")


def test_missing_tool_names_itself(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(toolchain, "_cuda_homes", lambda: [])
    monkeypatch.setattr(toolchain, "_wheel_dirs", lambda sub: [])
    monkeypatch.setattr(toolchain.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(ToolNotFoundError, match="cuobjdump.*pip install nvidia-cuda-cuobjdump"):
        toolchain.require_tool("cuobjdump")
    with pytest.raises(ToolNotFoundError, match="nvcc"):
        toolchain.compile_cuda(SAXPY, "sm_80")
    with pytest.raises(ToolNotFoundError, match="disassembler"):
        toolchain.disassemble(b"\0")


def test_cuobjdump_from_the_wheel():
    # the nvidia-cuda-cuobjdump wheel is a dev dependency: found even when not on PATH
    dirs = toolchain._wheel_dirs("bin")
    if not any((d / "cuobjdump").is_file() for d in dirs):
        pytest.skip("nvidia-cuda-cuobjdump wheel not installed")
    assert toolchain.find_tool("cuobjdump") is not None


@pytest.fixture(scope="module")
def saxpy(need_nvcc):
    return CompiledKernel.from_cuda(SAXPY, "sm_80")


def test_compile_cuda_products(saxpy, need_disassembler):
    assert saxpy.kernel_name == "saxpy" and saxpy.arch == "sm_80"
    assert saxpy.cubin[:4] == b"\x7fELF"
    assert ".entry saxpy" in saxpy.ptx and ".target sm_80" in saxpy.ptx
    r = saxpy.resources
    assert 0 < r.registers < 32 and not r.spills and r.shared_memory_bytes == 0
    assert "FFMA" in saxpy.sass


def test_compile_error_carries_the_log(need_nvcc):
    with pytest.raises(CompilationError) as info:
        toolchain.compile_cuda("__global__ void k() { undeclared_thing(); }", "sm_80")
    assert "undeclared_thing" in str(info.value) and "undeclared_thing" in info.value.log


def test_temp_dirs_are_removed(need_nvcc, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    toolchain.compile_cuda(SAXPY, "sm_86")
    assert os.listdir(tmp_path) == []
