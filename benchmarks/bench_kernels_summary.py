"""One representative configuration of each issue-17 kernel, built for sm_90 (nvcc, no GPU):
registers, spills, shared memory and the static cost of one main-loop iteration from the SASS.

Each row comes from the kernel's own cost helper (``bench_attention_cost.attention_cost``,
``bench_prefill_cost.prefill_cost``, ``bench_moe_cost.type_cost`` / ``all_types_build``,
``bench_decode_cost.decode_cost`` for the sliced and LUT kernels), the mixed-width row from
``tilus.ops.compile_matmul`` and its ``loop_cost`` (the loop ``sass_cost`` picks: of the two
dequantize paths with as many HMMA, the one spanning more code; its memory / issue takes the
weight's average stored bits), so the numbers are the ones of those benchmarks. "per
element" is instructions per element and thread in one iteration: KV elements (K and V) for
decode attention, weights for the matmuls; prefill gives instructions per iteration only.
memory / issue: the H200 estimate of ``bench_decode_cost.memory_over_issue`` (below 1:
issue-bound). Estimates from the instruction stream, not timings.

    python benchmarks/bench_kernels_summary.py [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Callable, Optional

if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_attention_cost import attention_cost  # noqa: E402
from benchmarks.bench_decode_cost import decode_cost, memory_over_issue  # noqa: E402
from benchmarks.bench_moe_cost import TYPES as MOE_TYPES  # noqa: E402
from benchmarks.bench_moe_cost import all_types_build, type_cost  # noqa: E402
from benchmarks.bench_prefill_cost import prefill_cost  # noqa: E402

ARCH = "sm_90"
N = K = 4096
SALIENT = 410          # 10% of the 4096 output features in uint8, the rest uint4


def row(kernel: str, config: str, registers: int, spill_bytes: int, shared_memory_bytes: int,
        instructions_per_iteration: int, per_element: Optional[float] = None,
        memory_over_issue: Optional[float] = None) -> dict:
    """One summary row: what a helper measured, under common names."""
    return {"kernel": kernel, "config": config, "registers": registers,
            "spill_bytes": spill_bytes, "shared_memory_bytes": shared_memory_bytes,
            "instructions_per_iteration": instructions_per_iteration,
            "instructions_per_element": None if per_element is None else round(per_element, 3),
            "memory_over_issue": None if memory_over_issue is None else round(memory_over_issue,
                                                                              3)}


def decode_attention_rows() -> list[dict]:
    """Split kernels of decode attention (uint4 cache, head_dim 128, G = 4): contiguous, and
    paged with pages of 16 tokens."""
    rows = []
    for page, name in ((0, "attention_decode"), (16, "attention_decode_paged")):
        r = attention_cost("uint4", page_size=page)
        config = f"uint4 KV, d 128, G 4, {r['block_s']}-token tiles" + \
            (f", pages of {page}" if page else "")
        rows.append(row(name, config, r["registers"], r["spill_bytes"],
                        r["shared_memory_bytes"], r["instructions_per_iteration"],
                        r["instructions_per_kv_element"], r["memory_over_issue"]))
    return rows


def prefill_rows() -> list[dict]:
    """Flash-attention prefill, float16, head_dim 128, causal, 64 x 64 tiles."""
    r = prefill_cost(f"128,{ARCH},none,float16,1")
    return [row("attention_prefill", "fp16, d 128, causal, 64 x 64 tiles", r["registers"],
                r["spill_bytes"], r["shared_memory_bytes"], r["instructions_per_iteration"])]


def moe_rows() -> list[dict]:
    """The MoE grouped GEMM with one branch per type (uint4, int4, uint2, uint3): the one kernel's
    resources on every row, each branch's k-step cost on its own row."""
    import tilus
    from tilus.ops.moe_kernels import MoEQuantMatmul

    from benchmarks.bench_moe_cost import BLOCK_K, GROUP, STAGES, variant

    whole = all_types_build(MOE_TYPES, ARCH)
    smem = tilus.build(MoEQuantMatmul(tuple(variant(t) for t in MOE_TYPES), GROUP,
                                      block_k=BLOCK_K, stages=STAGES),
                       arch=ARCH).launch.get("shared_bytes", 0)       # a cache hit
    rows = []
    for t in MOE_TYPES:
        c = type_cost(t, ARCH)
        rows.append(row("moe_matmul", f"{'/'.join(MOE_TYPES)} in one kernel: {t} branch, "
                        f"block_k {BLOCK_K}, {STAGES} stages", whole["registers"],
                        whole["spill_bytes"], smem, c["instructions_per_k_step"],
                        c["instructions_per_weight"], c["memory_over_issue"]))
    return rows


def mixed_rows() -> list[dict]:
    """The mixed-width matmul at M = 1, 4096 x 4096, 410 salient uint8 features + uint4."""
    import torch

    import tilus

    torch.manual_seed(0)
    w = torch.randn(N, K)
    cols = torch.randperm(N)[:SALIENT].sort().values
    mw = tilus.ops.quantize(w, dtype={"uint8": cols, "uint4": "rest"}, group_size=128)
    built = tilus.ops.compile_matmul(mw, 1, arch=ARCH)
    cost = built.loop_cost()
    res = built.resources
    ipe = cost["instructions_per_weight_element"]
    return [row("matmul (mixed width)", f"{N} x {K}, M 1, {SALIENT} uint8 + uint4, group 128",
                res.registers, res.spill_store_bytes + res.spill_load_bytes,
                built.launch.get("shared_bytes", 0), cost["instructions"], ipe,
                memory_over_issue(0, mw.bits_per_weight() / 8, ipe))]


def decode_cost_rows() -> list[dict]:
    """The sliced kernel at 8/4/2 bits and the LUT kernel for uint1, M = 1, 4096 x 4096."""
    names = {"sliced8": ("matmul_sliced", "uint8 sliced, served at 8 bits"),
             "sliced4": ("matmul_sliced", "uint8 sliced, served at 4 bits"),
             "sliced2": ("matmul_sliced", "uint8 sliced, served at 2 bits"),
             "lut-uint1": ("matmul (schedule='lut')", "uint1, group 128, 128-wide k-tiles")}
    rows = []
    for key, (kernel, config) in names.items():
        r = decode_cost(key)
        rows.append(row(kernel, f"{config}, M 1, {N} x {K}", r["registers"], r["spill_bytes"],
                        r["shared_memory_bytes"], r["instructions_per_iteration"],
                        r["instructions_per_weight_element"], r["memory_over_issue"]))
    return rows


SECTIONS: dict[str, Callable[[], list[dict]]] = {
    "decode-attention": decode_attention_rows, "prefill": prefill_rows, "moe": moe_rows,
    "mixed": mixed_rows, "decode-cost": decode_cost_rows}


def markdown(rows: list[dict]) -> str:
    """The rows as the Markdown table docs/ops.md shows."""
    lines = ["| kernel | configuration | registers | spills (B) | shared memory (B) | "
             "instr / iteration | instr / element / thread | memory / issue |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        per = "-" if r["instructions_per_element"] is None else f"{r['instructions_per_element']:.2f}"
        mem = "-" if r["memory_over_issue"] is None else f"{r['memory_over_issue']:.2f}"
        lines.append(f"| {r['kernel']} | {r['config']} | {r['registers']} | {r['spill_bytes']} | "
                     f"{r['shared_memory_bytes']} | {r['instructions_per_iteration']} | {per} | "
                     f"{mem} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated subset of " + ", ".join(SECTIONS))
    args = ap.parse_args(argv)
    rows = [r for s in args.sections.split(",") for r in SECTIONS[s]()]
    print(markdown(rows))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out,
                        f"cpu-{datetime.date.today().isoformat()}-{ARCH}-kernels-summary.json")
    from benchmarks.provenance import provenance

    meta = {**provenance(), "kind": "static estimate from SASS (no GPU)",
            "device": f"CPU only ({ARCH} compiled, not run)", "arch": ARCH}
    with open(path, "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
