"""``tilus.ops.matmul(a, mixed_weight)``: activations times a mixed-width weight
(``tilus.ops.mixed.MixedQuantizedWeight``), one kernel launch for both widths.

Engines as ``tilus.ops.matmul``'s: ``"auto"`` (CUDA: the compiled ``MixedQuantMatmul``; CPU:
the fallback), ``"interpreter"``, ``"fallback"`` (dequantize both parts + a float32 torch
matmul) and ``"compiled"``. The kernel writes its output buffer in the parts' order (see
``tilus.ops.mixed_kernels``); one ``index_select`` restores the original feature order. The
activations (and bias) get gradients (``grad @ dequant(W)``; the weight is frozen). Not yet a
``torch.library`` custom op: ``torch.compile`` traces into it.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from tilus.errors import ArgumentError, DeviceMismatchError, TilusError
from tilus.ops.matmul import (_ACT, ENGINES, block_k_limit, check_operands, default_schedule, kernel_config,
                              weight_meta)
from tilus.ops.mixed import MixedQuantizedWeight
from tilus.ops.validation import check_quant_operands, check_schedule

_KERNELS: dict = {}


def mixed_kernel_for(wide_meta: dict, narrow_meta: dict, act: str, has_bias: bool,
                     schedule: dict):
    """The MixedQuantMatmul Script for the two parts' metadata, activations, bias, schedule."""
    from tilus.ops.mixed_kernels import MixedQuantMatmul

    key = (tuple(sorted(wide_meta.items())), tuple(sorted(narrow_meta.items())), act, has_bias,
           tuple(sorted(schedule.items())))
    kern = _KERNELS.get(key)
    if kern is None:
        kern = MixedQuantMatmul(kernel_config(wide_meta, act, has_bias),
                                kernel_config(narrow_meta, act, has_bias), **schedule)
        _KERNELS[key] = kern
    return kern


def mixed_schedule(m: int, mw: MixedQuantizedWeight, engine: str, num_sms: int = 132) -> dict:
    """``default_schedule`` for the output buffer's width (both parts' tiles) and the wide
    part's bits (its pipeline stages are the larger)."""
    cols = mw.wide_columns_padded + mw.narrow.n
    return default_schedule(m, cols, mw.k, mw.group_size, engine, num_sms,
                            max(mw.wide.nbits, mw.narrow.nbits), block_k_limit("group"))


def _check(a, mw: MixedQuantizedWeight, bias) -> None:
    check_operands(a, mw, bias, "mixed weight", "weight")
    for part in (mw.wide, mw.narrow):
        check_quant_operands(a, part.scales, part.offsets, part.block_scaled, "matmul")


def fallback(a2: torch.Tensor, mw: MixedQuantizedWeight,
             bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Dequantize (the original feature order) + a float32 matmul, rounded to a2's dtype."""
    out = a2.float() @ mw.dequantize(a2.dtype).float().t()
    if bias is not None:
        out = out + bias.float()
    return out.to(a2.dtype)


def launch(a2: torch.Tensor, mw: MixedQuantizedWeight, bias: Optional[torch.Tensor],
           engine: str, schedule: Optional[dict] = None) -> torch.Tensor:
    """One MixedQuantMatmul launch (interpreted on CPU tensors), then the gather."""
    m, dev = a2.shape[0], a2.device
    if engine == "compiled" and dev.type != "cuda":
        raise TilusError(f"matmul(engine='compiled') needs CUDA tensors, got {dev}")
    act = _ACT[a2.dtype]
    if schedule is None:
        sms = torch.cuda.get_device_properties(dev).multi_processor_count \
            if dev.type == "cuda" else 132
        schedule = mixed_schedule(m, mw, engine, sms)
    kern = mixed_kernel_for(weight_meta(mw.wide, a2.dtype), weight_meta(mw.narrow, a2.dtype),
                            act, bias is not None, schedule)
    cols = mw.wide_columns_padded + mw.narrow.n
    index = mw.out_index
    if m == 0:
        return torch.empty(0, mw.n, dtype=a2.dtype, device=dev)
    c = torch.empty(m, cols, dtype=a2.dtype, device=dev)
    b = torch.zeros(cols if bias is not None else 1, dtype=a2.dtype, device=dev)
    if bias is not None:
        b[index] = bias.to(a2.dtype)
    split = schedule.get("split_k", 1)
    ws = torch.empty(m, cols, dtype=torch.float32, device=dev) if split > 1 else \
        torch.zeros(1, dtype=torch.float32, device=dev)
    sema = torch.zeros(math.ceil(m / kern.block_m) * math.ceil(cols / 128) if split > 1 else 1,
                       dtype=torch.int32, device=dev)

    def offsets(part):
        return torch.zeros(1, dtype=part.scales.dtype, device=dev) if part.offsets is None \
            else part.offsets.contiguous()

    w, nw = mw.wide, mw.narrow
    kern(m, w.n, nw.n, mw.k, a2.contiguous(), w.data.contiguous(), w.scales.contiguous(),
         offsets(w), nw.data.contiguous(), nw.scales.contiguous(), offsets(nw), b, c, ws, sema)
    return c.index_select(1, index)


class _Launch(torch.autograd.Function):
    """The kernel launch with the activations' (and bias') gradient: ``grad @ dequant(W)``
    (float32 products), the weight frozen, as ``tilus::quant_matmul``'s."""

    @staticmethod
    def forward(ctx, a2, bias, mw, engine, schedule):
        ctx.mw, ctx.has_bias = mw, bias is not None
        return launch(a2, mw, bias, engine, schedule)

    @staticmethod
    def backward(ctx, grad):
        grad_a = (grad.float() @ ctx.mw.dequantize(torch.float32).to(grad.device)).to(grad.dtype)
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[1] else None
        return grad_a, grad_bias, None, None, None


def mixed_matmul(a: torch.Tensor, mw: MixedQuantizedWeight, bias: Optional[torch.Tensor] = None,
                 *, engine: str = "auto", schedule: Optional[dict] = None) -> torch.Tensor:
    """``a [..., K] @ mw.dequantize(a.dtype).T (+ bias)`` -> ``[..., N]`` in a's dtype (see
    ``tilus.ops.matmul``, which calls this for a MixedQuantizedWeight)."""
    if engine not in ENGINES:
        raise ArgumentError(f"matmul: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if schedule is not None:
        from tilus.ops.mixed_kernels import MixedQuantMatmul

        schedule = check_schedule(schedule, MixedQuantMatmul.schedule_names(), "matmul")
    _check(a, mw, bias)
    lead = a.shape[:-1]
    a2 = a.reshape(-1, mw.k)
    if engine == "fallback" or (engine == "auto" and a.device.type != "cuda"):
        out = fallback(a2, mw, bias)
    else:
        if engine == "interpreter" and a.device.type != "cpu":
            raise DeviceMismatchError(f"matmul(engine='interpreter') runs on the CPU; got "
                                      f"tensors on {a.device}")
        out = _Launch.apply(a2, bias, mw, "interpreter" if engine == "interpreter"
                            else "compiled", schedule)
    return out.reshape(*lead, mw.n)


__all__ = ["mixed_matmul", "mixed_kernel_for", "mixed_schedule", "fallback", "launch"]
