"""Loading a cached kernel library and calling it, with TVM's compiler absent (compile here, run
there), plus the import hygiene of tilus.runtime."""
from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest

from tests.runtime.runtime_helpers import run_python
from tilus.errors import ArgumentError, KernelNotFoundError, RuntimeLibraryError
from tilus.runtime import KernelCache, LoadedKernel, libraries

# Injected before anything else: `import tvm` (and lark) must fail in the child.
BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tvm', 'lark'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, _Block())
"""


def test_import_runtime_imports_neither_tvm_nor_lark():
    out = run_python("""
        import sys, json
        import tilus.runtime, tilus.__main__
        print(json.dumps(sorted(m for m in sys.modules
                                if m.split('.')[0] in ('tvm', 'lark', 'torch', 'cupy', 'tvm_ffi'))))
    """).stdout
    assert json.loads(out) == []


def test_load_and_call_without_tvm(tmp_path, key, vadd_artifact):
    root = tmp_path / "cache"
    KernelCache(root).store(key, vadd_artifact)  # "here": built with TVM
    code = BLOCK + f"""
import time, json
import numpy as np, torch
from tilus.runtime import KernelCache, LoadedKernel
from tilus.errors import ArgumentError
t0 = time.perf_counter()
entry = KernelCache({str(root)!r}).lookup({key!r})
t1 = time.perf_counter()
kernel = LoadedKernel.load(entry)
t2 = time.perf_counter()
a = np.arange(1000, dtype=np.float32); b = np.full(1000, 2, np.float32); c = np.zeros(1000, np.float32)
kernel(a, b, c, 1000)
assert (c == a + 2).all(), c[:8]
ta, tb, tc = torch.arange(64.), torch.ones(64), torch.zeros(64)
kernel(ta, tb, tc, n=64)
assert torch.equal(tc, ta + 1)
try:
    kernel(ta, tb, tc, 65)
except ArgumentError as e:
    assert "'a'" in str(e) and "65" in str(e), e
else:
    raise AssertionError("no ArgumentError")
n = 20000
t3 = time.perf_counter()
for _ in range(n):
    kernel(ta, tb, tc, 64)
t4 = time.perf_counter()
raw = kernel.function
for _ in range(n):
    raw(ta, tb, tc, 64)
t5 = time.perf_counter()
mods = sorted(m for m in sys.modules if m.split('.')[0] in ('tvm', 'lark'))
print(json.dumps(dict(lookup_ms=(t1-t0)*1e3, load_ms=(t2-t1)*1e3, call_us=(t4-t3)/n*1e6,
                      raw_call_us=(t5-t4)/n*1e6, modules=mods)))
"""
    out = run_python(code).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(result)
    assert result["modules"] == []


def test_tvm_is_really_blocked_in_the_child():
    proc = run_python(BLOCK + "import tvm", check=False)
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_runtime_dir_found_without_importing_tvm(monkeypatch, tmp_path):
    monkeypatch.delenv("TILUS_TVM_RUNTIME_DIR", raising=False)
    d = libraries.tvm_runtime_dir()
    assert (d / "libtvm_runtime.so").is_file() and d.name == "lib"
    monkeypatch.setenv("TILUS_TVM_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(RuntimeLibraryError, match="holds no libtvm_runtime.so"):
        libraries.tvm_runtime_dir()
    monkeypatch.setenv("TILUS_TVM_RUNTIME_DIR", str(d))
    assert libraries.tvm_runtime_dir() == d


def _have_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


@pytest.mark.skipif(_have_driver(), reason="a CUDA driver is installed here")
def test_cuda_runtime_without_driver_names_the_missing_library():
    with pytest.raises(RuntimeLibraryError, match=r"libcuda\.so\.1") as err:
        libraries.load_cuda_runtime()
    assert "driver" in str(err.value)


def test_missing_dependency_is_named(tmp_path):
    err = libraries._explain(tmp_path / "libx.so",
                             OSError("libcudart.so.13: cannot open shared object file: No such "
                                     "file or directory"))
    assert "libx.so" in str(err) and "libcudart.so.13" in str(err) and "CUDA runtime" in str(err)


def test_in_process_load_call_and_missing_entry(cache, key, vadd_artifact):
    entry = cache.store(key, vadd_artifact)
    kernel = LoadedKernel.load(entry)
    a = np.ones(16, np.float32)
    c = np.zeros(16, np.float32)
    kernel(a, a, c, 16)
    assert (c == 2).all() and kernel.launches == 1
    assert "vadd(a: ~float32" in repr(kernel)
    with pytest.raises(ArgumentError):
        kernel(a, a, c.astype(np.float64), 16)
    assert kernel.launches == 1
    import dataclasses

    other = dataclasses.replace(entry, metadata=dataclasses.replace(entry.metadata, entry="nope"))
    with pytest.raises(KernelNotFoundError, match="'nope'"):
        LoadedKernel.load(other)
    bad = tmp = entry.path.parent / "not-a-library.so"
    tmp.write_bytes(b"garbage")
    with pytest.raises(RuntimeLibraryError, match="not-a-library"):
        libraries.load_module(bad, cuda=False)


def test_unwritable_cache_kernel_still_runs_from_memory(tmp_path, key, vadd_artifact, caplog):
    (tmp_path / "file").write_text("x")
    c = KernelCache(tmp_path / "file" / "cache")
    with caplog.at_level("WARNING"):
        entry = c.get_or_build(key, lambda: vadd_artifact)
    assert not entry.persistent and "in memory" in caplog.text
    kernel = LoadedKernel.load(entry)
    x = np.arange(8, dtype=np.float32)
    y = np.empty(8, np.float32)
    kernel(x, x, y, 8)
    assert (y == 2 * x).all()
