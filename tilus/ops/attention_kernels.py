"""Decode attention over a quantized KV cache in the Tilus DSL (flash-decoding: split + combine).

One query token per sequence: ``out[b, h] = softmax(q[b, h] . K[b, h // G]^T * scale) V[b, h // G]``
over the first ``seq_lens[b]`` tokens, with ``G = heads / kv_heads`` query heads per KV head (GQA).
K and V are stored as codes of a 1-8-bit type (``tilus.ops.kv_cache``): row ``(b, kh, s)`` is
the bit stream of ``head_dim`` codes, and token s of head kh dequantizes as
``decode(code) * 2^-e * scale[b, kh, s, j] + zero[b, kh, s, j]`` (in q's dtype, one rounding;
``j`` the element's group of ``group_size`` along head_dim, one group per row by default; ``e`` is 0 for
integer types and ``value_exponent`` for float types, folded into the packed cast).

``DecodeAttentionSplit`` (grid ``[batch * kv_heads, splits]``): block (bh, sp) takes the
``G`` query heads of KV head bh as one ``[G_pad, head_dim]`` tile (G_pad = G rounded up to 16, the
mma's rows; rows past G read 0 and are never stored) and walks its split's ``block_s``-token tiles
of the sequence with an online softmax: per tile ``S = Q K^T * scale`` (fp32), masked to -inf at
positions >= seq_lens[b], then the running max m, sum l and ``acc = acc * e^(m_old - m) + P V``.
It writes its partial (acc, m, l) in fp32. q, the scales and zeros, the dequantized tiles, P
and the output are in ``act`` (float16 or bfloat16; those pointers are ``void_p`` that the
kernel views in ``act``, so one class serves both). ``DecodeAttentionCombine`` (grid
``[batch * kv_heads]``) rescales the splits' partials to their common max and writes ``acc / l`` in q's dtype (0 for an
empty sequence).

Layouts: a tile's packed K/V rows are loaded with contiguous runs per thread (``raw_layout``:
vector loads), and the view to codes moves the bits to the mma fragments through shared memory;
the scores are annotated as mma C fragments with the warps along the tokens (``scores_layout``),
so each warp computes a quarter of ``Q K^T`` and of the softmax (the row max and sum cross warps
through shared memory) instead of all four computing all of it, and ``P`` reaches the ``P V``
mma's A operand (every warp needs all of P) through a layout conversion (``transpose`` twice:
the backend converts at a transpose).

``DecodeAttentionSplit``'s blocks all cover ``n_tokens`` (the batch's longest sequence): a
tile's positions come from a ``positions`` buffer (``arange``) compared with ``seq_lens[b]``.
``PagedDecodeAttentionSplit`` (the same tile code over a paged pool) reads its sequence's length
and each tile's page id with ``load_scalar`` and ends at its own last tile. In both, V's scales
and zeros of masked tokens are forced to 0, so whatever bytes lie past a sequence's end never
reach the output.
"""

import tilus
from tilus import dtypes
from tilus.errors import TilusError
from tilus.ir.layout import local, spatial
from tilus.ops.quantize import value_exponent

MMA_M = 16
NEG_INF = float("-inf")


ACT_DTYPES = ("float16", "bfloat16")


def _act(act) -> dtypes.DataType:
    t = dtypes.get(act)
    if t.name not in ACT_DTYPES:
        raise TilusError(f"decode attention: q, scales and output must be float16 or bfloat16, "
                         f"got {t.name}")
    return t


class DecodeAttentionSplit(tilus.Script):
    """The split kernel (see the module docstring); ``k_dtype``/``v_dtype`` are the cache types,
    ``act`` the dtype of q and of the scales and zeros (float16 or bfloat16), ``block_s`` the
    tokens per tile (a multiple of 16), ``softmax_scale`` the scores' factor, ``group_size`` the
    head_dim elements per scale (0: the whole row)."""

    def __init__(self, k_dtype, v_dtype, head_dim: int, group: int, softmax_scale: float,
                 block_s: int = 32, warps: int = 4, act: str = "float16",
                 group_size: int = 0):
        super().__init__()
        self.act = _act(act)
        self.group_size = group_size or head_dim
        if head_dim % self.group_size or self.group_size % 8:
            raise TilusError(f"DecodeAttentionSplit: group_size={group_size} must divide "
                             f"head_dim={head_dim} and be a multiple of 8")
        self.groups = head_dim // self.group_size
        self.k_dtype, self.v_dtype = dtypes.get(k_dtype), dtypes.get(v_dtype)
        for t in (self.k_dtype, self.v_dtype):
            if t.nbits > 8 or head_dim * t.nbits % 8:
                raise TilusError(f"DecodeAttentionSplit: a cache row of head_dim={head_dim} "
                                 f"{t.name} codes must fill whole bytes (1-8-bit types)")
        if head_dim % 16 or block_s % 16 or group < 1:
            raise TilusError(f"DecodeAttentionSplit: head_dim={head_dim} and block_s={block_s} "
                             f"must be multiples of 16 and group={group} >= 1")
        self.head_dim, self.group, self.block_s, self.warps = head_dim, group, block_s, warps
        self.group_pad = MMA_M * -(-group // MMA_M)
        self.softmax_scale = float(softmax_scale)

    def scores_layout(self):
        """mma C fragments of the [G_pad, block_s] scores, the warps along the tokens."""
        w = self.warps
        frag = local(2, 1) * spatial(8, 4) * local(1, 2)
        return local(self.group_pad // 16, self.block_s // (8 * w)) * spatial(1, w) * frag

    def raw_layout(self, t):
        """The layout of a tile's packed rows: each row split evenly over ``threads / block_s``
        threads, each holding a contiguous run (vector loads; the view to codes then moves the
        packed bits to the mma fragments through shared memory); None where that does not
        divide (the codes' layout is then inferred back from the mma)."""
        row = self.head_dim * t.nbits // 8
        threads = self.warps * 32
        if threads % self.block_s or row % (threads // self.block_s):
            return None
        per_row = threads // self.block_s
        return spatial(self.block_s, per_row) * local(1, row // per_row)

    def __call__(self, kv_heads: tilus.int32, max_seq: tilus.int32, n_tokens: tilus.int32,
                 splits: tilus.int32, batch: tilus.int32, q: tilus.void_p, k: tilus.void_p,
                 v: tilus.void_p, k_scales: tilus.void_p, k_zeros: tilus.void_p,
                 v_scales: tilus.void_p, v_zeros: tilus.void_p, seq_lens: ~tilus.int32,
                 positions: ~tilus.int32, part_o: ~tilus.float32, part_m: ~tilus.float32,
                 part_l: ~tilus.float32):
        d, g, gp, bs, act = self.head_dim, self.group, self.group_pad, self.block_s, self.act
        self.attrs.blocks = [batch * kv_heads, splits]
        self.attrs.warps = self.warps
        bh = self.blockIdx.x
        sp = self.blockIdx.y
        b = bh // kv_heads
        gq = self.global_view(q, dtype=act, shape=[batch * kv_heads, g, d])
        gk = self.global_view(k, dtype=tilus.uint8,
                              shape=[batch * kv_heads, max_seq, d * self.k_dtype.nbits // 8])
        gv = self.global_view(v, dtype=tilus.uint8,
                              shape=[batch * kv_heads, max_seq, d * self.v_dtype.nbits // 8])
        params = [batch * kv_heads, max_seq, self.groups]
        gks = self.global_view(k_scales, dtype=act, shape=params)
        gkz = self.global_view(k_zeros, dtype=act, shape=params)
        gvs = self.global_view(v_scales, dtype=act, shape=params)
        gvz = self.global_view(v_zeros, dtype=act, shape=params)
        glen = self.global_view(seq_lens, dtype=tilus.int32, shape=[batch])
        gpos = self.global_view(positions, dtype=tilus.int32, shape=[n_tokens])
        go = self.global_view(part_o, dtype=tilus.float32, shape=[batch * kv_heads, splits, g, d])
        gm = self.global_view(part_m, dtype=tilus.float32, shape=[batch * kv_heads, splits, g])
        gl = self.global_view(part_l, dtype=tilus.float32, shape=[batch * kv_heads, splits, g])

        tq = self.load_global(gq, offsets=[bh, 0, 0], shape=[gp, d])
        length = self.load_global(glen, offsets=[b], shape=[1])
        acc, m, l = self.initial_state()
        tiles = tilus.cdiv(n_tokens, bs)
        per_split = tilus.cdiv(tiles, splits)
        first = sp * per_split
        last = min(first + per_split, tiles)
        for t in self.range(first, last):
            s0 = t * bs
            pos = self.load_global(gpos, offsets=[s0], shape=[bs], other=2147483647)
            acc, m, l = self.attend_tile(tq, (gk, gks, gkz), (gv, gvs, gvz), bh, s0, pos < length,
                                         acc, m, l)
        self.store_partials((go, gm, gl), bh, sp, acc, m, l)

    def initial_state(self):
        """(acc, m, l) before the first tile: 0, -inf, 0."""
        gp = self.group_pad
        acc = self.register_tensor(dtype=tilus.float32, shape=[gp, self.head_dim], init=0.0)
        m = self.register_tensor(dtype=tilus.float32, shape=[gp, 1], init=NEG_INF)
        l = self.register_tensor(dtype=tilus.float32, shape=[gp, 1], init=0.0)
        return acc, m, l

    def attend_tile(self, tq, kviews, vviews, row, s0, valid, acc, m, l):
        """One ``block_s``-token tile of the online softmax: K and V rows ``s0..`` of ``row`` of
        the (codes, scales, zeros) views ``kviews``/``vviews``, ``valid`` ([block_s] bool) the
        tokens attended; returns the updated (acc, m, l)."""
        gp, bs, act = self.group_pad, self.block_s, self.act
        kt = self.dequantized(*kviews, self.k_dtype, row, s0, None)
        scores = self.register_tensor(dtype=tilus.float32, shape=[gp, bs], init=0.0)
        if self.block_s % (8 * self.warps) == 0:
            self.annotate_layout(scores, self.scores_layout())
        self.dot(tq, self.transpose(kt), scores, out=scores)
        scores = self.where(valid, scores * self.softmax_scale, NEG_INF)
        m_new = self.maximum(m, self.max(scores, dim=1, keepdim=True))
        m_safe = self.where(m_new == NEG_INF, 0.0, m_new)
        p = self.exp(scores - m_safe)
        alpha = self.exp(m - m_safe)
        l_new = l * alpha + self.sum(p, dim=1, keepdim=True)
        vt = self.dequantized(*vviews, self.v_dtype, row, s0, self.unsqueeze(valid, dim=1))
        acc_new = acc * alpha
        p16 = self.transpose(self.transpose(self.cast(p, dtype=act)))
        self.dot(p16, vt, acc_new, out=acc_new)
        return acc_new, m_new, l_new

    def store_partials(self, views, bh, sp, acc, m, l):
        """Writes this block's partial (acc, m, l) to the (part_o, part_m, part_l) views."""
        go, gm, gl = views
        self.store_global(go, acc, offsets=[bh, sp, 0, 0])
        self.store_global(gm, self.squeeze(m, dim=1), offsets=[bh, sp, 0])
        self.store_global(gl, self.squeeze(l, dim=1), offsets=[bh, sp, 0])

    def dequantized(self, gc, gs, gz, t, bh, s0, valid):
        """The [block_s, head_dim] tile (act dtype) of tokens s0.. of one head: ``v * scale + zero``
        (per group of ``group_size`` elements: a [block_s, groups, group_size] view); with
        ``valid`` ([block_s, 1] bool), the scale and zero of invalid tokens are 0."""
        bs, d = self.block_s, self.head_dim
        raw = self.load_global(gc, offsets=[bh, s0, 0], shape=[bs, d * t.nbits // 8])
        if self.raw_layout(t) is not None:
            self.annotate_layout(raw, self.raw_layout(t))
        codes = self.view(raw, dtype=t, shape=[bs, d])
        scale = self.load_global(gs, offsets=[bh, s0, 0], shape=[bs, self.groups])
        zero = self.load_global(gz, offsets=[bh, s0, 0], shape=[bs, self.groups])
        if valid is not None:
            scale = self.where(valid, scale, 0.0)
            zero = self.where(valid, zero, 0.0)
        e = -value_exponent(t) if t.is_float else 0
        values = self.cast(codes, dtype=self.act, exponent=e)
        if self.groups == 1:
            return self.fma(values, scale, zero)
        grouped = self.view(values, shape=[bs, self.groups, self.group_size])
        out = self.fma(grouped, self.unsqueeze(scale, dim=2), self.unsqueeze(zero, dim=2))
        return self.view(out, shape=[bs, d])


class PagedDecodeAttentionSplit(DecodeAttentionSplit):
    """The split kernel over a paged cache (``tilus.ops.kv_cache.PagedQuantKVCache``): K/V codes
    ``[num_pages, kv_heads, page_size, row]`` (scales and zeros ``[num_pages, kv_heads,
    page_size, groups]``), sequence b's token s in page ``block_table[b, s // page_size]`` at
    slot ``s % page_size``. ``page_size`` is a multiple of ``block_s``, so a tile lies in one
    page: per tile the block reads its page id with one scalar load (``load_scalar``) and the
    tile's rows from that page. The block also reads its sequence's length as a scalar and
    stops at its last tile (the splits still partition the batch's longest sequence)."""

    def __init__(self, k_dtype, v_dtype, head_dim: int, group: int, softmax_scale: float,
                 page_size: int, block_s: int = 32, warps: int = 4, act: str = "float16",
                 group_size: int = 0):
        super().__init__(k_dtype, v_dtype, head_dim, group, softmax_scale, block_s=block_s,
                         warps=warps, act=act, group_size=group_size)
        if page_size < 1 or page_size % block_s:
            raise TilusError(f"PagedDecodeAttentionSplit: page_size={page_size} must be a "
                             f"multiple of block_s={block_s}")
        self.page_size = page_size

    def __call__(self, kv_heads: tilus.int32, num_pages: tilus.int32, max_pages: tilus.int32,
                 n_tokens: tilus.int32, splits: tilus.int32, batch: tilus.int32,
                 q: tilus.void_p, k: tilus.void_p, v: tilus.void_p, k_scales: tilus.void_p,
                 k_zeros: tilus.void_p, v_scales: tilus.void_p, v_zeros: tilus.void_p,
                 block_table: ~tilus.int32, seq_lens: ~tilus.int32, part_o: ~tilus.float32,
                 part_m: ~tilus.float32, part_l: ~tilus.float32):
        d, g, gp, bs, ps, act = (self.head_dim, self.group, self.group_pad, self.block_s,
                                 self.page_size, self.act)
        self.attrs.blocks = [batch * kv_heads, splits]
        self.attrs.warps = self.warps
        bh = self.blockIdx.x
        sp = self.blockIdx.y
        b = bh // kv_heads
        kh = bh % kv_heads
        rows = num_pages * kv_heads
        gq = self.global_view(q, dtype=act, shape=[batch * kv_heads, g, d])
        gk = self.global_view(k, dtype=tilus.uint8, shape=[rows, ps, d * self.k_dtype.nbits // 8])
        gv = self.global_view(v, dtype=tilus.uint8, shape=[rows, ps, d * self.v_dtype.nbits // 8])
        params = [rows, ps, self.groups]
        gks = self.global_view(k_scales, dtype=act, shape=params)
        gkz = self.global_view(k_zeros, dtype=act, shape=params)
        gvs = self.global_view(v_scales, dtype=act, shape=params)
        gvz = self.global_view(v_zeros, dtype=act, shape=params)
        gtable = self.global_view(block_table, dtype=tilus.int32, shape=[batch, max_pages])
        glen = self.global_view(seq_lens, dtype=tilus.int32, shape=[batch])
        go = self.global_view(part_o, dtype=tilus.float32, shape=[batch * kv_heads, splits, g, d])
        gm = self.global_view(part_m, dtype=tilus.float32, shape=[batch * kv_heads, splits, g])
        gl = self.global_view(part_l, dtype=tilus.float32, shape=[batch * kv_heads, splits, g])

        tq = self.load_global(gq, offsets=[bh, 0, 0], shape=[gp, d])
        length = self.load_scalar(glen, offsets=[b])
        acc, m, l = self.initial_state()
        per_split = tilus.cdiv(tilus.cdiv(n_tokens, bs), splits)
        first = sp * per_split
        last = min(first + per_split, tilus.cdiv(length, bs))
        for t in self.range(first, last):
            s0 = t * bs
            page = self.load_scalar(gtable, offsets=[b, s0 // ps])
            pos = self.register_tensor(dtype=tilus.int32, shape=[bs], init=lambda i: s0 + i)
            acc, m, l = self.attend_tile(tq, (gk, gks, gkz), (gv, gvs, gvz), page * kv_heads + kh,
                                         s0 % ps, pos < length, acc, m, l)
        self.store_partials((go, gm, gl), bh, sp, acc, m, l)


class DecodeAttentionCombine(tilus.Script):
    """The combine kernel: ``out = sum_sp e^(m_sp - M) acc_sp / sum_sp e^(m_sp - M) l_sp`` with
    ``M = max_sp m_sp``, per query head, in ``act`` (0 where no token was attended)."""

    def __init__(self, head_dim: int, group: int, warps: int = 4, act: str = "float16"):
        super().__init__()
        self.act = _act(act)
        self.head_dim, self.group, self.warps = head_dim, group, warps
        self.group_pad = MMA_M * -(-group // MMA_M)

    def __call__(self, kv_heads: tilus.int32, splits: tilus.int32, batch: tilus.int32,
                 part_o: ~tilus.float32, part_m: ~tilus.float32, part_l: ~tilus.float32,
                 out: tilus.void_p):
        d, g, gp = self.head_dim, self.group, self.group_pad
        self.attrs.blocks = batch * kv_heads
        self.attrs.warps = self.warps
        bh = self.blockIdx.x
        go = self.global_view(part_o, dtype=tilus.float32, shape=[batch * kv_heads, splits, g, d])
        gm = self.global_view(part_m, dtype=tilus.float32, shape=[batch * kv_heads, splits, g])
        gl = self.global_view(part_l, dtype=tilus.float32, shape=[batch * kv_heads, splits, g])
        gout = self.global_view(out, dtype=self.act, shape=[batch * kv_heads, g, d])
        top = self.register_tensor(dtype=tilus.float32, shape=[gp], init=NEG_INF)
        for sp in self.range(splits):
            top = self.maximum(top, self.load_global(gm, offsets=[bh, sp, 0], shape=[gp],
                                                     other=NEG_INF))
        top = self.where(top == NEG_INF, 0.0, top)
        num = self.register_tensor(dtype=tilus.float32, shape=[gp, d], init=0.0)
        den = self.register_tensor(dtype=tilus.float32, shape=[gp], init=0.0)
        for sp in self.range(splits):
            w = self.exp(self.load_global(gm, offsets=[bh, sp, 0], shape=[gp], other=NEG_INF)
                         - top)
            den = den + w * self.load_global(gl, offsets=[bh, sp, 0], shape=[gp])
            num = num + self.unsqueeze(w, dim=1) * self.load_global(
                go, offsets=[bh, sp, 0, 0], shape=[gp, d])
        den = self.where(den > 0.0, den, 1.0)
        self.store_global(gout, self.cast(num / self.unsqueeze(den, dim=1), dtype=self.act),
                          offsets=[bh, 0, 0])
