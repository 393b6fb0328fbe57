"""Wall time of an autotune sweep's parallel builds: ``tilus.autotune.build_parallel`` of 8 configs
of the uint4 QuantMatmul (block_m 16/32, block_k 32/64, stages 1/2), twice in one process (two
fixed-parameter sets, as ``tilus tune --dry-run`` builds one sweep per M bucket), each run in a
fresh process with an empty kernel cache. Per build: its seconds in the worker, and the part of
them spent importing the backend (``tilus.backend.tvm_shim`` and ``tilus.backend.cached``; the
first build of a worker that has not got them pays it).

Usage: python benchmarks/bench_tune_builds.py [--jobs 2] [--runs 3] [--label L] [--out DIR]
(prints min and median per sweep, and the CPU seconds of each whole process; writes
DIR/cpu-<date>-tune-builds[-L].json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:   # this checkout's tilus, not an installed one
    sys.path.insert(0, str(HERE.parent))

CONFIGS = [{"block_m": bm, "block_k": bk, "stages": st}
           for bm in (16, 32) for bk in (32, 64) for st in (1, 2)]
SWEEPS = ({"wtype": "uint4", "group_size": 128}, {"wtype": "uint4", "group_size": 64})


def timed_builder(kernel) -> dict:
    """The autotuner's default builder, with the backend's import timed apart."""
    t0 = time.perf_counter()
    import tilus.backend.cached  # noqa: F401
    import tilus.backend.tvm_shim  # noqa: F401
    from tilus.autotune import default_builder

    t1 = time.perf_counter()
    summary = default_builder(kernel)
    return {"import_s": t1 - t0, "build_s": time.perf_counter() - t1,
            "registers": summary["resources"].registers}


def one_process(jobs: int) -> dict:
    """Both sweeps in this process (the kernel cache: an empty temporary folder)."""
    from tilus.autotune import build_parallel
    from tilus.ops.kernels import QuantMatmul

    sweeps = []
    for fixed in SWEEPS:
        t0 = time.perf_counter()
        results = build_parallel(QuantMatmul, fixed, CONFIGS, timed_builder, jobs=jobs,
                                 progress=False)
        wall = time.perf_counter() - t0
        bad = [r.error for r in results if not r.ok]
        if bad:
            raise SystemExit(f"builds failed: {bad}")
        sweeps.append({"wall_s": wall, "workers": len({r.pid for r in results}),
                       "builds": [{"config": r.config, "seconds": r.seconds,
                                   **r.summary} for r in results]})
    return {"sweeps": sweeps}


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children and their descendants."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_process(args.jobs)))
        return
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, TILUS_CACHE_DIR=cache)
            cpu0 = _children_cpu()
            out = subprocess.run([sys.executable, __file__, "--child", "--jobs", str(args.jobs)],
                                 capture_output=True, text=True, env=env, check=True)
            runs.append({**json.loads(out.stdout.strip().splitlines()[-1]),
                         "process_cpu_s": _children_cpu() - cpu0})
    summary = []
    for i in range(len(SWEEPS)):
        walls = sorted(r["sweeps"][i]["wall_s"] for r in runs)
        builds = [b for r in runs for b in r["sweeps"][i]["builds"]]
        imports = [b["import_s"] for b in builds]
        row = {"sweep": i + 1, "wall_min_s": walls[0], "wall_median_s": walls[len(walls) // 2],
               "build_seconds_mean": sum(b["seconds"] for b in builds) / len(builds),
               "import_seconds_total_per_run": sum(imports) / len(runs),
               "import_seconds_max": max(imports)}
        summary.append(row)
        print(f"sweep {i + 1} ({len(CONFIGS)} configs, jobs={args.jobs}): wall min "
              f"{row['wall_min_s']:.2f} s, median {row['wall_median_s']:.2f} s; per build "
              f"{row['build_seconds_mean']:.2f} s; backend imports in the workers "
              f"{row['import_seconds_total_per_run']:.2f} s per run (max "
              f"{row['import_seconds_max']:.2f} s)")
    cpus = sorted(r["process_cpu_s"] for r in runs)
    print(f"CPU seconds of the whole process (both sweeps, workers, nvcc): min {cpus[0]:.1f}, "
          f"median {cpus[len(cpus) // 2]:.1f}")
    label = f"-{args.label}" if args.label else ""
    path = Path(args.out) / f"cpu-{datetime.date.today()}-tune-builds{label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from benchmarks.provenance import provenance

    path.write_text(json.dumps({**provenance(), "jobs": args.jobs, "configs": CONFIGS, "sweeps": list(SWEEPS),
                                "cpus": os.cpu_count(), "python": platform.python_version(),
                                "summary": summary, "runs": runs}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
