"""Activation-quantized layers (tilus.nn.QuantLinear(act_dtype="int8" | "float8_e4m3" | "int4"))
on a fixed random nn.Linear(1024, 1024): the relative output error against the float64 product,
next to weight-only layers, for plain activations and for activations with one outlier channel
(where SmoothQuant helps).
The table of docs/ops.md ("The W8A8 layer") is this script's output."""
import torch
from torch import nn

import tilus


def main() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(1024, 1024, bias=False)
    plain = torch.randn(16, 1024)
    outlier = torch.randn(16, 1024)
    outlier[:, 7] *= 40.0                                  # one outlier channel
    w = lin.weight.detach()
    smooth = (outlier.abs().amax(0) / w.abs().amax(0)).sqrt()    # SmoothQuant, alpha = 0.5
    make = tilus.nn.QuantLinear.from_linear
    layers = {"uint8 weight-only, group 128": make(lin, "uint8", 128),
              "int8 weight-only, per channel": make(lin, "int8", None),
              "W8A8 (int8 per channel, int8 per token)": make(lin, "int8", None, act_dtype="int8"),
              "W8A8 + smooth (alpha 0.5, from the outlier x)":
                  make(lin, "int8", None, act_dtype="int8", smooth=smooth),
              "FP8 (e4m3 per channel, e4m3 per token)":
                  make(lin, "float8_e4m3", None, act_dtype="float8_e4m3"),
              "int4 weight-only, per channel": make(lin, "int4", None),
              "W4A4 (int4 per channel, int4 per token)": make(lin, "int4", None, act_dtype="int4"),
              "W4A4 + smooth (alpha 0.5, from the outlier x)":
                  make(lin, "int4", None, act_dtype="int4", smooth=smooth),
              "W4A4, int4 weights per group of 128": make(lin, "int4", 128, act_dtype="int4"),
              "W4A4, group 128 + smooth": make(lin, "int4", 128, act_dtype="int4", smooth=smooth)}
    print("| layer | plain x | outlier x |\n|---|---|---|")
    for name, layer in layers.items():
        errs = []
        for x in (plain, outlier):
            exact = x.double() @ w.double().t()
            errs.append(((layer(x.half()).double() - exact).norm() / exact.norm()).item())
        print(f"| {name} | {errs[0]:.2e} | {errs[1]:.2e} |")


if __name__ == "__main__":
    main()
