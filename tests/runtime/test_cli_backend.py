"""`tilus build --emit cuda|ptx|sass|resources` through the backend, and `tilus bundle`."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tilus.__main__ import main

pytest.importorskip("tvm")
REPO = Path(__file__).resolve().parents[2]
VECADD = f"{REPO / 'examples' / 'vector_add.py'}:VecAdd"


@pytest.fixture(scope="module")
def compiled():
    from tilus.backend import toolchain

    if toolchain.find_tool("nvcc") is None:
        pytest.skip("nvcc not installed")
    import sys

    sys.path.insert(0, str(REPO / "examples"))
    import vector_add

    import tilus

    return tilus.build(vector_add.VecAdd(128), arch="sm_90")


def _emit(capsys, emit, arch="sm_90"):
    assert main(["build", VECADD, "--param", "block=128", "--arch", arch, "--emit", emit]) == 0
    return capsys.readouterr().out


def test_emit_cuda_and_ptx_match_tilus_build(compiled, capsys):
    cuda = _emit(capsys, "cuda")
    assert cuda.strip() == compiled.cuda_source.strip() and "VecAdd_kernel" in cuda
    ptx = _emit(capsys, "ptx")
    def strip(t):   # the PTX names nvcc's temporary source file
        return [ln for ln in t.strip().splitlines() if "tilus-nvcc-" not in ln]
    assert strip(ptx) == strip(compiled.ptx) and ".target sm_90" in ptx


def test_emit_sass_and_resources(compiled, capsys):
    from tilus.backend import toolchain

    if toolchain.find_tool("cuobjdump") is None and toolchain.find_tool("nvdisasm") is None:
        pytest.skip("no disassembler")
    sass = _emit(capsys, "sass")
    assert "VecAdd_kernel" in sass and "EXIT" in sass
    res = json.loads(_emit(capsys, "resources"))
    assert res["registers"] == compiled.resources.registers > 0
    assert res["launch"]["grid"] == ["cdiv(n, 128)", 1, 1] and res["arch"] == "sm_90"


def test_emit_for_sm80(capsys, compiled):
    assert ".target sm_80" in _emit(capsys, "ptx", "sm_80")


def test_bundle_contents_and_size(tmp_path, capsys, compiled):
    out = tmp_path / "bundle"
    assert main(["bundle", "--arch", "sm_90", "--out", str(out), VECADD,
                 "--param", "block=128"]) == 0
    text = capsys.readouterr().out
    # `compiled` (tilus.build) put the kernel in the kernel cache: the bundle copies that entry
    assert "reused" in text and "VecAdd" in text and "total" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(k["kernel"], k["state"]) for k in manifest["kernels"]] == [("VecAdd", "reused")]
    key = manifest["kernels"][0]["key"]
    entry = out / "cache" / key
    assert sorted(p.name for p in entry.iterdir()) == ["ir.tilus", "kernel.cu", "kernel.cubin",
                                                      "kernel.ptx", "kernel.so", "launcher.cu",
                                                      "metadata.json", "metadata.sha256",
                                                      "ptxas.log"]
    assert (entry / "kernel.cubin").read_bytes() == compiled.cubin
    libs = sorted(p.name for p in (out / "tvm_runtime").iterdir())
    assert libs == ["libtvm_runtime.so", "libtvm_runtime_cuda.so"]
    assert (out / "src" / "tilus" / "runtime" / "cubins.py").is_file()
    assert (out / "src" / "tests" / "gpu" / "test_gpu_launch.py").is_file()
    assert not list((out / "src").rglob("__pycache__"))
    script = (out / "run_on_gpu.sh").read_text()
    for var in ("TILUS_CACHE_DIR", "TILUS_TVM_RUNTIME_DIR", "PYTHONPATH", "pytest"):
        assert var in script
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert total < 16 * 2**20, total          # far below the 64 MiB a device call carries
    # the same key a process computes when it calls the kernel
    import sys

    sys.path.insert(0, str(REPO / "examples"))
    import vector_add

    from tilus.runtime import cache_key, key_versions

    assert key == cache_key(str(vector_add.VecAdd(128).program()), "sm_90", key_versions())
    _run_script_here(out)
    # a second bundle run finds it cached
    assert main(["bundle", "--arch", "sm_90", "--out", str(out), VECADD, "--param", "block=128",
                 "--no-sources", "--no-runtime"]) == 0
    assert "cached" in capsys.readouterr().out


def _run_script_here(out: Path) -> None:
    """run_on_gpu.sh on this machine, TVM and lark blocked: the bundle's own sources, cache and
    TVM runtime libraries are used, the kernel is a cache hit and loading stops at the driver."""
    import ctypes
    import os
    import sys

    from tests.runtime.test_load import BLOCK

    try:
        ctypes.CDLL("libcuda.so.1")
        pytest.skip("a CUDA driver is installed here")
    except OSError:
        pass
    code = BLOCK + """
import tilus, sys
from tilus import jit
from tilus.errors import RuntimeLibraryError
print("TILUS_FROM", tilus.__file__)
sys.path.insert(0, "examples")
import vector_add
try:
    jit.compiled_kernel(vector_add.VecAdd(128))
except RuntimeLibraryError as e:
    print("DRIVER", e)
"""
    env = dict(os.environ, PYTHON=sys.executable, TILUS_LOG="debug")
    env.pop("TILUS_CACHE_DIR", None)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(out / "run_on_gpu.sh"), "python", "-c", code],
                          capture_output=True, text=True, env=env, timeout=120)
    log = proc.stdout + proc.stderr
    assert f"TILUS_FROM {out / 'src' / 'tilus' / '__init__.py'}" in log, log
    assert "cache hit" in log and "cache miss" not in log, log
    assert f"loaded {out / 'tvm_runtime' / 'libtvm_runtime.so'}" in log, log
    assert "DRIVER" in log and "libcuda.so.1" in log, log


def test_bundle_specs_module(tmp_path, capsys, compiled):
    specs = tmp_path / "specs.py"
    specs.write_text(f"""
import sys
sys.path.insert(0, {str(REPO / 'examples')!r})
import vector_add
def bundle_specs():
    return [vector_add.VecAdd(64), (vector_add.VecAdd(128), {{}})]
""")
    out = tmp_path / "b"
    assert main(["bundle", "--out", str(out), str(specs), "--no-sources", "--no-runtime"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len({k["key"] for k in manifest["kernels"]}) == 2


def test_bundle_wheel_command(tmp_path, capsys):
    assert main(["bundle", "--out", str(tmp_path), "--python", "3.12", "--print-wheel-command",
                 "--allow-empty"]) == 0
    cmd = capsys.readouterr().out
    from importlib import metadata

    v = metadata.version("apache-tvm-ffi")
    for part in ("pip download", "--only-binary=:all:", "--python-version 3.12",
                 "manylinux_2_28_x86_64", f"apache-tvm-ffi=={v}", "--no-deps"):
        assert part in cmd
    assert main(["bundle", "--out", str(tmp_path), "--python", "three", "--print-wheel-command",
                 "--allow-empty"]) == 2


def test_bundle_needs_targets(tmp_path, capsys):
    assert main(["bundle", "--out", str(tmp_path)]) == 2
    assert "at least one TARGET" in capsys.readouterr().err


def test_runtime_libraries_need_no_compiler_library():
    from tilus.runtime.libraries import tvm_runtime_dir

    d = tvm_runtime_dir()
    for name in ("libtvm_runtime.so", "libtvm_runtime_cuda.so"):
        out = subprocess.run(["readelf", "-d", str(d / name)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip("no readelf")
        assert "libtvm_compiler" not in out.stdout and "libtvm_runtime_extra" not in out.stdout


TOO_BIG = '''
import sys
import tilus
sys.path.insert(0, {examples!r})
import vector_add


class Big(tilus.Script):
    """Two 128 KiB shared tensors live at once: more than a block may use."""

    def __call__(self, n: tilus.int32, x: ~tilus.float32):
        self.attrs.blocks = 1
        self.attrs.warps = 4
        gx = self.global_view(x, dtype=tilus.float32, shape=[n, 128])
        s1 = self.shared_tensor(dtype=tilus.float32, shape=[256, 128])
        s2 = self.shared_tensor(dtype=tilus.float32, shape=[256, 128])
        self.copy_async(src=gx, dst=s1, offsets=[0, 0])
        self.copy_async(src=gx, dst=s2, offsets=[0, 0])
        self.copy_async_wait_group(0)
        self.sync()
        a = self.load_shared(self.slice_shared(s1, offsets=[0, 0], shape=[16, 128]))
        b = self.load_shared(self.slice_shared(s2, offsets=[240, 0], shape=[16, 128]))
        self.store_global(gx, a + b, offsets=[0, 0])
        self.free_shared(s1)
        self.free_shared(s2)


def bundle_specs():
    return [Big(), vector_add.VecAdd(64)]
'''


def test_bundle_keep_going_lists_a_kernel_that_does_not_compile(tmp_path, capsys, compiled):
    """Without --keep-going a kernel that does not compile (here: too much shared memory) stops
    the bundle; with it, the others are built, the failure is in manifest.json and the tgz holds
    the built kernels only."""
    from tilus.bundle import bundle
    from tilus.errors import CompilationError

    specs = tmp_path / "too_big.py"
    specs.write_text(TOO_BIG.format(examples=str(REPO / "examples")))
    with pytest.raises(CompilationError, match="shared memory"):
        bundle(tmp_path / "a", [str(specs)], include_sources=False, include_runtime=False,
               log=lambda *a: None)
    out = tmp_path / "b"
    assert main(["bundle", "--out", str(out), str(specs), "--no-sources", "--no-runtime",
                 "--keep-going", "--tgz", str(tmp_path / "b.tgz")]) == 0
    text = capsys.readouterr().out
    assert "1 of 2 kernels FAILED" in text and "shared memory" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failed"] == 1
    failed, ok = manifest["kernels"]
    assert failed["state"] == "failed" and "232448 bytes" in failed["error"]
    assert ok["state"] in ("built", "reused") and (out / "cache" / ok["key"]).is_dir()
    assert not (out / "cache" / failed["key"]).exists()
    import tarfile

    with tarfile.open(tmp_path / "b.tgz") as tar:
        names = tar.getnames()
    assert f"cache/{ok['key']}" in names and not [n for n in names if failed["key"] in n]


def test_bundle_builds_in_worker_processes_as_in_this_one(tmp_path, monkeypatch, compiled):
    """--jobs 2 builds the kernels the bundle lacks in forked workers (this process builds none),
    with the manifest, the bundle's cache and the failure that jobs=1 gives; the kernel cache is
    the one TILUS_CACHE_DIR names at the call."""
    from tilus.backend.cached import stats
    from tilus.bundle import bundle

    specs = tmp_path / "three.py"
    specs.write_text(TOO_BIG.format(examples=str(REPO / "examples")).replace(
        "return [Big(), vector_add.VecAdd(64)]",
        "return [Big(), vector_add.VecAdd(64), (vector_add.VecAdd(96), {})]"))
    manifests = {}
    for jobs in (2, 1):
        monkeypatch.setenv("TILUS_CACHE_DIR", str(tmp_path / f"kernels{jobs}"))
        before = stats["builds"]
        manifests[jobs] = bundle(tmp_path / f"b{jobs}", [str(specs)], include_sources=False,
                                 include_runtime=False, log=lambda *a: None, keep_going=True,
                                 progress=False, jobs=jobs)
        assert stats["builds"] - before == (0 if jobs == 2 else 2)
        assert len(list((tmp_path / f"kernels{jobs}").iterdir())) >= 2

    def strip(manifest):
        return [{k: v for k, v in kernel.items() if k != "seconds"}
                for kernel in manifest["kernels"]]

    assert strip(manifests[2]) == strip(manifests[1])
    assert [k["state"] for k in manifests[2]["kernels"]] == ["failed", "built", "built"]
    assert manifests[2]["failed"] == 1 and "shared memory" in manifests[2]["kernels"][0]["error"]
    for kernel in manifests[2]["kernels"][1:]:
        entry2, entry1 = (tmp_path / "b2" / "cache" / kernel["key"],
                          tmp_path / "b1" / "cache" / kernel["key"])
        assert sorted(p.name for p in entry2.iterdir()) == sorted(p.name for p in entry1.iterdir())
        assert (entry2 / "kernel.cu").read_bytes() == (entry1 / "kernel.cu").read_bytes()


def test_bundle_worker_that_dies_is_a_failure_with_keep_going(tmp_path, monkeypatch):
    """A worker killed mid-build (here: the build exits the process) fails its kernels with
    --keep-going and stops the bundle without it."""
    import concurrent.futures as cf
    import os

    from tilus import bundle as bundle_module

    specs = tmp_path / "two.py"
    specs.write_text(f"import sys\nsys.path.insert(0, {str(REPO / 'examples')!r})\n"
                     "import vector_add\n"
                     "def bundle_specs():\n"
                     "    return [vector_add.VecAdd(64), vector_add.VecAdd(96)]\n")
    monkeypatch.setattr(bundle_module, "_build_entry", lambda *a: os._exit(3))  # forked: inherited
    manifest = bundle_module.bundle(tmp_path / "b", [str(specs)], include_sources=False,
                                    include_runtime=False, log=lambda *a: None, keep_going=True,
                                    progress=False, jobs=2)
    assert [k["state"] for k in manifest["kernels"]] == ["failed", "failed"]
    assert manifest["failed"] == 2 and "worker failed" in manifest["kernels"][0]["error"]
    with pytest.raises(cf.process.BrokenProcessPool):
        bundle_module.bundle(tmp_path / "c", [str(specs)], include_sources=False,
                             include_runtime=False, log=lambda *a: None, progress=False, jobs=2)
