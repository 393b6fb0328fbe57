"""A quantized KV cache: K and V as per-(token, head) quantized codes of a 1-8-bit type.

    cache = tilus.ops.QuantKVCache.empty(batch, kv_heads, max_seq, head_dim, dtype="uint4")
    tilus.ops.quantize_kv(k_new, v_new, cache, positions)      # writes tokens in place
    out = tilus.ops.attention_decode(q, cache, seq_lens)

Storage (``tilus.ops.attention_kernels`` reads it): ``k``/``v`` are ``uint8 [batch, kv_heads,
max_seq, head_dim * B / 8]``, each row the little-endian bit stream of one token's ``head_dim``
codes (``tilus.dtypes.pack``); ``k_scales``/``k_zeros``/``v_scales``/``v_zeros`` are
``[batch, kv_heads, max_seq]`` (one scale and zero per token and head) or, with ``group_size <
head_dim``, ``[batch, kv_heads, max_seq, head_dim / group_size]`` (one per group of
``group_size`` consecutive elements of a row), in the scale dtype, float16 (default) or
bfloat16, which is also the dtype of the queries and the output of ``attention_decode``. A
value dequantizes as ``v * scale + zero`` (its group's) rounded once to the scale dtype,
``v = decode(code) * 2^-e`` (``e = kv_exponent(dtype)``); per group (min, max, absmax below
are the group's):

* integer types (``intB``, ``uintB``; ``e = 0``): asymmetric min-max per token and head, ``qmin``/
  ``qmax`` the type's smallest and largest values: ``scale = (max - min) / (qmax - qmin)``
  rounded up to the scale dtype, ``zero = min - qmin * scale`` rounded to it and ``code =
  clamp(round((x - zero) / scale))``;
* float types (``floatK_eXmY`` whose values times ``2^-e`` are float16 and bfloat16 values, e.g.
  ``float8_e4m3``, ``float4_e2m1``; not ``float8_e5m2``, whose smallest subnormals would not
  be): symmetric, ``e`` the exponent of the largest power of two <= the type's max (it keeps
  the scales normal numbers), ``scale = absmax / (max_value * 2^-e)`` rounded up,
  ``zero = 0``, ``code = encode(x / scale * 2^e)`` (nearest, ties to even, saturating).

Paged (vLLM style): ``PagedQuantKVCache.empty(num_pages, kv_heads, page_size, head_dim, ...)``
is a pool of pages, each ``page_size`` tokens of every KV head: ``k``/``v`` ``uint8
[num_pages, kv_heads, page_size, head_dim * B / 8]``, scales and zeros ``[num_pages, kv_heads,
page_size(, groups)]``, the same codes and parameters per row. A block table ``int32 [batch,
max_pages]`` of page ids, which the caller allocates and passes (the cache keeps no table and
no free list), puts sequence b's token s in page ``block_table[b, s // page_size]`` at slot
``s % page_size``; columns past a sequence's last page may hold anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tilus import dtypes
from tilus.errors import ArgumentError, BlockTableError, DataTypeError
from tilus.ops.quantize import encode_float, value_exponent

_TINY = 2.0 ** -24          # the smallest positive float16: a constant row gets this scale
SCALE_DTYPES = (torch.float16, torch.bfloat16)


def kv_types() -> list[str]:
    """Every cache type: intB and uintB for B = 1..8, and the float types of 3-8 bits whose
    values times 2^-kv_exponent are float16 and bfloat16 values (the kernels dequantize in
    the scale dtype)."""
    from tilus.ops.kernels import values_exact_in  # the DSL kernels' module: loaded on use

    return [t.name for t in dtypes.lowbit_types()
            if not t.is_float or all(values_exact_in(t, act, value_exponent(t))
                                     for act in ("float16", "bfloat16"))]


def kv_exponent(dtype) -> int:
    """e of the module docstring: the values of a float cache type are ``decode(code) * 2^-e``
    (the largest power of two <= its max); 0 for integer types."""
    return value_exponent(dtypes.get(dtype))


def _type(dtype) -> dtypes.DataType:
    t = dtypes.get(dtype)
    if t.name not in kv_types():
        raise DataTypeError(f"quantized KV cache: {t.name} is not a cache type (one of "
                            f"{', '.join(kv_types())})")
    return t


def _code_range(t: dtypes.DataType) -> tuple[int, int]:
    if t.is_signed:
        return -(2 ** (t.nbits - 1)), 2 ** (t.nbits - 1) - 1
    return 0, 2 ** t.nbits - 1


def _round_up(scale: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """float32 scales rounded up to ``dt`` (at least 2^-24)."""
    scale = scale.clamp_min(_TINY)
    s = scale.to(dt)
    top = torch.full_like(s, torch.finfo(dt).max)
    return torch.where(s.float() < scale, torch.nextafter(s, top), s)


def _scale_dtype(dt) -> torch.dtype:
    if dt not in SCALE_DTYPES:
        raise ArgumentError(f"quantized KV cache: scale_dtype must be torch.float16 or "
                            f"torch.bfloat16, got {dt}")
    return dt


def groups_of(head_dim: int, group_size: Optional[int]) -> int:
    """Scale groups per row: head_dim / group_size (group_size None: the whole row)."""
    g = head_dim if group_size is None else group_size
    if not isinstance(g, int) or g < 8 or head_dim % g or g % 8:
        raise ArgumentError(f"quantized KV cache: group_size={group_size} must be a multiple of "
                            f"8 dividing head_dim={head_dim} (or None: one group per row)")
    return head_dim // g


def quantize_rows(x: torch.Tensor, dtype, scale_dtype: torch.dtype = torch.float16,
                  group_size: Optional[int] = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``x [..., head_dim]`` per row (or per group of ``group_size``): (packed ``uint8
    [..., head_dim * B / 8]``, scales and zeros ``[...]`` (``[..., groups]`` with groups) in
    ``scale_dtype``), as the module docstring says."""
    t = _type(dtype)
    sdt = _scale_dtype(scale_dtype)
    d = x.shape[-1]
    if d * t.nbits % 8:
        raise ArgumentError(f"quantize_kv: head_dim={d} {t.name} codes do not fill whole bytes")
    groups = groups_of(d, group_size)
    xf = x.float().reshape(*x.shape[:-1], groups, d // groups)
    if t.is_float:
        e = kv_exponent(t)
        s16 = _round_up(xf.abs().amax(-1) / (float(t.max_value) * 2.0 ** -e), sdt)
        z16 = torch.zeros_like(s16)
        codes = encode_float(xf / s16.float()[..., None] * 2.0 ** e, t)
    else:
        qmin, qmax = _code_range(t)
        lo, hi = xf.amin(-1), xf.amax(-1)
        s16 = _round_up((hi - lo) / (qmax - qmin), sdt)
        z16 = (lo - qmin * s16.float()).to(sdt)
        q = torch.round((xf - z16.float()[..., None]) / s16.float()[..., None]).clamp(qmin, qmax)
        codes = (q.to(torch.int32) & (2 ** t.nbits - 1)).to(torch.uint8)
    packed = dtypes.pack(codes.reshape(-1, d), t).reshape(*x.shape[:-1], d * t.nbits // 8)
    if group_size is None:
        return packed, s16[..., 0], z16[..., 0]
    return packed, s16, z16


def dequantize_rows(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, dtype,
                    head_dim: int) -> torch.Tensor:
    """float32 ``v * scale + zero`` rounded to the scales' dtype, shape ``[..., head_dim]``: the
    values the kernels see (the torch reference)."""
    t = _type(dtype)
    codes = dtypes.unpack(packed.reshape(-1), t, shape=(*packed.shape[:-1], head_dim))
    values = t.decode(torch.arange(2 ** t.nbits).numpy()) * 2.0 ** -kv_exponent(t)
    table = torch.from_numpy(values).float().to(packed.device)
    v = table[codes.long()]
    if scales.dim() == packed.dim():                             # [..., groups]
        v = v.reshape(*codes.shape[:-1], scales.shape[-1], -1)
        out = v * scales.float()[..., None] + zeros.float()[..., None]
        return out.to(scales.dtype).float().reshape(codes.shape)
    return (v * scales.float()[..., None] + zeros.float()[..., None]).to(scales.dtype).float()


def _empty_storage(rows: tuple[int, ...], head_dim: int, dtype, device, scale_dtype,
                   group_size: Optional[int], what: str) -> tuple[str, list, list]:
    """(type name, [k, v] zero codes ``rows + (row bytes,)``, [k_scales, k_zeros, v_scales,
    v_zeros] zeros ``rows`` or ``rows + (groups,)``) of a cache with ``rows`` token rows."""
    t = _type(dtype)
    sdt = _scale_dtype(scale_dtype)
    groups = groups_of(head_dim, group_size)
    if head_dim * t.nbits % 8:
        raise ArgumentError(f"{what}: head_dim={head_dim} {t.name} codes do not fill whole bytes")
    data = [torch.zeros(*rows, head_dim * t.nbits // 8, dtype=torch.uint8, device=device)
            for _ in range(2)]
    shape = rows if group_size is None else (*rows, groups)
    return t.name, data, [torch.zeros(*shape, dtype=sdt, device=device) for _ in range(4)]


@dataclass
class KVStorage:
    """The tensors of quantized K and V rows (see the module docstring) and their type: what the
    contiguous cache and the paged pool share; their leading dimensions differ."""

    k: torch.Tensor
    v: torch.Tensor
    k_scales: torch.Tensor
    k_zeros: torch.Tensor
    v_scales: torch.Tensor
    v_zeros: torch.Tensor
    dtype: str
    head_dim: int
    group_size: Optional[int] = None

    def dequantize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, V) as float32 rows of ``head_dim`` (the storage's leading dimensions): what the
        kernels read."""
        return (dequantize_rows(self.k, self.k_scales, self.k_zeros, self.dtype, self.head_dim),
                dequantize_rows(self.v, self.v_scales, self.v_zeros, self.dtype, self.head_dim))


@dataclass
class QuantKVCache(KVStorage):
    """The cache tensors (see the module docstring), ``[batch, kv_heads, max_seq, ...]``."""

    @classmethod
    def empty(cls, batch: int, kv_heads: int, max_seq: int, head_dim: int, dtype="uint4",
              device: torch.device | str = "cpu", scale_dtype: torch.dtype = torch.float16,
              group_size: Optional[int] = None) -> "QuantKVCache":
        """A zero-filled cache (every code 0, scales and zeros 0) for ``max_seq`` tokens;
        ``scale_dtype`` is q's dtype (float16 or bfloat16); ``group_size``: head_dim elements
        per scale and zero (None: one per row)."""
        name, data, params = _empty_storage((batch, kv_heads, max_seq), head_dim, dtype, device,
                                            scale_dtype, group_size, "QuantKVCache")
        return cls(data[0], data[1], *params, dtype=name, head_dim=head_dim,
                   group_size=group_size)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(batch, kv_heads, max_seq, head_dim)."""
        return (*self.k.shape[:3], self.head_dim)


@dataclass
class PagedQuantKVCache(KVStorage):
    """A pool of ``num_pages`` pages of ``page_size`` tokens per KV head (see the module
    docstring); the block table that maps sequences to pages is the caller's."""

    @classmethod
    def empty(cls, num_pages: int, kv_heads: int, page_size: int, head_dim: int, dtype="uint4",
              device: torch.device | str = "cpu", scale_dtype: torch.dtype = torch.float16,
              group_size: Optional[int] = None) -> "PagedQuantKVCache":
        """A zero-filled pool; ``page_size`` a multiple of 16 (the kernels' tiles lie in one
        page), the other arguments as ``QuantKVCache.empty``."""
        if not isinstance(page_size, int) or page_size < 16 or page_size % 16:
            raise ArgumentError(f"PagedQuantKVCache: page_size={page_size} must be a positive "
                                f"multiple of 16")
        name, data, params = _empty_storage((num_pages, kv_heads, page_size), head_dim, dtype,
                                            device, scale_dtype, group_size, "PagedQuantKVCache")
        return cls(data[0], data[1], *params, dtype=name, head_dim=head_dim,
                   group_size=group_size)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(num_pages, kv_heads, page_size, head_dim)."""
        return (*self.k.shape[:3], self.head_dim)

    @property
    def page_size(self) -> int:
        return int(self.k.shape[2])

    def gather(self, block_table: torch.Tensor) -> QuantKVCache:
        """The contiguous cache ``[batch, kv_heads, max_pages * page_size]`` the table describes
        (a copy; columns whose id is outside the pool read page 0): the reference's view."""
        num_pages = self.k.shape[0]
        ids = block_table.long().clamp(0, max(num_pages - 1, 0)).to(self.k.device)

        def rows(x: torch.Tensor) -> torch.Tensor:      # [P, H, ps, ...] -> [B, H, n * ps, ...]
            y = x[ids].transpose(1, 2)                  # [B, H, n, ps, ...]
            return y.reshape(y.shape[0], y.shape[1], -1, *y.shape[4:])

        return QuantKVCache(rows(self.k), rows(self.v), rows(self.k_scales), rows(self.k_zeros),
                            rows(self.v_scales), rows(self.v_zeros), dtype=self.dtype,
                            head_dim=self.head_dim, group_size=self.group_size)


def check_block_table(block_table, batch: Optional[int], device: torch.device,
                      what: str) -> int:
    """The table's max_pages, after checking it is an integer tensor ``[batch, max_pages]``
    (any batch when None) on ``device`` (ArgumentError)."""
    if not isinstance(block_table, torch.Tensor) or block_table.dim() != 2 \
            or batch not in (None, block_table.shape[0]) \
            or block_table.dtype.is_floating_point or block_table.dtype == torch.bool:
        got = f"{getattr(block_table, 'dtype', type(block_table).__name__)} " \
              f"{list(getattr(block_table, 'shape', []))}"
        raise ArgumentError(f"{what}: block_table must be an integer tensor [batch"
                            f"{'' if batch is None else '=' + str(batch)}, max_pages] of page "
                            f"ids, got {got}")
    if block_table.device != device:
        raise ArgumentError(f"{what}: block_table is on {block_table.device}, the cache on {device}")
    return int(block_table.shape[1])


def page_ids(block_table: torch.Tensor, pages: torch.Tensor, used: torch.Tensor,
             num_pages: int, page_size: int, what: str) -> torch.Tensor:
    """``block_table[b, pages[b, j]]`` (int64, same shape as ``pages``, >= 0), after checking on
    the host that every entry where ``used`` is true exists (the table has that column) and
    names a page of the pool; BlockTableError names the first that does not."""
    max_pages = block_table.shape[1]
    short = used & (pages >= max_pages)
    if short.any():
        b, j = (int(x) for x in short.nonzero()[0])
        raise BlockTableError(f"{what}: the block table is too short: sequence {b} needs page "
                              f"{int(pages[b, j])} (tokens up to {(int(pages[b, j]) + 1) * page_size} "
                              f"with page_size={page_size}), the table has {max_pages} columns")
    ids = block_table.long().gather(1, pages.clamp(max=max(max_pages - 1, 0))) \
        if max_pages else torch.zeros_like(pages)
    bad = used & ((ids < 0) | (ids >= num_pages))
    if bad.any():
        b, j = (int(x) for x in bad.nonzero()[0])
        raise BlockTableError(f"{what}: block_table[{b}, {int(pages[b, j])}] = {int(ids[b, j])} is "
                              f"not a page of the pool (0..{num_pages - 1})")
    return ids.clamp(0, max(num_pages - 1, 0))


def quantize_kv(k: torch.Tensor, v: torch.Tensor, cache: QuantKVCache | PagedQuantKVCache,
                positions: torch.Tensor, block_table: Optional[torch.Tensor] = None) -> None:
    """Quantize new tokens ``k``/``v [batch, kv_heads, T, head_dim]`` and write them into
    ``cache`` in place at token ``positions[b] + t`` (``positions`` int ``[batch]``: each
    sequence's first new position, or ``[batch, T]``: every token's). A ``PagedQuantKVCache``
    takes the ``block_table`` that maps each sequence's tokens to pages, as given (allocating
    pages is the caller's job). Torch ops on the cache's device; positions out of the cache
    raise ArgumentError, a table too short for a position or naming a page outside the pool
    BlockTableError, before anything is written."""
    paged = isinstance(cache, PagedQuantKVCache)
    if paged:
        num_pages, heads, page_size, d = cache.shape
        max_pages = check_block_table(block_table, None, cache.k.device, "quantize_kv")
        batch = block_table.shape[0]
        max_seq = max_pages * page_size
    elif isinstance(cache, QuantKVCache):
        if block_table is not None:
            raise ArgumentError("quantize_kv: a block_table goes with a PagedQuantKVCache")
        batch, heads, max_seq, d = cache.shape
    else:
        raise ArgumentError(f"quantize_kv: cache must be a QuantKVCache or PagedQuantKVCache, "
                            f"got {type(cache).__name__}")
    for name, x in (("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[:2]) != (
                batch, heads) or x.shape[3] != d or not x.is_floating_point():
            raise ArgumentError(f"quantize_kv: {name} must be a float tensor [{batch}, {heads}, "
                                f"T, {d}], got {getattr(x, 'shape', type(x).__name__)}")
    if k.shape != v.shape:
        raise ArgumentError(f"quantize_kv: k {list(k.shape)} and v {list(v.shape)} differ")
    n_new = k.shape[2]
    pos = torch.as_tensor(positions, device=cache.k.device).long()
    if pos.dim() == 1:
        pos = pos[:, None] + torch.arange(n_new, device=pos.device)
    if tuple(pos.shape) != (batch, n_new):
        raise ArgumentError(f"quantize_kv: positions must be [{batch}] or [{batch}, {n_new}], "
                            f"got {list(pos.shape)}")
    low = int(pos.min()) if pos.numel() else 0
    high = int(pos.max()) if pos.numel() else -1
    if low < 0 or (not paged and high >= max_seq):
        raise ArgumentError(f"quantize_kv: positions must lie in [0, {max_seq}), got "
                            f"{low}..{high}")
    hi = torch.arange(heads, device=pos.device)[None, :, None]
    if paged:
        ids = page_ids(block_table, pos // page_size, torch.ones_like(pos, dtype=torch.bool),
                       num_pages, page_size, "quantize_kv")
        at = (ids[:, None, :], hi, (pos % page_size)[:, None, :])
    else:
        at = (torch.arange(batch, device=pos.device)[:, None, None], hi, pos[:, None, :])
    for x, data, scales, zeros in ((k, cache.k, cache.k_scales, cache.k_zeros),
                                   (v, cache.v, cache.v_scales, cache.v_zeros)):
        packed, s, z = quantize_rows(x.to(data.device), cache.dtype, scales.dtype,
                                     cache.group_size)
        data[at] = packed
        scales[at] = s
        zeros[at] = z


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        seq_lens: torch.Tensor, softmax_scale: Optional[float] = None
                        ) -> torch.Tensor:
    """``softmax(q K^T * scale) V`` in float32 over each sequence's first ``seq_lens[b]`` tokens,
    q ``[batch, heads, D]``, K/V ``[batch, kv_heads, S, D]`` (query head h reads KV head
    ``h // (heads / kv_heads)``); 0 for an empty sequence."""
    heads, d = q.shape[1:]
    group = heads // k.shape[1]
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    kk = k.float().repeat_interleave(group, dim=1)
    vv = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("bhd,bhsd->bhs", q.float(), kk) * scale
    valid = torch.arange(k.shape[2], device=q.device)[None, :] < seq_lens.to(q.device)[:, None]
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    p = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhs,bhsd->bhd", p, vv)
