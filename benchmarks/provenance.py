"""What every benchmark JSON records about where it ran: date, git commit, host, and the versions
of torch, TVM, tvm-ffi, nvcc and the CUDA driver (those that are there: a GPU machine has no TVM,
a CPU machine no driver)."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess


def provenance() -> dict:
    """{"date", "git_commit", "host", "versions": {...}} for the current process."""
    commit = _git_commit()
    versions: dict = {}
    try:
        import torch

        versions["torch"] = torch.__version__
        if torch.cuda.is_available():
            versions["cuda_runtime"] = torch.version.cuda
            versions["driver"] = _driver_version()
    except ImportError:
        pass
    try:
        from tilus.backend.artifact import tool_versions

        versions.update(tool_versions())
    except Exception:                          # no TVM here (a GPU machine running a bundle)
        try:
            import tvm_ffi

            versions["tvm_ffi"] = tvm_ffi.__version__
        except ImportError:
            pass
    return {"date": datetime.date.today().isoformat(), "git_commit": commit or "unknown",
            "host": platform.node(), "versions": versions}


def _git_commit() -> str:
    """HEAD of the checkout these sources are in; else ``$TILUS_GIT_COMMIT`` (a bundle's copy of
    the sources on a GPU machine has no .git: benchmarks/gpu_session.sh sets it from the bundle's
    manifest); else ""."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30, cwd=os.path.dirname(os.path.abspath(__file__)))
        commit = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):       # no git there
        commit = ""
    return commit or os.environ.get("TILUS_GIT_COMMIT", "")


def _driver_version() -> str:
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else "unknown"


def write_cpu_results(path, arch: str, what: str, rows: list, **fields) -> None:
    """Writes a CPU-only benchmark's JSON (provenance, the device line naming ``what`` was done
    for ``arch`` without a GPU, the rows) to ``path`` (a pathlib.Path) and says where."""
    import tilus

    path.write_text(json.dumps({**provenance(),
                                "device": f"CPU only ({platform.processor() or platform.machine()}), "
                                          f"{what} for {arch}, no GPU",
                                "date": datetime.date.today().isoformat(), "arch": arch,
                                "tilus": tilus.__version__, **fields, "rows": rows}, indent=2))
    print(f"wrote {path}")
