"""Parallel autotune builds (tilus.autotune.build_parallel with jobs=2) against the same builds in
this process (jobs=1): the same CUDA source and ptxas resources, each in the kernel cache that
TILUS_CACHE_DIR names at the time of the call, a failing config reported as failed, and workers
that start with the parent's backend import and its arch (they never ask torch for the GPU)."""
import os
import sys

import tilus
from tilus.autotune import build_parallel
from tilus.runtime import KernelCache
from tilus.runtime.arch import default_arch

from tests.ops.test_autotune import ToyAdd

CONFIGS = [{"block": 64, "warps": 2}, {"block": 128, "warps": 4},
           {"block": 64, "warps": 99}]          # 99 warps: the Program is rejected


def build_summary(kernel) -> dict:
    """What a worker saw and built: the backend already imported?, its TILUS_ARCH, the kernel."""
    preloaded = "tilus.backend.tvm_shim" in sys.modules
    built = tilus.build(kernel)
    return {"preloaded": preloaded, "env_arch": os.environ.get("TILUS_ARCH"),
            "arch": built.arch, "cuda": built.cuda_source, "resources": built.resources}


def test_parallel_builds_match_in_process_builds(tmp_path, monkeypatch):
    monkeypatch.delenv("TILUS_ARCH", raising=False)
    monkeypatch.setenv("TILUS_CACHE_DIR", str(tmp_path / "parallel"))
    parallel = build_parallel(ToyAdd, {"scale": 3.0}, CONFIGS, build_summary, jobs=2,
                              progress=False)     # first: this process may not have TVM yet
    monkeypatch.setenv("TILUS_CACHE_DIR", str(tmp_path / "serial"))
    serial = build_parallel(ToyAdd, {"scale": 3.0}, CONFIGS, build_summary, jobs=1,
                            progress=False)

    assert [r.ok for r in serial] == [r.ok for r in parallel] == [True, True, False]
    assert [r.config for r in parallel] == CONFIGS
    assert "warps" in parallel[2].error and parallel[2].error == serial[2].error
    workers = {r.pid for r in parallel}
    assert os.getpid() not in workers and len(workers) >= 1
    for s, p in zip(serial[:2], parallel[:2]):
        assert p.summary["cuda"] == s.summary["cuda"]
        assert p.summary["resources"] == s.summary["resources"]
        assert p.summary["arch"] == s.summary["arch"] == default_arch()
        assert p.summary["preloaded"]                      # forked after the parent's import
        assert p.summary["env_arch"] == default_arch()     # handed over, not asked of torch
    # each run filled the cache named at its call, with the same entries
    keys = {e.key for e in KernelCache(tmp_path / "serial").list_entries()}
    assert len(keys) == 2
    assert {e.key for e in KernelCache(tmp_path / "parallel").list_entries()} == keys
