"""``MixedQuantLinear``: an ``nn.Linear`` whose output features are quantized in two widths
(``tilus.ops.mixed``: the salient ones wide, e.g. uint8, the rest narrow, e.g. uint4).

    layer = tilus.nn.QuantLinear.from_linear(linear, dtype={"uint8": cols, "uint4": "rest"})

State: two bias-free ``QuantLinear`` children, ``wide`` (the salient rows, increasing) and
``narrow`` (the others), each with its buffers and extra state as a QuantLinear has them, plus
the ``perm`` buffer (int64 [out_features]: the original feature of each stacked row, wide first)
and ``bias`` (optional, in the original order). ``forward(x)``: float16/bfloat16 inputs go
through ``tilus.ops.matmul`` (on CUDA one ``MixedQuantMatmul`` launch for both widths, on the
CPU dequantize + matmul); float32/float64 inputs are computed in their own dtype from the
dequantized weight, as ``QuantLinear`` does. Not yet in ``save_quantized``.

For a whole model: ``cols = salient_columns(model, batches, fraction=0.1)`` runs the
calibration batches and scores every ``nn.Linear``'s output features by
``tilus.ops.select_salient_columns``'s rule (accumulated over the batches); then
``quantize_model(model, "uint4", salient=cols)`` makes those layers MixedQuantLinears (uint8 on
their salient features, ``salient_dtype=``).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import nn

from tilus.errors import ArgumentError, QuantizationError
from tilus.nn.linear import KERNEL_DTYPES, WIDE_DTYPES, QuantLinear, matches
from tilus.ops.matmul import matmul
from tilus.ops.mixed import MixedQuantizedWeight, quantize_mixed, top_columns
from tilus.ops.validation import check_activations


class MixedQuantLinear(nn.Module):
    """``y = x @ W.T + b`` with W's output features split between two quantized widths."""

    def __init__(self, wide: QuantLinear, narrow: QuantLinear, perm: torch.Tensor,
                 bias: Optional[torch.Tensor] = None):
        super().__init__()
        if wide.bias is not None or narrow.bias is not None or \
                wide.in_features != narrow.in_features:
            raise QuantizationError("MixedQuantLinear: the parts are bias-free QuantLinears of "
                                    "one in_features")
        n = wide.out_features + narrow.out_features
        if perm.dtype != torch.int64 or tuple(perm.shape) != (n,) or \
                not torch.equal(torch.sort(perm.cpu()).values, torch.arange(n)):
            raise QuantizationError(f"MixedQuantLinear: perm must be an int64 permutation of "
                                    f"0..{n - 1}")
        self.in_features, self.out_features = wide.in_features, n
        self.wide, self.narrow = wide, narrow
        self.register_buffer("perm", perm)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_quantized(cls, mw: MixedQuantizedWeight,
                       bias: Optional[torch.Tensor] = None) -> "MixedQuantLinear":
        """A layer holding ``mw`` (its parts' tensors copied into QuantLinear buffers)."""
        return cls(QuantLinear.from_quantized(mw.wide), QuantLinear.from_quantized(mw.narrow),
                   mw.perm.clone(), None if bias is None else bias.to(mw.wide.scales.dtype))

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: dict, group_size: Optional[int] = 128,
                    symmetric: Optional[bool] = None, scale_dtype=None,
                    zero_mode: str = "float") -> "MixedQuantLinear":
        """``tilus.ops.quantize(linear.weight, dtype={wide: columns, narrow: "rest"}, ...)`` as a
        layer (see ``tilus.ops.mixed``)."""
        if not isinstance(linear, nn.Linear):
            raise QuantizationError(f"from_linear takes an nn.Linear, got {type(linear).__name__}")
        mw = quantize_mixed(linear.weight, dtype, group_size, symmetric, scale_dtype, zero_mode)
        return cls.from_quantized(mw, linear.bias)

    @property
    def mixed_weight(self) -> MixedQuantizedWeight:
        """The buffers as a MixedQuantizedWeight (shares memory)."""
        return MixedQuantizedWeight(self.wide.qweight_object, self.narrow.qweight_object,
                                    self.perm)

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """[out_features, in_features] in the original feature order."""
        return self.mixed_weight.dequantize(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` -> ``[..., out_features]`` in x's dtype."""
        check_activations(x, self.in_features, self.perm.device, KERNEL_DTYPES + WIDE_DTYPES,
                          "MixedQuantLinear")
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if x.dtype in WIDE_DTYPES:
            return nn.functional.linear(x, self.dequantize(x.dtype), bias)
        return matmul(x, self.mixed_weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, wide={self.wide.dtype_name} x "
                f"{self.wide.out_features}, narrow={self.narrow.dtype_name} x "
                f"{self.narrow.out_features}")


def salient_columns(model: nn.Module, batches: Iterable[Any], fraction: float = 0.1,
                    skip: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """``{layer name: salient output features}`` of every ``nn.Linear`` in ``model`` (but names
    matching ``skip``, as ``quantize_model``'s), from running ``model`` on each of ``batches``
    (a tensor, or a tuple of positional arguments) without gradients. Feature j of a layer
    scores ``sum over all its inputs x of (x . w_j)^2`` (float64): the square of
    ``select_salient_columns``' norm over the whole calibration set; each layer keeps its
    ``round(fraction * out_features)`` best (at least 1, at most out_features - 1)."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) \
            or not 0 < fraction < 1:
        raise ArgumentError(f"salient_columns: fraction must be in (0, 1), got {fraction!r}")
    skip = [skip] if isinstance(skip, str) else list(skip)
    scores: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(name, layer):
        def record(_module, args):
            x = args[0].detach().reshape(-1, layer.in_features).double()
            part = (x @ layer.weight.detach().double().t()).square().sum(0)
            scores[name] = part if name not in scores else scores[name] + part
        return record

    for name, layer in model.named_modules():
        if type(layer) is nn.Linear and not matches(name, skip):
            hooks.append(layer.register_forward_pre_hook(hook(name, layer)))
    try:
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, tuple):
                    model(*batch)
                else:
                    model(batch)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, score in scores.items():
        n = score.numel()
        if n < 2:
            continue
        out[name] = top_columns(score, min(n - 1, max(1, round(fraction * n))))
    return out
