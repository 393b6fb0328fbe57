"""tilus.ops.attention_prefill: the DSL flash-attention kernel run by the interpreter against a
float64 torch reference written here (softmax(Q K^T * scale + mask) V, one head at a time), at
sizes that divide no tile (64-row Q tiles, 64-token K/V tiles); GQA, the bottom-right causal
mask, float16 and bfloat16, quantized K/V (int8, uint8, float8_e4m3) against the reference on
K/V dequantized by tests/ops/test_attention.py's decoder (independent of tilus.dtypes); errors."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ops.test_attention import _dequant
from tilus.errors import ArgumentError, DataTypeError, DeviceMismatchError, TilusError
from tilus.ops import attention_prefill
from tilus.ops.kv_cache import quantize_rows
from tilus.ops.prefill_kernels import PrefillAttention, PrefillAttentionQuantKV

TOL = {torch.float16: dict(rtol=1e-2, atol=2e-3), torch.bfloat16: dict(rtol=2e-2, atol=1.5e-2)}


def _reference(q, k, v, causal, scale=None):
    """float64: per (batch, query head), scores over KV head h // G; causal keeps key j for query
    i when j <= i + seq_kv - seq_q; a query that sees no key gives 0."""
    b, h, sq, d = q.shape
    skv = k.shape[2]
    group = h // k.shape[1]
    scale = d ** -0.5 if scale is None else scale
    out = torch.zeros(b, h, sq, d, dtype=torch.float64)
    for i in range(b):
        for j in range(h):
            s = q[i, j].double() @ k[i, j // group].double().T * scale
            if causal:
                rows = torch.arange(sq)[:, None]
                cols = torch.arange(skv)[None, :]
                s = s.masked_fill(cols > rows + skv - sq, float("-inf"))
            seen = torch.isfinite(s).any(dim=1)
            p = torch.softmax(s[seen], dim=1)
            out[i, j, seen] = p @ v[i, j // group].double()
    return out


def _inputs(batch, heads, kv_heads, seq_q, seq_kv, d, act, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, seq_q, d, generator=g).to(act)
    k = torch.randn(batch, kv_heads, seq_kv, d, generator=g).to(act)
    v = torch.randn(batch, kv_heads, seq_kv, d, generator=g).to(act)
    return q, k, v


@pytest.mark.parametrize("act", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_interpreter_matches_float64_reference(act, causal):
    """seq_q 37, seq_kv 53 (one partial tile each), 4 query heads over 2 KV heads, head_dim 64,
    batch 2."""
    q, k, v = _inputs(2, 4, 2, 37, 53, 64, act)
    out = attention_prefill(q, k, v, causal=causal)
    assert out.dtype == act and out.shape == q.shape
    torch.testing.assert_close(out.double(), _reference(q, k, v, causal), **TOL[act])


def test_causal_with_more_queries_than_keys_gives_zero_rows():
    """seq_q 70 > seq_kv 53 (two Q tiles, one K/V tile): the first 17 queries see no key and
    give 0, the others match the reference; the default scale 1/sqrt(d), a given one and a
    negative one (the kernel folds a positive scale into the exponent, not a negative one)."""
    q, k, v = _inputs(1, 2, 1, 70, 53, 32, torch.float16, seed=1)
    for scale in (None, 0.3, -0.2):
        out = attention_prefill(q, k, v, causal=True, softmax_scale=scale)
        assert torch.equal(out[:, :, :17], torch.zeros_like(out[:, :, :17]))
        assert out[:, :, 17:].abs().amax(dim=-1).min() > 0
        torch.testing.assert_close(out.double(), _reference(q, k, v, True, scale),
                                   **TOL[torch.float16])


def test_causal_is_bottom_right_aligned():
    """With seq_q 5 and seq_kv 70 (two K/V tiles), causal query i equals non-causal attention of
    that query alone over the first i + 66 keys (flash-attn's convention)."""
    q, k, v = _inputs(1, 1, 1, 5, 70, 16, torch.float16, seed=2)
    out = attention_prefill(q, k, v, causal=True)
    for i in range(5):
        n = i + 70 - 5 + 1
        alone = attention_prefill(q[:, :, i:i + 1], k[:, :, :n], v[:, :, :n])
        torch.testing.assert_close(out[:, :, i:i + 1], alone, rtol=0, atol=1e-3)
    assert not torch.allclose(out, attention_prefill(q, k, v), atol=1e-2)


@pytest.mark.parametrize("kv_dtype,act", [("int8", torch.float16), ("uint8", torch.float16),
                                          ("float8_e4m3", torch.bfloat16)])
@pytest.mark.parametrize("causal", [False, True])
def test_quantized_kv_matches_reference_on_dequantized_kv(kv_dtype, act, causal):
    """K/V as 8-bit codes with per-(token, KV head) scales and zeros (quantize_rows' format):
    the output equals the float64 reference over the dequantized K/V, and stays near attention
    over the unquantized K/V."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 37, 64, generator=g).to(act)
    k, v = (torch.randn(2, 2, 53, 64, generator=g) for _ in range(2))
    kc, ks, kz = quantize_rows(k, kv_dtype, act)
    vc, vs, vz = quantize_rows(v, kv_dtype, act)
    out = attention_prefill(q, kc, vc, causal=causal, kv_dtype=kv_dtype, k_scales=ks,
                            v_scales=vs, k_zeros=kz, v_zeros=vz)
    assert out.dtype == act and out.shape == q.shape
    kd, vd = _dequant(kc, ks, kz, kv_dtype, 64), _dequant(vc, vs, vz, kv_dtype, 64)
    torch.testing.assert_close(out.double(), _reference(q, kd, vd, causal), **TOL[act])
    exact = _reference(q, k, v, causal)
    assert (out.double() - exact).abs().max() < (0.03 if kv_dtype.endswith("int8") else 0.1)


def test_float8_zeros_default_to_zero():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(1, 2, 20, 32, generator=g).half()
    kc, ks, kz = quantize_rows(torch.randn(1, 1, 30, 32, generator=g), "float8_e4m3")
    vc, vs, vz = quantize_rows(torch.randn(1, 1, 30, 32, generator=g), "float8_e4m3")
    assert not kz.any() and not vz.any()
    out = attention_prefill(q, kc, vc, kv_dtype="float8_e4m3", k_scales=ks, v_scales=vs)
    kd, vd = _dequant(kc, ks, kz, "float8_e4m3", 32), _dequant(vc, vs, vz, "float8_e4m3", 32)
    torch.testing.assert_close(out.double(), _reference(q, kd, vd, False), **TOL[torch.float16])


def test_reference_engine_and_empty_sequences():
    q, k, v = _inputs(1, 2, 2, 9, 11, 16, torch.float16, seed=5)
    ref = attention_prefill(q, k, v, causal=True, engine="reference")
    torch.testing.assert_close(ref.double(), _reference(q, k, v, True), **TOL[torch.float16])
    assert attention_prefill(q[:, :, :0], k, v).shape == (1, 2, 0, 16)
    assert not attention_prefill(q, k[:, :, :0], v[:, :, :0]).any()


@settings(max_examples=6, deadline=None)
@given(batch=st.integers(1, 2), kv_heads=st.integers(1, 2), group=st.integers(1, 3),
       seq_q=st.integers(1, 70), seq_kv=st.integers(1, 70), head_dim=st.sampled_from([16, 48]),
       causal=st.booleans())
def test_random_shapes_match_reference(batch, kv_heads, group, seq_q, seq_kv, head_dim, causal):
    q, k, v = _inputs(batch, kv_heads * group, kv_heads, seq_q, seq_kv, head_dim,
                      torch.float16, seed=seq_q * 71 + seq_kv)
    out = attention_prefill(q, k, v, causal=causal)
    torch.testing.assert_close(out.double(), _reference(q, k, v, causal), **TOL[torch.float16])


def test_arguments_are_checked():
    q, k, v = _inputs(1, 4, 2, 8, 8, 32, torch.float16)
    codes, scales, _ = quantize_rows(k.float(), "int8")
    with pytest.raises(ArgumentError, match="q must be a float16 or bfloat16"):
        attention_prefill(q.float(), k, v)
    with pytest.raises(ArgumentError, match="q must be"):
        attention_prefill(q[0], k, v)
    with pytest.raises(ArgumentError, match="head_dim=40 is not supported"):
        attention_prefill(*_inputs(1, 1, 1, 4, 4, 40, torch.float16))
    with pytest.raises(ArgumentError, match="head_dim=256 is not supported"):
        attention_prefill(*_inputs(1, 1, 1, 4, 4, 256, torch.float16))
    with pytest.raises(ArgumentError, match="k must be q's dtype"):
        attention_prefill(q, k.bfloat16(), v)
    with pytest.raises(ArgumentError, match="v must be torch.float16 \\[1, 2, 8, 32\\] like k"):
        attention_prefill(q, k, v[:, :, :5])
    with pytest.raises(ArgumentError, match="heads=4 is not a multiple of kv_heads=3"):
        attention_prefill(q, *_inputs(1, 3, 3, 8, 8, 32, torch.float16)[1:])
    with pytest.raises(DataTypeError, match="kv_dtype must be None .* got 'uint4'"):
        attention_prefill(q, codes, codes, kv_dtype="uint4", k_scales=scales, v_scales=scales)
    with pytest.raises(ArgumentError, match="k must be uint8 \\(int8 codes\\)"):
        attention_prefill(q, k, v, kv_dtype="int8", k_scales=scales, v_scales=scales)
    with pytest.raises(ArgumentError, match="v_scales must be torch.float16 \\[1, 2, 8\\]"):
        attention_prefill(q, codes, codes, kv_dtype="int8", k_scales=scales)
    with pytest.raises(ArgumentError, match="k_zeros must be"):
        attention_prefill(q, codes, codes, kv_dtype="int8", k_scales=scales, v_scales=scales,
                          k_zeros=scales.float())
    with pytest.raises(ArgumentError, match="need kv_dtype="):
        attention_prefill(q, k, v, k_scales=scales)
    with pytest.raises(DeviceMismatchError, match="v is on meta"):
        attention_prefill(q, k, v.to("meta"))
    with pytest.raises(ArgumentError, match="engine"):
        attention_prefill(q, k, v, engine="fast")
    big = torch.empty(2 ** 17, 1, 2 ** 10, 16, dtype=torch.float16, device="meta")
    with pytest.raises(ArgumentError, match="q has 2147483648 elements.*split the batch"):
        attention_prefill(big, big, big)


def test_kernel_classes_reject_what_they_cannot_run():
    with pytest.raises(TilusError, match="head_dim=40 must be a multiple of 16"):
        PrefillAttention(40, 1, 0.1, False)
    with pytest.raises(TilusError, match="float16 or bfloat16, got float32"):
        PrefillAttention(64, 1, 0.1, False, act="float32")
    with pytest.raises(TilusError, match="block_q=32 must be 16 \\* warps=4"):
        PrefillAttention(64, 1, 0.1, False, block_q=32)
    with pytest.raises(TilusError, match="kv_dtype must be one of int8, uint8, float8_e4m3"):
        PrefillAttentionQuantKV("uint4", 64, 1, 0.1, False)
