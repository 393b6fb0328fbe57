"""Flash attention (prefill) in the Tilus DSL: ``out = softmax(Q K^T * scale + mask) V`` per
(batch, query head), K and V shared by ``group`` query heads (GQA).

Grid ``[cdiv(seq_q, block_q), batch * heads]``: block (x, bh) takes rows ``x * block_q ..`` of
query head bh (``[block_q, head_dim]`` in registers, the mma's A fragments) and walks the
``block_kv``-token tiles of KV head ``bh // group`` (``bh = b * heads + h`` and ``heads = kv_heads
* group``, so ``bh // group = b * kv_heads + h // group``). K and V tiles are copied to shared
memory by cp.async ``stages - 1`` tiles ahead of the tile being consumed (as
``examples/matmul_pipelined.py``), into rows padded by 16 bytes (``smem_layout``: ldmatrix
without bank conflicts, at plain addresses). Per tile, in fp32: ``S = Q K^T * scale`` (mma),
masked to -inf at keys past ``seq_kv`` and, when causal, at key j > query i + seq_kv - seq_q
(bottom-right aligned, as flash-attn: the last query sees every key; the mask is built only on
tiles that reach past the keys every row of the block sees); then the online softmax: running
row max ``m`` and sum ``l``, ``acc = acc * e^(m_old - m) + P V`` (P rounded to q's dtype for
the mma). The causal loop stops at the last tile a row of the block can see. A row with no
visible key (causal with seq_q > seq_kv) gives 0. Output ``acc / l`` in q's dtype.

Layouts: the scores and the accumulator are mma C fragments with the warps along the rows
(``block_q = 16 * warps``: each warp owns 16 query rows, so the row max and sum stay inside a
warp), and the C fragments of S are exactly the A fragments P needs in ``P V``: P never moves.

``PrefillAttentionQuantKV`` reads K and V as codes of an 8-bit cache type (``int8``, ``uint8``,
``float8_e4m3``; ``tilus.ops.kv_cache``'s rows and per-(token, head) scales and zeros): the codes
go to shared memory as bytes; each thread dequantizes its share of a tile in registers,
``decode(code) * 2^-e * scale + zero`` in q's dtype (one rounding), into a shared tile that the
mma operands are then loaded from.
"""

import tilus
from tilus import dtypes
from tilus.errors import TilusError
from tilus.ir.layout import local, row_major, spatial
from tilus.ops.quantize import value_exponent

NEG_INF = float("-inf")
ACT_DTYPES = ("float16", "bfloat16")
QUANT_KV_DTYPES = ("int8", "uint8", "float8_e4m3")
MAX_HEAD_DIM = 128


def _check(name: str, head_dim: int, group: int, act: str, block_q: int, block_kv: int,
           stages: int, warps: int) -> dtypes.DataType:
    """``act`` as a DataType once the compile-time values are ones the kernel runs, else
    TilusError naming the value and what it must be."""
    t = dtypes.get(act)
    if t.name not in ACT_DTYPES:
        raise TilusError(f"{name}: q, k, v and the output must be float16 or bfloat16, got "
                         f"{t.name}")
    if head_dim % 16 or not 16 <= head_dim <= MAX_HEAD_DIM:
        raise TilusError(f"{name}: head_dim={head_dim} must be a multiple of 16 in 16.."
                         f"{MAX_HEAD_DIM}")
    if block_q != 16 * warps or block_kv % 16 or group < 1 or stages < 2:
        raise TilusError(f"{name}: block_q={block_q} must be 16 * warps={warps}, block_kv="
                         f"{block_kv} a multiple of 16, group={group} >= 1, stages={stages} >= 2")
    return t


class PrefillAttention(tilus.Script):
    """The fp16/bf16 kernel (see the module docstring): ``act`` the dtype of q, k, v and out,
    ``group`` query heads per KV head, ``causal`` the bottom-right causal mask."""

    def __init__(self, head_dim: int, group: int, softmax_scale: float, causal: bool,
                 act: str = "float16", block_q: int = 64, block_kv: int = 64, stages: int = 2,
                 warps: int = 4):
        super().__init__()
        self.act = _check(type(self).__name__, head_dim, group, act, block_q, block_kv,
                          stages, warps)
        self.head_dim, self.group, self.causal = head_dim, group, bool(causal)
        self.softmax_scale = float(softmax_scale)
        self.fold_scale = self.softmax_scale > 0.0   # scale applied inside the exp's argument
        self.block_q, self.block_kv, self.stages, self.warps = block_q, block_kv, stages, warps
        self.kv_type, self.row, self.code_type = self.act, head_dim, None

    def c_layout(self, n: int):
        """mma C fragments of a [block_q, n] fp32 tile, warp w holding rows 16w .. 16w + 15."""
        frag = local(2, 1) * spatial(8, 4) * local(1, 2)
        return local(1, n // 8) * spatial(self.warps, 1) * frag

    def smem_layout(self, shape):
        """Row-major shared ``shape`` with each 16-bit row padded by 16 bytes: a row is then an
        odd number of 16-byte chunks long, so ldmatrix's 8 rows of 16 bytes fall in 8 different
        bank groups for every head_dim, with plain (additive) addresses; code bytes (read as
        whole-row vectors) are not padded."""
        return row_major(*shape, pad=8 if self.kv_type.nbits == 16 else 0)

    def __call__(self, bh_count: tilus.int32, seq_q: tilus.int32, seq_kv: tilus.int32,
                 q: tilus.void_p, k: tilus.void_p, v: tilus.void_p, out: tilus.void_p):
        self.attend(bh_count, seq_q, seq_kv, q, k, v, out, None, None, None, None)

    def attend(self, bh_count, seq_q, seq_kv, q, k, v, out, k_scales, k_zeros, v_scales,
               v_zeros):
        """The kernel body; the scales and zeros are None for fp16/bf16 K and V."""
        d, bq, bkv, stages, act = self.head_dim, self.block_q, self.block_kv, self.stages, self.act
        row = self.row
        self.attrs.blocks = [tilus.cdiv(seq_q, bq), bh_count]
        self.attrs.warps = self.warps
        q0 = self.blockIdx.x * bq
        bh = self.blockIdx.y
        kvh = bh // self.group
        kv_rows = bh_count // self.group
        gq = self.global_view(q, dtype=act, shape=[bh_count, seq_q, d])
        go = self.global_view(out, dtype=act, shape=[bh_count, seq_q, d])
        gk = self.global_view(k, dtype=self.kv_type, shape=[kv_rows, seq_kv, row])
        gv = self.global_view(v, dtype=self.kv_type, shape=[kv_rows, seq_kv, row])

        tiles = tilus.cdiv(seq_kv, bkv)
        if self.causal:
            tiles = min(tiles, tilus.cdiv(max(q0 + bq + seq_kv - seq_q, 0), bkv))
        sk = self.shared_tensor(dtype=self.kv_type, shape=[stages, bkv, row])
        sv = self.shared_tensor(dtype=self.kv_type, shape=[stages, bkv, row])
        self.annotate_layout(sk, self.smem_layout([stages, bkv, row]))
        self.annotate_layout(sv, self.smem_layout([stages, bkv, row]))
        for s in range(stages - 1):
            self.copy_async(src=gk, dst=sk[s], offsets=[kvh, s * bkv, 0])
            self.copy_async(src=gv, dst=sv[s], offsets=[kvh, s * bkv, 0])
            self.copy_async_commit_group()

        dk = dv = None
        if self.code_type is not None:
            dk = self.shared_tensor(dtype=act, shape=[bkv, d])
            dv = self.shared_tensor(dtype=act, shape=[bkv, d])
            self.annotate_layout(dk, row_major(bkv, d, pad=8))
            self.annotate_layout(dv, row_major(bkv, d, pad=8))
        tq = self.load_global(gq, offsets=[bh, q0, 0], shape=[bq, d])
        acc = self.register_tensor(dtype=tilus.float32, shape=[bq, d], init=0.0)
        self.annotate_layout(acc, self.c_layout(d))
        m = self.register_tensor(dtype=tilus.float32, shape=[bq, 1], init=NEG_INF)
        l = self.register_tensor(dtype=tilus.float32, shape=[bq, 1], init=0.0)
        shift = seq_kv - seq_q
        edge = min(seq_kv, q0 + shift + 1) if self.causal else seq_kv   # keys every row sees
        for t in self.range(tiles):
            self.copy_async_wait_group(stages - 2)
            self.sync()
            ahead = t + stages - 1
            if ahead < tiles:
                self.copy_async(src=gk, dst=sk[ahead % stages], offsets=[kvh, ahead * bkv, 0])
                self.copy_async(src=gv, dst=sv[ahead % stages], offsets=[kvh, ahead * bkv, 0])
            self.copy_async_commit_group()
            stage = t % stages
            k0 = t * bkv
            kt = self.kv_values(sk[stage], dk, k_scales, k_zeros, kvh, k0)
            scores = self.register_tensor(dtype=tilus.float32, shape=[bq, bkv], init=0.0)
            self.annotate_layout(scores, self.c_layout(bkv))
            self.dot(tq, self.transpose(kt), scores, out=scores)
            if not self.fold_scale:
                self.mul(scores, self.softmax_scale, out=scores)
            if k0 + bkv > edge:
                if self.causal:
                    visible = self.register_tensor(
                        dtype=tilus.boolean, shape=[bq, bkv],
                        init=lambda i, j: (k0 + j < seq_kv) & (k0 + j <= q0 + i + shift))
                else:
                    visible = self.register_tensor(dtype=tilus.boolean, shape=[bq, bkv],
                                                   init=lambda i, j: k0 + j < seq_kv)
                scores = self.where(visible, scores, NEG_INF)
            if self.fold_scale:      # max(S * scale) = max(S) * scale: one FFMA per score
                m_new = self.maximum(m, self.max(scores, dim=1, keepdim=True) * self.softmax_scale)
                m_safe = self.where(m_new == NEG_INF, 0.0, m_new)
                p = self.exp(self.fma(scores, self.softmax_scale, -m_safe))
            else:
                m_new = self.maximum(m, self.max(scores, dim=1, keepdim=True))
                m_safe = self.where(m_new == NEG_INF, 0.0, m_new)
                p = self.exp(scores - m_safe)
            alpha = self.exp(m - m_safe)
            l = l * alpha + self.sum(p, dim=1, keepdim=True)
            acc = acc * alpha
            vt = self.kv_values(sv[stage], dv, v_scales, v_zeros, kvh, k0)
            self.dot(self.cast(p, dtype=act), vt, acc, out=acc)
            m = m_new
        self.copy_async_wait_group(0)
        self.free_shared(sk)
        self.free_shared(sv)
        if self.code_type is not None:
            self.free_shared(dk)
            self.free_shared(dv)
        inv = 1.0 / self.where(l > 0.0, l, 1.0)        # one division per row, not per element
        self.store_global(go, self.cast(acc * inv, dtype=act), offsets=[bh, q0, 0])

    def kv_values(self, s, dst, scales, zeros, kvh, k0):
        """The [block_kv, head_dim] tile of K or V in ``act`` from its shared stage ``s``."""
        return self.load_shared(s)


class PrefillAttentionQuantKV(PrefillAttention):
    """The kernel over K and V stored as 8-bit codes (``kv_dtype``: int8, uint8, float8_e4m3)
    with one scale and zero per (token, KV head) in ``act``: ``k``/``v`` ``uint8 [batch *
    kv_heads, seq_kv, head_dim]``, scales and zeros ``[batch * kv_heads, seq_kv]``."""

    def __init__(self, kv_dtype: str, head_dim: int, group: int, softmax_scale: float,
                 causal: bool, act: str = "float16", block_q: int = 64, block_kv: int = 64,
                 stages: int = 2, warps: int = 4):
        super().__init__(head_dim, group, softmax_scale, causal, act=act, block_q=block_q,
                         block_kv=block_kv, stages=stages, warps=warps)
        t = dtypes.get(kv_dtype)
        if t.name not in QUANT_KV_DTYPES:
            raise TilusError(f"{type(self).__name__}: kv_dtype must be one of "
                             f"{', '.join(QUANT_KV_DTYPES)}, got {t.name}")
        self.code_type = t
        self.kv_type, self.row = dtypes.get("uint8"), head_dim * t.nbits // 8

    def __call__(self, bh_count: tilus.int32, seq_q: tilus.int32, seq_kv: tilus.int32,
                 q: tilus.void_p, k: tilus.void_p, v: tilus.void_p, out: tilus.void_p,
                 k_scales: tilus.void_p, k_zeros: tilus.void_p, v_scales: tilus.void_p,
                 v_zeros: tilus.void_p):
        shape = [bh_count // self.group, seq_kv, 1]
        self.attend(bh_count, seq_q, seq_kv, q, k, v, out,
                    self.global_view(k_scales, dtype=self.act, shape=shape),
                    self.global_view(k_zeros, dtype=self.act, shape=shape),
                    self.global_view(v_scales, dtype=self.act, shape=shape),
                    self.global_view(v_zeros, dtype=self.act, shape=shape))

    def kv_values(self, s, dst, scales, zeros, kvh, k0):
        """``decode(code) * 2^-e * scale + zero`` of the codes in ``s``, rounded once to act:
        each thread dequantizes its share of the tile (vector loads of whole rows' bytes) into
        the shared tile ``dst``, which the mma operands are then loaded from (every warp reads
        all of K and V: dequantizing in the operands' layout would repeat the work per warp)."""
        t, bkv = self.code_type, self.block_kv
        codes = self.view(self.load_shared(s), dtype=t)
        e = -value_exponent(t) if t.is_float else 0
        values = self.cast(codes, dtype=self.act, exponent=e)
        scale = self.load_global(scales, offsets=[kvh, k0, 0], shape=[bkv, 1])
        zero = self.load_global(zeros, offsets=[kvh, k0, 0], shape=[bkv, 1])
        self.store_shared(dst, self.fma(values, scale, zero))
        return self.load_shared(dst)
