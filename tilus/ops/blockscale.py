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
from dataclasses import dataclass

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


# ---- the matmul's fast path: block scales applied in the activation dtype ----------------------
@dataclass(frozen=True)
class ScaleFold:
    """How ``QuantMatmul(scheme=..., fold_scale=True)`` applies block scales in the activation
    dtype, with no float32 partial tiles and no multiply in the element cast:

    * the element cast stops at ``decode(q) * 2^cast_exponent`` (for float elements the cast's
      exponent-bias fix is left out: ``cast(..., exponent=cast_exponent)`` costs no instruction);
    * a scale code c (uint8) becomes the activation-dtype bit pattern ``c * 2^shift + offset``
      (mod 2^16: one integer multiply-add per scale) times ``2^rescale`` (a multiply in the
      activation dtype, when not 0), which is ``s(c) * 2^scale_exponent`` for the codes
      ``fold_is_exact`` accepts: the scale type's exponent field lands in the activation
      dtype's, moved by ``offset``;
    * the weights are ``element * s * 2^-post``, and the float32 accumulator is multiplied by
      ``2^post`` (and NVFP4's per-tensor scale) in the epilogue.
    """

    shift: int
    offset: int
    rescale: int
    cast_exponent: int
    scale_exponent: int
    post: int


NVFP4_POST = 14     # NVFP4 weights are element * s * 2^-14: the float16 cast's missing bias fix


def scale_fold(scheme: str, wtype, act: str, exponent: int) -> ScaleFold:
    """The fast path's arithmetic (``ScaleFold``) for element type ``wtype`` (its values
    ``decode(q) * 2^-exponent``) and activations ``act`` (float16 or bfloat16).

    MX: ``s(c) * 2^scale_exponent`` is the E8M0 power of two times the cast's missing bias fix
    (``post`` 0; exact where the block's exponent keeps every product in range). NVFP4, weights
    ``element * s * 2^-14`` (``post`` 14): in float16 the E4M3 code shifted into float16's bits
    is ``s * 2^-8`` for every code (zero and subnormal scales included: both formats put their
    subnormals where the exponent field is 0), times ``2^8`` (one multiply per scale) is ``s``;
    the products, multiples of ``2^-24`` below ``2688 * 2^-14``, are exact for every NVFP4
    tensor. bfloat16 (``s * 2^-120`` from the bits; ``2^232`` is no bfloat16 number) raises the
    code's exponent field instead: exact for normal scale codes, not for zero or subnormal ones.
    """
    t, a = dtypes.get(wtype), dtypes.get(act)
    s = scale_type(scheme)
    cast_exponent = -(a.exponent_bias - t.exponent_bias) if t.is_float else 0
    scale_exponent = -cast_exponent - (int(exponent) if scheme == "mx" else NVFP4_POST)
    rescale = 0
    if scheme == "nvfp4" and a.name == "float16":
        rescale = scale_exponent + a.exponent_bias - s.exponent_bias
    raise_field = scale_exponent - rescale - s.exponent_bias + a.exponent_bias
    return ScaleFold(shift=a.mantissa_bits - s.mantissa_bits,
                     offset=(raise_field << a.mantissa_bits) % 2 ** 16, rescale=rescale,
                     cast_exponent=cast_exponent, scale_exponent=scale_exponent,
                     post=-int(exponent) - cast_exponent - scale_exponent)


def _act_numpy(act: str):
    import ml_dtypes

    return np.float16 if act == "float16" else ml_dtypes.bfloat16


def fold_is_exact(codes: np.ndarray, scheme: str, wtype, act: str, exponent: int) -> bool:
    """Whether the fast path (``scale_fold``) computes every weight ``element * s(c)`` of scale
    codes ``codes`` (the distinct codes a tensor holds) exactly: each code's bit pattern reads
    as ``s(c) * 2^scale_exponent`` in ``act`` (so a NaN code, or one outside the range, says
    no), each element's cast value ``decode(q) * 2^cast_exponent`` is exact in ``act``, and each
    product of the two (one rounding in ``act``) is exact and finite. The kernel then equals
    dequantize()-then-matmul up to float32 summation order."""
    t = dtypes.get(wtype)
    f = scale_fold(scheme, t, act, exponent)
    npt = _act_numpy(act)
    codes = np.asarray(codes, dtype=np.int64)
    bits = ((codes << f.shift) + f.offset) % 2 ** 16
    with np.errstate(all="ignore"):
        scale = (bits.astype(np.uint16).view(npt) * npt(2.0 ** f.rescale)).astype(np.float64)
        want = scale_type(scheme).decode(codes.astype(np.uint8)).astype(np.float64)
        if not np.array_equal(scale, want * 2.0 ** f.scale_exponent):
            return False
        v = t.decode(np.arange(2 ** t.nbits, dtype=np.uint8)).astype(np.float64)
        w = v[np.isfinite(v)] * 2.0 ** f.cast_exponent
        if not np.array_equal(w.astype(npt).astype(np.float64), w):
            return False
        prod = np.multiply.outer(w, scale)
        back = prod.astype(npt).astype(np.float64)
        return bool(np.isfinite(back).all() and np.array_equal(back, prod))
