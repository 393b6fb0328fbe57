"""Launch overhead: microseconds per launch of a tiny kernel, Tilus vs an empty torch op vs Triton.

Each row launches N times back to back on the current stream, then synchronizes; the time per
launch is the wall time over N (the kernels are tiny, so this is the host-side cost). Rows:

- ``torch empty op``      ``x.zero_()`` on a 1-element CUDA tensor (torch's dispatcher + launch)
- ``tilus kernel(...)``   a Script call: instantiate, cache lookup, argument checks, launch
- ``tilus LoadedKernel``  the loaded kernel called directly (argument checks + launch)
- ``tilus raw``           the library's function with prepared 1-D views (TVM's checks + launch)
- ``tilus driver``        the same entry through the CUDA driver launcher (TILUS_LAUNCHER=driver)
- ``triton vector add``   the same vector add in Triton (when triton is installed)

Usage: python benchmarks/launch_overhead.py [--n 1000] [--iters 2000] [--out DIR]
(prints a table; writes DIR/launch_overhead.json with the device name). Needs a GPU; kernels come
from the Tilus cache (build here with TVM, or run from a bundle, see `tilus bundle`).

``--warm-load [--runs 5] [--label L]`` needs no GPU: the CPU part of a cached kernel's first call
in a new process (torch and tilus already imported, as in a program about to call it), up to the
driver, for the vector add above and the uint4 decode QuantMatmul (tilus.ops.matmul at M=1):
the steps of ``tilus.jit.compiled_kernel``'s full path one by one (program, IR text, key
versions, cache lookup, load with the driver launcher; the TVM launcher's CPU part: cubin
registration and libtvm_runtime, up to libtvm_runtime_cuda which needs libcuda), those of its
pre-key path (the kernel's fingerprint, the tilus package's, the index file and the lookup, the
load: no Program built; the index is written first, as a kernel's first call does), then
``compiled_kernel`` itself end to end (TILUS_LAUNCHER=driver: the pre-key path) in another
process. Each process runs ``gc.collect()`` first:
the full collection that importing torch leaves pending (100-400 ms here) would otherwise land on
whatever runs next. Min and median over ``--runs`` processes (after one that warms the page cache),
wall and CPU (``time.process_time``: what a loaded machine inflates less);
writes DIR/cpu-<date>-warm-load[-L].json (DIR defaults to benchmarks/results).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timeit(fn, iters: int, torch) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e6


def triton_vector_add():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def add_kernel(a, b, c, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(c + offs, tl.load(a + offs, mask=mask) + tl.load(b + offs, mask=mask), mask=mask)

    def launch(n, a, b, c):
        add_kernel[(triton.cdiv(n, 256),)](a, b, c, n, BLOCK=256)
    return launch


WARM_CHILD = """
import json, sys, time
import torch
import tilus
from tests.gpu.kernels import vector_add
from tilus.ops.kernels import QuantMatmul
kernel = vector_add() if sys.argv[1] == "vector_add" else QuantMatmul(**json.loads(sys.argv[1]))
import gc
gc.collect()     # the full collection torch's import leaves pending, not the load's cost
t = [time.perf_counter()]
c = [time.process_time()]
out, cpu = {}, {}
def lap(name):
    t.append(time.perf_counter())
    c.append(time.process_time())
    out[name] = (t[-1] - t[-2]) * 1e3
    cpu[name] = (c[-1] - c[-2]) * 1e3
if sys.argv[2] == "end_to_end":
    from tilus import jit
    loaded = jit.compiled_kernel(kernel, arch="sm_90")
    lap("compiled_kernel")
elif sys.argv[2] == "steps":
    from tilus.runtime import LoadedKernel, cache_key, default_cache, key_versions
    from tilus.runtime.kernel import register_cubin
    from tilus.runtime.libraries import load_tvm_runtime
    lap("runtime imports")
    program = kernel.program()
    lap("program (transpile)")
    text = str(program)
    lap("IR text")
    versions = key_versions()
    lap("key versions")
    entry = default_cache().lookup(cache_key(text, "sm_90", versions))
    lap("cache lookup")
    LoadedKernel.load(entry, launcher="driver")
    lap("load (driver launcher)")
    register_cubin(entry)
    with entry.private_copy(entry.metadata.library):
        load_tvm_runtime()
    lap("tvm launcher CPU part")
else:
    from tilus import jit
    from tilus.lang.fingerprint import script_fingerprint
    from tilus.runtime import LoadedKernel, default_cache
    from tilus.runtime.index import read_index
    from tilus.runtime.keys import package_fingerprint
    lap("runtime imports")
    values = kernel.compile_time_values()
    script_fingerprint(kernel, values)
    lap("pre-key: kernel sources, attributes")
    package_fingerprint()
    lap("pre-key: tilus package sources")
    prekey = jit.prekey(kernel, values, "sm_90")
    lap("pre-key: versions, digest")
    entry = default_cache().lookup(read_index(default_cache().root, prekey))
    lap("index + cache lookup")
    LoadedKernel.load(entry, launcher="driver")
    lap("load (driver launcher)")
print("TIMINGS " + json.dumps({"wall": out, "cpu": cpu}))
"""


def _warm_child(kernel: str, mode: str, cache: Path) -> dict:
    import os
    import subprocess

    env = dict(os.environ, TILUS_CACHE_DIR=str(cache), TILUS_LAUNCHER="driver",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", WARM_CHILD, kernel, mode], env=env,
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("TIMINGS ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"the load process failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return json.loads(line[-1][8:])


def _rows(steps: list, prekeys: list, ends: list, kind: str) -> dict:
    """Step name -> the processes' milliseconds (``kind``: wall or cpu): the full path's steps,
    the pre-key path's (prefixed), and compiled_kernel end to end (which takes the pre-key)."""
    rows = {k: [r[kind][k] for r in steps] for k in steps[0][kind]}
    rows.update({f"pre-key path: {k}": [r[kind][k] for r in prekeys] for k in prekeys[0][kind]})
    rows["compiled_kernel, end to end"] = [r[kind]["compiled_kernel"] for r in ends]
    return rows


def warm_load(args) -> dict:
    """The --warm-load measurement (see the module doc)."""
    import datetime
    import os
    import statistics

    from benchmarks.bench_compile import decode_kernel_args
    from tests.gpu.kernels import vector_add
    from tilus import jit
    from tilus.backend.artifact import build_artifact
    from tilus.ops.kernels import QuantMatmul
    from tilus.runtime import cache_key, default_cache, key_versions
    from tilus.runtime.index import write_index

    cache = default_cache().root
    qm = decode_kernel_args()
    kernels = {"vector_add": (vector_add(), "vector_add"),
               "QuantMatmul": (QuantMatmul(**qm), json.dumps(qm))}
    for script, _ in kernels.values():           # into the cache, unless already there
        program = script.program()
        key = cache_key(str(program), "sm_90", key_versions())
        if default_cache().lookup(key) is None:
            default_cache().store(key, build_artifact(program, "sm_90").artifact)
        prekey = jit.prekey(script, script.compile_time_values(), "sm_90")
        assert prekey is not None, f"{type(script).__name__} has no pre-key"
        write_index(cache, prekey, key)           # what its first compiled_kernel writes
    print(f"warm load from {cache}, {args.runs} fresh processes per row; load average "
          f"{os.getloadavg()[0]:.2f}")
    result: dict = {}
    cpu: dict = {}
    for name, (_, arg) in kernels.items():
        _warm_child(arg, "steps", cache)          # warms the page cache (libraries, .pyc files)
        steps = [_warm_child(arg, "steps", cache) for _ in range(args.runs)]
        prekeys = [_warm_child(arg, "prekey", cache) for _ in range(args.runs)]
        ends = [_warm_child(arg, "end_to_end", cache) for _ in range(args.runs)]
        result[name], cpu[name] = ({k: {"min": min(v), "median": statistics.median(v)}
                                    for k, v in _rows(steps, prekeys, ends, kind).items()}
                                   for kind in ("wall", "cpu"))
        print(f"{name}\n  {'step':52} {'min ms':>8} {'median':>8} {'CPU min':>8}")
        for k, v in result[name].items():
            print(f"  {k:52} {v['min']:8.1f} {v['median']:8.1f} {cpu[name][k]['min']:8.1f}")
    from benchmarks.provenance import provenance

    out = Path(args.out or Path(__file__).resolve().parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    today = datetime.date.today().isoformat()
    path = out / f"cpu-{today}-warm-load{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps({**provenance(), "device": f"CPU only ({os.cpu_count()} cores "
                                "shared with other work), no GPU: the CPU part up to the driver",
                                "label": args.label, "runs": args.runs, "ms": result,
                                "cpu_ms": cpu}, indent=2))
    print(f"wrote {path}")
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="vector length (default 1000)")
    p.add_argument("--iters", type=int, default=2000, help="launches per row (default 2000)")
    p.add_argument("--out", default=None, help="folder for launch_overhead.json")
    p.add_argument("--warm-load", action="store_true", help="the CPU warm-load measurement")
    p.add_argument("--runs", type=int, default=5, help="processes per --warm-load row")
    p.add_argument("--label", default="", help="a name for the --warm-load JSON")
    args = p.parse_args(argv)
    if args.warm_load:
        return warm_load(args)

    import torch

    from tests.gpu.kernels import vector_add
    from tilus import jit
    from tilus.runtime.kernel import flat_view

    if not torch.cuda.is_available():
        print("launch_overhead: no CUDA GPU visible", file=sys.stderr)
        return {}
    n = args.n
    a = torch.randn(n, device="cuda")
    b = torch.randn(n, device="cuda")
    c = torch.empty(n, device="cuda")
    one = torch.zeros(1, device="cuda")
    kernel = vector_add()
    t0 = time.perf_counter()
    kernel(n, a, b, c)
    torch.cuda.synchronize()
    first_ms = (time.perf_counter() - t0) * 1e3
    assert torch.equal(c, a + b)
    loaded = jit.compiled_kernel(kernel, arch=jit.device_arch(a))
    fa, fb, fc = (flat_view(x, "float32") for x in (a, b, c))
    raw = loaded.function
    rows = {
        "torch empty op": timeit(lambda: one.zero_(), args.iters, torch),
        "tilus kernel(...)": timeit(lambda: kernel(n, a, b, c), args.iters, torch),
        "tilus LoadedKernel": timeit(lambda: loaded(n, a, b, c), args.iters, torch),
        "tilus raw": timeit(lambda: raw(n, fa, fb, fc), args.iters, torch),
    }
    from tilus.runtime import LoadedKernel, cache_key, default_cache, key_versions

    entry = default_cache().lookup(cache_key(str(kernel.program()), jit.device_arch(a),
                                             key_versions()))
    driver = LoadedKernel.load(entry, launcher="driver")
    c.zero_()
    driver(n, a, b, c)
    torch.cuda.synchronize()
    assert torch.equal(c, a + b)
    rows["tilus driver"] = timeit(lambda: driver(n, a, b, c), args.iters, torch)
    tri = triton_vector_add()
    if tri is not None:
        tri(n, a, b, c)
        torch.cuda.synchronize()
        rows["triton vector add"] = timeit(lambda: tri(n, a, b, c), args.iters, torch)
    device = torch.cuda.get_device_name()
    print(f"launch overhead on {device} (n={n}, {args.iters} launches per row; first Tilus call "
          f"{first_ms:.1f} ms incl. cache load)")
    print(f"{'what':22} {'us/launch':>10}")
    for k, v in rows.items():
        print(f"{k:22} {v:10.2f}")
    from benchmarks.provenance import provenance

    result = {**provenance(), "device": device, "n": n, "iters": args.iters,
              "first_call_ms": first_ms,
              "us_per_launch": rows, "torch": torch.__version__,
              "torch_c_dlpack": hasattr(torch.Tensor, "__dlpack_c_exchange_api__")}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "launch_overhead.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
