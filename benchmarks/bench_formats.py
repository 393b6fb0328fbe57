"""Every weight format's storage and accuracy: block size, scale type, bits per weight including
scales, and the error of ``qw.dequantize()`` against the float weight, on fixed random matrices.

Two 4096 x 4096 matrices (seed 0): Gaussian (std 0.02, like a Llama projection) and Student-t
with 3 degrees of freedom (heavy tails: outliers, where small blocks pay off). Errors: relative
RMS ``||W' - W|| / ||W||`` and the largest ``|W' - W|`` relative to ``max |W|``; and the layer
run: ``tilus.ops.matmul(x, qw)`` for x [4, 4096] float16 (N(0, 1), seed 1; on the CPU the
custom op's dequantize + matmul, on a GPU the kernel) against ``x @ W.T`` in float64, relative
RMS. No GPU needed.

The activation-quantized matmuls (``ACT_FORMATS``): W8A8 (``tilus.ops.w8a8``: int8 weights per
output channel, int8 activations per row), W4A4 per channel and per group of 128 k
(``tilus.ops.w4a4``, int4 activations per row) and FP8 (``tilus.ops.fp8``: e4m3 weights per
channel and activations per row). Their weight error is that of the quantizer's
``dequantize()``; their layer output ``matmul_w8a8`` / ``matmul_w4a4`` / ``matmul_fp8`` on the
CPU is the torch reference of the kernels' rule (``engine="auto"`` off CUDA), so it includes the
activations' quantization. Bits per weight: the codes and the float32 scales.

``--cost`` adds each format's decode kernel at M = 1, N = K = 4096 on sm_90
(``benchmarks/bench_decode_cost.py``: registers, SASS instructions per weight, estimated
fraction of bandwidth; W4A4 on sm_90 is the int8-widened kernel) and writes
``...-formats-cost.json``.

    python benchmarks/bench_formats.py [--size 4096] [--cost] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (name, element type, quantize keyword arguments, (bench_decode_cost type, group size))
FORMATS = [
    ("MXFP4", "float4_e2m1", dict(scheme="mx"), ("mxfp4", 128)),
    ("MXFP6 (e2m3)", "float6_e2m3", dict(scheme="mx"), ("mxfp6_e2m3", 128)),
    ("MXFP6 (e3m2)", "float6_e3m2", dict(scheme="mx"), ("mxfp6_e3m2", 128)),
    ("MXFP8 (e4m3)", "float8_e4m3", dict(scheme="mx"), ("mxfp8_e4m3", 128)),
    ("MXFP8 (e5m2)", "float8_e5m2", dict(scheme="mx"), ("mxfp8_e5m2", 128)),
    ("MXINT8", "int8", dict(scheme="mx"), ("mxint8", 128)),
    ("NVFP4", "float4_e2m1", dict(scheme="nvfp4"), ("nvfp4", 128)),
    ("fp4 e2m1 g32", "float4_e2m1", dict(group_size=32), ("float4_e2m1", 32)),
    ("fp4 e2m1 g128", "float4_e2m1", dict(group_size=128), ("float4_e2m1", 128)),
    ("int4 g128", "int4", dict(group_size=128), ("int4", 128)),
    ("uint4 g128 (offsets)", "uint4", dict(group_size=128), ("uint4", 128)),
    ("fp8 e4m3 g128", "float8_e4m3", dict(group_size=128), ("float8_e4m3", 128)),
    ("int8 g128", "int8", dict(group_size=128), ("int8", 128)),
]
# activation-quantized matmuls: (name, bench_decode_cost type); see the module doc
ACT_FORMATS = [
    ("W8A8 (int8 per channel)", "w8a8"),
    ("W4A4 (int4 per channel)", "w4a4-s8"),
    ("W4A4 (int4 g128)", "w4a4-s8-g128"),
    ("FP8 (e4m3 per channel)", "fp8"),
]


def matrices(size: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(size, size, generator=g) * 0.02
    # Student-t(3) from its definition (a Gaussian over sqrt(chi2_3 / 3)), on the same generator
    z = torch.randn(size, size, generator=g)
    chi2 = torch.randn(3, size, size, generator=g).pow(2).sum(0)
    t3 = z / torch.sqrt(chi2 / 3) * 0.02
    return {"gaussian": gauss, "student_t3": t3}


def bits_per_weight(qw) -> float:
    """Stored bits per weight: codes, scales (and offsets), the per-tensor scale; no padding."""
    n, k = qw.shape
    per_block = qw.scales.element_size() * 8 * (1 + (qw.offsets is not None))
    extra = 32 / (n * k) if qw.scheme == "nvfp4" else 0.0
    return qw.nbits + per_block / qw.group_size + extra


def _layer_x(k: int):
    """The layer's activations: [4, k] float16 N(0, 1), seed 1."""
    import torch

    return torch.randn(4, k, generator=torch.Generator().manual_seed(1)).half()


def row(name: str, wtype: str, kwargs: dict, cost: tuple, mats: dict) -> dict:
    import torch

    from tilus.ops import matmul, quantize

    out = {"format": name, "element": wtype, **{k: v for k, v in kwargs.items()}}
    for label, w in mats.items():
        qw = quantize(w, wtype, **kwargs)
        d = qw.dequantize(torch.float32).double() - w.double()
        out["block"] = qw.group_size
        out["scale_type"] = ("float8_e8m0" if qw.scheme == "mx" else "float8_e4m3"
                             if qw.scheme == "nvfp4" else str(qw.scales.dtype).split(".")[-1])
        out["bits_per_weight"] = round(bits_per_weight(qw), 4)
        out[f"{label}_rel_rms"] = float(d.norm() / w.double().norm())
        out[f"{label}_max_rel"] = float(d.abs().max() / w.abs().max())
        x = _layer_x(w.shape[1])
        y, exact = matmul(x, qw).double(), x.double() @ w.double().t()
        out[f"{label}_matmul_rel_rms"] = float((y - exact).norm() / exact.norm())
    return out


def act_row(name: str, kind: str, mats: dict) -> dict:
    """The row of an activation-quantized matmul (``ACT_FORMATS``): its weight quantizer's error
    and the layer output of its op (on the CPU: the torch reference of the kernels' rule)."""
    from benchmarks.bench_decode_cost import ACT_QUANT
    from tilus.ops import fp8, w4a4, w8a8

    module, _, nbits, group = ACT_QUANT[kind]
    quant, op = {"w8a8": (w8a8.quantize_weight_int8, w8a8.matmul_w8a8),
                 "w4a4": (lambda w: w4a4.quantize_weight_int4(w, group or None), w4a4.matmul_w4a4),
                 "fp8": (fp8.quantize_weight_fp8, fp8.matmul_fp8)}[module]
    out = {"format": name, "element": {"w8a8": "int8", "w4a4": "int4", "fp8": "float8_e4m3"}[
        module], "act_quantized": True}
    for label, w in mats.items():
        qw = quant(w)
        d = qw.dequantize().double() - w.double()
        out["block"] = group or w.shape[1]
        out["scale_type"] = "float32"
        out["bits_per_weight"] = round(nbits + 32 / (group or w.shape[1]), 4)
        out[f"{label}_rel_rms"] = float(d.norm() / w.double().norm())
        out[f"{label}_max_rel"] = float(d.abs().max() / w.abs().max())
        x = _layer_x(w.shape[1])
        y, exact = op(x, qw).double(), x.double() @ w.double().t()
        out[f"{label}_matmul_rel_rms"] = float((y - exact).norm() / exact.norm())
    return out


def cost_columns(kind: str, group: int = 128) -> dict:
    """Registers, instructions per weight and estimated fraction of bandwidth of the decode
    kernel for bench_decode_cost type ``kind`` (M = 1, N = K = 4096, sm_90)."""
    from benchmarks.bench_decode_cost import decode_cost

    r = decode_cost(kind, group=group)
    return {"decode_kernel": kind, "registers": r["registers"], "spill_bytes": r["spill_bytes"],
            "instructions_per_weight_element": r["instructions_per_weight_element"],
            "estimated_fraction_of_bandwidth": r["estimated_fraction_of_bandwidth"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--cost", action="store_true",
                    help="add the sm_90 decode kernel's registers and static cost (builds them)")
    args = ap.parse_args(argv)
    mats = matrices(args.size)
    rows = [row(*f, mats) for f in FORMATS] + [act_row(*f, mats) for f in ACT_FORMATS]
    if args.cost:
        kinds = [f[3] for f in FORMATS] + [(f[1], 128) for f in ACT_FORMATS]
        for r, (kind, group) in zip(rows, kinds):
            r.update(cost_columns(kind, group))
    head = (f"{'format':<22} {'block':>5} {'scale':<12} {'bits/w':>6} {'gauss rms':>9} "
            f"{'gauss max':>9} {'t3 rms':>8} {'t3 max':>8} {'y gauss':>8} {'y t3':>8}"
            + (f" {'regs':>4} {'ins/w':>6} {'BW':>4}" if args.cost else ""))
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['format']:<22} {r['block']:>5} {r['scale_type']:<12} "
              f"{r['bits_per_weight']:>6.3f} {r['gaussian_rel_rms']:>9.4f} "
              f"{r['gaussian_max_rel']:>9.4f} {r['student_t3_rel_rms']:>8.4f} "
              f"{r['student_t3_max_rel']:>8.4f} {r['gaussian_matmul_rel_rms']:>8.4f} "
              f"{r['student_t3_matmul_rel_rms']:>8.4f}" + (
                  f" {r['registers']:>4} {r['instructions_per_weight_element']:>6.2f} "
                  f"{r['estimated_fraction_of_bandwidth']:>4.0%}" if args.cost else ""))
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = os.path.join(args.out, f"cpu-{stamp}-formats{'-cost' if args.cost else ''}.json")
    from benchmarks.provenance import provenance

    kind = "quantization error of dequantize() and the layer output (no GPU)" + (
        "; decode kernels' static cost from SASS (sm_90 built, not run)" if args.cost else "")
    meta = {**provenance(), "kind": kind,
            "matrices": {"size": args.size, "seed": 0,
                         "gaussian": "N(0, 0.02^2)", "student_t3": "0.02 * t(3)"}}
    with open(path, "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
