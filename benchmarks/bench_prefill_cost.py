"""Static cost of the prefill (flash) attention kernel from its SASS, per configuration: no GPU.

For each configuration (head_dim, arch, K/V type, q's dtype, causal) the kernel
``tilus.ops.attention_prefill`` launches (64-row Q tiles, 64-token K/V tiles, 4 warps, 2 query
heads per KV head) is built; the table shows registers, spills, shared memory, the instructions of
one steady-state iteration of its main loop (one K/V tile: Q K^T, the online softmax, P V) counted
by ``tilus.backend.sass_cost``, its HMMA count, and the share of those that are HMMA. Estimates
from the instruction stream, not timings.

    python benchmarks/bench_prefill_cost.py [--configs 64,sm_90,none,float16,1 ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = ("64,sm_90,none,float16,1", "128,sm_90,none,float16,1", "128,sm_80,none,float16,1",
           "128,sm_90,none,bfloat16,0", "64,sm_90,uint8,float16,0", "128,sm_90,int8,float16,1",
           "128,sm_80,int8,float16,1", "128,sm_90,float8_e4m3,bfloat16,1")
GROUP = 2


def prefill_cost(config: str) -> dict:
    """Build the kernel of ``config`` ("head_dim,arch,kv_dtype|none,act,causal 0|1") and return
    its static cost (see the module doc)."""
    import tilus
    from tilus.ops.prefill import prefill_kernel

    d, arch, kv, act, causal = config.split(",")
    head_dim, kv_dtype = int(d), None if kv == "none" else kv
    built = tilus.build(prefill_kernel(head_dim, GROUP, head_dim ** -0.5, causal == "1", act,
                                       kv_dtype), arch=arch)
    cost = built.main_loop_cost()
    res = built.resources
    return {"head_dim": head_dim, "arch": arch, "kv_dtype": kv_dtype or act, "act": act,
            "causal": causal == "1", "registers": res.registers,
            "spill_bytes": res.spill_store_bytes + res.spill_load_bytes,
            "stack_frame_bytes": res.stack_frame_bytes,
            "shared_memory_bytes": built.launch.get("shared_bytes", 0),
            "instructions_per_iteration": cost.instructions, "mma_per_iteration": cost.mma,
            "mma_share": round(cost.mma / max(1, cost.instructions), 3),
            "by_class": dict(cost.by_class)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    rows = [prefill_cost(c) for c in args.configs]
    head = f"{'d':>4} {'arch':6} {'K/V':12} {'q':9} {'causal':6} {'regs':>5} {'spills':>6} " \
           f"{'smem':>6} {'instr/iter':>10} {'HMMA':>5} {'HMMA %':>6}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['head_dim']:>4} {r['arch']:6} {r['kv_dtype']:12} {r['act']:9} "
              f"{r['causal']!s:6} {r['registers']:>5} {r['spill_bytes']:>6} "
              f"{r['shared_memory_bytes']:>6} {r['instructions_per_iteration']:>10} "
              f"{r['mma_per_iteration']:>5} {r['mma_share']:>6.1%}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"cpu-{datetime.date.today().isoformat()}-prefill-cost.json")
    from benchmarks.provenance import provenance

    meta = {**provenance(), "kind": "static estimate from SASS (no GPU)",
            "device": "CPU only (compiled, not run)",
            "shape": {"block_q": 64, "block_kv": 64, "warps": 4, "group": GROUP,
                      "scales": "one scale + zero per (token, KV head) for quantized K/V"}}
    with open(path, "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
