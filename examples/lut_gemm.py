"""LUT GEMM (tilus.ops.lut): a uint1 weight at M = 1, where the table-lookup schedule beats
dequantize + mma by its static cost (docs/ops.md). On the CPU the DSL kernels run in the
interpreter: the LUT kernel (``matmul(..., schedule="lut")``) and the dequantize + mma kernel (the
default schedule), each printed against torch on the dequantized weight, against the LUT
formula in float64 (``lut_reference``), and against each other."""
import torch

import tilus
from tilus.ops.lut import lut_reference, pack_lut


def main() -> None:
    torch.manual_seed(0)
    n, k = 200, 384                        # N = 200 does not fill the second 128-column tile
    w = torch.randn(n, k)
    x = torch.randn(1, k).half()
    qw = tilus.ops.quantize(w, "uint1", group_size=128, scale_dtype=torch.float16)
    lut = tilus.ops.matmul(x, qw, schedule="lut", engine="interpreter")
    mma = tilus.ops.matmul(x, qw, engine="interpreter")
    torch_out = x.double() @ qw.dequantize(torch.float64).t()
    formula = lut_reference(x, pack_lut(qw)).double()
    scale = torch_out.abs().max().item()
    print(f"lut_gemm: uint1 weight [{n}, {k}], group 128, x [1, {k}] float16, interpreter")
    print("| kernel | max |out - torch| | relative | max |out - LUT formula (float64)| |")
    print("|---|---|---|---|")
    for name, out in (("LUT (schedule='lut')", lut), ("dequantize + mma", mma)):
        err = (out.double() - torch_out).abs().max().item()
        print(f"| {name} | {err:.3e} | {err / scale:.2e} | "
              f"{(out.double() - formula).abs().max().item():.3e} |")
    print(f"max |LUT - dequantize+mma| = {(lut.double() - mma.double()).abs().max().item():.3e}"
          f" (output scale {scale:.1f})")


if __name__ == "__main__":
    main()
