"""``tilus.ops.attention_prefill``: flash attention over a whole prompt (prefill).

    out = tilus.ops.attention_prefill(q, k, v, causal=True)   # q [batch, heads, seq_q, head_dim]
    out = tilus.ops.attention_prefill(q, k_codes, v_codes, causal=True, kv_dtype="float8_e4m3",
                                      k_scales=ks, v_scales=vs)   # K/V quantized per (token, head)

The kernels (``tilus.ops.prefill_kernels``) run by ``tilus.jit``: the interpreter on CPU
tensors, a cached sm_80+ build on CUDA tensors. ``engine="reference"`` is the torch reference
(dequantize, then softmax(Q K^T * scale + mask) V in float32) on any device.
"""
from __future__ import annotations

from typing import Optional

import torch

from tilus.errors import ArgumentError, DataTypeError, DeviceMismatchError
from tilus.ops.kv_cache import dequantize_rows
from tilus.ops.prefill_kernels import (MAX_HEAD_DIM, QUANT_KV_DTYPES, PrefillAttention,
                                       PrefillAttentionQuantKV)

ENGINES = ("auto", "reference")
_ACT = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_KERNELS: dict = {}


def prefill_kernel(head_dim: int, group: int, softmax_scale: float, causal: bool,
                   act: str = "float16", kv_dtype: Optional[str] = None):
    """The (cached) ``PrefillAttention`` Script for these compile-time values
    (``PrefillAttentionQuantKV`` when ``kv_dtype`` names a code type)."""
    key = (head_dim, group, softmax_scale, causal, act, kv_dtype)
    if key not in _KERNELS:
        if kv_dtype is None:
            _KERNELS[key] = PrefillAttention(head_dim, group, softmax_scale, causal, act=act)
        else:
            _KERNELS[key] = PrefillAttentionQuantKV(kv_dtype, head_dim, group, softmax_scale,
                                                    causal, act=act)
    return _KERNELS[key]


def _shape(x) -> str:
    return f"{getattr(x, 'dtype', type(x).__name__)} {list(getattr(x, 'shape', []))}"


def _check(q, k, v, kv_dtype, params: dict) -> tuple[int, int, int, int, int, int]:
    """(batch, heads, kv_heads, seq_q, seq_kv, head_dim) of valid arguments, else ArgumentError /
    DataTypeError / DeviceMismatchError naming the argument."""
    if not isinstance(q, torch.Tensor) or q.dim() != 4 or q.dtype not in _ACT:
        raise ArgumentError(f"attention_prefill: q must be a float16 or bfloat16 tensor [batch, "
                            f"heads, seq_q, head_dim], got {_shape(q)}")
    batch, heads, seq_q, d = q.shape
    if d % 16 or not 16 <= d <= MAX_HEAD_DIM:
        raise ArgumentError(f"attention_prefill: head_dim={d} is not supported (a multiple of 16 "
                            f"from 16 to {MAX_HEAD_DIM})")
    if kv_dtype is not None and kv_dtype not in QUANT_KV_DTYPES:
        raise DataTypeError(f"attention_prefill: kv_dtype must be None (K and V in q's dtype) or "
                            f"one of {', '.join(QUANT_KV_DTYPES)}, got {kv_dtype!r}")
    want_dtype = q.dtype if kv_dtype is None else torch.uint8
    if not isinstance(k, torch.Tensor) or k.dim() != 4 or k.shape[0] != batch \
            or k.shape[3] != d or k.dtype != want_dtype:
        what = "q's dtype" if kv_dtype is None else f"uint8 ({kv_dtype} codes)"
        raise ArgumentError(f"attention_prefill: k must be {what} [batch={batch}, kv_heads, "
                            f"seq_kv, head_dim={d}], got {_shape(k)}")
    kv_heads, seq_kv = k.shape[1], k.shape[2]
    if not isinstance(v, torch.Tensor) or v.shape != k.shape or v.dtype != k.dtype:
        raise ArgumentError(f"attention_prefill: v must be {k.dtype} {list(k.shape)} like k, got "
                            f"{_shape(v)}")
    if kv_heads == 0 or heads % kv_heads:
        raise ArgumentError(f"attention_prefill: heads={heads} is not a multiple of "
                            f"kv_heads={kv_heads}")
    if kv_dtype is None and any(p is not None for p in params.values()):
        raise ArgumentError("attention_prefill: k_scales, v_scales, k_zeros and v_zeros need "
                            "kv_dtype= (K and V given as codes)")
    for name, x in params.items():
        if x is None and name.endswith("_zeros"):
            continue
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != (batch, kv_heads, seq_kv) \
                or x.dtype != q.dtype:
            raise ArgumentError(f"attention_prefill: {name} must be {q.dtype} [{batch}, "
                                f"{kv_heads}, {seq_kv}] (one per token and KV head), got "
                                f"{_shape(x)}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.numel() >= 2 ** 31:
            raise ArgumentError(f"attention_prefill: {name} has {x.numel()} elements; the kernel "
                                f"indexes with int32 (at most 2^31 - 1): split the batch")
    for name, x in (("k", k), ("v", v), *params.items()):
        if x is not None and x.device != q.device:
            raise DeviceMismatchError(f"attention_prefill: {name} is on {x.device}, q on "
                                      f"{q.device}")
    return batch, heads, kv_heads, seq_q, seq_kv, d


def prefill_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                      softmax_scale: Optional[float] = None) -> torch.Tensor:
    """``softmax(Q K^T * scale + mask) V`` in float32, q ``[batch, heads, seq_q, D]``, K/V
    ``[batch, kv_heads, seq_kv, D]`` (query head h reads KV head ``h // (heads / kv_heads)``);
    causal: query i sees keys j <= i + seq_kv - seq_q (bottom-right aligned); a row that sees no
    key is 0."""
    heads, seq_q, d = q.shape[1:]
    group = heads // k.shape[1]
    seq_kv = k.shape[2]
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    kk = k.float().repeat_interleave(group, dim=1)
    vv = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("bhqd,bhkd->bhqk", q.float(), kk) * scale
    if causal:
        i = torch.arange(seq_q, device=q.device)[:, None]
        j = torch.arange(seq_kv, device=q.device)[None, :]
        scores = scores.masked_fill(j > i + seq_kv - seq_q, float("-inf"))
    p = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhqk,bhkd->bhqd", p, vv)


def attention_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                      causal: bool = False, softmax_scale: Optional[float] = None,
                      kv_dtype: Optional[str] = None, k_scales: Optional[torch.Tensor] = None,
                      v_scales: Optional[torch.Tensor] = None,
                      k_zeros: Optional[torch.Tensor] = None,
                      v_zeros: Optional[torch.Tensor] = None,
                      engine: str = "auto") -> torch.Tensor:
    """``softmax(Q K^T * softmax_scale + mask) V`` -> ``[batch, heads, seq_q, head_dim]`` in q's
    dtype. q ``[batch, heads, seq_q, head_dim]`` float16 or bfloat16, head_dim a multiple of 16
    up to 128; k, v ``[batch, kv_heads, seq_kv, head_dim]`` in q's dtype, heads a multiple of
    kv_heads (GQA: query head h reads KV head ``h // (heads / kv_heads)``); ``softmax_scale``
    defaults to 1/sqrt(head_dim). ``causal``: query i sees keys ``j <= i + seq_kv - seq_q``
    (bottom-right aligned, as flash-attn; a query that sees no key gives 0).

    Quantized K/V: ``kv_dtype`` one of int8, uint8, float8_e4m3; k, v are then ``uint8 [batch,
    kv_heads, seq_kv, head_dim]`` codes with ``k_scales``/``v_scales`` (and ``k_zeros``/
    ``v_zeros``, default 0) ``[batch, kv_heads, seq_kv]`` in q's dtype, the format of
    ``tilus.ops.kv_cache`` (``quantize_rows`` makes it): a value is ``decode(code) * 2^-e *
    scale + zero`` rounded to q's dtype, dequantized by the kernel in registers."""
    if engine not in ENGINES:
        raise ArgumentError(f"attention_prefill: engine must be one of {', '.join(ENGINES)}, "
                            f"got {engine!r}")
    params = {} if kv_dtype is None and all(
        p is None for p in (k_scales, v_scales, k_zeros, v_zeros)) else {
        "k_scales": k_scales, "v_scales": v_scales, "k_zeros": k_zeros, "v_zeros": v_zeros}
    batch, heads, kv_heads, seq_q, seq_kv, d = _check(q, k, v, kv_dtype, params)
    scale = d ** -0.5 if softmax_scale is None else float(softmax_scale)
    if kv_dtype is not None:
        zeros = torch.zeros_like(k_scales)
        k_zeros = zeros if k_zeros is None else k_zeros
        v_zeros = zeros if v_zeros is None else v_zeros
    if engine == "reference":
        if kv_dtype is not None:
            k = dequantize_rows(k, k_scales, k_zeros, kv_dtype, d)
            v = dequantize_rows(v, v_scales, v_zeros, kv_dtype, d)
        return prefill_reference(q, k, v, causal, scale).to(q.dtype)
    if seq_q == 0 or seq_kv == 0 or batch * heads == 0:
        return torch.zeros_like(q)
    out = torch.empty_like(q)
    kernel = prefill_kernel(d, heads // kv_heads, scale, bool(causal), _ACT[q.dtype], kv_dtype)
    args = [batch * heads, seq_q, seq_kv, q.contiguous(), k.contiguous(), v.contiguous(), out]
    if kv_dtype is not None:
        args += [x.contiguous() for x in (k_scales, k_zeros, v_scales, v_zeros)]
    kernel(*args)
    return out
