"""Static cost of the mixed-bit MoE grouped GEMM from its SASS, per expert type: no GPU.

The kernel ``tilus.ops.moe_matmul`` builds on CUDA (``MoEQuantMatmul``, group size 128, float16,
the CUDA default schedule: k-steps of 128 through a 3-stage copy_async pipeline) is built for
sm_90 with one expert type at a time; one steady-state k-step of its main loop (the type's
branch: 4 units of 32 x 128 weights, 128 weights per thread) is counted by instruction class
(``tilus.backend.sass_cost``), next to ``QuantMatmul`` with the same block_k and stages. Then the
kernel with all the types in one launch (one branch each) is built for sm_80 and sm_90 for its
registers and spills. With the H200 figures of ``bench_decode_cost.py``: memory / issue =
(B/8 + scale and offset bytes per weight) / 4.3e12 over instructions per weight / 32 /
(132 * 4 * 1.98e9). Estimates from the instruction stream, not timings.

    python benchmarks/bench_moe_cost.py [--types uint4,int4,uint2,uint3] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_decode_cost import (BANDWIDTH, CLOCK_HZ, SCHEDULERS, SMS,  # noqa: E402
                                          memory_over_issue)

TYPES = ("uint4", "int4", "uint2", "uint3")
GROUP, BLOCK_K, STAGES = 128, 128, 3


def variant(wtype: str) -> tuple:
    """The variant ``quantize``'s default scheme gives: uint asymmetric (float offsets), int
    symmetric (scale only)."""
    return (wtype, "tensor" if wtype.startswith("uint") else "none", 0.0, 0)


def type_cost(wtype: str, arch: str = "sm_90") -> dict:
    """One k-step of the MoE kernel's branch for ``wtype`` and of QuantMatmul's loop."""
    import tilus
    from tilus.ops.kernels import QuantMatmul
    from tilus.ops.moe_kernels import MoEQuantMatmul

    v = variant(wtype)
    built = tilus.build(MoEQuantMatmul((v,), GROUP, block_k=BLOCK_K, stages=STAGES), arch=arch)
    dense = tilus.build(QuantMatmul(wtype, GROUP, zero_mode=v[1], block_m=16, block_k=BLOCK_K,
                                    stages=STAGES), arch=arch)
    cost, dense_cost = built.main_loop_cost(), dense.main_loop_cost()
    ipw = cost.instructions / BLOCK_K
    params = (4 if v[1] == "tensor" else 2) / GROUP
    ratio = memory_over_issue(tilus.dtypes.get(wtype).nbits, params, ipw)
    return {"type": wtype, "instructions_per_k_step": cost.instructions, "mma": cost.mma,
            "instructions_per_weight": round(ipw, 3), "by_class": dict(cost.by_class),
            "quant_matmul_instructions_per_weight": round(dense_cost.instructions / BLOCK_K, 3),
            "registers": built.resources.registers,
            "spill_bytes": built.resources.spill_store_bytes + built.resources.spill_load_bytes,
            "memory_over_issue": round(ratio, 3)}


def all_types_build(types, arch: str) -> dict:
    """Registers and spills of the one kernel holding every type's branch."""
    import tilus
    from tilus.ops.moe_kernels import MoEQuantMatmul

    res = tilus.build(MoEQuantMatmul(tuple(variant(t) for t in types), GROUP, block_k=BLOCK_K,
                                     stages=STAGES), arch=arch).resources
    return {"arch": arch, "types": list(types), "registers": res.registers,
            "spill_bytes": res.spill_store_bytes + res.spill_load_bytes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    types = args.types.split(",")
    rows = [type_cost(t) for t in types]
    head = f"{'type':<6} {'instr/step':>10} {'instr/weight':>12} {'QuantMatmul':>11} " \
           f"{'mem/issue':>9} {'regs':>5} {'spills':>6}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['type']:<6} {r['instructions_per_k_step']:>10} "
              f"{r['instructions_per_weight']:>12.2f} "
              f"{r['quant_matmul_instructions_per_weight']:>11.2f} "
              f"{r['memory_over_issue']:>9.2f} {r['registers']:>5} {r['spill_bytes']:>6}")
    builds = [all_types_build(types, arch) for arch in ("sm_80", "sm_90")]
    for b in builds:
        print(f"all {len(types)} types in one kernel, {b['arch']}: {b['registers']} registers, "
              f"{b['spill_bytes']} spill bytes")
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = os.path.join(args.out, f"cpu-{stamp}-sm_90-moe-cost.json")
    from benchmarks.provenance import provenance

    meta = {**provenance(), "kind": "static estimate from SASS (no GPU)",
            "device": "CPU only (compiled, not run)",
            "device_model": {"sms": SMS, "schedulers": SCHEDULERS, "clock_hz": CLOCK_HZ,
                             "bandwidth_bytes_per_s": BANDWIDTH, "name": "H200 (figures)"},
            "schedule": {"block_m": 16, "block_k": BLOCK_K, "stages": STAGES, "group": GROUP,
                         "act": "float16"}}
    with open(path, "w") as f:
        json.dump({**meta, "rows": rows, "all_types": builds}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
