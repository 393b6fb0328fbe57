"""``tilus.ops.attention_decode``: one decode step of attention over a quantized KV cache.

    out = tilus.ops.attention_decode(q, k, v, k_scales, v_scales, k_zeros, v_zeros, seq_lens,
                                     dtype="uint4")   # q [batch, heads, head_dim] fp16/bf16
    out = tilus.ops.attention_decode_cache(q, cache, seq_lens)   # the same from a QuantKVCache
    out = tilus.ops.attention_decode_paged(q, paged_cache, block_table, seq_lens)  # paged pool

The kernels (``tilus.ops.attention_kernels``) run by ``tilus.jit``: the interpreter on CPU
tensors, a cached sm_80+ build on CUDA tensors. ``engine="reference"`` is the torch reference
(dequantize, then softmax(q K^T / sqrt(d)) V in float32) on any device.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from tilus.errors import ArgumentError, DeviceMismatchError
from tilus.ops.kv_cache import (PagedQuantKVCache, QuantKVCache, _type, attention_reference,
                                check_block_table, dequantize_rows, page_ids)

ENGINES = ("auto", "reference")
_ACT = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_KERNELS: dict = {}
_POSITIONS: dict = {}


def split_kernel(k_dtype: str, v_dtype: str, head_dim: int, group: int, softmax_scale: float,
                 block_s: int = 32, act: str = "float16", group_size: int = 0):
    """The (cached) ``DecodeAttentionSplit`` Script for these compile-time values."""
    from tilus.ops.attention_kernels import DecodeAttentionSplit

    key = ("split", k_dtype, v_dtype, head_dim, group, softmax_scale, block_s, act, group_size)
    if key not in _KERNELS:
        _KERNELS[key] = DecodeAttentionSplit(k_dtype, v_dtype, head_dim, group, softmax_scale,
                                             block_s=block_s, act=act, group_size=group_size)
    return _KERNELS[key]


def paged_block_s(page_size: int) -> int:
    """The paged split kernel's tile: 32 tokens when they divide a page, else 16."""
    return 32 if page_size % 32 == 0 else 16


def paged_split_kernel(k_dtype: str, v_dtype: str, head_dim: int, group: int,
                       softmax_scale: float, page_size: int, act: str = "float16",
                       group_size: int = 0):
    """The (cached) ``PagedDecodeAttentionSplit`` Script for these compile-time values."""
    from tilus.ops.attention_kernels import PagedDecodeAttentionSplit

    key = ("paged", k_dtype, v_dtype, head_dim, group, softmax_scale, page_size, act, group_size)
    if key not in _KERNELS:
        _KERNELS[key] = PagedDecodeAttentionSplit(k_dtype, v_dtype, head_dim, group,
                                                  softmax_scale, page_size,
                                                  block_s=paged_block_s(page_size), act=act,
                                                  group_size=group_size)
    return _KERNELS[key]


def combine_kernel(head_dim: int, group: int, act: str = "float16"):
    """The (cached) ``DecodeAttentionCombine`` Script."""
    from tilus.ops.attention_kernels import DecodeAttentionCombine

    key = ("combine", head_dim, group, act)
    if key not in _KERNELS:
        _KERNELS[key] = DecodeAttentionCombine(head_dim, group, act=act)
    return _KERNELS[key]


def default_splits(batch: int, kv_heads: int, n_tokens: int, block_s: int = 32,
                   num_sms: int = 132) -> int:
    """Splits of the sequence so that the split kernel's blocks fill about two waves of
    ``num_sms`` SMs, with at least one ``block_s`` tile each."""
    tiles = max(1, math.ceil(n_tokens / block_s))
    return max(1, min(tiles, math.ceil(2 * num_sms / max(1, batch * kv_heads))))


def _positions(n: int, device: torch.device) -> torch.Tensor:
    """``arange(n)`` in int32 on ``device`` (one buffer per device, grown as needed)."""
    buf = _POSITIONS.get(device)
    if buf is None or buf.numel() < n:
        buf = torch.arange(max(n, 1024), dtype=torch.int32, device=device)
        _POSITIONS[device] = buf
    return buf


def _check_q(q, what: str) -> tuple[int, int, int]:
    if not isinstance(q, torch.Tensor) or q.dim() != 3 or q.dtype not in _ACT:
        got = f"{getattr(q, 'dtype', type(q).__name__)} {list(getattr(q, 'shape', []))}"
        raise ArgumentError(f"{what}: q must be a float16 or bfloat16 tensor "
                            f"[batch, heads, head_dim], got {got}")
    return q.shape


def _check_lens(seq_lens, batch: int, heads: int, kv_heads: int, what: str) -> None:
    if heads % kv_heads:
        raise ArgumentError(f"{what}: heads={heads} is not a multiple of kv_heads={kv_heads}")
    if not isinstance(seq_lens, torch.Tensor) or tuple(seq_lens.shape) != (batch,) \
            or seq_lens.dtype.is_floating_point:
        raise ArgumentError(f"{what}: seq_lens must be an integer tensor [{batch}], "
                            f"got {getattr(seq_lens, 'shape', type(seq_lens).__name__)}")


def _check(q, tensors: dict, seq_lens, dtype) -> tuple[int, int, int, int, int, int]:
    batch, heads, d = _check_q(q, "attention_decode")
    t = _type(dtype)
    k = tensors["k_cache"]
    if not isinstance(k, torch.Tensor) or k.dim() != 4 or k.shape[0] != batch:
        raise ArgumentError(f"attention_decode: k_cache must be uint8 [batch={batch}, kv_heads, "
                            f"max_seq, head_dim * bits / 8], got "
                            f"{list(getattr(k, 'shape', []))}")
    _, kv_heads, max_seq, _ = k.shape
    row = d * t.nbits // 8
    want = {"k_cache": ((batch, kv_heads, max_seq, row), torch.uint8),
            "v_cache": ((batch, kv_heads, max_seq, row), torch.uint8)}
    ks = tensors["k_scales"]
    groups = ks.shape[-1] if isinstance(ks, torch.Tensor) and ks.dim() == 4 else 0
    for name in ("k_scales", "v_scales", "k_zeros", "v_zeros"):
        want[name] = ((batch, kv_heads, max_seq) + ((groups,) if groups else ()), q.dtype)
    for name, (shape, dt) in want.items():
        x = tensors[name]
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape or x.dtype != dt:
            raise ArgumentError(f"attention_decode: {name} must be {dt} {list(shape)} (head_dim="
                                f"{d} {t.name}), got {getattr(x, 'dtype', type(x).__name__)} "
                                f"{list(getattr(x, 'shape', []))}")
        if x.device != q.device:
            raise DeviceMismatchError(f"attention_decode: {name} is on {x.device}, q on "
                                      f"{q.device}")
    if groups and (d % groups or (d // groups) % 8):
        raise ArgumentError(f"attention_decode: {groups} scale groups do not split head_dim={d} "
                            f"into groups of a multiple of 8")
    _check_lens(seq_lens, batch, heads, kv_heads, "attention_decode")
    return batch, heads, kv_heads, max_seq, d, d // groups if groups else 0


def attention_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     k_scales: torch.Tensor, v_scales: torch.Tensor, k_zeros: torch.Tensor,
                     v_zeros: torch.Tensor, seq_lens: torch.Tensor, *, dtype: str = "uint4",
                     softmax_scale: Optional[float] = None, num_splits: Optional[int] = None,
                     max_seq_len: Optional[int] = None, engine: str = "auto") -> torch.Tensor:
    """``softmax(q K^T * softmax_scale) V`` -> ``[batch, heads, head_dim]`` in q's dtype (float16
    or bfloat16, also the dtype of the scales and zeros; scales and zeros ``[batch, kv_heads,
    max_seq]``, or ``[..., groups]`` for groups along head_dim) over each
    sequence's first ``seq_lens[b]`` cached tokens (``tilus.ops.kv_cache`` gives the storage;
    ``softmax_scale`` defaults to 1/sqrt(head_dim)). ``num_splits``: sequence splits
    (``default_splits`` when None); ``max_seq_len``: an upper bound of ``seq_lens`` (read from
    seq_lens when None, which waits for the GPU once)."""
    if engine not in ENGINES:
        raise ArgumentError(f"attention_decode: engine must be one of {', '.join(ENGINES)}, "
                            f"got {engine!r}")
    tensors = {"k_cache": k_cache, "v_cache": v_cache, "k_scales": k_scales,
               "v_scales": v_scales, "k_zeros": k_zeros, "v_zeros": v_zeros}
    batch, heads, kv_heads, max_seq, d, group_size = _check(q, tensors, seq_lens, dtype)
    name = _type(dtype).name
    scale = d ** -0.5 if softmax_scale is None else float(softmax_scale)
    n_tokens = int(seq_lens.max()) if max_seq_len is None and batch else (max_seq_len or 0)
    if n_tokens > max_seq or (batch and int(seq_lens.min()) < 0):
        raise ArgumentError(f"attention_decode: seq_lens must lie in [0, max_seq={max_seq}]")
    if engine == "reference":
        k = dequantize_rows(k_cache, k_scales, k_zeros, name, d)
        v = dequantize_rows(v_cache, v_scales, v_zeros, name, d)
        return attention_reference(q, k, v, seq_lens, scale).to(q.dtype)
    out = torch.zeros_like(q)
    if n_tokens == 0 or batch == 0:
        return out
    group = heads // kv_heads
    act = _ACT[q.dtype]
    split = split_kernel(name, name, d, group, scale, act=act, group_size=group_size)
    splits = num_splits or default_splits(batch, kv_heads, n_tokens, split.block_s)
    part_o, part_m, part_l = _partials(batch * kv_heads, splits, group, d, q.device)
    split(kv_heads, max_seq, n_tokens, splits, batch, q.contiguous(), k_cache.contiguous(),
          v_cache.contiguous(), k_scales.contiguous(), k_zeros.contiguous(),
          v_scales.contiguous(), v_zeros.contiguous(), seq_lens.to(torch.int32).contiguous(),
          _positions(n_tokens, q.device), part_o, part_m, part_l)
    combine_kernel(d, group, act=act)(kv_heads, splits, batch, part_o, part_m, part_l, out)
    return out


def _partials(blocks: int, splits: int, group: int, d: int, dev: torch.device):
    """Empty fp32 (acc, m, l) partials of the split kernels."""
    part_o = torch.empty(blocks, splits, group, d, dtype=torch.float32, device=dev)
    part_m = torch.empty(blocks, splits, group, dtype=torch.float32, device=dev)
    return part_o, part_m, torch.empty_like(part_m)


def _check_paged(q, cache, block_table, seq_lens) -> tuple[int, int, int, int, int]:
    """(batch, heads, kv_heads, max_pages, group_size) after checking the arguments of
    ``attention_decode_paged`` and, on the host, that the table covers every sequence with
    pages of the pool (BlockTableError)."""
    what = "attention_decode_paged"
    batch, heads, d = _check_q(q, what)
    if not isinstance(cache, PagedQuantKVCache):
        raise ArgumentError(f"{what}: cache must be a PagedQuantKVCache, got "
                            f"{type(cache).__name__}")
    num_pages, kv_heads, page_size, head_dim = cache.shape
    if head_dim != d or cache.k_scales.dtype != q.dtype:
        raise ArgumentError(f"{what}: q is {q.dtype} with head_dim={d}, the cache has "
                            f"head_dim={head_dim} and {cache.k_scales.dtype} scales")
    if cache.k.device != q.device:
        raise DeviceMismatchError(f"{what}: the cache is on {cache.k.device}, q on {q.device}")
    _check_lens(seq_lens, batch, heads, kv_heads, what)
    max_pages = check_block_table(block_table, batch, q.device, what)
    lens = seq_lens.long().to(q.device)
    if batch and int(lens.min()) < 0:
        raise ArgumentError(f"{what}: seq_lens must be >= 0, got {int(lens.min())}")
    need = (lens + page_size - 1) // page_size
    cols = torch.arange(int(need.max()) if batch else 0, device=q.device).expand(batch, -1)
    page_ids(block_table, cols, cols < need[:, None], num_pages, page_size, what)
    group_size = 0 if cache.group_size is None else cache.group_size
    return batch, heads, kv_heads, max_pages, group_size


def attention_decode_paged(q: torch.Tensor, cache: PagedQuantKVCache, block_table: torch.Tensor,
                           seq_lens: torch.Tensor, *, softmax_scale: Optional[float] = None,
                           num_splits: Optional[int] = None,
                           engine: str = "auto") -> torch.Tensor:
    """``attention_decode`` over a paged cache: sequence b's token s is in page
    ``block_table[b, s // page_size]`` (int ``[batch, max_pages]``) of ``cache``
    (``tilus.ops.kv_cache.PagedQuantKVCache``). The table and ``seq_lens`` are checked on the
    host first (one wait for the GPU): a sequence needing more pages than the table has columns,
    or a page id outside the pool among the first ``ceil(seq_lens[b] / page_size)`` columns,
    raises BlockTableError; the other columns are never read."""
    if engine not in ENGINES:
        raise ArgumentError(f"attention_decode_paged: engine must be one of "
                            f"{', '.join(ENGINES)}, got {engine!r}")
    batch, heads, kv_heads, max_pages, group_size = _check_paged(q, cache, block_table, seq_lens)
    d = cache.head_dim
    scale = d ** -0.5 if softmax_scale is None else float(softmax_scale)
    if engine == "reference":
        k, v = cache.gather(block_table).dequantize()
        return attention_reference(q, k, v, seq_lens, scale).to(q.dtype)
    out = torch.zeros_like(q)
    n_tokens = int(seq_lens.max()) if batch else 0
    if n_tokens == 0:
        return out
    group = heads // kv_heads
    act = _ACT[q.dtype]
    name = _type(cache.dtype).name
    split = paged_split_kernel(name, name, d, group, scale, cache.page_size, act=act,
                               group_size=group_size)
    splits = num_splits or default_splits(batch, kv_heads, n_tokens, split.block_s)
    part_o, part_m, part_l = _partials(batch * kv_heads, splits, group, d, q.device)
    split(kv_heads, cache.k.shape[0], max_pages, n_tokens, splits, batch, q.contiguous(),
          cache.k, cache.v, cache.k_scales, cache.k_zeros, cache.v_scales, cache.v_zeros,
          block_table.to(torch.int32).contiguous(), seq_lens.to(torch.int32).contiguous(),
          part_o, part_m, part_l)
    combine_kernel(d, group, act=act)(kv_heads, splits, batch, part_o, part_m, part_l, out)
    return out


def attention_decode_cache(q: torch.Tensor, cache: QuantKVCache | PagedQuantKVCache,
                           seq_lens: torch.Tensor, block_table: Optional[torch.Tensor] = None,
                           **kwargs) -> torch.Tensor:
    """``attention_decode`` over the tensors of a ``QuantKVCache``, or
    ``attention_decode_paged`` over a ``PagedQuantKVCache`` and its ``block_table``."""
    if isinstance(cache, PagedQuantKVCache):
        return attention_decode_paged(q, cache, block_table, seq_lens, **kwargs)
    if block_table is not None:
        raise ArgumentError("attention_decode_cache: a block_table goes with a PagedQuantKVCache")
    if not isinstance(cache, QuantKVCache):
        raise ArgumentError(f"attention_decode_cache: cache must be a QuantKVCache, got "
                            f"{type(cache).__name__}")
    return attention_decode(q, cache.k, cache.v, cache.k_scales, cache.v_scales, cache.k_zeros,
                            cache.v_zeros, seq_lens, dtype=cache.dtype, **kwargs)
