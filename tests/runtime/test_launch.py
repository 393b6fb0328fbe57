"""The CUDA launch path on a machine without a GPU: artefact contents, the prebuilt-cubin callback,
loading a cached kernel with TVM and lark blocked as far as the CUDA driver, cache hits in a second
process, KernelNotFoundError without a compiler."""
from __future__ import annotations

import json
import re
import sys

import pytest

from tests.runtime.runtime_helpers import REPO, run_python
from tests.runtime.test_load import BLOCK, _have_driver
from tilus.errors import KernelNotFoundError, RuntimeLibraryError
from tilus.runtime import KernelCache, cubins

pytest.importorskip("tvm")
EXAMPLES = REPO / "examples"


def _need_nvcc():
    from tilus.backend import toolchain

    if toolchain.find_tool("nvcc") is None:
        pytest.skip("nvcc not installed")


def _vecadd():
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import vector_add

    return vector_add.VecAdd(256)


@pytest.fixture(scope="module")
def built():
    _need_nvcc()
    from tilus.backend.artifact import build_artifact

    return build_artifact(_vecadd(), "sm_90")


@pytest.fixture(scope="module")
def cache_root(built, tmp_path_factory):
    root = tmp_path_factory.mktemp("jitcache")
    KernelCache(root).store(built.key, built.artifact)
    return root


def test_artefact_files_and_metadata(built, cache_root):
    entry = KernelCache(cache_root).lookup(built.key)
    meta = entry.metadata
    assert sorted(meta.files) == ["ir.tilus", "kernel.cu", "kernel.cubin", "kernel.ptx",
                                  "kernel.so", "launcher.cu", "ptxas.log"]
    assert meta.target == "cuda" and meta.arch == "sm_90" and meta.entry == "VecAdd"
    assert [(p.name, p.kind, p.dtype) for p in meta.params] == [
        ("n", "scalar", "int32"), ("a", "pointer", "float32"), ("b", "pointer", "float32"),
        ("c", "pointer", "float32")]
    assert all(p.align == 16 and p.contiguous and p.min_count == "n"
               for p in meta.params if p.is_pointer)
    assert meta.launch["grid"] == ["cdiv(n, 256)", 1, 1] and meta.launch["block"] == [128, 1, 1]
    assert meta.launch["shared_bytes"] == 0
    assert {"tilus", "tvm", "tvm_ffi", "nvcc"} <= set(meta.versions)
    ex = meta.extra
    src = entry.file("kernel.cu").read_bytes()
    embedded = entry.file("launcher.cu").read_bytes()      # the launcher stub's device source
    assert ex["cuda_source_sha256"] == cubins.source_digest(embedded)
    assert ex["pointer_storage"] == {"a": "float32", "b": "float32", "c": "float32"}
    assert "global tensors are 16-byte aligned" in ex["assumptions"]
    cubin = entry.file("kernel.cubin").read_bytes()
    assert cubin[:4] == b"\x7fELF"
    assert b"VecAdd_kernel" in cubin and b"VecAdd_kernel" in src
    # the library embeds the stub's source, whose kernel takes the printed kernel's parameters
    assert embedded in entry.file("kernel.so").read_bytes()
    sig = re.compile(rb'__global__ void __launch_bounds__\(\d+\) VecAdd_kernel\(([^)]*)\)')
    names = [[a.split()[-1] for a in m.group(1).split(b",")] for m in (sig.search(src), sig.search(embedded))]
    assert names[0] == names[1] == [b"a_ptr", b"b_ptr", b"c_ptr", b"n"]
    assert "VecAdd" in entry.file("ir.tilus").read_text()


def test_cubin_is_for_the_arch(built):
    from tilus.backend import toolchain

    if toolchain.find_tool("cuobjdump") is None:
        pytest.skip("no cuobjdump")
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(built.kernel.cubin)
        f.flush()
        out = subprocess.run([str(toolchain.find_tool("cuobjdump")), "-lelf", "-elf", f.name],
                             capture_output=True, text=True).stdout
    assert "sm_90" in out or "SM90" in out.upper()


def test_callback_serves_registered_cubins_through_tvm_ffi():
    import tvm_ffi

    src = "// a source nobody built " + str(id(object()))
    cubins.register(cubins.source_digest(src), b"\x7fELF-test")
    f = tvm_ffi.get_global_func(cubins.CALLBACK)
    assert f(src) == b"\x7fELF-test"          # what TVM's C++ calls, with bytes back
    with pytest.raises(RuntimeLibraryError):
        cubins.register("00" * 32, b"// ptx")


# A fake TVM CUDA loader: it receives exactly the bytes TVM's real loader
# (ffi.Module.load_from_bytes.cuda in libtvm_runtime_cuda.so) would, and does what the real one
# does with fmt "cuda": calls tvm_callback_cuda_compile(source) and picks ptx/cubin by byte 0.
FAKE_LOADER = """
import struct, json, tvm_ffi
from tilus.runtime import libraries
seen = {}
@tvm_ffi.register_global_func("ffi.Module.load_from_bytes.cuda")
def _fake_loader(blob):
    blob = bytes(blob)
    n = struct.unpack("<Q", blob[:8])[0]
    seen["fmt"] = blob[8:8 + n].decode()
    src = open(SRC, "rb").read()
    seen["ends_with_source"] = blob.endswith(src) and \\
        struct.unpack("<Q", blob[-len(src) - 8:-len(src)])[0] == len(src)
    out = bytes(tvm_ffi.get_global_func("tvm_callback_cuda_compile")(src.decode()))
    seen["same_cubin"] = out == open(CUBIN, "rb").read()
    seen["format"] = "ptx" if out[:1] == b"/" else "cubin"
    raise RuntimeError("FAKE CUDA LOADER REACHED")
libraries.load_cuda_runtime = lambda: None   # skip the driver check: this machine has none
"""


def test_no_tvm_process_serves_the_prebuilt_cubin_to_tvms_loader(built, cache_root):
    entry = KernelCache(cache_root).lookup(built.key)
    code = BLOCK + f"SRC = {str(entry.file('launcher.cu'))!r}\nCUBIN = {str(entry.file('kernel.cubin'))!r}\n" \
        + FAKE_LOADER + f"""
import sys
sys.path.insert(0, {str(EXAMPLES)!r})
from tilus import jit
from tilus.runtime import KernelCache
from vector_add import VecAdd
try:
    jit.compiled_kernel(VecAdd(256), arch="sm_90", cache=KernelCache({str(cache_root)!r}))
except Exception as e:
    seen["error"] = str(e)
seen["modules"] = sorted(m for m in sys.modules if m.split('.')[0] in ('tvm', 'lark'))
print(json.dumps(seen))
"""
    out = json.loads(run_python(code).stdout.strip().splitlines()[-1])
    assert "FAKE CUDA LOADER REACHED" in out["error"]
    assert out == dict(out, fmt="cuda", ends_with_source=True, same_cubin=True, format="cubin",
                       modules=[])


@pytest.mark.skipif(_have_driver(), reason="a CUDA driver is installed here")
def test_second_process_hits_the_cache_and_reaches_the_driver(built, cache_root):
    code = BLOCK + f"""
import sys, time
sys.path.insert(0, {str(EXAMPLES)!r})
t0 = time.perf_counter()
from tilus import jit
from tilus.runtime import KernelCache
from tilus.errors import RuntimeLibraryError
from vector_add import VecAdd
t1 = time.perf_counter()
try:
    jit.compiled_kernel(VecAdd(256), arch="sm_90", cache=KernelCache({str(cache_root)!r}))
except RuntimeLibraryError as e:
    print("DRIVER:", e)
print("TIMES", (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3)
"""
    proc = run_python(code, env={"TILUS_LOG": "debug"})
    log = proc.stdout + proc.stderr
    assert "cache hit" in log and "cache miss" not in log and "built VecAdd" not in log
    assert "DRIVER:" in log and "libcuda.so.1" in log


def test_miss_without_compiler_names_kernel_and_bundle(tmp_path):
    code = BLOCK + f"""
import sys
sys.path.insert(0, {str(EXAMPLES)!r})
from tilus import jit
from tilus.runtime import KernelCache
from tilus.errors import KernelNotFoundError, RuntimeLibraryError
from vector_add import VecAdd
jit.have_compiler = lambda: False
try:
    jit.compiled_kernel(VecAdd(128), arch="sm_90", cache=KernelCache({str(tmp_path)!r}))
except KernelNotFoundError as e:
    print("ERR:", e)
"""
    proc = run_python(code, env={"TILUS_LOG": "debug"})
    assert "cache miss" in proc.stderr
    assert "ERR:" in proc.stdout and "VecAdd" in proc.stdout and "tilus bundle" in proc.stdout


def test_miss_without_compiler_in_process(tmp_path, monkeypatch):
    from tilus import jit

    monkeypatch.setattr(jit, "have_compiler", lambda: False)
    with pytest.raises(KernelNotFoundError, match="tilus bundle"):
        jit.compiled_kernel(_vecadd(), arch="sm_80", cache=KernelCache(tmp_path))


def test_cuda_tensor_reaches_the_compiled_path(monkeypatch):
    """A CUDA-looking argument takes the compiled path (here: asked for, then stopped)."""
    from tilus import jit
    from tilus.ir.program import as_program

    calls = []

    def fake(kernel, arch=None, **consts):
        calls.append((as_program(kernel, **consts).name, arch))
        return lambda *a: "launched"

    class FakeCuda:
        __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False),
                                    "version": 3}

    monkeypatch.setattr(jit, "compiled_kernel", fake)
    monkeypatch.setenv("TILUS_ARCH", "sm_90")
    assert _vecadd()(4, FakeCuda(), FakeCuda(), FakeCuda()) == "launched"
    assert calls == [("VecAdd", "sm_90")]


def test_flat_view_reshapes_and_reinterprets():
    import numpy as np
    import torch

    from tilus.runtime.kernel import flat_view

    t = torch.zeros(3, 4, dtype=torch.float16)
    v = flat_view(t, "float16")
    assert v.shape == (12,) and v.data_ptr() == t.data_ptr()
    u = flat_view(torch.zeros(2, 8, dtype=torch.uint8), "uint8")
    assert u.shape == (16,)
    f8 = flat_view(torch.zeros(4, dtype=torch.uint8), "float8_e4m3")
    assert f8.dtype == torch.float8_e4m3fn
    a = flat_view(np.zeros((2, 3), np.float32), "float32")
    assert a.shape == (6,)


def test_build_timings_reported(built):
    assert set(built.timings) >= {"build", "passes", "lowering", "codegen", "nvcc",
                                  "export_overlapped"}
    print({k: round(v * 1e3, 1) for k, v in built.timings.items()})


# ---- the driver launcher (TILUS_LAUNCHER=driver) --------------------------------------------------
LOWBIT_SIG = ('extern "C" __global__ void __launch_bounds__(128) MatmulLowBit_kernel(half* '
              '__restrict__ a_ptr, half* __restrict__ c_ptr, half* __restrict__ scales_ptr, uchar* '
              '__restrict__ w_ptr, int a_len, int c_len, int k, int m, int n, int w_len) {\n}')


def _lowbit_params():
    from tilus.runtime import Param

    return [Param("m", "scalar", "int32"), Param("n", "scalar", "int32"),
            Param("k", "scalar", "int32"), Param("a", "pointer", "float16"),
            Param("w", "pointer", "uint8"), Param("scales", "pointer", "float16"),
            Param("c", "pointer", "float16")]


def test_device_params_map_the_signature():
    from tilus.runtime.driver import device_params

    sig = device_params(LOWBIT_SIG, "MatmulLowBit_kernel", _lowbit_params())
    assert [(d["role"], d["param"], d["ctype"]) for d in sig] == [
        ("ptr", "a", "void*"), ("ptr", "c", "void*"), ("ptr", "scales", "void*"),
        ("ptr", "w", "void*"), ("len", "a", "int"), ("len", "c", "int"), ("scalar", "k", "int"),
        ("scalar", "m", "int"), ("scalar", "n", "int"), ("len", "w", "int")]
    assert device_params(LOWBIT_SIG.replace("int k,", "int kk,"), "MatmulLowBit_kernel",
                         _lowbit_params()) is None
    assert device_params(LOWBIT_SIG, "Other_kernel", _lowbit_params()) is None


def test_driver_launcher_packs_arguments_in_device_order(built, cache_root):
    import ctypes

    import torch

    from tilus.runtime import LoadedKernel

    entry = KernelCache(cache_root).lookup(built.key)
    # the printed kernel takes what its body uses: the three pointers and n (no extents)
    assert [d["name"] for d in entry.metadata.extra["device_params"]] == [
        "a_ptr", "b_ptr", "c_ptr", "n"]
    kernel = LoadedKernel.load(entry, launcher="driver")     # no TVM library is loaded
    assert kernel.driver is not None and kernel.module is None
    a, b, c = torch.zeros(10), torch.zeros(12), torch.zeros(14)
    packed = kernel.driver.pack((7, a, b, c))
    assert [p.value for p in packed] == [a.data_ptr(), b.data_ptr(), c.data_ptr(), 7]
    assert [type(p) for p in packed[3:]] == [ctypes.c_int32]
    if not _have_driver():
        with pytest.raises(RuntimeLibraryError, match=r"libcuda\.so\.1"):
            kernel.driver.function(0)


def test_size_requirements_of_the_examples():
    from tests.gpu.kernels import CASES
    from tilus.backend.artifact import size_requirements

    assert size_requirements(CASES["matmul_fp16"][0]().program()) == {
        "a": ("min_count", "m * k"), "b": ("min_count", "k * n"), "c": ("min_count", "m * n")}
    lowbit = size_requirements(CASES["matmul_lowbit_uint3"][0]().program())
    assert lowbit["w"] == ("min_count", "k * (n * 3 // 8)")
    # the split-K semaphores are viewed through a let-bound count: no requirement is invented
    assert "sema" not in size_requirements(CASES["matmul_splitk"][0]().program())


def test_key_includes_the_compiler_fingerprint(tmp_path, monkeypatch):
    from tilus.runtime import keys

    v = keys.key_versions()
    assert v["tvm"] == "0.27.0.post1" and len(v["compiler"]) == 16
    out = run_python("from tilus.runtime import key_versions; print(key_versions()['compiler'])")
    assert out.stdout.strip() == v["compiler"]          # same in another process
    # a copy of the package with one backend file changed gets another fingerprint
    import shutil

    copy = tmp_path / "tilus"
    shutil.copytree(REPO / "tilus", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "backend" / "artifact.py").write_text((copy / "backend" / "artifact.py").read_text()
                                                  + "\n# changed\n")
    code = "from tilus.runtime import key_versions; print(key_versions()['compiler'])"
    import subprocess

    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           cwd=str(tmp_path)).stdout.strip()
    assert other and other != v["compiler"]


def test_key_tvm_version_is_the_installed_distributions(monkeypatch):
    """The fast dist-info lookup agrees with importlib.metadata, and a machine without TVM uses
    the pinned version."""
    import importlib.machinery
    from importlib import metadata

    from tilus.runtime import keys

    monkeypatch.setattr(keys, "_tvm_version", None)
    assert keys.installed_tvm_version() == metadata.version("apache-tvm")

    def no_tvm(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(keys, "_tvm_version", None)
    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec",
                        classmethod(lambda cls, name, *a: None))
    monkeypatch.setattr(metadata, "version", no_tvm)
    assert keys.installed_tvm_version() == keys.PINNED_TVM_VERSION
