"""tilus.build goes through the kernel cache: the second build of a kernel (in this process or
another) is a cache hit that runs neither TVM's codegen nor nvcc, `tilus cache list` shows the
entry, and a damaged entry is rebuilt. One VecAdd build serves the module."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tilus
from tilus.__main__ import main
from tilus.backend import cached, toolchain, tvm_shim
from tilus.runtime import KernelCache

pytest.importorskip("tvm")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples"))
import vector_add  # noqa: E402


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    if toolchain.find_tool("nvcc") is None:
        pytest.skip("nvcc not installed")
    root = tmp_path_factory.mktemp("build-cache") / "cache"
    return root, tilus.build(vector_add.VecAdd(128), arch="sm_90", cache=KernelCache(root))


def _no_compiler(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a cache hit must not run TVM's codegen or nvcc")

    monkeypatch.setattr(tvm_shim, "compile_module", refuse)
    monkeypatch.setattr(toolchain, "compile_cuda", refuse)


def _same(a, b, rebuilt=False):
    """The same kernel; a rebuild differs in nvcc's temporary file names (line info) only."""
    assert a.cuda_source == b.cuda_source
    assert rebuilt or (a.cubin == b.cubin and a.ptx == b.ptx)
    assert a.kernel_name == b.kernel_name and a.arch == b.arch == "sm_90"
    assert a.resources == b.resources and a.all_resources == b.all_resources
    assert a.launch == b.launch and a.assumptions == b.assumptions


def test_second_build_is_a_cache_hit(first, monkeypatch):
    root, built = first
    _no_compiler(monkeypatch)
    hits = cached.stats["hits"]
    again = tilus.build(vector_add.VecAdd(128), arch="sm_90", cache=KernelCache(root))
    assert cached.stats["hits"] == hits + 1
    _same(again, built)
    assert str(again.program) == str(built.program)       # parsed back from ir.tilus
    assert set(again.timings) == {"program", "cache_lookup", "restore"}


def test_another_process_hits_without_importing_tvm(first):
    root, built = first
    code = ("import sys, tilus, vector_add\n"
            "from tilus.backend import cached\n"
            "k = tilus.build(vector_add.VecAdd(128), arch='sm_90')\n"
            "print(cached.stats['hits'], cached.stats['builds'], 'tvm' in sys.modules, "
            "k.cubin == open(sys.argv[1], 'rb').read())\n")
    cubin = root.parent / "first.cubin"
    cubin.write_bytes(built.cubin)
    env = {"TILUS_CACHE_DIR": str(root), "PYTHONPATH": f"{REPO}:{REPO / 'examples'}",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code, str(cubin)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0", "False", "True"]


def test_cache_list_shows_the_built_kernel(first, capsys):
    root, built = first
    assert main(["cache", "list", "--json", "--cache-dir", str(root)]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["name"], e["arch"], e["target"]) for e in entries] == [("VecAdd", "sm_90", "cuda")]


def test_damaged_entry_is_rebuilt(first, tmp_path, monkeypatch):
    root, built = first
    copy = tmp_path / "cache"
    shutil.copytree(root, copy)
    (entry,) = [p for p in copy.iterdir() if not p.name.startswith(".")]
    cubin = entry / "kernel.cubin"
    cubin.write_bytes(b"\x7fELF damaged" + cubin.read_bytes()[12:])
    builds = cached.stats["builds"]
    compiles = []
    compile_module = tvm_shim.compile_module
    monkeypatch.setattr(tvm_shim, "compile_module",
                        lambda *a: compiles.append(1) or compile_module(*a))
    again = tilus.build(vector_add.VecAdd(128), arch="sm_90", cache=KernelCache(copy))
    assert cached.stats["builds"] == builds + 1
    assert len(compiles) == 1          # one TVM compile gives the source and the host library
    _same(again, built, rebuilt=True)
    assert (entry / "kernel.cubin").read_bytes() == again.cubin


def test_simulate_takes_the_kernels_call_arguments(first):
    """tilus.simulate(Script, *call args) like kernel(*call args), on build's default arch."""
    import numpy as np

    n = 300
    a, b = np.arange(n, dtype=np.float32), np.ones(n, np.float32)
    c = np.zeros(n, np.float32)
    tilus.simulate(vector_add.VecAdd(128), n, a, b, c)
    np.testing.assert_array_equal(c, a + b)
    root, built = first
    c[:] = 0
    restored = tilus.build(vector_add.VecAdd(128), arch="sm_90", cache=KernelCache(root))
    tilus.simulate(restored, n, a, b, c)                 # prim_func lowered again from ir.tilus
    np.testing.assert_array_equal(c, a + b)
