"""tilus.ops.quantize: error bounds for every 1-8-bit type, the packed bytes (format 2) against an
independent numpy packing written from the PTX ISA's mma fragment table, dequantize, state dicts,
format-1 conversion and the errors."""
import logging
import zlib

import numpy as np
import pytest
import torch

from tilus import dtypes
from tilus.errors import QuantizationError, TilusError
from tilus.ops import FORMAT_VERSION, QuantizedWeight, quantize, supported_weight_types
from tilus.ops.quantize import meta_dict, value_exponent

N, K, G = 140, 64, 32
ALL = supported_weight_types()
INT_CASES = [(t, s) for t in ALL if not dtypes.get(t).is_float for s in (False, True)
             if not (s and dtypes.get(t).nbits == 1)]
FLOAT_CASES = [t for t in ALL if dtypes.get(t).is_float]


def _weight(seed=0, n=N, k=K, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    w[0, :5] = torch.tensor([0.3, -0.4, 0.0, 1e-4, -1e-4])   # outliers and tiny values
    w[1, : G] = 0.01                                          # a constant group
    w[2, : G] = 0.0                                           # an all-zero group
    w[3, : G] += 3.0                                          # a group far from 0
    return w.to(dtype)


def _pair_stride(dtype: str, target: str) -> int:
    from tilus.ir.layout.packed import pair_stride

    return pair_stride(dtype, target)


def np_unit_order(d: int) -> np.ndarray:
    """Independent of the layout algebra: [128 threads, 32 stream slots] -> flat index of the
    (k, n) unit element, from the PTX ISA B fragment of mma.m16n8k16 (row = 2*tig + (i & 1) +
    8*(i >= 2), col = groupID), fragments (kc, nc) in slot order kc-major, warps along n, and
    the stream order that puts slot pair (2j, 2j+1) at stream positions (p, p + d)."""
    out = np.zeros((128, 32), np.int64)
    for t in range(128):
        warp, lane = divmod(t, 32)
        gid, tig = divmod(lane, 4)
        frag = []
        for kc in range(2):
            for nc in range(4):
                for i in range(4):
                    k = kc * 16 + 8 * (i >= 2) + 2 * tig + (i & 1)
                    n = nc * 32 + warp * 8 + gid
                    frag.append(k * 128 + n)
        for p in range(32):
            blk, r = divmod(p, 2 * d)
            a, j = divmod(r, d)
            out[t, p] = frag[blk * 2 * d + 2 * j + a]
    return out


def np_pack_v2(codes: np.ndarray, nbits: int, d: int) -> np.ndarray:
    """codes [K, N] -> format-2 bytes [N_pad/128, K_pad/32 * 512 * B] (independent packer)."""
    k, n = codes.shape
    kp, npad = -(-k // 32) * 32, -(-n // 128) * 128
    full = np.zeros((kp, npad), np.uint8)
    full[:k, :n] = codes
    order = np_unit_order(d).reshape(-1)
    rows = []
    for j in range(npad // 128):
        units = [full[u * 32:(u + 1) * 32, j * 128:(j + 1) * 128].reshape(-1)[order]
                 for u in range(kp // 32)]
        stream = np.concatenate(units)
        bits = (stream[:, None].astype(np.uint16) >> np.arange(nbits)) & 1
        rows.append(np.packbits(bits.reshape(-1).astype(np.uint8), bitorder="little"))
    return np.stack(rows)


def _expand(x, g=G):
    return np.repeat(x.double().numpy(), g, axis=0)           # [G, N] -> [K, N]


def _ulp16(x):
    return np.spacing(np.abs(x).astype(np.float16)).astype(np.float64)


@pytest.mark.parametrize("dtype,symmetric", INT_CASES, ids=[f"{t}-{'sym' if s else 'asym'}"
                                                            for t, s in INT_CASES])
def test_integer_types(dtype, symmetric):
    t = dtypes.get(dtype)
    w = _weight(zlib.crc32(dtype.encode()) % 100)
    qw = quantize(w, dtype, group_size=G, symmetric=symmetric)
    assert qw.format_version == FORMAT_VERSION and qw.shape == (N, K) and qw.exponent == 0
    s = _expand(qw.scales)
    if symmetric:
        assert qw.offsets is None and qw.zero_point == (0 if t.is_signed else 2 ** (t.nbits - 1))
        b = -qw.zero_point * s
    else:
        assert qw.offsets is not None
        b = _expand(qw.offsets)
    wt = w.t().double().numpy()
    deq = qw.dequantize().double().t().numpy()
    # half a step times the scale, half an ulp of the stored offset, the fp16 rounding of w'
    bound = 0.5 * s * (1 + 1e-6) + 0.5 * _ulp16(b) + 0.5 * _ulp16(deq) + 1e-9
    assert np.all(np.abs(wt - deq) <= bound), np.max(np.abs(wt - deq) - bound)
    # the codes, recomputed here, and packed by an independent packer
    q = np.clip(np.round((wt - b) / s), t.min_value, t.max_value).astype(np.int64)
    codes = (q & ((1 << t.nbits) - 1)).astype(np.uint8)
    assert np.array_equal(qw.codes().numpy(), codes)
    assert np.array_equal(qw.data.numpy(), np_pack_v2(codes, t.nbits, _pair_stride(dtype, "float16")))
    # dequantize is exactly q * s + b rounded once
    assert np.array_equal(deq, (q * s + b).astype(np.float16).astype(np.float64))


def test_offsets_keep_groups_that_do_not_contain_zero():
    """Issue 14, item 1: [10, 11] quantized to uint4 dequantizes to within half a step."""
    w = torch.tensor([[10.0, 11.0] * 16])
    qw = quantize(w, "uint4", group_size=32)
    err = (qw.dequantize(torch.float32) - w).abs().max().item()
    assert err <= 0.5 / 15 + 2 ** -7
    w3 = _weight(5) + 3.0                                   # far from 0: round-to-nearest quality
    qw = quantize(w3, "uint4", group_size=G)
    err = (qw.dequantize(torch.float32) - w3).abs()
    assert float(err.max()) <= float(qw.scales.float().max()) * 0.5 + 2 ** -8


@pytest.mark.parametrize("dtype", FLOAT_CASES)
def test_float_types(dtype):
    t = dtypes.get(dtype)
    w = _weight(zlib.crc32(dtype.encode()) % 100)
    qw = quantize(w, dtype, group_size=G)
    assert qw.symmetric and qw.offsets is None and qw.zero_point == 0
    assert qw.exponent in (0, value_exponent(t))
    s = _expand(qw.scales) * 2.0 ** -qw.exponent            # the scale of decode(q)
    wt = w.t().double().numpy()
    deq = qw.dequantize().double().t().numpy()
    grid = t.decode(np.arange(2 ** t.nbits, dtype=np.uint8)).astype(np.float64)
    grid = np.unique(grid[np.isfinite(grid)])
    x = wt / s
    assert np.all(np.abs(x) <= grid.max() * (1 + 1e-6))        # the scale covers the group
    idx = np.clip(np.searchsorted(grid, x), 1, len(grid) - 1)
    lo, hi = grid[idx - 1], grid[idx]
    nearest = np.minimum(np.abs(x - lo), np.abs(x - hi))
    err = np.abs(wt - deq)
    tol = 0.5 * _ulp16(deq) + 1e-9
    assert np.all(err <= nearest * s * (1 + 1e-5) + tol)
    assert np.all(err <= (hi - lo) / 2 * s * (1 + 1e-5) + tol)
    codes = t.encode(x.astype(np.float32))
    assert np.array_equal(qw.data.numpy(), np_pack_v2(codes, t.nbits, _pair_stride(dtype, "float16")))


def test_float_scales_keep_the_power_of_two_when_folding_would_denormalize():
    w = torch.full((4, 32), 1e-3)
    qw = quantize(w, "float8_e4m3", group_size=32)          # 1e-3 / 448 < fp16's normal range
    assert qw.exponent == value_exponent(dtypes.float8_e4m3)
    big = quantize(torch.full((4, 32), 0.5), "float8_e4m3", group_size=32)
    assert big.exponent == 0
    for q, x in ((qw, 1e-3), (big, 0.5)):
        assert torch.allclose(q.dequantize(torch.float32), torch.full((4, 32), x), rtol=2 ** -4)


def test_format_1_state_dicts_convert_on_load(caplog):
    """A format-1 state dict (row-major [K, N_pad] codes, integer zero points) loads as format 2
    with offsets -z*s, logs it, and dequantizes to (q - z) * s up to the offset's rounding."""
    t = dtypes.uint4
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 16, size=(K, N)).astype(np.uint8)
    npad = -(-N // 128) * 128
    full = np.zeros((K, npad), np.uint8)
    full[:, :N] = codes
    bits = (full[..., None].astype(np.uint16) >> np.arange(4)) & 1
    v1 = np.packbits(bits.reshape(K, npad * 4).astype(np.uint8), axis=1, bitorder="little")
    scales = (torch.rand(K // G, N) * 0.1 + 0.01).half()
    zeros = torch.randint(0, 16, (K // G, N)).half()
    sd = {"qweight": torch.from_numpy(v1), "scales": scales, "zeros": zeros,
          "meta": {"format_version": 1, "layout": "kn-rowmajor-pad128", "dtype": "uint4",
                   "shape": [N, K], "group_size": G, "symmetric": False, "zero_point": 0.0}}
    with caplog.at_level(logging.INFO, logger="tilus.ops.quantize"):
        qw = QuantizedWeight.from_state_dict(sd)
    assert "format-1" in caplog.text
    assert qw.format_version == FORMAT_VERSION and torch.equal(qw.codes(), torch.from_numpy(codes))
    want = (codes - _expand(zeros)) * _expand(scales)
    got = qw.dequantize(torch.float32).t().double().numpy()
    bound = 0.5 * _ulp16(_expand(zeros) * _expand(scales)) + 0.5 * _ulp16(want) + 1e-9
    assert np.all(np.abs(got - want) <= bound)
    assert t.nbits == 4


def test_bf16_weight_gives_bf16_scales_and_scale_dtype_override():
    w = _weight(dtype=torch.bfloat16)
    qw = quantize(w, "uint4", group_size=G)
    assert qw.scales.dtype == torch.bfloat16 and qw.offsets.dtype == torch.bfloat16
    assert qw.dequantize().dtype == torch.bfloat16
    qw16 = quantize(w, "int4", group_size=G, scale_dtype=torch.float16)
    assert qw16.scales.dtype == torch.float16
    err = (qw16.dequantize().float() - w.float()).abs()
    assert float(err.max()) <= float(qw16.scales.float().max()) * 0.51


def test_per_channel_group_and_dequantize_layouts():
    w = _weight(k=40)
    qw = quantize(w, "uint5", group_size=None)
    assert qw.group_size == 40 and qw.num_groups == 1 and qw.scales.shape == (1, N)
    assert quantize(w, "uint5", group_size=-1).group_size == 40
    assert qw.data.shape == (2, 64 * 128 * 5 // 8)           # K padded to 64, N to 256
    assert torch.equal(qw.dequantize(transpose=False), qw.dequantize().t())
    assert qw.dequantize(torch.float32).dtype == torch.float32


def test_state_dict_round_trip():
    qw = quantize(_weight(), "uint3", group_size=G)
    sd = qw.to_state_dict()
    assert set(sd) == {"qweight", "scales", "offsets", "meta"}
    assert all(isinstance(v, torch.Tensor) for v in sd.values())      # safetensors-friendly
    meta = meta_dict(sd["meta"], "test")
    assert meta == qw.metadata() and meta["format_version"] == FORMAT_VERSION
    back = QuantizedWeight.from_state_dict(sd)
    assert torch.equal(back.dequantize(), qw.dequantize())
    assert back.metadata() == qw.metadata()
    assert QuantizedWeight.from_state_dict(dict(sd, meta=meta)).metadata() == qw.metadata()
    with pytest.raises(QuantizationError, match="not JSON"):
        QuantizedWeight.from_state_dict(dict(sd, meta=torch.tensor([255, 1], dtype=torch.uint8)))
    with pytest.raises(QuantizationError, match="uint8 JSON tensor"):
        QuantizedWeight.from_state_dict(dict(sd, meta=torch.zeros(3)))
    bad = dict(sd, meta=dict(meta, format_version=99))
    with pytest.raises(QuantizationError, match="format"):
        QuantizedWeight.from_state_dict(bad)
    with pytest.raises(QuantizationError, match="uint8"):
        QuantizedWeight.from_state_dict(dict(sd, qweight=sd["qweight"][:-1]))
    with pytest.raises(QuantizationError, match="no 'scales'"):
        QuantizedWeight.from_state_dict({"qweight": sd["qweight"], "meta": sd["meta"]})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weight(bad):
    w = _weight()
    w[3, 7] = bad
    with pytest.raises(QuantizationError, match=r"NaN/inf.*\[3, 7\]"):
        quantize(w, "uint4", group_size=G)


def test_bad_arguments():
    w = _weight()
    with pytest.raises(QuantizationError, match="does not divide K = 64"):
        quantize(w, "uint4", group_size=48)
    with pytest.raises(QuantizationError, match="multiple of 32"):
        quantize(w, "uint4", group_size=16)
    for dt in ("float16", "bool", "int16", "nope"):
        with pytest.raises(QuantizationError, match="unsupported weight type"):
            quantize(w, dt)
    with pytest.raises(QuantizationError, match="no symmetric grid"):
        quantize(w, "uint1", group_size=G, symmetric=True)
    with pytest.raises(QuantizationError, match="scale-only"):
        quantize(w, "float4_e2m1", group_size=G, symmetric=False)
    with pytest.raises(QuantizationError, match="2-D"):
        quantize(w[0], "uint4")
    with pytest.raises(QuantizationError, match="group_size"):
        quantize(w, "uint4", group_size=0)
    with pytest.raises(QuantizationError, match="scale_dtype"):
        quantize(w, "uint4", group_size=G, scale_dtype=torch.float32)
    with pytest.raises(QuantizationError, match="floating-point"):
        quantize(torch.ones(4, 4, dtype=torch.int32), "uint4", group_size=4)
    assert issubclass(QuantizationError, TilusError) and issubclass(QuantizationError, ValueError)


@pytest.mark.parametrize("dtype", FLOAT_CASES)
def test_torch_float_encoder_matches_codec(dtype):
    """encode_float (torch, on the weight's device) equals the dtype codec (the oracle) on random
    values, every grid value, every midpoint (ties to even), +-0 and values beyond the range."""
    from tilus.ops.quantize import encode_float

    t = dtypes.get(dtype)
    grid = t.decode(np.arange(2 ** t.nbits, dtype=np.uint8)).astype(np.float64)
    grid = np.unique(grid[np.isfinite(grid)])
    mids = (grid[:-1] + grid[1:]) / 2
    rng = np.random.default_rng(zlib.crc32(dtype.encode()))
    x = np.concatenate([grid, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf),
                        rng.uniform(-1.2, 1.2, 2000) * grid.max(), [0.0, -0.0, 1e30, -1e30]])
    x = x.astype(np.float32)
    got = encode_float(torch.from_numpy(x), t).numpy()
    assert np.array_equal(got, t.encode(x))


def test_state_dict_fields_are_all_checked():
    """Issue 14, items 3 and 14: a state dict missing a field the format needs, or with a field
    of the wrong type or value, is a QuantizationError naming it (never a silent wrong weight)."""
    sd = quantize(_weight(), "uint4", group_size=G).to_state_dict()
    sd["meta"] = meta_dict(sd["meta"], "test")
    no_offsets = {k: v for k, v in sd.items() if k != "offsets"}
    with pytest.raises(QuantizationError, match="asymmetric uint4 weight has no offsets"):
        QuantizedWeight.from_state_dict(no_offsets)
    sym = quantize(_weight(), "int4", group_size=G).to_state_dict()
    sym["meta"] = meta_dict(sym["meta"], "test")
    with pytest.raises(QuantizationError, match="takes no offsets"):
        QuantizedWeight.from_state_dict(dict(sym, offsets=sd["offsets"]))
    for field, value, words in (("group_size", 0, "group_size must be positive"),
                                ("group_size", "32", "'group_size' must be int"),
                                ("shape", [N], r"shape must be \[N, K\]"),
                                ("shape", None, "'shape' must be"),
                                ("symmetric", "no", "'symmetric' must be bool"),
                                ("exponent", 99, "exponent must be in")):
        meta = dict(sd["meta"], **{field: value})
        with pytest.raises(QuantizationError, match=words):
            QuantizedWeight.from_state_dict(dict(sd, meta=meta))
    with pytest.raises(QuantizationError, match="zero_point 3.0 is not"):
        QuantizedWeight.from_state_dict(dict(sym, meta=dict(sym["meta"], zero_point=3.0)))
    with pytest.raises(QuantizationError, match="'dtype' must be str"):
        QuantizedWeight.from_state_dict(dict(sd, meta={k: v for k, v in sd["meta"].items()
                                                       if k != "dtype"}))
    with pytest.raises(QuantizationError, match="meta device"):
        quantize(torch.empty(8, 32, device="meta"), "uint4", group_size=32)


@pytest.mark.parametrize("dtype", ["uint4", "uint3", "uint8", "uint1"])
def test_integer_zero_points(dtype):
    """zero_mode="int": uint8 zero points z, ``(q - z) * s`` rounded once (recomputed here from
    the codes), within half a step of the weight; the state dict keeps the mode (format 3)."""
    t = dtypes.get(dtype)
    w = _weight(zlib.crc32(dtype.encode()) % 100 + 7)
    qw = quantize(w, dtype, group_size=G, zero_mode="int")
    assert qw.zero_mode == "int" and qw.offsets.dtype == torch.uint8 and not qw.symmetric
    s, z = _expand(qw.scales), _expand(qw.offsets).astype(np.float64)
    assert z.min() >= 0 and z.max() <= t.max_value
    q = qw.codes().numpy().astype(np.float64)
    deq = qw.dequantize().double().t().numpy()
    assert np.array_equal(deq, ((q - z) * s).astype(np.float16).astype(np.float64))
    wt = w.t().double().numpy()
    assert np.all(np.abs(wt - deq) <= 0.5 * s * (1 + 1e-6) + 0.5 * _ulp16(deq) + 1e-9)
    sd = qw.to_state_dict()
    assert sd["offsets"].dtype == torch.uint8 and meta_dict(sd["meta"], "t")["format_version"] == 3
    back = QuantizedWeight.from_state_dict(sd)
    assert back.zero_mode == "int" and torch.equal(back.dequantize(), qw.dequantize())
    old = dict(sd, meta=dict(meta_dict(sd["meta"], "t"), format_version=2))
    with pytest.raises(QuantizationError, match="format 2 has no integer zero points"):
        QuantizedWeight.from_state_dict(old)


def test_format_2_state_dicts_still_load_and_zero_mode_arguments():
    qw = quantize(_weight(), "uint4", group_size=G)
    assert qw.zero_mode == "float"
    sd = qw.to_state_dict()
    v2 = dict(sd, meta=dict(meta_dict(sd["meta"], "t"), format_version=2))
    assert torch.equal(QuantizedWeight.from_state_dict(v2).dequantize(), qw.dequantize())
    for bad in [dict(dtype="int4"), dict(dtype="uint4", symmetric=True),
                dict(dtype="float4_e2m1")]:
        with pytest.raises(QuantizationError, match="zero_mode='int'"):
            quantize(_weight(), group_size=G, zero_mode="int", **bad)
    with pytest.raises(QuantizationError, match="zero_mode must be one of"):
        quantize(_weight(), "uint4", group_size=G, zero_mode="integer")
    bad_zeros = quantize(_weight(), "uint4", group_size=G, zero_mode="int")
    bad_zeros.offsets = bad_zeros.offsets[:1]
    with pytest.raises(QuantizationError, match="zero points must be uint8"):
        bad_zeros.validate()
