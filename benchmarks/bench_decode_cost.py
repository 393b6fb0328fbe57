"""Static cost of the decode matmul (M=1) from its SASS, per weight type: no GPU needed.

For each type, the kernel ``tilus.ops.matmul`` launches for M=1, N=K=4096, group 128 (fp16) is
built for sm_90 (the block-scaled formats ``mxfp4``, ``nvfp4``, ... of ``FORMATS``: their own
blocks and scales); one steady-state iteration of its main loop is counted by instruction class
(``tilus.backend.sass_cost``) and divided by the weight elements each thread handles per
iteration. Then, with H200 figures (132 SMs x 4 schedulers x 1.98 GHz issue; 4.3 TB/s):

* issue time per weight element = instructions per element per thread / 32 / (132 * 4 * 1.98e9)
* memory time per weight element = (B/8 + scale/offset bytes per element) / 4.3e12
* estimated fraction of bandwidth = min(1, memory time / issue time)

plus bytes in flight per SM (the stages in flight of each resident block) and waves.
``sliced8``, ``sliced4``, ``sliced2`` (not in the default list): ``tilus.ops.matmul_sliced``
serving a bit-sliced uint8 weight at 8, 4, 2 bits; ``lut-uint1``, ``lut-uint2``: the LUT-GEMM
kernel (``tilus.ops.lut``) for the same weights (its main loop is the one with the most LDS: one
per table lookup). Marlin's int4
loop (2.76 instructions per element, built with the same nvcc for sm_90) is the reference line.
These are estimates from the instruction stream, not timings.

The activation-quantized matmuls (``ACT_QUANT``, not in the default list): ``w8a8``
(``tilus.ops.w8a8``, int8 mma), ``w4a4-s8`` and ``w4a4-s8-g128`` (``tilus.ops.w4a4`` per channel
and per group of 128 k, codes widened to int8 on sm_90), ``w4a4-s4-sm80`` (the int4 mma, built
for sm_80: sm_90 has none) and ``fp8`` (``tilus.ops.fp8``, e4m3 mma). Their kernels have 16 x 64
tiles, 4 warps and no pipeline (W8A8: 96-wide k-tiles, FP8: 128, W4A4: 64); W8A8 and per-channel
W4A4 split K in two at M <= 16 (exact: int32 partial sums). One iteration is the innermost loop with an mma,
``64 * BLOCK_K / 128`` weights per thread (grouped: the group loop's path, which holds one
inner iteration, plus the other inner iterations of the group). Bytes per weight: the code
(1 or 0.5) and the float32 scales (per channel: 4 / K; per group: 4 / 128); the per-row
activation quantization (a second kernel) is not counted. At M = 1 they launch N / 64 = 64
blocks (split in two: 128), so only 64 (128) of the 132 SMs issue: their estimated fraction of
bandwidth is the ratio times 64 / 132 (128 / 132), and with no loads in flight but the current
tile's (``bytes_in_flight_per_sm``) latency, not issue, bounds them further.

``--zero-mode int`` quantizes the (unsigned integer) types with integer zero points
(``tilus.ops.quantize(..., zero_mode="int")``: ``(v - z) * s``) instead of float offsets; its
file is named ``...-decode-cost-intzero.json``.

The block-scaled formats build the kernel ``matmul`` picks for these weights: the fast path
(``fold_scale``: every block scale exact in float16). ``--suffix=-blockscale`` names a file
for a run restricted to some types (``--types mxfp4,nvfp4,...``).

    python benchmarks/bench_decode_cost.py [--types uint4,uint3] [--zero-mode int] [--out DIR]
                                           [--suffix=-blockscale]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys

if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SMS, SCHEDULERS, CLOCK_HZ, BANDWIDTH = 132, 4, 1.98e9, 4.3e12
SMEM_PER_SM, REGS_PER_SM, MAX_BLOCKS = 228 * 1024, 65536, 32
MARLIN_INT4 = 2.76
# block-scaled formats (tilus.ops.quantize(scheme=)): name -> (scheme, element type)
FORMATS = {"mxfp4": ("mx", "float4_e2m1"), "mxfp6_e2m3": ("mx", "float6_e2m3"),
           "mxfp6_e3m2": ("mx", "float6_e3m2"), "mxfp8_e4m3": ("mx", "float8_e4m3"),
           "mxfp8_e5m2": ("mx", "float8_e5m2"), "mxint8": ("mx", "int8"),
           "nvfp4": ("nvfp4", "float4_e2m1")}
# the LUT-GEMM schedule (tilus.ops.lut) for 1- and 2-bit weights at M = 1: name -> bits
LUT = {"lut-uint1": 1, "lut-uint2": 2}
# bit-sliced uint8 weights (tilus.ops.matmul_sliced) served at b bits: name -> b
SLICED = {"sliced8": 8, "sliced4": 4, "sliced2": 2}
# activation-quantized matmuls: name -> (module, arch, weight bits, group size (0: per channel))
ACT_QUANT = {"w8a8": ("w8a8", "sm_90", 8, 0), "w4a4-s8": ("w4a4", "sm_90", 4, 0),
             "w4a4-s8-g128": ("w4a4", "sm_90", 4, 128), "w4a4-s4-sm80": ("w4a4", "sm_80", 4, 0),
             "fp8": ("fp8", "sm_90", 8, 0)}
TYPES = ("uint1", "uint2", "uint3", "int4", "uint4", "uint5", "uint6", "uint7", "uint8",
         "float4_e2m1", "float6_e3m2", "float8_e4m3", "mxfp4", "nvfp4")


def memory_over_issue(nbits: int, param_bytes: float, instructions_per_weight: float) -> float:
    """Time to move one weight (its B bits and its share of scale/offset bytes) over the time to
    issue its instructions (per thread, 32 threads a warp instruction), on the H200 figures."""
    memory = (nbits / 8 + param_bytes) / BANDWIDTH
    issue = instructions_per_weight / 32 / (SMS * SCHEDULERS * CLOCK_HZ)
    return memory / issue


def decode_cost(wtype: str, n: int = 4096, k: int = 4096, group: int = 128,
                zero_mode: str = "float") -> dict:
    """Build the M=1 kernel for ``wtype`` (quantized with ``zero_mode``) and return its static
    cost (see module doc)."""
    import torch

    import tilus
    from tilus.ops.quantize import quantize

    w = torch.zeros(n, k).add_(torch.linspace(-1, 1, k))
    if wtype in SLICED:             # a bit-sliced uint8 weight served at b bits
        kernel = _sliced_build(SLICED[wtype], n, k, group)
        nbits, param_bytes = SLICED[wtype], 4 / group      # fp16 scale and offset per group
        return _cost_row(wtype, kernel, nbits, param_bytes, n)
    if wtype in LUT:                # the LUT-GEMM schedule of tilus.ops.lut
        return lut_cost(LUT[wtype], n, k, group)
    if wtype in ACT_QUANT:          # activation-quantized: int8 / int4 / e4m3 mma
        return act_quant_cost(wtype, n, k)
    if wtype in FORMATS:            # block-scaled: one uint8 scale per block (+ 4 bytes per tensor)
        scheme, element = FORMATS[wtype]
        qw = quantize(w, element, scheme=scheme)
        param_bytes = 1 / qw.group_size + (4 / (n * k) if scheme == "nvfp4" else 0)
    else:
        qw = quantize(w, wtype, group_size=group, zero_mode=zero_mode)
        params = qw.scales.element_size() + (0 if qw.offsets is None
                                             else qw.offsets.element_size())
        param_bytes = params / group
    kernel = tilus.ops.compile_matmul(qw, 1, arch="sm_90", act=torch.float16)
    return _cost_row(wtype, kernel, qw.nbits, param_bytes, n)


def _sliced_build(bits: int, n: int, k: int, group: int):
    """The MatmulBuild of ``tilus.ops.matmul_sliced`` at ``bits`` for M = 1 on sm_90."""
    import tilus
    from tilus.ops.compiled import MatmulBuild
    from tilus.ops.matmul import default_schedule
    from tilus.ops.sliced import kernel_for

    sched = default_schedule(1, n, k, group, "compiled", SMS, bits)
    script = kernel_for(bits, group, k, "float16", False, sched)
    return MatmulBuild(script, sched, tilus.build(script, arch="sm_90"))


def lut_cost(bits: int, n: int = 4096, k: int = 4096, group: int = 128, m: int = 1) -> dict:
    """The static cost of ``tilus.ops.lut_kernels.LutMatmul`` (``m`` rows per block, k-tiles of
    128, one column per thread: 128 weights per thread and iteration) on sm_90. No pipeline and
    no split-k: the blocks in flight are n / 128."""
    import tilus
    from tilus.ops.lut_kernels import LutMatmul

    script = LutMatmul(bits, group, "float16", block_m=m, block_k=128, warps=4)
    built = tilus.build(script, arch="sm_90")
    cost = built.main_loop_cost(("LDS",))
    ipe = cost.instructions / script.block_k
    ratio = memory_over_issue(bits, 4 / group, ipe)
    res = built.resources
    return {"type": f"lut-uint{bits}" + (f"-m{m}" if m > 1 else ""),
            "schedule": {"block_m": m, "block_n": script.block_n, "block_k": script.block_k,
                         "warps": script.warps},
            "instructions_per_iteration": cost.instructions,
            "instructions_per_weight_element": round(ipe, 3), "by_class": dict(cost.by_class),
            "registers": res.registers,
            "spill_bytes": res.spill_store_bytes + res.spill_load_bytes,
            "shared_memory_bytes": script.table_size * 4, "blocks_per_sm": None,
            "bytes_in_flight_per_sm": None, "waves": round(math.ceil(n / script.block_n) / SMS, 3),
            "memory_over_issue": round(ratio, 3),
            "estimated_fraction_of_bandwidth": round(min(1.0, ratio), 3)}


def act_quant_script(wtype: str, n: int = 4096, k: int = 4096):
    """The kernel script the activation-quantized matmul ``wtype`` (a key of ``ACT_QUANT``)
    launches at M = 1 (W8A8, W4A4: with the split-k ``matmul_w8a8`` / ``matmul_w4a4`` pick)."""
    from tilus.ops.fp8 import MatmulFP8
    from tilus.ops import w4a4
    from tilus.ops.w8a8 import MatmulW8A8, split_for

    module, arch, _, group = ACT_QUANT[wtype]
    if module == "w8a8":
        return MatmulW8A8(split_k=split_for(1, n, k))
    if module == "fp8":
        return MatmulFP8()
    return w4a4.MatmulW4A4(s4_mma=arch == "sm_80", group_size=group,
                           split_k=w4a4.split_for(1, n, k, group))


def act_quant_cost(wtype: str, n: int = 4096, k: int = 4096) -> dict:
    """The static cost at M = 1 of the activation-quantized matmul ``wtype`` (see the module
    doc)."""
    import tilus

    module, arch, nbits, group = ACT_QUANT[wtype]
    script = act_quant_script(wtype, n, k)
    split = getattr(script, "split_k", 1)
    mod = sys.modules[type(script).__module__]
    block_n, block_k, threads = mod.BLOCK_N, mod.BLOCK_K, 4 * 32
    built = tilus.build(script, arch=arch)
    inner = built.main_loop_cost(innermost=True)
    instructions, elements = inner.instructions, block_n * block_k / threads
    by_class = dict(inner.by_class)
    if group:                       # the group loop's path holds one inner iteration
        steps = group // block_k
        outer = built.main_loop_cost()
        instructions = outer.instructions + (steps - 1) * inner.instructions
        elements *= steps
        by_class = {c: outer.by_class[c] + (steps - 1) * inner.by_class[c]
                    for c in set(outer.by_class) | set(inner.by_class)}
    ipe = instructions / elements
    param_bytes = 4 / (group or k)
    blocks = math.ceil(n / block_n) * split
    res = built.resources
    per_sm = min(MAX_BLOCKS, REGS_PER_SM // max(1, res.registers * threads))
    ratio = memory_over_issue(nbits, param_bytes, ipe)
    busy = min(1.0, blocks / SMS)
    return {"type": wtype, "arch": arch,
            "schedule": {"block_m": mod.BLOCK_M, "block_n": block_n, "block_k": block_k,
                         "stages": 1, "split_k": split, "warps": 4, "group_size": group},
            "instructions_per_iteration": instructions,
            "instructions_per_weight_element": round(ipe, 3), "by_class": by_class,
            "registers": res.registers,
            "spill_bytes": res.spill_store_bytes + res.spill_load_bytes,
            "shared_memory_bytes": 0, "blocks_per_sm": per_sm,
            "bytes_in_flight_per_sm": int(block_n * block_k * nbits / 8),
            "waves": round(blocks / (SMS * per_sm), 3), "sms_busy": round(busy, 3),
            "memory_over_issue": round(ratio, 3),
            "estimated_fraction_of_bandwidth": round(min(1.0, ratio * busy), 3)}


def _cost_row(wtype: str, kernel, nbits: int, param_bytes: float, n: int) -> dict:
    """The table row of a built decode kernel (see the module doc)."""
    sched = kernel.schedule
    cost = kernel.loop_cost()
    threads = sched["warps"] * 32
    ipe = cost["instructions_per_weight_element"]
    ratio = memory_over_issue(nbits, param_bytes, ipe)
    res = kernel.resources
    stage_bytes = kernel.stage_bytes
    smem = stage_bytes * sched["stages"]
    per_sm = min(MAX_BLOCKS, REGS_PER_SM // max(1, res.registers * threads),
                 SMEM_PER_SM // max(1, smem))
    blocks = math.ceil(n / sched["block_n"]) * sched["split_k"]
    return {"type": wtype, "schedule": sched, "instructions_per_iteration": cost["instructions"],
            "instructions_per_weight_element": round(ipe, 3),
            "by_class": cost["by_class"], "by_opcode": cost["by_opcode"],
            "fold_scale": kernel.script.fold_scale, "registers": res.registers,
            "spill_bytes": res.spill_store_bytes + res.spill_load_bytes,
            "shared_memory_bytes": smem, "blocks_per_sm": per_sm,
            "bytes_in_flight_per_sm": stage_bytes * (sched["stages"] - 1) * min(
                per_sm, math.ceil(blocks / SMS)),
            "waves": round(blocks / (SMS * per_sm), 3),
            "memory_over_issue": round(ratio, 3),
            "estimated_fraction_of_bandwidth": round(min(1.0, ratio), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--zero-mode", default="float", choices=("float", "int"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--suffix", default="", help="appended to the result files' name")
    args = ap.parse_args(argv)
    rows = [decode_cost(t, zero_mode=args.zero_mode) for t in args.types.split(",")]
    head = f"{'type':<12} {'instr/elem':>10} {'mem/issue':>9} {'est. BW':>7} {'regs':>5} " \
           f"{'smem':>6} {'inflight/SM':>11} {'waves':>5}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['type']:<12} {r['instructions_per_weight_element']:>10.2f} "
              f"{r['memory_over_issue']:>9.2f} {r['estimated_fraction_of_bandwidth']:>7.0%} "
              f"{r['registers']:>5} {r['shared_memory_bytes']:>6} "
              f"{r['bytes_in_flight_per_sm'] or '-':>11} {r['waves']:>5.2f}")
    print(f"{'Marlin int4':<12} {MARLIN_INT4:>10.2f}   (reference: its decode loop, nvcc 13.0 sm_90)")
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    base = os.path.join(args.out, f"cpu-{stamp}-sm_90-decode-cost"
                        + ("-intzero" if args.zero_mode == "int" else "") + args.suffix)
    from benchmarks.provenance import provenance

    meta = {**provenance(), "kind": "static estimate from SASS (no GPU)",
            "device": "CPU only (sm_90 compiled, not run)",
            "device_model": {"sms": SMS, "schedulers": SCHEDULERS, "clock_hz": CLOCK_HZ,
                             "bandwidth_bytes_per_s": BANDWIDTH, "name": "H200 (figures)"},
            "shape": {"m": 1, "n": 4096, "k": 4096, "group_size": 128, "act": "float16"},
            "zero_mode": args.zero_mode,
            "marlin_int4_instructions_per_element": MARLIN_INT4}
    with open(base + ".json", "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    _plot(rows, base + ".png")
    print(f"wrote {base}.json and .png")
    return 0


def _plot(rows, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [r["type"] for r in rows]
    ax.bar(names, [r["instructions_per_weight_element"] for r in rows], label="Tilus (estimate)")
    ax.axhline(MARLIN_INT4, color="k", ls="--", lw=1, label="Marlin int4 (2.76)")
    ax.set_ylabel("SASS instructions / weight / thread")
    ax.set_title("Decode matmul main loop, M=1 N=K=4096 g128, sm_90 (static)")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
