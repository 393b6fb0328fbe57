"""Mixed-width output features (MixLLM style) on the CPU: a [1024, 256] weight whose 40 output
features are 12x larger than the rest, the 128 most salient features (by the activation-weighted
norm on a calibration batch) in uint8 and the other 896 in uint4, against all-uint4, all-uint8
and the same 128 uint8 features picked at random. Prints bits per weight and the relative
output error against the float64 product, then runs the one-launch kernel in the Tilus
interpreter and compares it with dequantize + torch.matmul. The table of docs/ops.md
("Mixed-width output features") is this script's output."""
import torch

import tilus


def main() -> None:
    g = torch.Generator().manual_seed(0)
    n, k, salient = 1024, 256, 128
    w = torch.randn(n, k, generator=g) * 0.02
    hot = torch.randperm(n, generator=g)[:40]
    w[hot] *= 12.0                                           # a few large output features
    x_calib = torch.randn(64, k, generator=g)
    x = torch.randn(16, k, generator=g)
    exact = x.double() @ w.double().t()

    cols = tilus.ops.select_salient_columns(w, x_calib, salient)
    found = len(set(cols.tolist()) & set(hot.tolist()))
    print(f"salient features: {salient} of {n}; the 40 large ones among them: {found}")
    random_cols = torch.randperm(n, generator=g)[:salient]
    weights = {
        "uint4, group 128": tilus.ops.quantize(w, "uint4", group_size=128),
        "mixed: 128 salient uint8 + uint4": tilus.ops.quantize(
            w, dtype={"uint8": cols, "uint4": "rest"}, group_size=128),
        "mixed: 128 random uint8 + uint4": tilus.ops.quantize(
            w, dtype={"uint8": random_cols, "uint4": "rest"}, group_size=128),
        "uint8, group 128": tilus.ops.quantize(w, "uint8", group_size=128),
    }
    print("| weight | bits per weight | relative output error |\n|---|---|---|")
    for name, qw in weights.items():
        nbits = qw.bits_per_weight() if hasattr(qw, "bits_per_weight") \
            else 8 * qw.nbytes() / (n * k)
        out = x.double() @ qw.dequantize(torch.float32).double().t()
        err = ((out - exact).norm() / exact.norm()).item()
        print(f"| {name} | {nbits:.3f} | {err:.2e} |")

    mixed = weights["mixed: 128 salient uint8 + uint4"]
    xh = x[:4].half()
    one_launch = tilus.ops.matmul(xh, mixed, engine="interpreter")
    reference = tilus.ops.matmul(xh, mixed, engine="fallback")
    diff = (one_launch.float() - reference.float()).abs().max().item()
    print(f"one MixedQuantMatmul launch (interpreter) vs dequantize + matmul: max |diff| = "
          f"{diff:.2e}")


if __name__ == "__main__":
    main()
