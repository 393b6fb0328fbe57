"""tilus.ops.attention_decode: the DSL split + combine kernels run by the interpreter against a
torch reference computed from codes this file unpacks itself (python ints, two's complement),
at sizes that divide no tile; GQA, per-sequence lengths (0 included), empty splits; errors."""
import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tilus import dtypes
from tilus.errors import ArgumentError, DataTypeError
from tilus.ops import quantize_kv as tilus_quantize_kv
from tilus.ops.attention import attention_decode, attention_decode_cache, default_splits
from tilus.ops.kv_cache import QuantKVCache, attention_reference, kv_types, quantize_rows


def _unpack_row(row: bytes, nbits: int, count: int, signed: bool) -> list[int]:
    word = int.from_bytes(bytes(row), "little")
    mask = (1 << nbits) - 1
    codes = [(word >> (i * nbits)) & mask for i in range(count)]
    if signed:
        codes = [c - (1 << nbits) if c >> (nbits - 1) else c for c in codes]
    return codes


def _float_value(code: int, t) -> float:
    """floatK_eXmY code -> value (no inf/NaN codes reach here), from the bit fields;
    float8_e4m3's values agree with ml_dtypes (checked below)."""
    sign = -1.0 if code >> (t.nbits - 1) else 1.0
    e_bits, m_bits = t.exponent_bits, t.nbits - 1 - t.exponent_bits
    exp = (code >> m_bits) & ((1 << e_bits) - 1)
    man = code & ((1 << m_bits) - 1)
    bias = (1 << (e_bits - 1)) - 1
    if exp == 0:
        return sign * man * 2.0 ** (1 - bias - m_bits)
    return sign * (1 + man * 2.0 ** -m_bits) * 2.0 ** (exp - bias)


def _dequant(packed, scales, zeros, dtype, d):
    """``v * scale + zero`` rounded to the scales' dtype, from the bytes, independent of
    tilus.dtypes' codecs
    (floats: ``v = value * 2^-e``, 2^e the largest power of two <= the type's max)."""
    t = dtypes.get(dtype)
    rows = packed.reshape(-1, packed.shape[-1])
    unpacked = [_unpack_row(r.tolist(), t.nbits, d, t.is_signed and not t.is_float)
                for r in rows]
    if t.is_float:
        top = max(_float_value(c, t) for c in range(2 ** (t.nbits - 1)))
        shift = 2.0 ** -math.floor(math.log2(top))
        unpacked = [[_float_value(c, t) * shift for c in row] for row in unpacked]
    codes = torch.tensor(unpacked, dtype=torch.float64).reshape(*packed.shape[:-1], d)
    if scales.dim() == packed.dim():                  # groups along head_dim
        s = scales.double().repeat_interleave(d // scales.shape[-1], dim=-1)
        z = zeros.double().repeat_interleave(d // scales.shape[-1], dim=-1)
    else:
        s, z = scales.double()[..., None], zeros.double()[..., None]
    return (codes * s + z).to(scales.dtype).double()


def _reference(q, cache, seq_lens):
    k = _dequant(cache.k, cache.k_scales, cache.k_zeros, cache.dtype, cache.head_dim)
    v = _dequant(cache.v, cache.v_scales, cache.v_zeros, cache.dtype, cache.head_dim)
    b, h, d = q.shape
    group = h // k.shape[1]
    out = torch.zeros(b, h, d, dtype=torch.float64)
    for i in range(b):
        n = int(seq_lens[i])
        for j in range(h):
            if n == 0:
                continue
            kk, vv = k[i, j // group, :n], v[i, j // group, :n]
            p = torch.softmax(kk @ q[i, j].double() / d ** 0.5, dim=0)
            out[i, j] = p @ vv
    return out


def _filled_cache(batch, kv_heads, max_seq, d, dtype, seed=0, act=torch.float16,
                  group_size=None):
    """A cache whose every row holds quantized random values (rows past seq_lens included)."""
    g = torch.Generator().manual_seed(seed)
    cache = QuantKVCache.empty(batch, kv_heads, max_seq, d, dtype, scale_dtype=act,
                               group_size=group_size)
    for data, s, z in ((cache.k, cache.k_scales, cache.k_zeros),
                       (cache.v, cache.v_scales, cache.v_zeros)):
        packed, scales, zeros = quantize_rows(torch.randn(batch, kv_heads, max_seq, d,
                                                          generator=g), dtype, act,
                                              group_size)
        data.copy_(packed)
        s.copy_(scales)
        z.copy_(zeros)
    q = torch.randn(batch, kv_heads * 3, d, generator=g).to(act)
    return cache, q


@pytest.mark.parametrize("dtype", ["uint4", "int4", "uint8", "int8", "uint2", "uint3",
                                   "float8_e4m3", "float4_e2m1", "float6_e3m2"])
def test_interpreter_matches_reference(dtype):
    """batch 3, 2 KV heads x 3 query heads, 75 cached tokens (32-token tiles: the last is
    partial), lengths 75, 1 and 40, 3 splits (one of them empty for the short sequences)."""
    cache, q = _filled_cache(3, 2, 75, 32, dtype)
    seq_lens = torch.tensor([75, 1, 40])
    out = attention_decode_cache(q, cache, seq_lens, num_splits=3)
    assert out.dtype == torch.float16 and out.shape == q.shape
    ref = _reference(q, cache, seq_lens)
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=2e-3)
    torch.testing.assert_close(attention_decode_cache(q, cache, seq_lens, engine="reference")
                               .double(), ref, rtol=1e-2, atol=2e-3)


@pytest.mark.parametrize("dtype", ["uint4", "float8_e4m3", "int8"])
def test_bfloat16_queries_scales_and_output(dtype):
    """A bfloat16 model: bfloat16 scales and zeros, q and output; dequantized in bfloat16."""
    cache, q = _filled_cache(2, 2, 45, 32, dtype, seed=7, act=torch.bfloat16)
    assert cache.k_scales.dtype == torch.bfloat16
    seq_lens = torch.tensor([45, 12])
    out = attention_decode_cache(q, cache, seq_lens, num_splits=2)
    assert out.dtype == torch.bfloat16
    ref = _reference(q, cache, seq_lens)
    torch.testing.assert_close(out.double(), ref, rtol=2e-2, atol=1.5e-2)
    with pytest.raises(ArgumentError, match="k_scales must be torch.float16"):
        attention_decode_cache(q.half(), cache, seq_lens)


@pytest.mark.parametrize("dtype,act", [("uint4", torch.float16), ("int8", torch.float16),
                                       ("float8_e4m3", torch.bfloat16)])
def test_scales_per_group_along_head_dim(dtype, act):
    """group_size 16 of head_dim 48: scales and zeros [batch, kv_heads, max_seq, 3]."""
    cache, q = _filled_cache(2, 1, 50, 48, dtype, seed=8, act=act, group_size=16)
    assert cache.k_scales.shape == (2, 1, 50, 3)
    seq_lens = torch.tensor([50, 33])
    out = attention_decode_cache(q, cache, seq_lens, num_splits=2)
    tol = dict(rtol=1e-2, atol=2e-3) if act == torch.float16 else dict(rtol=2e-2, atol=1.5e-2)
    torch.testing.assert_close(out.double(), _reference(q, cache, seq_lens), **tol)
    with pytest.raises(ArgumentError, match="group_size=12"):
        QuantKVCache.empty(1, 1, 8, 48, dtype, group_size=12)


def test_group_scales_quantize_within_half_a_step_of_each_group():
    """A row whose two halves differ by 100x: per-group scales keep the small half's error
    100x smaller than one scale per row would."""
    g = torch.Generator().manual_seed(9)
    x = torch.cat([torch.randn(1, 1, 1, 16, generator=g) * 0.01,
                   torch.randn(1, 1, 1, 16, generator=g)], dim=-1)
    for group_size, bound in ((16, 0.01 * 4 / 15), (None, 8 / 15)):
        cache = QuantKVCache.empty(1, 1, 2, 32, "uint4", group_size=group_size)
        tilus_quantize_kv(x, x, cache, torch.tensor([0]))
        got = _dequant(cache.k, cache.k_scales, cache.k_zeros, "uint4", 32)[0, 0, 0]
        err = (got[:16] - x[0, 0, 0, :16].double()).abs().max().item()
        assert err <= bound, (group_size, err)
        if group_size is None:
            assert err > 0.01 * 4 / 15


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_empty_sequence_gives_zero_and_garbage_past_the_end_is_ignored():
    """seq_lens 0 -> zeros; NaN/inf scales and zeros past a sequence's end change nothing."""
    cache, q = _filled_cache(2, 1, 40, 16, "uint4", seed=1)
    seq_lens = torch.tensor([0, 17])
    before = attention_decode_cache(q[:, :3], cache, seq_lens, num_splits=2)
    for t in (cache.k_scales, cache.v_scales, cache.k_zeros, cache.v_zeros):
        t[1, :, 17:] = float("nan")
        t[1, :, 30:] = float("inf")
    after = attention_decode_cache(q[:, :3], cache, seq_lens, num_splits=2)
    assert torch.equal(after[0], torch.zeros_like(after[0]))
    assert torch.isfinite(after).all() and torch.equal(before, after)
    torch.testing.assert_close(after.double(), _reference(q[:, :3], cache, seq_lens),
                               rtol=1e-2, atol=2e-3)


def test_splits_do_not_change_the_result_beyond_rounding():
    cache, q = _filled_cache(1, 2, 100, 32, "uint4", seed=2)
    seq_lens = torch.tensor([97])
    one = attention_decode_cache(q, cache, seq_lens, num_splits=1)
    four = attention_decode_cache(q, cache, seq_lens, num_splits=4)
    torch.testing.assert_close(one, four, rtol=2e-3, atol=1e-3)


def test_default_splits_fill_two_waves():
    assert default_splits(1, 8, 4096) == 33            # 8 * 33 blocks ~ 2 * 132
    assert default_splits(64, 8, 4096) == 1
    assert default_splits(1, 1, 40) == 2               # never more splits than 32-token tiles


def test_arguments_are_checked():
    cache, q = _filled_cache(2, 2, 40, 32, "uint4")
    seq_lens = torch.tensor([3, 4])
    args = (cache.k, cache.v, cache.k_scales, cache.v_scales, cache.k_zeros, cache.v_zeros)
    with pytest.raises(ArgumentError, match="q must be a float16"):
        attention_decode(q.float(), *args, seq_lens)
    with pytest.raises(ArgumentError, match="v_cache must be"):
        attention_decode(q, args[0], args[1][..., :8], *args[2:], seq_lens)
    with pytest.raises(ArgumentError, match="k_zeros must be"):
        attention_decode(q, *args[:4], args[4].float(), args[5], seq_lens)
    with pytest.raises(ArgumentError, match="not a multiple of kv_heads"):
        attention_decode(q[:, :5], *args, seq_lens)
    with pytest.raises(ArgumentError, match="seq_lens must lie"):
        attention_decode(q, *args, torch.tensor([3, 41]))
    with pytest.raises(ArgumentError, match="seq_lens must be an integer"):
        attention_decode(q, *args, torch.tensor([3.0, 4.0]))
    with pytest.raises(ArgumentError, match="engine"):
        attention_decode(q, *args, seq_lens, engine="fast")
    with pytest.raises(DataTypeError, match="float8_e5m2 is not a cache type"):
        QuantKVCache.empty(1, 1, 8, 32, "float8_e5m2")
    assert {"uint3", "int8", "float8_e4m3", "float4_e2m1"} <= set(kv_types())


def test_float_value_decoder_agrees_with_ml_dtypes():
    t = dtypes.get("float8_e4m3")
    codes = np.arange(256, dtype=np.uint8)
    want = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    got = [_float_value(int(c), t) for c in codes]
    finite = np.isfinite(want)
    assert np.array_equal(np.array(got)[finite], want[finite])


@pytest.mark.parametrize("dtype", ["uint4", "int4", "uint8", "uint3"])
def test_quantize_kv_appends_in_place_within_half_a_step(dtype):
    """Tokens land at positions[b] + t; each value is within half a step (scale / 2) of its input
    plus float16 rounding; rows never written stay zero."""
    g = torch.Generator().manual_seed(3)
    cache = QuantKVCache.empty(2, 2, 20, 16, dtype)
    k, v = torch.randn(2, 2, 4, 16, generator=g), torch.randn(2, 2, 4, 16, generator=g) * 3
    data_ptr = cache.k.data_ptr()
    tilus_quantize_kv(k, v, cache, torch.tensor([0, 7]))
    assert cache.k.data_ptr() == data_ptr
    t = dtypes.get(dtype)
    span = 2 ** t.nbits - 1
    for x, data, s, z in ((k, cache.k, cache.k_scales, cache.k_zeros),
                          (v, cache.v, cache.v_scales, cache.v_zeros)):
        got = _dequant(data, s, z, dtype, 16)
        for b, start in ((0, 0), (1, 7)):
            rows = slice(start, start + 4)
            xr = x[b].double()
            scale = s[b, :, rows].double()
            assert (scale * span >= xr.amax(-1) - xr.amin(-1)).all()
            bound = scale[..., None] / 2 + xr.abs() * 2 ** -10 + 1e-3 * scale[..., None]
            assert ((got[b, :, rows] - xr).abs() <= bound).all()
        assert not data[0, :, 4:].any() and not data[1, :, :7].any() and not s[1, :, 11:].any()


def test_quantize_kv_positions_per_token_and_bad_positions():
    cache = QuantKVCache.empty(1, 1, 8, 16, "uint4")
    k = torch.randn(1, 1, 2, 16)
    tilus_quantize_kv(k, k, cache, torch.tensor([[5, 2]]))
    assert cache.k_scales[0, 0, 5] > 0 and cache.k_scales[0, 0, 2] > 0
    assert int((cache.k_scales != 0).sum()) == 2
    before = [t.clone() for t in (cache.k, cache.k_scales)]
    with pytest.raises(ArgumentError, match="positions must lie"):
        tilus_quantize_kv(k, k, cache, torch.tensor([7]))
    assert torch.equal(before[0], cache.k) and torch.equal(before[1], cache.k_scales)
    with pytest.raises(ArgumentError, match="k must be a float tensor"):
        tilus_quantize_kv(k[:, :, :, :8], k, cache, torch.tensor([0]))
    with pytest.raises(ArgumentError, match="cache must be a QuantKVCache"):
        tilus_quantize_kv(k, k, object(), torch.tensor([0]))


def test_decode_steps_over_appended_tokens_track_float_attention():
    """Prefill 30 tokens, then three decode steps each appending one token and attending: the
    uint8 cache's output stays within 2e-2 of float32 attention over the unquantized K/V."""
    g = torch.Generator().manual_seed(4)
    cache = QuantKVCache.empty(2, 1, 40, 32, "uint8")
    k, v = torch.randn(2, 1, 33, 32, generator=g), torch.randn(2, 1, 33, 32, generator=g)
    tilus_quantize_kv(k[:, :, :30], v[:, :, :30], cache, torch.tensor([0, 0]))
    for step in range(3):
        n = 30 + step
        tilus_quantize_kv(k[:, :, n:n + 1], v[:, :, n:n + 1], cache, torch.tensor([n, n]))
        q = torch.randn(2, 2, 32, generator=g).half()
        lens = torch.tensor([n + 1, n + 1])
        out = attention_decode_cache(q, cache, lens, num_splits=2)
        ref = attention_reference(q, k, v, lens)
        torch.testing.assert_close(out.float(), ref, rtol=0, atol=2e-2)


@pytest.mark.parametrize("dtype,mantissa", [("float8_e4m3", 3), ("float4_e2m1", 1)])
def test_quantize_kv_float_types_within_half_a_grid_step(dtype, mantissa):
    """Symmetric float codes: zero 0, |x - x'| <= half the largest grid step (absmax * 2^-(m+1))
    plus float16 rounding, the row's absmax reached within that."""
    g = torch.Generator().manual_seed(5)
    cache = QuantKVCache.empty(1, 2, 6, 32, dtype)
    k = torch.randn(1, 2, 6, 32, generator=g) * 4
    tilus_quantize_kv(k, k, cache, torch.tensor([0]))
    assert not cache.k_zeros.any()
    got = _dequant(cache.k, cache.k_scales, cache.k_zeros, dtype, 32)
    absmax = k.double().abs().amax(-1, keepdim=True)
    bound = absmax * 2.0 ** -(mantissa + 1) * 1.01 + k.double().abs() * 2 ** -10
    assert ((got - k.double()).abs() <= bound).all()


def test_float8_cache_decode_tracks_float_attention():
    g = torch.Generator().manual_seed(6)
    cache = QuantKVCache.empty(2, 1, 40, 32, "float8_e4m3")
    k, v = torch.randn(2, 1, 40, 32, generator=g), torch.randn(2, 1, 40, 32, generator=g)
    tilus_quantize_kv(k, v, cache, torch.tensor([0, 0]))
    q = torch.randn(2, 2, 32, generator=g).half()
    lens = torch.tensor([40, 23])
    out = attention_decode_cache(q, cache, lens, num_splits=2)
    torch.testing.assert_close(out.float(), attention_reference(q, k, v, lens), rtol=0,
                               atol=6e-2)


@settings(max_examples=8, deadline=None)
@given(batch=st.integers(1, 3), kv_heads=st.integers(1, 2), group=st.integers(1, 17),
       head_dim=st.sampled_from([16, 32, 48]), max_seq=st.integers(1, 70),
       splits=st.integers(1, 4), dtype=st.sampled_from(["uint4", "int3", "uint8", "float4_e2m1"]),
       data=st.data())
def test_random_shapes_match_reference(batch, kv_heads, group, head_dim, max_seq, splits, dtype,
                                       data):
    """Any batch, GQA group (up to 17: two mma row tiles), head_dim, cache length, lengths
    (0 included) and splits: the kernels equal the reference."""
    lens = data.draw(st.lists(st.integers(0, max_seq), min_size=batch, max_size=batch))
    cache, _ = _filled_cache(batch, kv_heads, max_seq, head_dim, dtype, seed=max_seq)
    q = torch.randn(batch, kv_heads * group, head_dim,
                    generator=torch.Generator().manual_seed(group)).half()
    seq_lens = torch.tensor(lens)
    out = attention_decode_cache(q, cache, seq_lens, num_splits=splits)
    torch.testing.assert_close(out.double(), _reference(q, cache, seq_lens), rtol=1e-2,
                               atol=2e-3)
