"""``bits_per_weight``: what a (partly) quantized model stores per weight, layer by layer, so that
mixed-precision bit maps can be compared by their real cost (codes, scales, offsets and padding)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tilus.nn.linear import QuantLinear

#: a QuantLinear's buffers that hold its weight (the input permutation and bias are not weight bits)
WEIGHT_BUFFERS = ("qweight", "scales", "offsets")


@dataclass(frozen=True)
class LayerBits:
    """One linear layer: its type name, weight count, and stored weight bits."""
    name: str
    dtype: str
    weights: int
    bits: int

    @property
    def bits_per_weight(self) -> float:
        return self.bits / self.weights


@dataclass(frozen=True)
class BitsReport:
    """Every linear layer of a model and the total stored bits per weight over all of them."""
    layers: tuple[LayerBits, ...]

    @property
    def bits_per_weight(self) -> float:
        return sum(x.bits for x in self.layers) / max(1, sum(x.weights for x in self.layers))

    def table(self) -> str:
        """A plain-text table: one line per layer and a total line."""
        rows = [f"{'layer':<40} {'type':<14} {'weights':>12} {'bits/weight':>11}"]
        rows += [f"{x.name:<40} {x.dtype:<14} {x.weights:>12} {x.bits_per_weight:>11.3f}"
                 for x in self.layers]
        rows.append(f"{'total':<40} {'':<14} {sum(x.weights for x in self.layers):>12} "
                    f"{self.bits_per_weight:>11.3f}")
        return "\n".join(rows)


def _stored_bits(*tensors) -> int:
    return sum(8 * t.numel() * t.element_size() for t in tensors if t is not None)


def bits_per_weight(model: nn.Module) -> BitsReport:
    """Stored bits per weight of every ``nn.Linear`` and ``QuantLinear`` in ``model``: a float layer
    counts its weight's element size, a quantized one its packed codes, scales and offsets."""
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            bits = _stored_bits(*(getattr(m, b) for b in WEIGHT_BUFFERS))
            layers.append(LayerBits(name, m.dtype_name, m.in_features * m.out_features, bits))
        elif type(m) is nn.Linear:
            w = m.weight
            layers.append(LayerBits(name, str(w.dtype).removeprefix("torch."), w.numel(),
                                    _stored_bits(w)))
    return BitsReport(tuple(layers))
