"""Quantized matmul benchmark: Tilus vs torch fp16, dequantize + cuBLAS, and a Triton kernel.

    python benchmarks/bench_matmul.py                 # on a GPU machine (or: tilus bench matmul)
    python benchmarks/bench_matmul.py --dry-run       # no GPU: a static estimate, not timings,
                                                      # written to a new temporary directory

Steps: (1) the device's copy bandwidth (a 1 GiB device-to-device copy, read + write bytes / median
time); (2) for every Llama-3 linear shape K x N (8B: 4096x4096, 4096x14336, 14336x4096; 70B:
8192x8192, 8192x28672, 28672x8192), every M in {1, 4, 16, 64, 256, 1024} and every weight type
(u1..u8, i4, i8, f4e2m1, f6e3m2, f8e4m3; group size 128), the median time (CUDA events, L2
flushed, warm-up) of:

* ``tilus``    - ``tilus.ops.matmul`` (the compiled Tilus kernel; its error is recorded while the
                 CUDA backend is not built);
* ``fp16``     - ``a @ w.T`` with an fp16 weight (cuBLAS): the baseline of the speed-ups;
* ``dequant``  - dequantize to fp16 then cuBLAS (what a framework without a fused kernel does);
* ``triton``   - ``benchmarks/baselines/triton_quant_matmul.py`` on the same packed weights.

Output: a table on stdout; JSON at ``<out>/<device>-<date>.json`` (``--out``, default
``benchmarks/results``) with every timing, the speed-up over fp16 and the fraction of the copy
bandwidth reached (bytes of packed weights + scales/offsets + a + c, over time, over bandwidth); a PNG
next to it: speed-up over fp16 by type and M, and fraction of copy bandwidth by type at M = 1.

``--dry-run`` measures nothing: every time is an *estimate* on the H200 figures of
``bench_decode_cost`` (4.3 TB/s, 132 SMs x 4 issue/clock x 1.98 GHz, ~990 dense fp16 TFLOP/s).
``fp16`` and ``dequant`` are rooflines of their bytes and flops; ``tilus`` at M <= 16 is the
larger of its memory time and the issue time of its decode loop's SASS (instructions per weight
from the newest ``benchmarks/results/cpu-*-decode-cost.json``, as ``bench_decode_cost`` counts
them), above that a roofline; ``triton`` has no model and stays empty. The table, JSON
(``"estimate": true``) and plot say so.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

SHAPES = {
    "llama3-8b": [(4096, 4096), (4096, 14336), (14336, 4096)],
    "llama3-70b": [(8192, 8192), (8192, 28672), (28672, 8192)],
}
MS = [1, 4, 16, 64, 256, 1024]
TYPES = {"u1": "uint1", "u2": "uint2", "u3": "uint3", "u4": "uint4", "u5": "uint5",
         "u6": "uint6", "u7": "uint7", "u8": "uint8", "i4": "int4", "i8": "int8",
         "f4e2m1": "float4_e2m1", "f6e3m2": "float6_e3m2", "f8e4m3": "float8_e4m3"}
METHODS = ("tilus", "fp16", "dequant", "triton")
GROUP = 128


# ---- bytes moved --------------------------------------------------------------------------------
def traffic_bytes(method: str, m: int, k: int, n: int, nbits: int, group: int = GROUP) -> int:
    """Minimum bytes a method must move: activations, output, and the weight as it reads it."""
    io = 2 * m * k + 2 * m * n
    if method == "fp16":
        return io + 2 * k * n
    packed = k * (-(-n // 128) * 128) * nbits // 8 + 2 * 2 * (k // group) * n
    if method == "dequant":       # read packed, write fp16, read fp16 again in the GEMM
        return io + packed + 4 * k * n
    return io + packed


# ---- the --dry-run estimate ---------------------------------------------------------------------
class StaticEstimate:
    """Times from a model, not a GPU (see the module doc): rooflines on the H200 figures, and for
    the Tilus decode kernel the issue time of its SASS main loop."""

    TFLOPS = 990.0

    def __init__(self, cost_json: Optional[Path] = None):
        from benchmarks.bench_decode_cost import BANDWIDTH, CLOCK_HZ, SCHEDULERS, SMS

        self.bw = BANDWIDTH / 1e9
        self.issue_per_s = SMS * SCHEDULERS * CLOCK_HZ
        self.cost_json = cost_json or newest_decode_cost()
        rows = json.loads(self.cost_json.read_text())["rows"] if self.cost_json else []
        self.ipe = {r["type"]: r["instructions_per_weight_element"] for r in rows}

    def time_ms(self, method, m, k, n, dtype, nbits) -> Optional[float]:
        if method == "triton":
            return None
        mem = traffic_bytes(method, m, k, n, nbits) / (self.bw * 1e9)
        comp = 2 * m * k * n / (self.TFLOPS * 1e12)
        t = max(mem, comp)
        if method == "tilus" and m <= 16:
            if dtype not in self.ipe:
                return None
            t = max(t, k * n * self.ipe[dtype] / 32 / self.issue_per_s)
        return t * 1e3


def newest_decode_cost(results: Path = HERE / "results") -> Optional[Path]:
    """The newest static decode-cost JSON of bench_decode_cost (all weight types: not the
    attention, ``-intzero`` or ``-blockscale`` runs), or None."""
    name = re.compile(r"cpu-\d{4}-\d{2}-\d{2}-sm_\d+-decode-cost\.json")
    found = sorted(p for p in results.glob("cpu-*-decode-cost.json") if name.fullmatch(p.name))
    return found[-1] if found else None


def copy_bandwidth_gbs(timer: Callable, nbytes: int = 1 << 30) -> float:
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def random_qweight(n: int, k: int, dtype: str, group: int = GROUP, device="cuda"):
    """A QuantizedWeight with random codes and scales (benchmarks time data movement, not
    quantization; quantizing 28672 x 8192 weights for every type would dominate the run)."""
    import torch

    from tilus import dtypes
    from tilus.ops import packing
    from tilus.ops.quantize import QuantizedWeight

    t = dtypes.get(dtype)
    data = torch.randint(0, 256, packing.data_shape(k, n, t.nbits), dtype=torch.uint8,
                         device=device)
    if dtype == "float8_e4m3":
        data &= 0x77 | 0x80          # keep clear of the NaN codes 0x7f/0xff
    scales = (torch.rand(k // group, n, device=device) * 0.01 + 1e-3).half()
    offsets = None
    if t.is_integer and not t.is_signed:
        offsets = (-float(2 ** (t.nbits - 1)) * scales).half()
    return QuantizedWeight(data, scales, offsets, t.name, (n, k), group, offsets is None, 0.0)


def measure(args) -> dict:
    """Times every (shape, M, type, method) on the GPU (or estimates it with --dry-run)."""
    rows = []
    errors: dict = {}
    estimate = None
    if args.dry_run:
        estimate = StaticEstimate()
        bandwidth = estimate.bw
        device = "dry-run"
    else:
        import torch

        from tilus.autotune.timers import CudaEventTimer

        if not torch.cuda.is_available():
            raise SystemExit("bench_matmul: no CUDA device; use --dry-run to check the script")
        timer = CudaEventTimer(warmup=args.warmup, reps=args.reps)
        device = torch.cuda.get_device_name()
        bandwidth = copy_bandwidth_gbs(timer)
    from tilus import dtypes

    budget = getattr(args, "budget_s", None)
    deadline = None if budget is None else time.monotonic() + budget
    skipped = 0
    for (k, n) in args.shape_list:
        w16 = None
        for tname in args.types:
            dtype = TYPES[tname]
            nbits = dtypes.get(dtype).nbits
            late = deadline is not None and time.monotonic() > deadline
            qw = None if args.dry_run or late else random_qweight(n, k, dtype)
            for m in args.m:
                for method in args.methods:
                    if deadline is not None and time.monotonic() > deadline:
                        ms = None                   # out of time: recorded as not measured
                        skipped += 1
                    elif estimate is not None:
                        ms = estimate.time_ms(method, m, k, n, dtype, nbits)
                    else:
                        if method == "fp16" and w16 is None:
                            import torch

                            w16 = torch.randn(n, k, device="cuda").half()
                        ms = _time_one(method, m, k, n, qw, w16, timer, errors)
                    rows.append({"k": k, "n": n, "m": m, "type": tname, "dtype": dtype,
                                 "nbits": nbits, "method": method, "ms": ms,
                                 "bytes": traffic_bytes(method, m, k, n, nbits)})
    derive(rows, bandwidth)
    if skipped:
        errors["budget"] = (f"--budget-s {budget:g}: {skipped} of {len(rows)} timings not taken "
                            f"(ms null)")
    from benchmarks.provenance import provenance

    return {**provenance(), "device": device, "date": _dt.date.today().isoformat(),
            "dry_run": bool(args.dry_run), "estimate": estimate is not None,
            **({"estimate_from": str(estimate.cost_json) if estimate.cost_json else None}
               if estimate is not None else {}),
            "budget_s": budget, "not_measured": skipped,
            "copy_bandwidth_gbs": bandwidth, "group_size": GROUP, "rows": rows,
            "errors": errors}


def _time_one(method, m, k, n, qw, w16, timer, errors) -> Optional[float]:
    import torch

    a = torch.randn(m, k, device="cuda").half()
    try:
        if method == "fp16":
            fn = lambda: a @ w16.t()                                           # noqa: E731
        elif method == "dequant":
            fn = lambda: a @ qw.dequantize(torch.float16, transpose=False)     # noqa: E731
        elif method == "tilus":
            from tilus.ops import matmul

            fn = lambda: matmul(a, qw)                                         # noqa: E731
        else:
            from benchmarks.baselines.triton_quant_matmul import triton_quant_matmul

            fn = lambda: triton_quant_matmul(a, qw)                            # noqa: E731
        fn()
        return timer(fn)
    except Exception as e:       # record, keep going (e.g. the Tilus CUDA backend is not built)
        errors.setdefault(method, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
        return None


def derive(rows: list, bandwidth_gbs: float) -> None:
    """Adds ``speedup_vs_fp16`` and ``bandwidth_fraction`` to every row with a time."""
    fp16 = {(r["k"], r["n"], r["m"], r["type"]): r["ms"] for r in rows if r["method"] == "fp16"}
    for r in rows:
        base = fp16.get((r["k"], r["n"], r["m"], r["type"]))
        ok = r["ms"] is not None and r["ms"] > 0
        r["speedup_vs_fp16"] = base / r["ms"] if ok and base else None
        r["bandwidth_fraction"] = (r["bytes"] / (r["ms"] * 1e-3) / (bandwidth_gbs * 1e9)
                                   if ok else None)


# ---- reporting ----------------------------------------------------------------------------------
def format_table(result: dict) -> str:
    rows = result["rows"]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    order = {t: i for i, t in enumerate(TYPES)}
    key = lambda r: (r["k"], r["n"], order[r["type"]], r["type"], r["m"])     # noqa: E731
    cells: dict = {}
    for r in rows:
        cells.setdefault(key(r), {})[r["method"]] = r
    head = f"{'K x N':>13} {'type':>7} {'M':>5} " + " ".join(f"{m + ' ms':>11}" for m in methods)
    head += f" {'tilus/fp16':>10} {'tilus %bw':>9}"
    lines = [f"device: {result['device']}   copy bandwidth: {result['copy_bandwidth_gbs']:.0f} "
             f"GB/s   group size {result['group_size']}"
             + ("   (DRY RUN: ESTIMATE from the SASS cost model and rooflines, not timings)"
                if result.get("dry_run") else ""), head,
             "-" * len(head)]

    def fmt(x, spec):
        return format(x, spec) if x is not None else "-"

    def pct(x):
        return None if x is None else 100 * x

    for kk in sorted(cells):
        c = cells[kk]
        t = c.get("tilus", {})
        lines.append(f"{kk[0]:>6}x{kk[1]:<6} {kk[3]:>7} {kk[4]:>5} "
                     + " ".join(f"{fmt(c[m]['ms'] if m in c else None, '11.4f'):>11}"
                                for m in methods)
                     + f" {fmt(t.get('speedup_vs_fp16'), '10.2f'):>10}"
                     + f" {fmt(pct(t.get('bandwidth_fraction')), '8.1f'):>9}")
    for method, err in result.get("errors", {}).items():
        lines.append(f"note: {method} failed: {err}" if method in METHODS else f"note: {err}")
    return "\n".join(lines)


def output_paths(out_dir: Path, device: str, date: str) -> tuple[Path, Path]:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower() or "device"
    base = out_dir / f"{slug}-{date}"
    return base.with_suffix(".json"), base.with_suffix(".png")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["ms"] is not None]
    method = "tilus" if any(r["method"] == "tilus" for r in rows) else "triton"
    types = [t for t in TYPES if any(r["type"] == t for r in rows)]
    ms = sorted({r["m"] for r in rows})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.cm.tab20(range(len(types)))
    for t, color in zip(types, colors):
        ys = []
        for m in ms:
            sp = [r["speedup_vs_fp16"] for r in rows if r["type"] == t and r["m"] == m
                  and r["method"] == method and r["speedup_vs_fp16"]]
            ys.append(math.exp(sum(map(math.log, sp)) / len(sp)) if sp else float("nan"))
        ax1.plot(ms, ys, marker="o", label=t, color=color,
                 linestyle="--" if t[0] in "if" else "-")
    ax1.set_xscale("log", base=2)
    ax1.axhline(1.0, color="gray", lw=0.8)
    ax1.set_xlabel("M (tokens)")
    ax1.set_ylabel(f"{method} speed-up over fp16 (geomean over shapes)")
    ax1.legend(ncol=2, fontsize=7)
    m0 = ms[0]
    methods = [x for x in METHODS if any(r["method"] == x for r in rows)]
    width = 0.8 / max(1, len(methods))
    for i, meth in enumerate(methods):
        vals = []
        for t in types:
            f = [r["bandwidth_fraction"] for r in rows if r["type"] == t and r["m"] == m0
                 and r["method"] == meth and r["bandwidth_fraction"]]
            vals.append(sum(f) / len(f) if f else 0.0)
        ax2.bar([j + i * width for j in range(len(types))], vals, width, label=meth)
    ax2.set_xticks([j + 0.4 - width / 2 for j in range(len(types))], types, rotation=45)
    ax2.set_ylabel(f"fraction of copy bandwidth (M={m0})")
    ax2.legend(fontsize=7)
    fig.suptitle(f"Quantized matmul, {result['device']}, {result['date']}"
                 + (" (DRY RUN: static estimate, not timings)" if result.get("dry_run") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench_matmul", description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU: a static estimate (SASS cost model + rooflines), not timings")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default benchmarks/results; with --dry-run a new "
                        "temporary directory, printed: estimates never land among results)")
    p.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--m", type=int, nargs="+", default=MS)
    p.add_argument("--types", nargs="+", choices=list(TYPES), default=list(TYPES))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop measuring after this many seconds; the rest is recorded as not "
                        "measured (ms null) and the table and JSON are still written")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = (Path(tempfile.mkdtemp(prefix="tilus-bench-dry-run-")) if args.dry_run
                    else HERE / "results")
    args.shape_list = [s for model in args.models for s in SHAPES[model]]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    result = measure(args)
    print(format_table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = output_paths(args.out, result["device"], result["date"])
    json_path.write_text(json.dumps(result, indent=1))
    print(f"wrote {json_path}")
    if not args.no_plot and any(r["ms"] is not None for r in result["rows"]):
        plot(result, png_path)
        print(f"wrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
