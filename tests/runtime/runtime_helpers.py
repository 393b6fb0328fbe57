"""Helpers of the runtime tests: metadata, fake artefacts, running code in a fresh interpreter."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tilus.runtime import Artifact, KernelMetadata, Param

REPO = Path(__file__).resolve().parents[2]
VERSIONS = {"tvm": "0.27.0.post1", "nvcc": "none"}

VADD_IR = "kernel vadd(n: int32, a: ~float32, b: ~float32, c: ~float32) { ... }\n"


def vadd_metadata(**overrides) -> KernelMetadata:
    fields = dict(
        name="vadd", entry="vadd", target="llvm", arch="x86_64",
        params=(Param("a", "pointer", "float32", min_count="n"),
                Param("b", "pointer", "float32", min_count="n"),
                Param("c", "pointer", "float32", min_count="n"),
                Param("n", "scalar", "int32")),
        versions=VERSIONS)
    fields.update(overrides)
    return KernelMetadata(**fields)


def fake_artifact(tag: str = "x", size: int = 4096) -> Artifact:
    """An artefact whose 'library' is just bytes: enough for everything but loading."""
    lib = (tag.encode() * (size // max(1, len(tag)) + 1))[:size]
    return Artifact(vadd_metadata(), {"ir.tilus": (VADD_IR + tag).encode(), "kernel.so": lib})


def run_python(code: str, *, env: dict | None = None, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the worktree first on sys.path."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("TILUS_LOG", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=str(REPO))
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


class Hung(BaseException):
    """Raised by :func:`time_limit`; no ``except OSError`` or ``except Exception`` swallows it."""


@contextlib.contextmanager
def time_limit(seconds: int = 20):
    """Raise :class:`Hung` in the block after ``seconds`` (a hang fails the test, not the suite)."""
    def expired(signum, frame):
        raise Hung(f"hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cuda_artifact(tag: str = "x") -> Artifact:
    """A CUDA entry's files (fake library and cubin) with the metadata build_artifact writes."""
    from tilus.runtime import cubins

    source = f'extern "C" __global__ void k_kernel(float* __restrict__ x_ptr, int n) {{}} // {tag}'
    meta = KernelMetadata(
        name="k", entry="k", target="cuda", arch="sm_90", library="kernel.so",
        params=(Param("x", "pointer", "float32", min_count="n"), Param("n", "scalar", "int32")),
        launch={"grid": ["cdiv(n, 128)", 1, 1], "block": [128, 1, 1], "shared_bytes": 0},
        versions=VERSIONS,
        extra={"cuda_source_sha256": cubins.source_digest(source), "cubin": "kernel.cubin",
               "kernel_name": "k_kernel", "pointer_storage": {"x": "float32"},
               "device_params": [{"name": "x_ptr", "ctype": "void*", "role": "ptr", "param": "x"},
                                 {"name": "n", "ctype": "int", "role": "scalar", "param": "n"}],
               "threads": 128, "assumptions": ["flat 1-D pointers"]})
    return Artifact(meta, {"ir.tilus": f"kernel k {tag}".encode(), "kernel.cu": source.encode(),
                           "kernel.cubin": b"\x7fELF" + tag.encode() * 64,
                           "kernel.so": b"lib" + tag.encode()})
