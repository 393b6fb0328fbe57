"""The activation-quantized schemes of ``QuantLinear(act_dtype=...)``: checks, quantization,
forward.

``act_dtype`` names the activations' type and the weights' (the same): per output channel,
symmetric, ties to even, float32 scales ``[N]``; activations quantized per token at run time
(``tilus.ops.rowquant``). The weight buffer ``qweight`` per scheme:

- ``"int8"`` (W8A8, ``tilus.ops.w8a8``): int8 ``[K, N]``;
- ``"int4"`` (W4A4, ``tilus.ops.w4a4``): uint8 ``[N, K / 2]``, two codes per byte (K even);
  it alone may also take one scale per ``group_size`` k of a channel (a multiple of 64 dividing
  K): ``scales`` float32 ``[K / group_size, N]``;
- ``"float8_e4m3"`` (FP8, ``tilus.ops.fp8``): uint8 ``[N, K]``, the e4m3 codes (bytes, so that
  ``.half()`` leaves them alone).

Optional SmoothQuant-style smoothing ``smooth [K]`` (> 0): the weight is quantized as
``W * smooth`` and forward divides ``x`` by ``smooth`` before quantizing it, so that
``(x / smooth) @ (W * smooth).T == x @ W.T`` in exact arithmetic.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from tilus.errors import QuantizationError
from tilus.ops import fp8, w4a4, w8a8

#: Activation types a QuantLinear may quantize to at run time (each takes weights of its type).
ACT_DTYPES = ("int8", "int4", "float8_e4m3")


def check_scheme(act_dtype: Any, dtype: str, group_size: int, in_features: int,
                 symmetric: Optional[bool], zero_mode: str, act_order: bool) -> str:
    """``act_dtype`` if the rest of the layer's scheme is the one its kernels run (weights of the
    same type, one symmetric scale per output channel; int4: an even in_features), else
    QuantizationError naming what differs."""
    if act_dtype not in ACT_DTYPES:
        raise QuantizationError(f"QuantLinear: act_dtype must be None or one of {ACT_DTYPES}, "
                                f"got {act_dtype!r}")
    if act_dtype == "int4" and in_features % 2:
        raise QuantizationError(f"QuantLinear: act_dtype='int4' packs two codes per byte, so "
                                f"in_features must be even, got {in_features}")
    grouped_ok = act_dtype == "int4" and group_size % w4a4.BLOCK_K == 0
    bad = {k: v for k, v, ok in (("dtype", dtype, dtype == act_dtype),
                                  ("group_size", group_size,
                                   group_size == in_features or grouped_ok),
                                  ("symmetric", symmetric, symmetric in (None, True)),
                                  ("zero_mode", zero_mode, zero_mode == "float"),
                                  ("act_order", act_order, not act_order)) if not ok}
    if bad:
        raise QuantizationError(f"QuantLinear: act_dtype={act_dtype!r} takes {act_dtype} weights "
                                f"with one symmetric scale per output channel "
                                f"(dtype={act_dtype!r}, group_size=None; int4 also a multiple "
                                f"of {w4a4.BLOCK_K} dividing in_features); got {bad}")
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


def scales_buffer(k: int, n: int, group_size: int, device=None) -> torch.Tensor:
    """Ones of the scheme's scales: float32 [N], or [K / group_size, N] for a grouped int4."""
    shape = (n,) if group_size == k else (k // group_size, n)
    return torch.ones(shape, dtype=torch.float32, device=device)


def _group(k: int, group_size: int) -> int:
    """``Int4Weight.group_size``: 0 for one group per channel."""
    return 0 if group_size == k else group_size


def qweight_buffer(act_dtype: str, k: int, n: int, device=None) -> torch.Tensor:
    """An empty ``qweight`` of the scheme (see the module docstring)."""
    if act_dtype == "int8":
        return torch.zeros(k, n, dtype=torch.int8, device=device)
    return torch.zeros(n, k // 2 if act_dtype == "int4" else k, dtype=torch.uint8, device=device)


def quantize(weight: torch.Tensor, smooth: Optional[torch.Tensor], act_dtype: str,
             group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight [N, K]`` (times ``smooth`` per input channel) per output channel (or group) in
    the scheme's type: ``(qweight, scales)``."""
    w = weight.detach().float()
    w = w if smooth is None else w * smooth.to(w.device)[None, :]
    if act_dtype == "int8":
        q = w8a8.quantize_weight_int8(w)
        return q.data, q.scales
    if act_dtype == "int4":
        q4 = w4a4.quantize_weight_int4(w, _group(w.shape[1], group_size))
        return q4.data, q4.scales
    q8 = fp8.quantize_weight_fp8(w)
    return q8.data.view(torch.uint8), q8.scales


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, act_dtype: str,
               group_size: int) -> torch.Tensor:
    """[N, K] float32: the codes times their channel's (or group's) scale."""
    if act_dtype == "int8":
        return w8a8.Int8Weight(qweight, scales).dequantize()
    if act_dtype == "int4":
        k = 2 * qweight.shape[1]
        return w4a4.Int4Weight(qweight, scales, _group(k, group_size)).dequantize()
    return fp8.Fp8Weight(qweight.view(torch.float8_e4m3fn), scales).dequantize()


def forward(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
            smooth: Optional[torch.Tensor], bias: Optional[torch.Tensor],
            act_dtype: str = "int8", group_size: int = 0) -> torch.Tensor:
    """``x [M, K]`` (checked by the caller) -> ``[M, N]`` in x's dtype: x divided by ``smooth``
    (in float32, float64 for float64 x), quantized per row, times the weight. float16 (and
    bfloat16 for int4/float8_e4m3) runs the scheme's matmul (``matmul_w8a8``, ``matmul_w4a4``,
    ``matmul_fp8``: the kernels on CUDA); the other float dtypes its torch reference."""
    if smooth is not None:
        wide = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = (x.to(wide) / smooth.to(wide)).to(x.dtype)
    bias = None if bias is None else bias.to(x.dtype)
    half = x.dtype == torch.float16
    kernel = x.dtype in (torch.float16, torch.bfloat16)
    if act_dtype == "int8":
        w8 = w8a8.Int8Weight(qweight, scales)
        return w8a8.matmul_w8a8(x, w8, bias) if half else w8a8.matmul_w8a8_reference(x, w8, bias)
    if act_dtype == "int4":
        w4 = w4a4.Int4Weight(qweight, scales, _group(x.shape[1], group_size))
        return w4a4.matmul_w4a4(x, w4, bias) if kernel else w4a4.matmul_w4a4_reference(x, w4, bias)
    wf = fp8.Fp8Weight(qweight.view(torch.float8_e4m3fn), scales)
    return fp8.matmul_fp8(x, wf, bias) if kernel else fp8.matmul_fp8_reference(x, wf, bias)
