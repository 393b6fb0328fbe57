"""Compile-side numbers of every example kernel and the ready low-bit matmul, on a machine without
a GPU: transpile time (DSL -> IR), build time (passes, lowering, TVM codegen, nvcc), registers,
spills, stack frame, dynamic shared memory, and the fast instructions the SASS contains.

Usage: python benchmarks/bench_compile.py [--arch sm_90] [--out DIR]
(prints a table; writes DIR/cpu-<date>-<arch>-compile.json; DIR defaults to benchmarks/results).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import tilus

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
OPCODES = ("HMMA", "LDSM", "LDGSTS", "LDG.E.128", "STG.E.128", "LOP3", "PRMT", "SHFL")


def kernels():
    """(name, Script instance) for every kernel measured."""
    sys.path.insert(0, str(HERE.parent / "examples"))
    import matmul_fp16
    import matmul_lowbit
    import matmul_splitk
    import softmax
    import vector_add
    from tilus.ops.kernels import QuantMatmul

    yield "vector_add", vector_add.VecAdd(256)
    yield "softmax", softmax.Softmax(16, 128)
    yield "matmul_fp16", matmul_fp16.MatmulFp16()
    yield "matmul_splitk", matmul_splitk.MatmulSplitK()
    for wtype in matmul_lowbit.WEIGHT_TYPES:
        yield f"matmul_lowbit[{wtype}]", matmul_lowbit.MatmulLowBit(wtype)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
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
    from benchmarks.provenance import provenance

    path.write_text(json.dumps({**provenance(),
                                "device": f"CPU only ({platform.processor() or platform.machine()}), "
                                          f"compiled for {args.arch}, no GPU",
                                "date": today, "arch": args.arch, "tilus": tilus.__version__,
                                "rows": rows}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
