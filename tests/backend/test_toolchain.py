"""nvcc / ptxas resources / SASS on a machine without a GPU; tool lookup and errors."""
import os
import signal
import time

import pytest

from tilus.backend import CompiledKernel, toolchain
from tilus.backend.run_tool import run_tool, toolchain_timeout
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


# ---- time limits and process groups (issue 14, item 11) ---------------------------------------
HANGING_TOOL = """#!/bin/sh
# a compiler that starts a child (as nvcc starts cicc and ptxas) and never finishes
sleep 300 &
echo $! > "$TILUS_TEST_PIDFILE"
echo "cicc: still thinking" >&2
wait
"""


@pytest.fixture
def deadline():
    """Fail (instead of hanging the suite) when the test takes more than 30 s."""
    def expired(signum, frame):
        raise TimeoutError("the toolchain call hung")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def hanging_tool(tmp_path, monkeypatch):
    tool = tmp_path / "nvcc"
    tool.write_text(HANGING_TOOL)
    tool.chmod(0o755)
    monkeypatch.setenv("TILUS_TEST_PIDFILE", str(tmp_path / "child.pid"))
    yield tool
    pid = _child_pid(tmp_path)
    if pid and _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _child_pid(tmp_path):
    f = tmp_path / "child.pid"
    return int(f.read_text()) if f.is_file() and f.read_text().strip() else None


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is dead)."""
    for _ in range(50):
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.05)
    return True


def test_hanging_nvcc_is_killed_with_its_children(hanging_tool, tmp_path, monkeypatch, deadline):
    monkeypatch.setenv("TILUS_NVCC", str(hanging_tool))
    monkeypatch.setenv("TILUS_TOOLCHAIN_TIMEOUT", "1")
    t0 = time.monotonic()
    with pytest.raises(CompilationError) as info:
        toolchain.compile_cuda(SAXPY, "sm_80", compiler="nvcc")
    assert time.monotonic() - t0 < 15
    assert "nvcc did not finish within 1 s" in str(info.value)
    assert "TILUS_TOOLCHAIN_TIMEOUT" in str(info.value)
    assert "cicc: still thinking" in str(info.value)        # the tail of its output
    assert not _alive(_child_pid(tmp_path))


def test_interrupted_tool_is_killed_with_its_children(hanging_tool, tmp_path, deadline):
    """Ctrl-C (SIGINT) to a process waiting on a tool: KeyboardInterrupt, and the tool's whole
    process group is gone. The waiting process is a fresh interpreter that installs Python's
    SIGINT handler itself: in some orderings of the suite, the xdist worker's SIGINT disposition
    is SIG_IGN at the OS level (set by something an earlier test loads; Python's own view still
    says default_int_handler), and a child inherits an ignored signal."""
    import subprocess
    import sys

    code = ("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from tilus.backend.run_tool import run_tool\n"
            f"run_tool([{str(hanging_tool)!r}], timeout=60)\n")
    waiting = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    for _ in range(200):                     # until the tool has started its child
        if _child_pid(tmp_path):
            break
        time.sleep(0.05)
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=20)
    assert waiting.returncode != 0 and "KeyboardInterrupt" in err
    assert not _alive(_child_pid(tmp_path))


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_bad_timeout_setting_is_named(monkeypatch, value):
    monkeypatch.setenv("TILUS_TOOLCHAIN_TIMEOUT", value)
    with pytest.raises(CompilationError, match="TILUS_TOOLCHAIN_TIMEOUT"):
        run_tool(["true"])


def test_timeout_setting_and_default(monkeypatch):
    monkeypatch.delenv("TILUS_TOOLCHAIN_TIMEOUT", raising=False)
    assert toolchain_timeout() == 600
    monkeypatch.setenv("TILUS_TOOLCHAIN_TIMEOUT", "2.5")
    assert toolchain_timeout() == 2.5


def test_failing_tool_reports_the_tail_of_its_output(tmp_path, monkeypatch):
    tool = tmp_path / "cuobjdump"
    tool.write_text("#!/bin/sh\nfor i in $(seq 1 20000); do echo \"noise line $i\" >&2; done\n"
                    "echo 'the real error' >&2\nexit 3\n")
    tool.chmod(0o755)
    monkeypatch.setenv("TILUS_CUOBJDUMP", str(tool))
    with pytest.raises(CompilationError) as info:
        toolchain.disassemble(b"\x7fELF", tool="cuobjdump")
    assert "the real error" in str(info.value) and len(str(info.value)) < 5000
    assert "noise line 1\n" in info.value.log            # the whole log stays available
