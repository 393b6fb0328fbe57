"""Compile-side numbers of every example kernel and the ready low-bit matmul, on a machine without
a GPU: transpile time (DSL -> IR), build time (passes, lowering, TVM codegen, nvcc), registers,
spills, stack frame, dynamic shared memory, and the fast instructions the SASS contains.

Usage: python benchmarks/bench_compile.py [--arch sm_90] [--out DIR]
(prints a table; writes DIR/cpu-<date>-<arch>-compile.json; DIR defaults to benchmarks/results).

``--cold [--runs 5] [--label L]``: the cold ``tilus.build`` of the uint4 decode QuantMatmul (the
kernel ``tilus.ops.matmul`` launches at M=1 for a 4096 x 4096 weight) in ``--runs`` fresh
processes, each with an empty kernel cache, then the same build once more in a fresh process
sharing that cache (the cache hit); min and median per stage (import tilus, the kernel's module,
TVM import, transpile, passes, lowering, TVM codegen, nvcc/ptxas; for a hit: program, cache
lookup, restore; the kernel's construction is timed apart: QuantMatmul's first one imports
ml_dtypes, 0.5 s), and the build's CPU seconds (``tilus_build_cpu_in_process``: this process,
every thread; ``tilus_build_cpu_tools``: its subprocesses, nvcc and the linker), which a loaded
machine inflates far less than the wall times. Each process runs ``gc.collect()`` before the
build: the full collection torch's import leaves pending would otherwise land on it. Writes
DIR/cpu-<date>-<arch>-cold-build[-L].json (CPU timings: compile only, no GPU).
``TILUS_CUDA_PRINTER=tvm`` (inherited by the build processes) measures TVM's pipeline and printer
instead of Tilus' printer (the ``codegen`` stage).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:   # this checkout's tilus, not an installed one
    sys.path.insert(0, str(HERE.parent))

import tilus  # noqa: E402
OPCODES = ("HMMA", "LDSM", "LDGSTS", "LDG.E.128", "STG.E.128", "LOP3", "PRMT", "SHFL")


def kernels():
    """(name, Script instance) for every kernel measured."""
    from benchmarks.example_kernels import example_kernels
    from tilus.ops.kernels import QuantMatmul

    yield from example_kernels()
    for wtype in ("uint4", "uint3", "float4_e2m1"):
        yield f"QuantMatmul[{wtype}]", QuantMatmul(wtype, 128, block_m=16, block_n=128, block_k=64,
                                                   stages=2)


def measure(name: str, kernel, arch: str) -> dict:
    t0 = time.perf_counter()
    kernel.program()
    t1 = time.perf_counter()
    compiled = tilus.build(kernel, arch=arch)
    t2 = time.perf_counter()
    r = compiled.resources
    sass = compiled.sass
    return {"kernel": name, "transpile_ms": (t1 - t0) * 1e3, "build_ms": (t2 - t1) * 1e3,
            "registers": r.registers, "spill_bytes": r.spill_store_bytes + r.spill_load_bytes,
            "stack_frame_bytes": r.stack_frame_bytes,
            "dynamic_smem_bytes": compiled.launch.get("shared_bytes", 0),
            "threads": compiled.launch["block"][0],
            "sass": {op: sass.count(op) for op in OPCODES}}


def decode_kernel_args(m: int = 1, n: int = 4096, k: int = 4096) -> dict:
    """QuantMatmul's arguments for the kernel ``tilus.ops.matmul`` launches on a uint4 weight
    (group 128, asymmetric, fp16) for M=m, derived by the op's own schedule and metadata."""
    import torch

    from tilus.ops import default_schedule, quantize
    from tilus.ops.matmul import kernel_for, weight_meta

    qw = quantize(torch.linspace(-1, 1, n * k).reshape(n, k), "uint4", group_size=128,
                  scale_dtype=torch.float16)
    schedule = default_schedule(m, n, k, 128, "compiled", 132, qw.nbits)
    kern = kernel_for(weight_meta(qw, torch.float16), "float16", False, schedule)
    return {"wtype": kern.wtype.name, "group_size": kern.group_size, "act": kern.act.name,
            "scale": kern.scale.name, "zero_mode": kern.zero_mode, **schedule}


CHILD = """
import json, resource, sys, time
def cpu():
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), c.ru_utime + c.ru_stime
t0 = time.perf_counter()
import tilus
t1 = time.perf_counter()
from tilus.ops.kernels import QuantMatmul
t2 = time.perf_counter()
kernel = QuantMatmul(**json.loads(sys.argv[1]))
import gc
gc.collect()     # the full collection torch's import leaves pending, not the build's cost
c3 = cpu()
t3 = time.perf_counter()
built = tilus.build(kernel, arch=sys.argv[2])
t4 = time.perf_counter()
c4 = cpu()
print("TIMINGS " + json.dumps({"import_tilus": t1 - t0, "import_kernel_module": t2 - t1,
                               "kernel_construction": t3 - t2,
                               **getattr(built, "timings", {}), "tilus_build": t4 - t3,
                               "tilus_build_cpu_in_process": c4[0] - c3[0],
                               "tilus_build_cpu_tools": c4[1] - c3[1],
                               "registers": built.resources.registers}))
"""


def run_child(kwargs: dict, arch: str, cache_dir: Path) -> dict:
    """One fresh process building the kernel: its stage timings and its wall time."""
    import os
    import subprocess

    env = dict(os.environ, TILUS_CACHE_DIR=str(cache_dir), PYTHONPATH=str(HERE.parent))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kwargs), arch], env=env,
                          capture_output=True, text=True, cwd=HERE.parent)
    wall = time.perf_counter() - t0
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("TIMINGS ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"the build process failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return {**json.loads(line[-1][8:]), "process_wall": wall}


def _stats(runs: list[dict]) -> dict:
    import statistics

    keys = [k for k in dict.fromkeys(k for r in runs for k in r) if k != "registers"]
    return {k: {"min": min(r.get(k, 0.0) for r in runs),
                "median": statistics.median(r.get(k, 0.0) for r in runs)} for k in keys}


def cold(args) -> int:
    """The --cold measurement (see the module doc)."""
    import os
    import tempfile

    kwargs = decode_kernel_args()
    print(f"cold tilus.build of QuantMatmul({kwargs}) for {args.arch}, {args.runs} fresh "
          f"processes; load average before: {os.getloadavg()[0]:.2f}")
    runs, hits = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tilus-bench-cache-") as cache:
            runs.append(run_child(kwargs, args.arch, Path(cache)))
            hits.append(run_child(kwargs, args.arch, Path(cache)))
    cold_s, hit_s = _stats(runs), _stats(hits)
    print(f"{'stage':22} {'cold min':>9} {'cold med':>9} {'hit min':>9} {'hit med':>9}")
    for k in dict.fromkeys([*cold_s, *hit_s]):
        c = cold_s.get(k, {"min": 0.0, "median": 0.0})
        h = hit_s.get(k, {"min": 0.0, "median": 0.0})
        print(f"{k:22} {c['min']:8.3f}s {c['median']:8.3f}s {h['min']:8.3f}s {h['median']:8.3f}s")
    hit_total = [r["import_tilus"] + r["tilus_build"] for r in hits]
    print(f"cache hit, import tilus + tilus.build: min {min(hit_total):.3f}s; load average "
          f"after: {os.getloadavg()[0]:.2f}")
    from benchmarks.provenance import provenance

    today = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.label}" if args.label else ""
    path = args.out / f"cpu-{today}-{args.arch}-cold-build{suffix}.json"
    path.write_text(json.dumps({
        **provenance(), "device": f"CPU only ({platform.processor() or platform.machine()}, "
                                  f"{os.cpu_count()} cores shared with other work), compiled "
                                  f"for {args.arch}, no GPU: compile timings only",
        "kernel": "QuantMatmul", "kernel_args": kwargs, "arch": args.arch, "label": args.label,
        "seconds": {"cold": cold_s, "cache_hit": hit_s,
                    "cache_hit_import_tilus_plus_build_min": min(hit_total)},
        "runs": runs, "hit_runs": hits}, indent=2))
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--cold", action="store_true", help="the cold-build measurement (module doc)")
    p.add_argument("--runs", type=int, default=5, help="fresh processes for --cold (default 5)")
    p.add_argument("--label", default="", help="a name for the --cold JSON (e.g. before, after)")
    args = p.parse_args(argv)
    if args.cold:
        return cold(args)
    rows = [measure(name, k, args.arch) for name, k in kernels()]
    head = f"{'kernel':26} {'transpile':>9} {'build':>8} {'regs':>5} {'spill':>5} {'stack':>5} " \
           f"{'smem B':>7} {'thr':>4}  sass"
    print(head)
    print("-" * len(head))
    for r in rows:
        ops = " ".join(f"{k}x{v}" for k, v in r["sass"].items() if v)
        print(f"{r['kernel']:26} {r['transpile_ms']:7.0f}ms {r['build_ms']:6.0f}ms {r['registers']:5} "
              f"{r['spill_bytes']:5} {r['stack_frame_bytes']:5} {r['dynamic_smem_bytes']:7} "
              f"{r['threads']:4}  {ops}")
    today = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cpu-{today}-{args.arch}-compile.json"
    from benchmarks.provenance import write_cpu_results

    write_cpu_results(path, args.arch, "compiled", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
