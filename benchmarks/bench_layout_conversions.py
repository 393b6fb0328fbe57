"""Data movement per kernel, read from the lowered code (no GPU): the dynamic shared memory pool in
bytes, the barriers (``__syncthreads``) in the lowered TIR, and the ``convert_layout`` instructions
of the scheduled IR by cost class (free / shuffle / shared). Every example kernel and the ready
QuantMatmul for uint4, int4 and float6_e3m2 (the simulated tests' schedules).

Usage: python benchmarks/bench_layout_conversions.py [--arch sm_90] [--out DIR] [--tag TAG]
(prints a table; writes DIR/cpu-<date>-<arch>-layout-conversions[-TAG].json, DIR defaults to
benchmarks/results).
"""
from __future__ import annotations

import argparse
import datetime
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:   # this checkout's tilus, not an installed one
    sys.path.insert(0, str(HERE.parent))


#: QuantMatmul schedules measured (those of tests/backend/quant_matmul_sim.py)
SMALL = dict(block_m=16, block_n=128, block_k=32, stages=1, split_k=1, warps=4)
QUANT = [("uint4", SMALL), ("int4", SMALL), ("float6_e3m2", SMALL),
         ("uint4", dict(block_m=16, block_n=128, block_k=128, stages=2, split_k=1, warps=4)),
         ("int4", dict(block_m=32, block_n=128, block_k=64, stages=3, split_k=1, warps=8)),
         ("float6_e3m2", dict(block_m=16, block_n=128, block_k=64, stages=2, split_k=2, warps=4))]


def kernels():
    """(name, Script instance) for every kernel measured."""
    from benchmarks.example_kernels import example_kernels
    from tilus.ops.kernels import QuantMatmul

    yield from example_kernels()
    for wtype, sched in QUANT:
        tag = f"k{sched['block_k']}s{sched['stages']}x{sched['split_k']}w{sched['warps']}"
        yield f"QuantMatmul[{wtype},{tag}]", QuantMatmul(wtype, 64, **sched)


def conversions(program) -> Counter:
    """convert_layout instructions of a scheduled program, by cost class."""
    from tilus.ir import inst as I
    from tilus.ir.functor import instructions

    cls = getattr(I, "ConvertLayoutInst", None)
    if cls is None:
        return Counter()
    return Counter(i.cost for i in instructions(program.body) if isinstance(i, cls))


def measure(name: str, kernel, arch: str) -> dict:
    from tilus.backend.build_program import prepare
    from tilus.backend.codegen import lower_program

    program = prepare(kernel.program(), arch)
    lowered = lower_program(program)
    text = lowered.prim_func.script()
    conv = conversions(program)
    return {"kernel": name, "smem_bytes": lowered.shared_bytes,
            "barriers": text.count("tvm_storage_sync"),
            "convert_layout": {c: conv.get(c, 0) for c in ("free", "shuffle", "shared")}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    rows = [measure(name, k, args.arch) for name, k in kernels()]
    head = f"{'kernel':36} {'smem B':>7} {'barriers':>8}  convert_layout (free/shuffle/shared)"
    print(head)
    print("-" * len(head))
    for r in rows:
        c = r["convert_layout"]
        print(f"{r['kernel']:36} {r['smem_bytes']:7} {r['barriers']:8}  "
              f"{c['free']}/{c['shuffle']}/{c['shared']}")
    today = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.tag}" if args.tag else ""
    path = args.out / f"cpu-{today}-{args.arch}-layout-conversions{suffix}.json"
    from benchmarks.provenance import write_cpu_results

    write_cpu_results(path, args.arch, "lowered", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
