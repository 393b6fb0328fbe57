"""Block-scaled quantization (OCP MX v1.0: MXFP4/6/8, MXINT8; NVFP4) against a numpy reference
written here from the specifications (ml_dtypes for the element roundings), the packed format 3
round trip (the matmul: test_blockscale_matmul.py)."""
import math

import ml_dtypes
import numpy as np
import pytest
import torch

import tilus
from tilus.errors import QuantizationError
from tilus.ops import QuantizedWeight
from tilus.ops.quantize import meta_tensor

MX_TYPES = ["float4_e2m1", "float6_e2m3", "float6_e3m2", "float8_e4m3", "float8_e5m2", "int8"]
# OCP MX v1.0, table 1: element types, their largest normal and emax_elem (MXINT8: int8 * 2^-6)
ELEMENT = {"float4_e2m1": (ml_dtypes.float4_e2m1fn, 6.0, 2),
           "float6_e2m3": (ml_dtypes.float6_e2m3fn, 7.5, 2),
           "float6_e3m2": (ml_dtypes.float6_e3m2fn, 28.0, 4),
           "float8_e4m3": (ml_dtypes.float8_e4m3fn, 448.0, 8),
           "float8_e5m2": (ml_dtypes.float8_e5m2, 57344.0, 15),
           "int8": (None, 127 / 64, 0)}


def element_round(x: np.ndarray, name: str) -> np.ndarray:
    """quantize_to_element_format: nearest, ties to even, normal numbers clamped (OCP 6.3)."""
    ml, top, _ = ELEMENT[name]
    if ml is None:
        return np.clip(np.rint(x * 64), -127, 127) / 64
    return np.clip(x, -top, top).astype(ml).astype(np.float64)


def mx_reference(w: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(dequantized [N, K], E8M0 codes [K/32, N]) by OCP MX v1.0 section 6.3, block by block."""
    n, k = w.shape
    out, codes = np.zeros((n, k)), np.zeros((k // 32, n), np.int64)
    for j in range(n):
        for b in range(k // 32):
            v = w[j, 32 * b:32 * b + 32].astype(np.float64)
            amax = np.abs(v).max()
            shared = -127 if amax == 0 else math.frexp(amax)[1] - 1 - ELEMENT[name][2]
            shared = min(max(shared, -127), 127)
            x = 2.0 ** shared
            out[j, 32 * b:32 * b + 32] = element_round(v / x, name) * x
            codes[b, j] = shared + 127
    return out, codes


def nvfp4_reference(w: np.ndarray) -> tuple[np.ndarray, float]:
    """(dequantized [N, K], per-tensor scale): g = amax / (448 * 6) in float32, E4M3 block scales
    of amax_b / (6 g) (nearest even), e2m1 elements of v / (s_b g)."""
    w = w.astype(np.float64)
    g = float(np.float32(np.abs(w).max() / (448 * 6)))
    n, k = w.shape
    blocks = w.reshape(n, k // 16, 16)
    s = (np.minimum(np.abs(blocks).max(axis=2) / (6 * g), 448.0)
         .astype(ml_dtypes.float8_e4m3fn).astype(np.float64))[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(s > 0, element_round(blocks / (s * g), "float4_e2m1"), 0.0)
    return (q * s * g).reshape(n, k), g


def weight(n=40, k=96, seed=0) -> torch.Tensor:
    torch.manual_seed(seed)
    w = torch.randn(n, k) * torch.logspace(-3, 2, n).unsqueeze(1)   # rows of very different size
    w[0, :32] = 0.0                                                  # an all-zero block
    w[1, :32] *= 1e-36                                               # shared exponent below -127
    return w


@pytest.mark.parametrize("name", MX_TYPES)
def test_mx_matches_the_spec(name):
    w = weight()
    qw = tilus.ops.quantize(w, dtype=name, scheme="mx")
    want, codes = mx_reference(w.numpy(), name)
    np.testing.assert_array_equal(qw.scales.numpy(), codes)
    np.testing.assert_array_equal(qw.dequantize(torch.float64).numpy(), want)
    assert qw.scales.dtype == torch.uint8 and qw.group_size == 32
    assert qw.format_version == 3 and qw.scheme == "mx"


def test_mx_scales_beyond_float16():
    """E8M0 spans 2^-127..2^127: weights of 1e30 and 1e-30 keep their block scales."""
    w = weight()
    w[2] *= 1e30
    w[3] *= 1e-30
    qw = tilus.ops.quantize(w, dtype="float4_e2m1", scheme="mx")
    want, codes = mx_reference(w.numpy(), "float4_e2m1")
    np.testing.assert_array_equal(qw.scales.numpy(), codes)
    np.testing.assert_array_equal(qw.dequantize(torch.float64).numpy(), want)
    assert codes[:, 2].min() > 127 + 80 and codes[:, 3].max() < 127 - 80


def test_nvfp4_matches_the_recipe():
    w = weight(k=112)
    qw = tilus.ops.quantize(w, scheme="nvfp4")
    want, g = nvfp4_reference(w.numpy())
    assert qw.global_scale == g and qw.dtype == "float4_e2m1" and qw.group_size == 16
    np.testing.assert_array_equal(qw.dequantize(torch.float64).numpy(), want)
    s = tilus.dtypes.float8_e4m3.decode(qw.scales.numpy())
    assert s.max() == 448.0                       # the largest block uses E4M3's whole range


@pytest.mark.parametrize("scheme, name", [("mx", "float6_e3m2"), ("mx", "int8"),
                                          ("nvfp4", "float4_e2m1")])
def test_state_dict_round_trip(scheme, name):
    qw = tilus.ops.quantize(weight(), dtype=name, scheme=scheme)
    sd = qw.to_state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    back = QuantizedWeight.from_state_dict(sd)
    assert back.metadata() == qw.metadata()
    assert torch.equal(back.data, qw.data) and torch.equal(back.scales, qw.scales)
    assert torch.equal(back.dequantize(), qw.dequantize())


def test_format_3_checks():
    qw = tilus.ops.quantize(weight(), dtype="float4_e2m1", scheme="mx")
    meta = qw.metadata()
    for bad in ({"scheme": "mxx"}, {"global_scale": -1.0}, {"format_version": 4},
                {"format_version": 2}, {"scale_type": "float8_e4m3"}):
        sd = qw.to_state_dict()
        sd["meta"] = meta_tensor({**meta, **bad})
        with pytest.raises(QuantizationError):
            QuantizedWeight.from_state_dict(sd)
    sd = qw.to_state_dict()
    sd["scales"] = qw.scales.half()
    with pytest.raises(QuantizationError, match="uint8"):
        QuantizedWeight.from_state_dict(sd)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dtype="uint4", scheme="mx"), "element types"),
    (dict(dtype="float8_e4m3", scheme="nvfp4"), "element types"),
    (dict(dtype="float4_e2m1", scheme="mx", group_size=64), "block size is 32"),
    (dict(dtype="float4_e2m1", scheme="mx", symmetric=False), "do not apply"),
    (dict(dtype="float4_e2m1", scheme="mxfp4"), "unknown scheme"),
    (dict(dtype="float4_e2m1", scheme="mx", zero_mode="int"), "no zero points"),
    (dict(scheme="nvfp4", zero_mode="int"), "no zero points"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(QuantizationError, match=match):
        tilus.ops.quantize(weight(), **kwargs)
    with pytest.raises(QuantizationError, match="multiple of the block size"):
        tilus.ops.quantize(torch.randn(8, 48), dtype="float4_e2m1", scheme="mx")


def test_format_3_holds_both_integer_zeros_and_block_scales():
    """One format 3: a group-scaled state (no ``scheme`` entry, uint8 zero points) and a
    block-scaled one load side by side; a QuantLinear refuses the block-scaled weight."""
    from tilus.nn import QuantLinear

    gz = tilus.ops.quantize(weight(), "uint4", group_size=32, zero_mode="int")
    mx = tilus.ops.quantize(weight(), "float4_e2m1", scheme="mx")
    assert gz.format_version == mx.format_version == 3
    assert "scheme" not in gz.metadata() and mx.metadata()["scheme"] == "mx"
    back = QuantizedWeight.from_state_dict(gz.to_state_dict())
    assert back.zero_mode == "int" and back.scheme == "group"
    assert torch.equal(back.dequantize(), gz.dequantize())
    with pytest.raises(QuantizationError, match="tilus.ops.matmul"):
        QuantLinear.from_quantized(mx)
