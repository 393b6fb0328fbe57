"""Bit-sliced weights: one uint8 weight (tilus.ops.quantize_sliced) served at 8, 4 and 2 bits by
the same DSL kernel on the CPU interpreter (tilus.ops.matmul_sliced), which reads only the top
bits' slices. Prints, per width, the weight's error against the float weight (relative RMS,
the rule the kernel serves and the alternatives), the bytes the matmul reads, and the kernel's
output against torch on the served weight."""
import torch

import tilus
from tilus.ops.sliced import serving_errors


def main() -> None:
    torch.manual_seed(0)
    w = torch.randn(160, 256)              # [N, K]: N = 160 does not fill the second tile
    x = torch.randn(4, 256).half()
    sw = tilus.ops.quantize_sliced(w, group_size=128)
    errs = serving_errors(w, group_size=128)
    print("| bits | served (truncate, mid-bin) | truncate (bin bottom) | nearest (needs low bits)"
          " | separate uintB | bytes read | max |kernel - torch| (fp16) |")
    print("|---|---|---|---|---|---|---|")
    for bits in (8, 4, 2):
        y = tilus.ops.matmul_sliced(x, sw, bits=bits, engine="interpreter")
        ref = (x.float() @ sw.dequantize(bits, torch.float16).float().t()).half().float()
        e = errs[bits]
        print(f"| {bits} | {e['truncate_mid']:.4f} | {e['truncate']:.4f} | {e['nearest']:.4f} | "
              f"{e['direct']:.4f} | {sw.bytes_read(bits)} | "
              f"{(y.float() - ref).abs().max().item():.2e} |")


if __name__ == "__main__":
    main()
