"""tilus.nn.from_gptq / from_awq / from_compressed_tensors: GPTQ (2/3/4/8 bits), AWQ and
compressed-tensors pack-quantized layers (packed by this test from the formats' descriptions)
become QuantLinear layers whose weight equals the format's dequantization, GPTQ's act-order
included."""
import pytest
import torch

from tilus.errors import QuantizationError
from tilus.nn import QuantLinear, from_awq, from_compressed_tensors, from_gptq


def _pack(codes: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """GPTQ packing: p = 32 // bits codes per int32 along ``dim``, lowest bits first (3 bits:
    ``_pack3``)."""
    if bits == 3:
        return _pack3(codes, dim)
    p = 32 // bits
    c = codes.to(torch.int64).movedim(dim, -1)
    c = c.reshape(*c.shape[:-1], c.shape[-1] // p, p)
    words = sum(c[..., i] << (bits * i) for i in range(p))
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words)
    return words.to(torch.int32).movedim(-1, dim).contiguous()


def _pack3(codes: torch.Tensor, dim: int) -> torch.Tensor:
    """AutoGPTQ's 3-bit packing loop: 32 codes along ``dim`` in 3 words; code 10 is bits 30-31
    of word 0 and bit 0 of word 1, code 21 bit 31 of word 1 and bits 0-1 of word 2."""
    c = codes.to(torch.int64).movedim(dim, -1)
    c = c.reshape(*c.shape[:-1], c.shape[-1] // 32, 32)
    w0 = sum(c[..., j] << (3 * j) for j in range(10)) | (c[..., 10] << 30)
    w1 = ((c[..., 10] >> 2) & 1) | sum(c[..., 11 + j] << (3 * j + 1) for j in range(10)) \
        | (c[..., 21] << 31)
    w2 = ((c[..., 21] >> 1) & 3) | sum(c[..., 22 + j] << (3 * j + 2) for j in range(10))
    words = torch.stack([w0, w1, w2], -1).reshape(*c.shape[:-2], -1) & 0xFFFFFFFF
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words)
    return words.to(torch.int32).movedim(-1, dim).contiguous()


def _layer(k=128, n=64, bits=4, group=32, sym=True, act_order=False, seed=0, fmt="gptq"):
    g = torch.Generator().manual_seed(seed)
    groups = k // group
    q = torch.randint(0, 2 ** bits, (k, n), generator=g)
    z = (torch.full((groups, n), 2 ** (bits - 1)) if sym
         else torch.randint(0, 2 ** bits, (groups, n), generator=g))
    s = (torch.rand(groups, n, generator=g) * 0.02 + 0.001).half()
    g_idx = torch.arange(k) // group
    if act_order:
        g_idx = g_idx[torch.randperm(k, generator=g)]
    stored = z - 1 if fmt == "gptq" else z
    qzeros = _pack(stored.clamp(min=0) if fmt == "gptq" and not sym else stored, bits, 1)
    if fmt == "gptq" and not sym:
        z = stored.clamp(min=0) + 1                  # what the checkpoint can hold
    exact = (q - z[g_idx]).double() * s[g_idx].double()
    _layer.exact = exact                                 # [K, N], before GPTQ's fp16 rounding
    return _pack(q, bits, 0), qzeros, s, g_idx.to(torch.int32), exact.half()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("act_order", [False, True])
def test_symmetric_checkpoints_are_bit_exact(bits, act_order):
    qweight, qzeros, s, g_idx, ref = _layer(bits=bits, act_order=act_order)
    bias = torch.randn(64).half()
    layer = from_gptq(qweight, qzeros, s, g_idx, bias, bits=bits)
    assert layer.dtype_name == f"uint{bits}" and layer.symmetric
    assert (layer.input_perm is not None) == act_order
    assert torch.equal(layer.dequantize(torch.float16), ref.t())
    x = torch.randn(3, 128)
    expect = x.double() @ _layer.exact + bias.double()      # fp32 inputs: no fp16 rounding
    torch.testing.assert_close(layer(x).double(), expect, rtol=1e-5, atol=1e-5)
    x16 = x.half()
    expect16 = x16.double() @ ref.double() + bias.double()  # fp16 inputs: GPTQ's fp16 weight
    torch.testing.assert_close(layer(x16).double(), expect16, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
@pytest.mark.parametrize("bits", [4, 3, 2])
def test_asymmetric_checkpoints_are_bit_exact(fmt, bits):
    """Integer zero points (scales not powers of two): GPTQ's ``(q - z) * s`` in fp16, exactly,
    through dequantize, the fp32 path and the interpreted kernel."""
    qweight, qzeros, s, g_idx, ref = _layer(bits=bits, sym=False, act_order=bits == 4,
                                            fmt=fmt, seed=3 + bits)
    assert not bool((s.float() == 2.0 ** torch.round(torch.log2(s.float()))).all())
    layer = from_gptq(qweight, qzeros, s, g_idx, bits=bits, checkpoint_format=fmt)
    assert not layer.symmetric and layer.zero_mode == "int" and layer.offsets.dtype == torch.uint8
    assert torch.equal(layer.dequantize(torch.float16), ref.t())
    x = torch.randn(3, 128)
    torch.testing.assert_close(layer(x).double(), x.double() @ _layer.exact, rtol=1e-5,
                               atol=1e-5)


def test_gptq_zero_point_of_two_to_the_bits_and_the_kernel():
    """The "gptq" format stores z - 1, so z = 2^b (stored 2^b - 1) occurs: kept exactly; the
    interpreted kernel computes the same weight as dequantize (one-hot activations)."""
    import tilus

    g = torch.Generator().manual_seed(9)
    k, n, group = 64, 136, 32
    q = torch.randint(0, 16, (k, n), generator=g)
    stored = torch.randint(0, 16, (k // group, n), generator=g)
    stored[0, :8] = 15
    s = (torch.rand(k // group, n, generator=g) * 0.02 + 0.001).half()
    z = stored + 1
    ref = ((q - z.repeat_interleave(group, 0)).double()
           * s.repeat_interleave(group, 0).double()).half()
    layer = from_gptq(_pack(q, 4, 0), _pack(stored, 4, 1), s)
    assert torch.equal(layer.dequantize(torch.float16), ref.t())
    eye = torch.eye(k)[::4].half()                                  # rows 0, 4, ..., 60
    out = tilus.ops.matmul(eye, layer.qweight_object, engine="interpreter")
    assert torch.equal(out, ref[::4])


def unpack(packed, dim, bits=4):
    from tilus.nn.importers import unpack_int32

    return unpack_int32(packed, bits, dim)


def _zeros(qzeros, fmt, bits=4):
    z = unpack(qzeros, 1, bits).long()
    return z + 1 if fmt == "gptq" else z


def test_act_order_state_dict_round_trip():
    qweight, qzeros, s, g_idx, ref = _layer(act_order=True, seed=5)
    layer = from_gptq(qweight, qzeros, s, g_idx)
    fresh = QuantLinear(128, 64, False, dtype="uint4", group_size=32, symmetric=True,
                        act_order=True)
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.dequantize(torch.float16), ref.t())
    plain = QuantLinear(128, 64, False, dtype="uint4", group_size=32, symmetric=True)
    with pytest.raises((QuantizationError, RuntimeError)):
        plain.load_state_dict(layer.state_dict())


def test_bad_checkpoints_name_the_problem():
    qweight, qzeros, s, g_idx, _ = _layer()
    with pytest.raises(QuantizationError, match="bits must be one of"):
        from_gptq(qweight, qzeros, s, bits=5)
    with pytest.raises(QuantizationError, match="qweight must be a 2-D int32"):
        from_gptq(qweight.float(), qzeros, s)
    with pytest.raises(QuantizationError, match="qzeros must be"):
        from_gptq(qweight, qzeros[:, :-1], s)
    with pytest.raises(QuantizationError, match="g_idx must hold"):
        from_gptq(qweight, qzeros, s, g_idx[:-1])
    uneven = g_idx.clone()
    uneven[0] = 1
    with pytest.raises(QuantizationError, match="every group of g_idx"):
        from_gptq(qweight, qzeros, s, uneven)
    with pytest.raises(QuantizationError, match="checkpoint_format"):
        from_gptq(qweight, qzeros, s, checkpoint_format="awq")


def _pack_awq(codes: torch.Tensor) -> torch.Tensor:
    """AWQ's GEMM packing: 8 columns per int32, nibble i holding column (0,2,4,6,1,3,5,7)[i]."""
    order = (0, 2, 4, 6, 1, 3, 5, 7)
    c = codes.to(torch.int64).reshape(codes.shape[0], -1, 8)
    words = sum(c[:, :, order[i]] << (4 * i) for i in range(8))
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)


@pytest.mark.parametrize("sym", [True, False])
def test_awq_layers(sym):
    g = torch.Generator().manual_seed(11)
    k, n, group = 128, 64, 32
    q = torch.randint(0, 16, (k, n), generator=g)
    z = torch.full((k // group, n), 8) if sym else torch.randint(0, 16, (k // group, n),
                                                                  generator=g)
    s = (torch.rand(k // group, n, generator=g) * 0.02 + 0.001).half()
    ref = ((q - z.repeat_interleave(group, 0)).double()
           * s.repeat_interleave(group, 0).double()).half()            # [K, N]
    layer = from_awq(_pack_awq(q), _pack_awq(z), s)
    assert layer.symmetric == sym and layer.input_perm is None
    assert layer.zero_mode == ("float" if sym else "int")
    assert torch.equal(layer.dequantize(torch.float16), ref.t())
    x = torch.randn(2, k).half()
    torch.testing.assert_close(layer(x).double(), x.double() @ ref.double(), rtol=2e-3,
                               atol=2e-3)
    with pytest.raises(QuantizationError, match="qzeros must be"):
        from_awq(_pack_awq(q), _pack_awq(z)[:, :-1], s)
    with pytest.raises(QuantizationError, match="scales must be"):
        from_awq(_pack_awq(q), _pack_awq(z), s.float())


def _pack_ct(values: torch.Tensor, bits: int) -> torch.Tensor:
    """compressed-tensors pack-quantized: each row's values (already offset to unsigned) as one
    dense little-endian bit stream of int32 words, value i at bits [bits*i, bits*i + bits)."""
    rows = []
    for row in values.tolist():
        stream = sum(v << (bits * i) for i, v in enumerate(row))
        words = [(stream >> (32 * w)) & 0xFFFFFFFF for w in range(-(-len(row) * bits // 32))]
        rows.append([w - 2 ** 32 if w >= 2 ** 31 else w for w in words])
    return torch.tensor(rows, dtype=torch.int32)


def _ct_layer(bits, group, sym, n=64, k=128, seed=0):
    """A pack-quantized layer and its dequantization as compressed-tensors defines it:
    ``((q - zp) in the scale dtype) * scale``, rounded once to the scale dtype."""
    g = torch.Generator().manual_seed(seed)
    half = 2 ** (bits - 1)
    groups = k // group
    q = torch.randint(-half, half, (n, k), generator=g)
    zp = torch.zeros(n, groups, dtype=torch.int64) if sym else \
        torch.randint(-half, half, (n, groups), generator=g)
    s = (torch.rand(n, groups, generator=g) * 0.02 + 0.001).half()
    ref = (q - zp.repeat_interleave(group, 1)).half() * s.repeat_interleave(group, 1)   # [N, K]
    packed = _pack_ct(q + half, bits)
    zero = None if sym else _pack_ct((zp + half).t(), bits).t().contiguous()       # along N
    return packed, s, torch.tensor([n, k]), zero, ref


@pytest.mark.parametrize("bits", [4, 8, 3])
@pytest.mark.parametrize("group", [32, None])
def test_compressed_tensors_symmetric_is_bit_exact(bits, group):
    k = 128 if bits != 3 else 96                        # 3 bits: 96 codes in 9 words, crossing
    packed, s, shape, _, ref = _ct_layer(bits, group or k, sym=True, k=k)
    bias = torch.randn(64).half()
    layer = from_compressed_tensors(packed, s, shape, None, bias, bits=bits)
    assert layer.symmetric and layer.offsets is None and layer.dtype_name == f"uint{bits}"
    assert torch.equal(layer.dequantize(torch.float16), ref)
    x = torch.randn(3, ref.shape[1]).half()
    torch.testing.assert_close(layer(x).double(), x.double() @ ref.double().t() + bias.double(),
                               rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("bits", [4, 8, 2])
def test_compressed_tensors_asymmetric_is_bit_exact(bits):
    packed, s, shape, zero, ref = _ct_layer(bits, 32, sym=False, seed=3)   # s not powers of 2
    layer = from_compressed_tensors(packed, s, shape, zero, bits=bits)
    assert not layer.symmetric and layer.zero_mode == "int"
    assert torch.equal(layer.dequantize(torch.float16), ref)


def test_compressed_tensors_channel_and_tensor_scales_and_bad_input():
    packed, s, shape, _, ref = _ct_layer(4, 100, sym=True, k=100, seed=4)   # channel, K = 100
    assert packed.shape == (64, 13)
    assert torch.equal(from_compressed_tensors(packed, s, shape).dequantize(torch.float16), ref)
    one = torch.tensor([0.01]).half()                                      # one scale (tensor)
    q = (unpack_ct(packed, 4, 100).long() - 8)
    w = from_compressed_tensors(packed, one, shape).dequantize(torch.float16)
    assert torch.equal(w, q.half() * one)
    with pytest.raises(QuantizationError, match="weight_packed must be int32 \\[64, 13\\]"):
        from_compressed_tensors(packed[:, :-1], s, shape)
    with pytest.raises(QuantizationError, match="weight_scale must be"):
        from_compressed_tensors(packed, s.float(), shape)
    with pytest.raises(QuantizationError, match="weight_zero_point must be"):
        from_compressed_tensors(packed, s, shape, torch.zeros(8, 2, dtype=torch.int32))
    with pytest.raises(QuantizationError, match="bits must be in 1..8"):
        from_compressed_tensors(packed, s, shape, bits=16)


def unpack_ct(packed, bits, k):
    """The test's own reading of a pack-quantized row stream (python ints)."""
    rows = []
    for row in packed.tolist():
        stream = sum((w & 0xFFFFFFFF) << (32 * i) for i, w in enumerate(row))
        rows.append([(stream >> (bits * j)) & (2 ** bits - 1) for j in range(k)])
    return torch.tensor(rows)
