"""Static cost of decode attention over a quantized KV cache from its SASS, per cache type: no GPU.

For each type, the split kernel ``tilus.ops.attention_decode`` launches (head_dim 128, 4 query
heads per KV head, 32-token tiles) is built for sm_90; one steady-state iteration of its main loop
(one tile: S = q K^T, the online softmax, P V) is counted by instruction class
(``tilus.backend.sass_cost``) and divided by the KV elements each thread handles per iteration
(``2 * block_s * head_dim / threads``: K and V). With the H200 figures of
``bench_decode_cost.py``:

* issue time per KV element = instructions per element per thread / 32 / (132 * 4 * 1.98e9)
* memory time per KV element = (B/8 + 4 / head_dim bytes of scale and zero) / 4.3e12
* estimated fraction of bandwidth = min(1, memory time / issue time)

Estimates from the instruction stream, not timings. The paged rows are the split kernel of
``tilus.ops.attention_decode_paged`` for pages of ``--page-sizes`` tokens (tiles of 32 tokens
when they divide a page, else 16), counted the same way.

    python benchmarks/bench_attention_cost.py [--types uint4,int4] [--paged-types uint4,uint8]
        [--page-sizes 16,32] [--out benchmarks/results]
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

TYPES = ("uint2", "uint3", "int4", "uint4", "int8", "uint8", "float4_e2m1", "float8_e4m3")
HEAD_DIM, GROUP = 128, 4


PAGED_TYPES, PAGE_SIZES = ("uint4", "uint8"), (16, 32)


def attention_cost(kv_type: str, head_dim: int = HEAD_DIM, group: int = GROUP,
                   arch: str = "sm_90", page_size: int = 0) -> dict:
    """Build the split kernel for ``kv_type`` (the paged one for pages of ``page_size`` tokens,
    contiguous when 0) and return its static cost (see module doc)."""
    import tilus
    from tilus.ops.attention import combine_kernel, paged_split_kernel, split_kernel

    if page_size:
        script = paged_split_kernel(kv_type, kv_type, head_dim, group, head_dim ** -0.5,
                                    page_size)
    else:
        script = split_kernel(kv_type, kv_type, head_dim, group, head_dim ** -0.5)
    built = tilus.build(script, arch=arch)
    combined = tilus.build(combine_kernel(head_dim, group), arch=arch)
    combine = combined.resources
    cost = built.main_loop_cost()
    threads = script.warps * 32
    elements = 2 * script.block_s * head_dim / threads
    ipe = cost.instructions / elements
    nbits = tilus.dtypes.get(kv_type).nbits
    ratio = memory_over_issue(nbits, 4 / head_dim, ipe)
    res = built.resources
    return {"type": kv_type, "page_size": page_size, "block_s": script.block_s, "warps": script.warps,
            "instructions_per_iteration": cost.instructions, "mma_per_iteration": cost.mma,
            "kv_elements_per_thread": elements,
            "instructions_per_kv_element": round(ipe, 3), "by_class": dict(cost.by_class),
            "registers": res.registers,
            "spill_bytes": res.spill_store_bytes + res.spill_load_bytes,
            "shared_memory_bytes": built.launch.get("shared_bytes", 0),
            "combine_registers": combine.registers,
            "combine_shared_memory_bytes": combined.launch.get("shared_bytes", 0),
            "combine_spill_bytes": combine.spill_store_bytes + combine.spill_load_bytes,
            "memory_over_issue": round(ratio, 3),
            "estimated_fraction_of_bandwidth": round(min(1.0, ratio), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--paged-types", default=",".join(PAGED_TYPES))
    ap.add_argument("--page-sizes", default=",".join(map(str, PAGE_SIZES)))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    rows = [attention_cost(t) for t in args.types.split(",")]
    rows += [attention_cost(t, page_size=int(ps)) for t in args.paged_types.split(",") if t
             for ps in args.page_sizes.split(",")]
    head = f"{'type':<8} {'page':>4} {'instr/iter':>10} {'instr/elem':>10} {'mem/issue':>9} " \
           f"{'est. BW':>7} {'regs':>5} {'spills':>6} {'smem':>6}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        page = r["page_size"] or "-"
        print(f"{r['type']:<8} {page:>4} {r['instructions_per_iteration']:>10} "
              f"{r['instructions_per_kv_element']:>10.2f} {r['memory_over_issue']:>9.2f} "
              f"{r['estimated_fraction_of_bandwidth']:>7.0%} {r['registers']:>5} "
              f"{r['spill_bytes']:>6} {r['shared_memory_bytes']:>6}")
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = os.path.join(args.out, f"cpu-{stamp}-sm_90-attention-decode-cost.json")
    from benchmarks.provenance import provenance

    meta = {**provenance(), "kind": "static estimate from SASS (no GPU)",
            "device": "CPU only (sm_90 compiled, not run)",
            "device_model": {"sms": SMS, "schedulers": SCHEDULERS, "clock_hz": CLOCK_HZ,
                             "bandwidth_bytes_per_s": BANDWIDTH, "name": "H200 (figures)"},
            "shape": {"head_dim": HEAD_DIM, "group": GROUP, "q": "float16",
                      "scales": "float16 scale + zero per (token, head)",
                      "page_size": "0: the contiguous cache; else the paged kernel's page"}}
    with open(path, "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
