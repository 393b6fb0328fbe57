"""The W8A8 scheme of ``QuantLinear(act_dtype="int8")``: its checks, quantization and forward.

Weights: int8 per output channel (symmetric, ties to even; ``tilus.ops.w8a8``), stored ``[K, N]``
with float32 scales ``[N]``. Activations: quantized per token at run time (``quantize_rows``).
Optional SmoothQuant-style smoothing ``smooth [K]`` (> 0): the weight is quantized as
``W * smooth`` and forward divides ``x`` by ``smooth`` before quantizing it, so that
``(x / smooth) @ (W * smooth).T == x @ W.T`` in exact arithmetic.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from tilus.errors import QuantizationError
from tilus.ops.w8a8 import Int8Weight, matmul_w8a8, matmul_w8a8_reference, quantize_weight_int8

#: Activation types a QuantLinear may quantize to at run time.
ACT_DTYPES = ("int8",)


def check_scheme(act_dtype: Any, dtype: str, group_size: int, in_features: int,
                 symmetric: Optional[bool], zero_mode: str, act_order: bool) -> str:
    """``act_dtype`` if the rest of the layer's scheme is the one W8A8 runs (int8 weights, one
    symmetric scale per output channel), else QuantizationError naming what differs."""
    if act_dtype not in ACT_DTYPES:
        raise QuantizationError(f"QuantLinear: act_dtype must be None or one of {ACT_DTYPES}, "
                                f"got {act_dtype!r}")
    bad = {k: v for k, v, ok in (("dtype", dtype, dtype == "int8"),
                                  ("group_size", group_size, group_size == in_features),
                                  ("symmetric", symmetric, symmetric in (None, True)),
                                  ("zero_mode", zero_mode, zero_mode == "float"),
                                  ("act_order", act_order, not act_order)) if not ok}
    if bad:
        raise QuantizationError(f"QuantLinear: act_dtype='int8' takes int8 weights with one "
                                f"symmetric scale per output channel (dtype='int8', "
                                f"group_size=None); got {bad}")
    return act_dtype


def check_smooth(smooth: Any, in_features: int) -> Optional[torch.Tensor]:
    """``smooth`` as float32 ``[in_features]``, finite and > 0 (None stays None)."""
    if smooth is None:
        return None
    if not isinstance(smooth, torch.Tensor) or smooth.shape != (in_features,) or \
            not smooth.is_floating_point():
        raise QuantizationError(f"QuantLinear: smooth must be a float tensor [{in_features}] "
                                f"(one divisor per input channel), got "
                                f"{getattr(smooth, 'dtype', type(smooth).__name__)} "
                                f"{list(getattr(smooth, 'shape', []))}")
    s = smooth.detach().float()
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise QuantizationError("QuantLinear: smooth must be finite and > 0")
    return s


def quantize(weight: torch.Tensor, smooth: Optional[torch.Tensor]) -> Int8Weight:
    """``weight [N, K]`` (times ``smooth`` per input channel) as per-channel int8."""
    w = weight.detach().float()
    return quantize_weight_int8(w if smooth is None else w * smooth.to(w.device)[None, :])


def forward(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
            smooth: Optional[torch.Tensor], bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x [M, K]`` (checked by the caller) -> ``[M, N]`` in x's dtype: x divided by ``smooth``
    (in float32, float64 for float64 x), quantized per row, times the int8 weight. float16 runs
    ``matmul_w8a8`` (the kernels on CUDA); bfloat16/float32/float64 its torch reference."""
    if smooth is not None:
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = (x.to(wide) / smooth.to(wide)).to(x.dtype)
    w8 = Int8Weight(qweight, scales)
    bias = None if bias is None else bias.to(x.dtype)
    if x.dtype == torch.float16:
        return matmul_w8a8(x, w8, bias)
    return matmul_w8a8_reference(x, w8, bias)
