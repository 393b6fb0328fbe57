"""tilus.ops.quantize: error bounds for every 1-8-bit type, the packed bytes against an
independent numpy packing, dequantize, state dicts and the errors."""
import zlib

import numpy as np
import pytest
import torch

from tilus import dtypes
from tilus.errors import QuantizationError, TilusError
from tilus.ops import FORMAT_VERSION, QuantizedWeight, quantize, supported_weight_types
from tilus.ops.quantize import padded_n, value_exponent

N, K, G = 20, 64, 32
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
    return w.to(dtype)


def np_pack_rows(codes: np.ndarray, nbits: int) -> np.ndarray:
    """Independent packer: codes [K, N] -> rows of [N_pad] codes as a little-endian bit stream."""
    k, n = codes.shape
    npad = -(-n // 128) * 128
    full = np.zeros((k, npad), np.uint8)
    full[:, :n] = codes
    bits = (full[..., None].astype(np.uint16) >> np.arange(nbits)) & 1     # [K, Npad, B]
    stream = bits.reshape(k, npad * nbits).astype(np.uint8)
    return np.packbits(stream, axis=1, bitorder="little")


def _expand(x, g=G):
    return np.repeat(x.float().numpy(), g, axis=0)            # [G, N] -> [K, N]


@pytest.mark.parametrize("dtype,symmetric", INT_CASES, ids=[f"{t}-{'sym' if s else 'asym'}"
                                                            for t, s in INT_CASES])
def test_integer_types(dtype, symmetric):
    t = dtypes.get(dtype)
    w = _weight(zlib.crc32(dtype.encode()) % 100)
    qw = quantize(w, dtype, group_size=G, symmetric=symmetric)
    assert qw.format_version == FORMAT_VERSION and qw.shape == (N, K)
    s = _expand(qw.scales)
    if symmetric:
        assert qw.zeros is None and qw.zero_point == (0 if t.is_signed else 2 ** (t.nbits - 1))
        z = np.full_like(s, qw.zero_point)
    else:
        assert qw.zeros is not None
        z = _expand(qw.zeros)
        assert np.all(z == np.round(z)) and z.min() >= t.min_value and z.max() <= t.max_value
    wt = w.t().numpy()
    deq = qw.dequantize().float().t().numpy()
    # half a step of the grid times the scale, plus the fp16 rounding of the dequantized value
    bound = 0.5 * s * (1 + 1e-6) + np.abs(deq) * 2.0 ** -11 + 1e-7
    assert np.all(np.abs(wt - deq) <= bound), np.max(np.abs(wt - deq) - bound)
    # the codes, recomputed here, and packed by an independent packer
    q = np.clip(np.round(wt / s) + z, t.min_value, t.max_value).astype(np.int64)
    codes = (q & ((1 << t.nbits) - 1)).astype(np.uint8)
    assert np.array_equal(qw.data.numpy(), np_pack_rows(codes, t.nbits))
    assert qw.data.shape == (K, padded_n(N) * t.nbits // 8)
    # dequantize is exactly (q - z) * s rounded once
    ref = torch.from_numpy(((q - z) * s).astype(np.float32)).half().float().numpy()
    assert np.array_equal(deq, ref)


@pytest.mark.parametrize("dtype", FLOAT_CASES)
def test_float_types(dtype):
    t = dtypes.get(dtype)
    w = _weight(zlib.crc32(dtype.encode()) % 100)
    qw = quantize(w, dtype, group_size=G)
    assert qw.symmetric and qw.zeros is None and qw.zero_point == 0
    norm = 2.0 ** -value_exponent(t)
    s = _expand(qw.scales) * norm
    wt = w.t().numpy()
    deq = qw.dequantize().float().t().numpy()
    grid = t.decode(np.arange(2 ** t.nbits, dtype=np.uint8)).astype(np.float64)
    grid = np.unique(grid[np.isfinite(grid)])
    x = wt / s
    assert np.all(np.abs(x) <= grid.max() * (1 + 1e-6))        # the scale covers the group
    # nearest grid point, and half the local step of the grid
    idx = np.clip(np.searchsorted(grid, x), 1, len(grid) - 1)
    lo, hi = grid[idx - 1], grid[idx]
    half_step = (hi - lo) / 2
    nearest = np.minimum(np.abs(x - lo), np.abs(x - hi))
    err = np.abs(wt - deq)
    tol = np.abs(deq) * 2.0 ** -11 + 1e-7
    assert np.all(err <= nearest * s * (1 + 1e-5) + tol)
    assert np.all(err <= half_step * s * (1 + 1e-5) + tol)
    codes = t.encode(x.astype(np.float32))
    assert np.array_equal(qw.data.numpy(), np_pack_rows(codes, t.nbits))


def test_bf16_weight_gives_bf16_scales_and_scale_dtype_override():
    w = _weight(dtype=torch.bfloat16)
    qw = quantize(w, "uint4", group_size=G)
    assert qw.scales.dtype == torch.bfloat16 and qw.zeros.dtype == torch.bfloat16
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
    assert torch.equal(qw.dequantize(transpose=False), qw.dequantize().t())
    assert qw.dequantize(torch.float32).dtype == torch.float32


def test_state_dict_round_trip():
    qw = quantize(_weight(), "uint3", group_size=G)
    sd = qw.to_state_dict()
    assert set(sd) == {"qweight", "scales", "zeros", "meta"}
    assert sd["meta"]["format_version"] == FORMAT_VERSION
    back = QuantizedWeight.from_state_dict(sd)
    assert torch.equal(back.dequantize(), qw.dequantize())
    assert back.metadata() == qw.metadata()
    bad = dict(sd, meta=dict(sd["meta"], format_version=99))
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
