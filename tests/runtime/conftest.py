"""Fixtures of the runtime tests: a cache in a temp dir, a real CPU kernel library built by TVM."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.runtime_helpers import VADD_IR, VERSIONS, vadd_metadata
from tilus.runtime import Artifact, KernelCache, cache_key


@pytest.fixture
def cache(tmp_path) -> KernelCache:
    return KernelCache(tmp_path / "cache")


@pytest.fixture
def key() -> str:
    return cache_key(VADD_IR, "x86_64", VERSIONS)


def build_vadd_library(path: Path, subtract: bool = False) -> Path:
    """A real CPU kernel library exporting vadd(a, b, c, n): c = a + b (or a - b, the same
    name: a stand-in for a swapped library), built with TVM (tests may import tvm; the runtime
    may not)."""
    tvm = pytest.importorskip("tvm")
    from tvm.script import tirx as T

    @T.prim_func
    def vadd(a: T.handle, b: T.handle, c: T.handle, n: T.int32):
        T.func_attr({"global_symbol": "vadd"})
        A = T.match_buffer(a, (n,), "float32")
        B = T.match_buffer(b, (n,), "float32")
        C = T.match_buffer(c, (n,), "float32")
        for i in range(n):
            C[i] = A[i] - B[i] if subtract else A[i] + B[i]

    tvm.compile(tvm.IRModule({"vadd": vadd}), target="llvm").export_library(str(path))
    return path


@pytest.fixture(scope="session")
def vadd_library(tmp_path_factory) -> Path:
    """A real CPU kernel library: vadd(a, b, c, n) = a + b."""
    return build_vadd_library(tmp_path_factory.mktemp("vadd") / "vadd.so")


@pytest.fixture(scope="session")
def vadd_artifact(vadd_library) -> Artifact:
    return Artifact(vadd_metadata(), {"ir.tilus": VADD_IR.encode(), "kernel.so": vadd_library})
