"""tilus.ops.attention_decode: the DSL split + combine kernels run by the interpreter against a
torch reference computed from codes this file unpacks itself (python ints, two's complement),
at sizes that divide no tile; GQA, per-sequence lengths (0 included), empty splits; errors."""
import pytest
import torch

from tilus import dtypes
from tilus.errors import ArgumentError, DataTypeError
from tilus.ops.attention import attention_decode, attention_decode_cache, default_splits
from tilus.ops.kv_cache import QuantKVCache, kv_types, quantize_rows


def _unpack_row(row: bytes, nbits: int, count: int, signed: bool) -> list[int]:
    word = int.from_bytes(bytes(row), "little")
    mask = (1 << nbits) - 1
    codes = [(word >> (i * nbits)) & mask for i in range(count)]
    if signed:
        codes = [c - (1 << nbits) if c >> (nbits - 1) else c for c in codes]
    return codes


def _dequant(packed, scales, zeros, dtype, d):
    """float16-rounded ``code * scale + zero`` from the bytes, independent of tilus.dtypes."""
    t = dtypes.get(dtype)
    rows = packed.reshape(-1, packed.shape[-1])
    codes = torch.tensor([_unpack_row(r.tolist(), t.nbits, d, t.is_signed) for r in rows],
                         dtype=torch.float64).reshape(*packed.shape[:-1], d)
    return (codes * scales.double()[..., None] + zeros.double()[..., None]).half().double()


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


def _filled_cache(batch, kv_heads, max_seq, d, dtype, seed=0):
    """A cache whose every row holds quantized random values (rows past seq_lens included)."""
    g = torch.Generator().manual_seed(seed)
    cache = QuantKVCache.empty(batch, kv_heads, max_seq, d, dtype)
    for data, s, z in ((cache.k, cache.k_scales, cache.k_zeros),
                       (cache.v, cache.v_scales, cache.v_zeros)):
        packed, scales, zeros = quantize_rows(torch.randn(batch, kv_heads, max_seq, d,
                                                          generator=g), dtype)
        data.copy_(packed)
        s.copy_(scales)
        z.copy_(zeros)
    q = torch.randn(batch, kv_heads * 3, d, generator=g).half()
    return cache, q


@pytest.mark.parametrize("dtype", ["uint4", "int4", "uint8", "int8", "uint2", "uint3"])
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
    with pytest.raises(DataTypeError, match="float4_e2m1"):
        QuantKVCache.empty(1, 1, 8, 32, "float4_e2m1")
    assert "uint3" in kv_types() and "int8" in kv_types()
