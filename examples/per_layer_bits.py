"""A per-layer bit map: the tiny Llama-style decoder of examples/llm_decode.py quantized with
``tilus.nn.quantize_model(model, dtype={pattern: type})`` (the first matching pattern wins; None
keeps a layer in float), its ``tilus.nn.bits_per_weight`` table, and the logits' relative RMS error
against the float model, next to uniform uint4 and uint3 maps. Runs on the CPU (float32 activations: the
quantized layers dequantize, exactly the values the kernels use)."""
import os
import sys

import torch

import tilus

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llm_decode import Config, TinyLlama  # noqa: E402

#: attention in 8 bits, the MLP in 4, lm_head float
BIT_MAP = {"*.attn.*": "uint8", "*.mlp.*": "uint4", "lm_head": None}
MAPS = {"uniform uint4 (lm_head float)": {"lm_head": None, "*": "uint4"},
        "per-layer map": BIT_MAP,
        "uniform uint3 (lm_head float)": {"lm_head": None, "*": "uint3"}}


@torch.no_grad()
def logit_error(ref: torch.nn.Module, model: torch.nn.Module, tokens: torch.Tensor) -> tuple:
    """Relative RMS error of the logits (||out - ref|| / ||ref||) and top-1 agreement."""
    r, o = ref(tokens).double(), model(tokens).double()
    return float((o - r).norm() / r.norm()), float((o.argmax(-1) == r.argmax(-1)).double().mean())


def main() -> None:
    torch.manual_seed(0)
    base = TinyLlama().eval()
    tokens = torch.randint(0, Config.vocab, (1, 24))
    print(f"per_layer_bits: TinyLlama dim {Config.dim}, {Config.layers} layers, hidden "
          f"{Config.hidden}, vocab {Config.vocab}; bit map {BIT_MAP}")
    results = {}
    for label, dtype in MAPS.items():
        model = TinyLlama().eval()
        model.load_state_dict(base.state_dict())
        tilus.nn.quantize_model(model, dtype=dtype, group_size=64)
        report = tilus.nn.bits_per_weight(model)
        if dtype is BIT_MAP:
            print(report.table())
        results[label] = (report.bits_per_weight, *logit_error(base, model, tokens))
    print("| bit map | bits per weight | relative RMS logit error | top-1 agreement |")
    print("|---|---|---|---|")
    for label, (bits, rel, agree) in results.items():
        print(f"| {label} | {bits:.3f} | {rel:.4f} | {agree:.0%} |")


if __name__ == "__main__":
    main()
