"""Every weight format's storage and accuracy: block size, scale type, bits per weight including
scales, and the error of ``qw.dequantize()`` against the float weight, on fixed random matrices.

Two 4096 x 4096 matrices (seed 0): Gaussian (std 0.02, like a Llama projection) and Student-t
with 3 degrees of freedom (heavy tails: outliers, where small blocks pay off). Errors: relative
RMS ``||W' - W|| / ||W||`` and the largest ``|W' - W|`` relative to ``max |W|``; and the layer
run: ``tilus.ops.matmul(x, qw)`` for x [4, 4096] float16 (N(0, 1), seed 1; on the CPU the
custom op's dequantize + matmul, on a GPU the kernel) against ``x @ W.T`` in float64, relative
RMS. No GPU needed.

    python benchmarks/bench_formats.py [--size 4096] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

if os.path.dirname(os.path.dirname(os.path.abspath(__file__))) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (name, element type, quantize keyword arguments)
FORMATS = [
    ("MXFP4", "float4_e2m1", dict(scheme="mx")),
    ("MXFP6 (e2m3)", "float6_e2m3", dict(scheme="mx")),
    ("MXFP6 (e3m2)", "float6_e3m2", dict(scheme="mx")),
    ("MXFP8 (e4m3)", "float8_e4m3", dict(scheme="mx")),
    ("MXFP8 (e5m2)", "float8_e5m2", dict(scheme="mx")),
    ("MXINT8", "int8", dict(scheme="mx")),
    ("NVFP4", "float4_e2m1", dict(scheme="nvfp4")),
    ("fp4 e2m1 g32", "float4_e2m1", dict(group_size=32)),
    ("fp4 e2m1 g128", "float4_e2m1", dict(group_size=128)),
    ("int4 g128", "int4", dict(group_size=128)),
    ("uint4 g128 (offsets)", "uint4", dict(group_size=128)),
    ("fp8 e4m3 g128", "float8_e4m3", dict(group_size=128)),
    ("int8 g128", "int8", dict(group_size=128)),
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


def row(name: str, wtype: str, kwargs: dict, mats: dict) -> dict:
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
        x = torch.randn(4, w.shape[1], generator=torch.Generator().manual_seed(1)).half()
        y, exact = matmul(x, qw).double(), x.double() @ w.double().t()
        out[f"{label}_matmul_rel_rms"] = float((y - exact).norm() / exact.norm())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    mats = matrices(args.size)
    rows = [row(*f, mats) for f in FORMATS]
    head = (f"{'format':<22} {'block':>5} {'scale':<12} {'bits/w':>6} {'gauss rms':>9} "
            f"{'gauss max':>9} {'t3 rms':>8} {'t3 max':>8} {'y gauss':>8} {'y t3':>8}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['format']:<22} {r['block']:>5} {r['scale_type']:<12} "
              f"{r['bits_per_weight']:>6.3f} {r['gaussian_rel_rms']:>9.4f} "
              f"{r['gaussian_max_rel']:>9.4f} {r['student_t3_rel_rms']:>8.4f} "
              f"{r['student_t3_max_rel']:>8.4f} {r['gaussian_matmul_rel_rms']:>8.4f} "
              f"{r['student_t3_matmul_rel_rms']:>8.4f}")
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = os.path.join(args.out, f"cpu-{stamp}-formats.json")
    from benchmarks.provenance import provenance

    meta = {**provenance(), "kind": "quantization error of dequantize() (no GPU)",
            "matrices": {"size": args.size, "seed": 0,
                         "gaussian": "N(0, 0.02^2)", "student_t3": "0.02 * t(3)"}}
    with open(path, "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
