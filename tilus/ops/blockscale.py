"""Block-scaled weight formats: OCP MX v1.0 (MXFP4/6/8, MXINT8) and NVIDIA's NVFP4.

``quantize(w, dtype, scheme="mx")``: blocks of 32 consecutive k of one output column share an
E8M0 scale ``X = 2^(floor(log2(absmax)) - emax)`` (OCP MX v1.0, section 6.3: ``emax`` is the
exponent of the element type's largest normal number, the shared exponent clamped to E8M0's
-127..127; an all-zero block gets 2^-127); the elements are ``V / X`` rounded to nearest, ties to
even, saturating at the largest normal (the element codec's rules). MXINT8's elements are int8
with an implicit scale 2^-6 (values ``q / 64``, ``|q| <= 127``), so ``emax`` is 0.

``scheme="nvfp4"``: float4_e2m1 elements, blocks of 16 sharing an E4M3 scale, and one float32
scale per tensor ``g = absmax(W) / (448 * 6)`` that moves the block scales into E4M3's range:
``s_b = encode_e4m3(absmax_b / (6 g))``, elements ``encode_e2m1(V / (s_b g))`` (0 where s_b is 0).

The dequantized weight is ``decode(q) * 2^-E * scale`` (``* g`` for NVFP4) computed exactly and
rounded once. Scales are stored as uint8 codes ``[K / block, N]``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import QuantizationError
from tilus.ops.floatcodes import encode_float

#: scheme -> (block size along K, scale type, element types allowed)
SCHEMES = {
    "mx": (32, "float8_e8m0", ("float4_e2m1", "float6_e2m3", "float6_e3m2", "float8_e4m3",
                               "float8_e5m2", "int8")),
    "nvfp4": (16, "float8_e4m3", ("float4_e2m1",)),
}
MXINT8_EXPONENT = 6           # MXINT8 element value q * 2^-6
NVFP4_ELEMENT_MAX = 6.0       # float4_e2m1's largest value
E4M3_MAX = 448.0


def block_size(scheme: str) -> int:
    return SCHEMES[scheme][0]


def scale_type(scheme: str) -> DataType:
    return dtypes.get(SCHEMES[scheme][1])


def check_scheme(scheme: str, t: DataType) -> None:
    """QuantizationError unless ``t`` is an element type of ``scheme``."""
    if scheme not in SCHEMES:
        raise QuantizationError(f"unknown scheme {scheme!r}; schemes are 'group', "
                                f"{', '.join(repr(s) for s in SCHEMES)}")
    if t.name not in SCHEMES[scheme][2]:
        raise QuantizationError(f"scheme {scheme!r} takes element types "
                                f"{', '.join(SCHEMES[scheme][2])}, not {t.name}")


def element_exponent(t: DataType) -> int:
    """E such that an element's value is decode(q) * 2^-E: 6 for MXINT8, 0 for the floats."""
    return MXINT8_EXPONENT if t.is_integer else 0


def emax(t: DataType) -> int:
    """The exponent of the element type's largest normal number (OCP MX ``emax_elem``)."""
    return int(math.floor(math.log2(float(t.max_value) * 2.0 ** -element_exponent(t))))


def _floor_log2(x: torch.Tensor) -> torch.Tensor:
    """floor(log2(x)) exactly for float64 x > 0 (frexp: x = m * 2^e, m in [0.5, 1))."""
    return torch.frexp(x)[1].to(torch.int64) - 1


def quantize_mx(wk: torch.Tensor, t: DataType) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [K, N] uint8, E8M0 scale codes [K/32, N] uint8) of ``wk`` [G, 32, N] (float64)."""
    g, bs, n = wk.shape
    absmax = wk.abs().amax(dim=1)                                       # [G, N]
    shared = torch.where(absmax > 0, _floor_log2(torch.where(absmax > 0, absmax, 1.0)) - emax(t),
                         torch.full_like(absmax, -127, dtype=torch.int64))
    shared = shared.clamp(-127, 127)
    x = wk * torch.pow(2.0, -shared.double()).unsqueeze(1)             # exact: a power of two
    if t.is_integer:
        lim = 2 ** (t.nbits - 1) - 1
        q = torch.round(x * 2.0 ** element_exponent(t)).clamp(-lim, lim).to(torch.int64)
        codes = (q & ((1 << t.nbits) - 1)).to(torch.uint8)
    else:
        codes = encode_float(x, t)
    return codes.reshape(g * bs, n), (shared + 127).to(torch.uint8)


def quantize_nvfp4(wk: torch.Tensor, t: DataType) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(codes [K, N], E4M3 scale codes [K/16, N], per-tensor scale g) of ``wk`` [G, 16, N]."""
    g_, bs, n = wk.shape
    amax = float(wk.abs().max())
    g = float(np.float32(amax / (E4M3_MAX * NVFP4_ELEMENT_MAX))) if amax > 0 else 1.0
    if not math.isfinite(g) or g == 0.0:
        raise QuantizationError(f"nvfp4: the per-tensor scale absmax / 2688 = {amax / 2688:.4g} "
                                f"is not a normal float32 number")
    e4m3 = dtypes.float8_e4m3
    s_codes = encode_float(wk.abs().amax(dim=1) / (NVFP4_ELEMENT_MAX * g), e4m3)   # [G, N]
    s = torch.from_numpy(e4m3.decode(s_codes.cpu().numpy()).astype(np.float64)).to(wk.device)
    denom = (s * g).unsqueeze(1)
    x = torch.where(denom > 0, wk / torch.where(denom > 0, denom, 1.0), 0.0)
    codes = encode_float(x, t)
    return codes.reshape(g_ * bs, n), s_codes, g


def scale_values(scales: torch.Tensor, scheme: str) -> torch.Tensor:
    """float64 values of the stored scale codes (E8M0 or E4M3), on their device."""
    table = torch.from_numpy(scale_type(scheme).value_table().astype(np.float64))
    return table.to(scales.device)[scales.long()]
