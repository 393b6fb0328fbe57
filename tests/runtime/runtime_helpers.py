"""Helpers of the runtime tests: metadata, fake artefacts, running code in a fresh interpreter."""
from __future__ import annotations

import os
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
