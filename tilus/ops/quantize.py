"""Group-wise weight quantization to every 1-8-bit Tilus type, and the packed-weight format.

``quantize(weight, dtype="uint4", group_size=128, symmetric=None)`` takes a weight **as
``nn.Linear`` stores it: ``[N, K] = [out_features, in_features]``** (``y = x @ W.T``) and returns a
:class:`QuantizedWeight`. Groups run along K (the reduction dimension): every ``group_size``
consecutive k of one output column n share a scale (and an offset).

Quantization schemes (``w`` one weight, ``s`` its group's scale, ``b`` its group's offset, ``q`` its
code, ``v = decode(q) * 2^-E`` its grid value, ``E = qw.exponent``):

=====================  ==========================================================================
uintB / intB,          ``s = (max - min) / (qmax - qmin)`` (rounded *up* to the scale type),
asymmetric             ``b = min - qmin * s`` (rounded to nearest), ``q = clamp(round((w - b) /
(default for uint)     s))``; ``w' = v * s + b``. Offsets are stored per group; a group need not
                       contain 0 (its offset is any value of the scale type).
uintB, asymmetric,     ``zero_mode="int"``: integer zero points (GPTQ's scheme): the range is
integer zero points    widened to hold 0, ``s`` as above, ``z = round(-min / s)`` (a code, stored
                       as uint8), ``q = clamp(round(w / s) + z)``; ``w' = (v - z) * s`` (``v - z``
                       exact: one rounding, no offset rounding).
intB, symmetric        ``s = absmax / (2^(B-1) - 1)``, ``b = 0``, ``q = clamp(round(w / s))``
(default for int)      (B >= 2: int1 has no symmetric grid).
uintB, symmetric       as intB symmetric on the grid shifted by the constant zero point
                       ``zp = 2^(B-1)``: ``w' = (q - zp) * s`` (``b = -zp * s``, none stored).
floatK_eXmY            scale only (symmetric): ``s = absmax / (max_value * 2^-e)``,
                       ``q = encode(w / (s * 2^-e))`` (nearest, ties to even, saturating),
                       ``w' = v * s``, where ``2^e`` is the largest power of two
                       <= the type's max_value (``value_exponent``): it keeps scales in the
                       normal range of fp16 even for wide types such as float8_e5m2/float8_e7m0.
                       The stored scales are ``s * 2^-e`` and ``E = 0`` when all of them are
                       normal numbers (exact: the kernels then apply no extra power of two),
                       else ``s`` with ``E = e``. Integer types have ``E = 0``.
=====================  ==========================================================================

``w'`` is ``v * s + b`` computed exactly and rounded once to the output type (what the kernels'
fused multiply-add computes). Every quantization error is at most half a grid step ``s / 2``,
plus half a unit in the last place of the offset ``b`` in the scale type (asymmetric only: the
offset is stored rounded), plus the final rounding of ``w'``. Scales and offsets are stored in
``scale_dtype``: float16 (default) or bfloat16 (the default when the weight is bfloat16).

Packed-weight format (``format_version`` 3, ``layout`` ``"mma-b-units-32x128"``; format 2 is the
same without integer zero points and block-scaled schemes, and still loads):

* ``data``: ``torch.uint8 [ceil(N/128), ceil(K/32) * 512 * B]``: 32 x 128 (k, n) units of codes,
  the units of one column tile consecutive along k, each laid out for the mma B operand of the
  thread that reads it (``tilus.ops.packing``: one thread's 4B-byte load holds exactly the codes
  of its fragments, in the order the packed casts pair them). Padding codes are 0.
* ``scales``: ``[K / group_size, N]`` in scale_dtype (row g = group g).
* ``offsets``: ``[K / group_size, N]`` in scale_dtype (offsets ``b``), or uint8 (integer zero
  points ``z``, ``zero_mode`` "int", any value 0..255), or None when the offset is ``-zp * s``
  for the constant zero point ``zero_point`` (0 or 2^(B-1)).
* Group sizes are multiples of 32 (a unit lies in one group) or the whole K.

Block-scaled weights (``scheme="mx"``: OCP MX v1.0 MXFP4/6/8 and MXINT8, E8M0 scales per 32
k; ``scheme="nvfp4"``: E4M3 scales per 16 k and a float32 scale per tensor; see
``tilus.ops.blockscale``) are packed format 3: the same ``data`` (codes ordered for float16, whose
pair strides equal bfloat16's for every element type of these schemes), ``scales`` the uint8
codes of the scale type ``[K / block, N]``, no offsets, and the metadata fields ``scheme``,
``scale_type`` and ``global_scale`` (a format-3 state without ``scheme`` is group-scaled). Format 2
readers reject them (their scales are not fp16/bf16).

Format 1 (``"kn-rowmajor-pad128"``: the row-major [K, N_pad] bit stream with integer zero points
``w' = (v - z) * s``) still loads: ``QuantizedWeight.from_state_dict`` converts it to format 3
(repacked codes, offsets ``b = -z * s`` rounded to the scale type) and logs that it did.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, overload

import numpy as np
import torch

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import DataTypeError, QuantizationError
from tilus.ops import blockscale, packing
from tilus.ops.floatcodes import encode_float

if TYPE_CHECKING:
    from tilus.ops.mixed import MixedQuantizedWeight

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
READ_VERSIONS = (2, 3)          # format 2 is format 3 without integer zeros and block scaling
ZERO_MODES = ("float", "int")
LAYOUT = "mma-b-units-32x128"
V1_LAYOUT = "kn-rowmajor-pad128"
GROUP_ALIGN = packing.UNIT_K

_SCALE_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_TORCH_SCALE = {v: k for k, v in _SCALE_DTYPES.items()}


def supported_weight_types() -> list[str]:
    """Every type ``quantize`` accepts: intB/uintB for B = 1..8 and every float of 3-8 bits."""
    return [t.name for t in dtypes.lowbit_types()]


def weight_type(dtype: Any) -> DataType:
    """The DataType for ``dtype`` if it is a supported weight type, else QuantizationError."""
    try:
        t = dtypes.get(dtype)
    except DataTypeError as e:
        raise QuantizationError(f"unsupported weight type {dtype!r}: {e}") from None
    if t.is_bool or t.nbits > 8 or (t.is_float and t.nbits < 3):
        raise QuantizationError(f"unsupported weight type {t.name}: quantize supports int1..int8, "
                                f"uint1..uint8 and the float types of 3 to 8 bits "
                                f"(e.g. 'uint4', 'int8', 'float4_e2m1', 'float8_e4m3')")
    return t


def value_exponent(t: DataType) -> int:
    """e such that 2^e is the largest power of two <= max_value for float types; 0 for integers."""
    if not t.is_float:
        return 0
    return int(math.floor(math.log2(float(t.max_value))))


def _scale_dtype(scale_dtype: Any, weight: torch.Tensor) -> torch.dtype:
    if scale_dtype is None:
        return torch.bfloat16 if weight.dtype == torch.bfloat16 else torch.float16
    if isinstance(scale_dtype, str) or isinstance(scale_dtype, DataType):
        name = str(scale_dtype)
        if name in _TORCH_SCALE:
            return _TORCH_SCALE[name]
    elif scale_dtype in _SCALE_DTYPES:
        return scale_dtype
    raise QuantizationError(f"scale_dtype must be float16 or bfloat16, got {scale_dtype!r}")


def _finite(x: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(x).all()):
        raise QuantizationError(f"a group's {what} overflows {x.dtype}; the weight is too large "
                                f"for {x.dtype} (use scale_dtype=torch.bfloat16)")
    return x


def _fold_exponent(s: torch.Tensor, e: int) -> tuple[torch.Tensor, int]:
    """(s * 2^-e, 0) when every scaled scale is a normal number of the scale type (then exact),
    else (s, e): the power of two goes into the scales, where the kernels apply it for free."""
    folded = s * (2.0 ** -e)
    if bool((folded.float().abs() >= torch.finfo(s.dtype).tiny).all()):
        return folded, 0
    return s, e


def _round_up_to(s: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    """Smallest value of ``dt`` >= s (s float32, >= 0): so that w/s never leaves the grid."""
    r = s.to(dt)
    low = r.float() < s
    if bool(low.any()):
        r = torch.where(low, torch.nextafter(r, torch.full_like(r, float("inf"))), r)
    if not bool(torch.isfinite(r).all()):
        raise QuantizationError(f"a group's scale {float(s.max()):.4g} overflows {dt}; the weight "
                                f"is too large for {dt} scales (use scale_dtype=torch.bfloat16)")
    return r


def meta_tensor(meta: dict) -> torch.Tensor:
    """A JSON-able metadata dict as a uint8 tensor of its UTF-8 JSON (CPU): state dicts stay
    tensor-only, as safetensors and Hugging Face checkpoints require."""
    return torch.tensor(list(json.dumps(meta, sort_keys=True).encode()), dtype=torch.uint8)


def meta_dict(meta: Any, where: str) -> dict:
    """The dict of ``meta_tensor`` (or a plain dict, as earlier state dicts stored it)."""
    if isinstance(meta, dict):
        return dict(meta)
    if isinstance(meta, torch.Tensor) and meta.dtype == torch.uint8 and meta.dim() == 1:
        try:
            out = json.loads(bytes(meta.cpu().tolist()).decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise QuantizationError(f"{where}: the metadata tensor is not JSON ({e})") from None
        if isinstance(out, dict):
            return out
    raise QuantizationError(f"{where}: metadata must be a dict or a uint8 JSON tensor, got "
                            f"{type(meta).__name__}")


class WeightShape:
    """``n``/``k`` (alias ``out_features``/``in_features``) of a stored weight from its
    ``shape`` ([N, K], nn.Linear's order): shared by every weight container of ``tilus.ops``."""

    shape: tuple

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def k(self) -> int:
        return self.shape[1]

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]


@dataclass(eq=False)
class QuantizedWeight(WeightShape):
    """A weight quantized group-wise along K and packed for the Tilus kernels (see module doc).

    ``shape`` is the original weight's ``(N, K)`` (nn.Linear's ``(out_features, in_features)``).
    """

    data: torch.Tensor                 # uint8, format 2/3 (tilus.ops.packing)
    scales: torch.Tensor               # [K / group_size, N], fp16/bf16
    offsets: Optional[torch.Tensor]    # [K / group_size, N]: offsets b like scales, or uint8
                                       # zero points z (zero_mode "int"), or None
    dtype: str                         # weight type name, e.g. "uint4"
    shape: tuple                       # (N, K)
    group_size: int
    symmetric: bool
    zero_point: float = 0.0            # the constant zero point when offsets is None
    exponent: int = 0                  # v = decode(q) * 2^-exponent (see module doc)
    format_version: int = FORMAT_VERSION
    layout: str = LAYOUT
    scheme: str = "group"              # "group", or block-scaled "mx" / "nvfp4"
    global_scale: float = 1.0          # nvfp4: the per-tensor float32 scale

    # ---- properties ------------------------------------------------------------------------
    @property
    def wtype(self) -> DataType:
        return dtypes.get(self.dtype)

    @property
    def nbits(self) -> int:
        return self.wtype.nbits

    @property
    def n_padded(self) -> int:
        return packing.padded(self.k, self.n)[1]

    @property
    def block_scaled(self) -> bool:
        """True for the mx and nvfp4 schemes (uint8 scale codes, format 3)."""
        return self.scheme != "group"

    @property
    def num_groups(self) -> int:
        return self.k // self.group_size

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def scale_dtype(self) -> torch.dtype:
        return self.scales.dtype

    @property
    def zero_mode(self) -> Optional[str]:
        """"float" (offsets b: ``v * s + b``), "int" (uint8 zero points z: ``(v - z) * s``) or
        None (no stored offsets)."""
        if self.offsets is None:
            return None
        return "int" if self.offsets.dtype == torch.uint8 else "float"

    @property
    def target(self) -> str:
        """The half type the codes are ordered for (the scale dtype's name; float16 for the
        block-scaled schemes)."""
        return "float16" if self.block_scaled else _SCALE_DTYPES[self.scales.dtype]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.data, self.scales, self.offsets)
                   if t is not None)

    def to(self, device) -> "QuantizedWeight":
        return QuantizedWeight(self.data.to(device), self.scales.to(device),
                               None if self.offsets is None else self.offsets.to(device),
                               self.dtype, tuple(self.shape), self.group_size, self.symmetric,
                               self.zero_point, self.exponent, self.format_version, self.layout,
                               self.scheme, self.global_scale)

    # ---- reference -------------------------------------------------------------------------
    def codes(self) -> torch.Tensor:
        """The [K, N] codes (uint8, unpacked, on the weight's device)."""
        return packing.unpack_codes(self.data, self.dtype, self.target, self.n, self.k)

    def values(self) -> torch.Tensor:
        """decode(code) * 2^-exponent as float32 [K, N] (the grid value before scale and
        offset)."""
        return value_table(self.dtype, self.device, self.exponent)[self.codes().long()]

    def dequantize(self, dtype: Optional[torch.dtype] = None,
                   transpose: bool = True) -> torch.Tensor:
        """The weight the kernels compute with: ``v * s + b`` (or ``(v - z) * s``) exact, rounded
        once to ``dtype``.
        ``[N, K]`` like the original (``transpose=False``: ``[K, N]``). ``dtype`` defaults to the
        scale dtype (float32 for the block-scaled schemes); the result is on the weight's
        device."""
        default = torch.float32 if self.block_scaled else self.scales.dtype
        w = dequantize_packed(self.data, self.scales, self.offsets, self.dtype, self.n, self.k,
                              self.group_size, self.zero_point, dtype or default,
                              self.exponent, self.scheme, self.global_scale)
        return w.t().contiguous() if transpose else w

    # ---- state dicts -----------------------------------------------------------------------
    def metadata(self) -> dict:
        meta = {"format_version": self.format_version, "layout": self.layout,
                "dtype": self.dtype, "shape": [int(x) for x in self.shape],
                "group_size": int(self.group_size), "symmetric": bool(self.symmetric),
                "zero_point": float(self.zero_point), "exponent": int(self.exponent)}
        if self.block_scaled:
            meta.update(scheme=self.scheme, global_scale=float(self.global_scale),
                        scale_type=blockscale.scale_type(self.scheme).name)
        return meta

    def to_state_dict(self) -> dict:
        """Tensors only (torch.save, safetensors, Hugging Face checkpoints): the metadata is the
        ``"meta"`` uint8 tensor of its JSON (``meta_tensor``)."""
        sd = {"qweight": self.data, "scales": self.scales, "meta": meta_tensor(self.metadata())}
        if self.offsets is not None:
            sd["offsets"] = self.offsets
        return sd

    @classmethod
    def from_state_dict(cls, sd: dict) -> "QuantizedWeight":
        """Format 3 or 2, or format 1 converted to 3 (logged)."""
        try:
            meta = meta_dict(sd["meta"], "QuantizedWeight state dict")
            data, scales = sd["qweight"], sd["scales"]
        except KeyError as e:
            raise QuantizationError(f"not a QuantizedWeight state dict: no {e} entry") from None
        version, layout = meta.get("format_version"), meta.get("layout")
        if (version, layout) == (1, V1_LAYOUT):
            return _from_v1(data, scales, sd.get("zeros"), meta)
        if version not in READ_VERSIONS or layout != LAYOUT:
            raise QuantizationError(f"unsupported packed-weight format {version}/{layout}; this "
                                    f"Tilus reads formats {READ_VERSIONS}/{LAYOUT} and "
                                    f"1/{V1_LAYOUT}")
        offsets = sd.get("offsets")
        if version == 2 and offsets is not None and offsets.dtype == torch.uint8:
            raise QuantizationError("format 2 has no integer zero points (uint8 offsets); "
                                    "they need format 3")
        _check_meta(meta)
        scheme, global_scale = _scheme_meta(meta, version)
        qw = cls(data, scales, offsets, meta["dtype"], tuple(meta["shape"]),
                 meta["group_size"], meta["symmetric"], meta.get("zero_point", 0.0),
                 meta.get("exponent", 0), version, LAYOUT, scheme, global_scale)
        qw.validate()
        return qw

    def validate(self) -> None:
        """Checks tensor shapes/dtypes against the metadata (QuantizationError)."""
        t = weight_type(self.dtype)
        n, k = self.shape
        exp_data = packing.data_shape(k, n, t.nbits)
        if self.data.dtype != torch.uint8 or tuple(self.data.shape) != exp_data:
            raise QuantizationError(f"packed data must be uint8 {list(exp_data)}, got "
                                    f"{self.data.dtype} {list(self.data.shape)}")
        if self.block_scaled:
            self._validate_block_scaled(t)
            return
        _check_group_size(self.group_size, k)
        g = (k // self.group_size, n)
        for name, x in (("scales", self.scales), ("offsets", self.offsets)):
            if x is None or (name == "offsets" and x.dtype == torch.uint8):
                continue
            if x.dtype not in _SCALE_DTYPES or tuple(x.shape) != g:
                raise QuantizationError(f"{name} must be float16/bfloat16 {list(g)}, got "
                                        f"{x.dtype} {list(x.shape)}")
        if self.zero_mode == "int":
            _check_zeros(self.offsets, t, g)
        elif self.offsets is not None and self.offsets.dtype != self.scales.dtype:
            raise QuantizationError(f"offsets ({self.offsets.dtype}) and scales "
                                    f"({self.scales.dtype}) must share one dtype")
        asymmetric = t.is_integer and not self.symmetric
        if asymmetric != (self.offsets is not None):
            raise QuantizationError(f"a {'symmetric' if self.symmetric else 'asymmetric'} "
                                    f"{t.name} weight {'has no' if asymmetric else 'takes no'} "
                                    f"offsets tensor{'' if asymmetric else ' (offsets given)'}")
        if self.offsets is None and self.zero_point not in _zero_points(t, self.symmetric):
            raise QuantizationError(f"zero_point {self.zero_point!r} is not the {t.name} scheme's "
                                    f"({_zero_points(t, self.symmetric)})")


    def _validate_block_scaled(self, t: DataType) -> None:
        blockscale.check_scheme(self.scheme, t)
        n, k = self.shape
        bs = blockscale.block_size(self.scheme)
        if self.group_size != bs or k % bs:
            raise QuantizationError(f"{self.scheme}: blocks are {bs} k (K = {k} a multiple of "
                                    f"it), got group_size {self.group_size}")
        g = (k // bs, n)
        if self.scales.dtype != torch.uint8 or tuple(self.scales.shape) != g:
            raise QuantizationError(f"{self.scheme} scales must be uint8 "
                                    f"{blockscale.scale_type(self.scheme).name} codes {list(g)}, "
                                    f"got {self.scales.dtype} {list(self.scales.shape)}")
        if self.offsets is not None or not self.symmetric or self.zero_point != 0.0:
            raise QuantizationError(f"{self.scheme} weights are symmetric: no offsets (float or "
                                    f"integer zero points), zero point 0")
        if self.exponent != blockscale.element_exponent(t):
            raise QuantizationError(f"{self.scheme} {t.name}: exponent must be "
                                    f"{blockscale.element_exponent(t)}, got {self.exponent}")
        if self.format_version < FORMAT_VERSION:
            raise QuantizationError(f"{self.scheme} weights are packed format "
                                    f"{FORMAT_VERSION}, got {self.format_version}")


def _scheme_meta(meta: dict, version: int) -> tuple:
    """``(scheme, global_scale)`` of a format-2/3 metadata dict: format 3 may name a block-scaled
    scheme (absent: "group"), with its ``scale_type`` and ``global_scale``; format 2 may not."""
    scheme = meta.get("scheme", "group")
    if scheme == "group":
        return "group", 1.0
    if version == 2 or scheme not in blockscale.SCHEMES:
        known = ("group",) if version == 2 else ("group", *blockscale.SCHEMES)
        raise QuantizationError(f"QuantizedWeight metadata: format {version} has the schemes "
                                f"{', '.join(known)}, got {scheme!r}")
    scale_type = meta.get("scale_type", blockscale.scale_type(scheme).name)
    if scale_type != blockscale.scale_type(scheme).name:
        raise QuantizationError(f"QuantizedWeight metadata: {scheme} scales are "
                                f"{blockscale.scale_type(scheme).name}, got {scale_type!r}")
    global_scale = meta.get("global_scale", 1.0)
    if not isinstance(global_scale, (int, float)) or isinstance(global_scale, bool) \
            or not math.isfinite(global_scale) or global_scale <= 0:
        raise QuantizationError(f"QuantizedWeight metadata: global_scale must be a positive "
                                f"finite number, got {global_scale!r}")
    return scheme, float(global_scale)


def _check_zeros(zeros: torch.Tensor, t: DataType, shape: tuple) -> None:
    """Integer zero points: uint8 ``shape``, for an unsigned integer type (QuantizationError). Any
    uint8 value is allowed (GPTQ's ``"gptq"`` format can store z = 2^B)."""
    if not (t.is_integer and not t.is_signed):
        raise QuantizationError(f"integer zero points (uint8 offsets) need an unsigned integer "
                                f"weight type, got {t.name}")
    if tuple(zeros.shape) != shape:
        raise QuantizationError(f"zero points must be uint8 {list(shape)}, got "
                                f"{list(zeros.shape)}")


def _zero_points(t: DataType, symmetric: bool) -> tuple:
    """The constant zero points a scheme without offsets may have."""
    if t.is_integer and not t.is_signed and symmetric:
        return (float(2 ** (t.nbits - 1)),)
    return (0.0,)


_META_TYPES = {"dtype": str, "shape": (list, tuple), "group_size": int, "symmetric": bool,
               "zero_point": (int, float), "exponent": int}


def _check_meta(meta: dict) -> None:
    """Every metadata field a format-2 weight needs, with its type (QuantizationError)."""
    for name, want in _META_TYPES.items():
        if name in ("zero_point", "exponent") and name not in meta:
            continue
        value = meta.get(name)
        if value is None or not isinstance(value, want) or \
                (want is int and isinstance(value, bool)):
            raise QuantizationError(f"QuantizedWeight metadata: {name!r} must be "
                                    f"{getattr(want, '__name__', 'a list of 2 ints')}, got "
                                    f"{type(value).__name__} {value!r}")
    shape = meta["shape"]
    if len(shape) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                  for x in shape):
        raise QuantizationError(f"QuantizedWeight metadata: shape must be [N, K] of positive "
                                f"ints, got {shape!r}")
    if meta["group_size"] <= 0:
        raise QuantizationError(f"QuantizedWeight metadata: group_size must be positive, got "
                                f"{meta['group_size']}")
    check_exponent(meta.get("exponent", 0), "QuantizedWeight metadata")


def check_exponent(exponent: Any, where: str) -> int:
    """The stored scales' power of two ``E`` (an int in [0, 64)), else QuantizationError."""
    if not isinstance(exponent, int) or isinstance(exponent, bool) or not 0 <= exponent < 64:
        raise QuantizationError(f"{where}: exponent must be in [0, 64) (an int), got "
                                f"{exponent!r}")
    return exponent


def _check_group_size(group_size: int, k: int) -> None:
    if k % group_size:
        raise QuantizationError(f"group_size {group_size} does not divide K={k}")
    if group_size != k and group_size % GROUP_ALIGN:
        raise QuantizationError(f"group_size {group_size} must be a multiple of {GROUP_ALIGN} "
                                f"(the packed format's k-unit) or the whole K = {k} (None)")


def _from_v1(data, scales, zeros, meta: dict) -> QuantizedWeight:
    """A format-1 state dict as format 3: codes repacked, zero points z turned into offsets
    b = -z * s (rounded to the scale type)."""
    n, k = (int(x) for x in meta["shape"])
    dtype = weight_type(meta["dtype"]).name
    codes = packing.unpack_v1_codes(data, dtype, n, k)
    target = _SCALE_DTYPES.get(scales.dtype)
    if target is None:
        raise QuantizationError(f"scales must be float16/bfloat16, got {scales.dtype}")
    offsets = None if zeros is None else (-zeros.float() * scales.float()).to(scales.dtype)
    logger.info("converting a format-1 quantized weight %s %s to format %d (%s)", dtype,
                [n, k], FORMAT_VERSION, LAYOUT)
    qw = QuantizedWeight(packing.pack_codes(codes, dtype, target), scales, offsets, dtype, (n, k),
                         int(meta["group_size"]), bool(meta["symmetric"]),
                         float(meta.get("zero_point", 0.0)), value_exponent(weight_type(dtype)))
    qw.validate()
    return qw


_TABLES: dict = {}


def value_table(dtype: str, device, exponent: Optional[int] = None) -> torch.Tensor:
    """float32 [2^B]: decode(code) * 2^-exponent for every code of the weight type (NaN codes ->
    0); ``exponent`` defaults to the type's ``value_exponent``."""
    t = dtypes.get(dtype)
    e = value_exponent(t) if exponent is None else int(exponent)
    key = (dtype, str(device), e)
    if key not in _TABLES:
        v = t.decode(np.arange(2 ** t.nbits, dtype=np.uint8)).astype(np.float64)
        v = np.nan_to_num(v * 2.0 ** -e, nan=0.0, posinf=0.0, neginf=0.0)
        _TABLES[key] = torch.from_numpy(v.astype(np.float32)).to(device)
    return _TABLES[key]


def dequantize_packed(data, scales, offsets, dtype: str, n: int, k: int, group_size: int,
                      zero_point: float, out_dtype: torch.dtype, exponent: int = 0,
                      scheme: str = "group", global_scale: float = 1.0) -> torch.Tensor:
    """[K, N] in out_dtype: ``v * s + b`` (``offsets`` in the scale dtype) or ``(v - z) * s``
    (``offsets`` uint8 zero points z) exact (float64), rounded once, from the packed tensors
    (any device; the CPU fallback of ``tilus.ops.matmul`` and ``QuantizedWeight.dequantize``).
    Block-scaled schemes: ``v * scale(code) * global_scale``."""
    block = scheme != "group"
    target = "float16" if block else _SCALE_DTYPES[scales.dtype]
    codes = packing.unpack_codes(data, dtype, target, n, k)
    v = value_table(dtype, data.device, exponent)[codes.long()].double()
    if block:
        s = blockscale.scale_values(scales, scheme).repeat_interleave(group_size, dim=0)
        return (v * s * float(global_scale)).to(out_dtype)
    s = scales.double().repeat_interleave(group_size, dim=0)
    if offsets is not None and offsets.dtype == torch.uint8:
        z = offsets.double().repeat_interleave(group_size, dim=0)
        return ((v - z) * s).to(out_dtype)
    if offsets is not None:
        b = offsets.double().repeat_interleave(group_size, dim=0)
    else:
        b = -zero_point * s
    return (v * s + b).to(out_dtype)


def _check_weight(weight: Any) -> torch.Tensor:
    if isinstance(weight, np.ndarray):
        weight = torch.from_numpy(weight)
    if not isinstance(weight, torch.Tensor):
        raise QuantizationError(f"weight must be a torch tensor [N, K], got "
                                f"{type(weight).__name__}")
    if weight.dim() != 2:
        raise QuantizationError(f"weight must be 2-D [N, K] (nn.Linear's [out_features, "
                                f"in_features]), got shape {list(weight.shape)}")
    if not weight.is_floating_point():
        raise QuantizationError(f"weight must be a floating-point tensor, got {weight.dtype}")
    if weight.numel() == 0:
        raise QuantizationError(f"weight is empty (shape {list(weight.shape)})")
    if weight.device.type == "meta":
        raise QuantizationError("weight is on the meta device (no values to quantize); "
                                "materialize it first (e.g. module.to_empty + load_state_dict)")
    w = weight.detach().float()
    bad = ~torch.isfinite(w)
    if bool(bad.any()):
        idx = [int(i) for i in bad.nonzero()[0]]
        raise QuantizationError(f"weight has {int(bad.sum())} NaN/inf value(s), e.g. at {idx} "
                                f"({w[idx[0], idx[1]].item()}); quantization needs finite weights")
    return w


@overload
def quantize(weight: torch.Tensor, dtype: dict, group_size: Optional[int] = 128,
             symmetric: Optional[bool] = None, scale_dtype: Any = None,
             zero_mode: str = "float", scheme: str = "group") -> "MixedQuantizedWeight": ...


@overload
def quantize(weight: torch.Tensor, dtype: Any = None, group_size: Optional[int] = 128,
             symmetric: Optional[bool] = None, scale_dtype: Any = None,
             zero_mode: str = "float", scheme: str = "group") -> QuantizedWeight: ...


def quantize(weight: torch.Tensor, dtype: Any = None, group_size: Optional[int] = 128,
             symmetric: Optional[bool] = None, scale_dtype: Any = None,
             zero_mode: str = "float", scheme: str = "group") -> Any:
    """Quantizes ``weight`` ``[N, K]`` (nn.Linear layout) group-wise along K.

    ``dtype`` may be a dict ``{wide: columns, narrow: "rest"}``, e.g. ``{"uint8": [3, 17],
    "uint4": "rest"}``: mixed-width output features, the listed output features (rows of the
    weight) in ``wide`` and the others in ``narrow``, returned as a
    ``tilus.ops.mixed.MixedQuantizedWeight`` (group-scaled only; see that module).

    ``scheme``: ``"group"`` (below), or the block-scaled ``"mx"`` (OCP MX: ``dtype`` one of
    float4_e2m1, float6_e2m3, float6_e3m2, float8_e4m3, float8_e5m2, int8; blocks of 32 with E8M0
    scales) and ``"nvfp4"`` (float4_e2m1, blocks of 16 with E4M3 scales and a float32 scale per
    tensor): see ``tilus.ops.blockscale``. Their block size is fixed (``group_size`` must be the
    default, None or the block) and they take no ``symmetric``/``scale_dtype``.

    ``dtype``: any intB/uintB (B = 1..8) or floatK_eXmY (K = 3..8) name or DataType.
    ``group_size``: k's per group; None or -1 = one group over all of K (per-channel).
    ``symmetric``: None = the type's natural scheme (uint: asymmetric with offsets; int and
    float: symmetric). Floats are always symmetric (``symmetric=False`` is an error).
    ``scale_dtype``: torch.float16 / torch.bfloat16 (default: bf16 for a bf16 weight, else fp16).
    ``zero_mode`` (asymmetric uintB only): "float" (default: offsets ``b`` in the scale dtype,
    ``w' = v * s + b``) or "int" (uint8 zero points ``z``, ``w' = (v - z) * s``, GPTQ's scheme).
    """
    if zero_mode not in ZERO_MODES:
        raise QuantizationError(f"zero_mode must be one of {ZERO_MODES}, got {zero_mode!r}")
    if isinstance(dtype, dict):
        if scheme != "group":
            raise QuantizationError(f"mixed-width weights (a dict dtype) are group-scaled; "
                                    f"scheme {scheme!r} does not apply")
        from tilus.ops.mixed import quantize_mixed

        return quantize_mixed(weight, dtype, group_size, symmetric, scale_dtype, zero_mode)
    if scheme != "group":
        if zero_mode != "float":
            raise QuantizationError(f"scheme {scheme!r} is symmetric (scales only): it has no "
                                    f"zero points, so zero_mode must be \"float\", got "
                                    f"{zero_mode!r}")
        return _quantize_block_scaled(weight, dtype, group_size, symmetric, scale_dtype, scheme)
    t = weight_type("uint4" if dtype is None else dtype)
    w = _check_weight(weight)
    n, k = w.shape
    if group_size is None or group_size == -1:
        group_size = k
    if not isinstance(group_size, (int, np.integer)) or isinstance(group_size, bool) \
            or group_size <= 0:
        raise QuantizationError(f"group_size must be a positive int (or None/-1 for one group), "
                                f"got {group_size!r}")
    group_size = int(group_size)
    if k % group_size:
        raise QuantizationError(f"group_size {group_size} does not divide K = {k} (the weight's "
                                f"in_features, dim 1 of [N, K]); pick a divisor of K or "
                                f"group_size=None for one group per column")
    _check_group_size(group_size, k)
    if t.is_float:
        if symmetric is False:
            raise QuantizationError(f"{t.name}: float weight types are scale-only (symmetric); "
                                    f"symmetric=False is not supported")
        symmetric = True
    elif symmetric is None:
        symmetric = t.is_signed and t.nbits > 1
    if symmetric and t.is_integer and t.nbits == 1:
        raise QuantizationError(f"{t.name} has no symmetric grid (1 bit); use symmetric=False")
    if zero_mode == "int" and (symmetric or t.is_float or t.is_signed):
        raise QuantizationError(f"zero_mode='int' (integer zero points) is for asymmetric "
                                f"unsigned integer types (uint1..uint8, symmetric=False), got "
                                f"{t.name} symmetric={symmetric}")
    sdt = _scale_dtype(scale_dtype, weight)
    g = k // group_size
    wk = w.t().reshape(g, group_size, n)           # [G, gs, N], groups along K
    offsets = None
    zero_point = 0.0
    exponent = 0
    if t.is_float:
        norm = 2.0 ** -value_exponent(t)
        absmax = wk.abs().amax(dim=1)               # [G, N]
        s = _round_up_to(absmax / (float(t.max_value) * norm), sdt)
        s = torch.where(s.float() > 0, s, torch.ones_like(s))
        x = (wk / (s.float() * norm).unsqueeze(1)).reshape(k, n)
        codes = encode_float(x, t)
        s, exponent = _fold_exponent(s, value_exponent(t))
    else:
        qmin, qmax = int(t.min_value), int(t.max_value)
        if symmetric:
            half = 2 ** (t.nbits - 1) - 1
            absmax = wk.abs().amax(dim=1)
            s = _round_up_to(absmax / half, sdt)
            s = torch.where(s.float() > 0, s, torch.ones_like(s))
            zero_point = 0.0 if t.is_signed else float(2 ** (t.nbits - 1))
            b = -zero_point * s.double()
        else:
            lo, hi = wk.amin(dim=1), wk.amax(dim=1)
            if zero_mode == "int":          # z = -lo / s must be a code: the range holds 0
                lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
            rng = hi - lo
            s = rng / (qmax - qmin)
            s = torch.where(rng > 0, s, torch.maximum(lo.abs(), hi.abs()) / (qmax - qmin))
            s = _round_up_to(s, sdt)
            s = torch.where(s.float() > 0, s, torch.ones_like(s))
            if zero_mode == "int":
                z = torch.clamp(torch.round(-lo.double() / s.double()), qmin, qmax)
                offsets = z.to(torch.uint8)
                b = -z * s.double()
            else:
                offsets = _finite((lo.double() - qmin * s.double()).to(sdt), "offset")
                b = offsets.double()
        q = torch.round((wk.double() - b.unsqueeze(1)) / s.double().unsqueeze(1))
        q = torch.clamp(q, qmin, qmax).to(torch.int64).reshape(k, n)
        codes = (q & ((1 << t.nbits) - 1)).to(torch.uint8)
    data = packing.pack_codes(codes, t.name, _SCALE_DTYPES[sdt])
    return QuantizedWeight(data.to(weight.device), s.contiguous(),
                           None if offsets is None else offsets.contiguous(), t.name, (n, k),
                           group_size, bool(symmetric), zero_point, exponent)


def _quantize_block_scaled(weight, dtype, group_size, symmetric, scale_dtype,
                           scheme: str) -> QuantizedWeight:
    """``quantize`` for the mx and nvfp4 schemes (format 3)."""
    if scheme not in blockscale.SCHEMES:
        raise QuantizationError(f"unknown scheme {scheme!r}; schemes are 'group', "
                                f"{', '.join(repr(s) for s in blockscale.SCHEMES)}")
    bs = blockscale.block_size(scheme)
    t = weight_type("float4_e2m1" if dtype is None and scheme == "nvfp4" else dtype)
    blockscale.check_scheme(scheme, t)
    if group_size not in (None, 128, bs):
        raise QuantizationError(f"{scheme}: the block size is {bs}; group_size {group_size!r} "
                                f"does not apply (leave it out)")
    if symmetric is False or scale_dtype is not None:
        raise QuantizationError(f"{scheme}: the scales are {blockscale.scale_type(scheme).name} "
                                f"(symmetric); symmetric=False and scale_dtype do not apply")
    w = _check_weight(weight)
    n, k = w.shape
    if k % bs:
        raise QuantizationError(f"{scheme}: K = {k} (in_features) must be a multiple of the "
                                f"block size {bs}")
    wk = w.double().t().reshape(k // bs, bs, n)
    global_scale = 1.0
    if scheme == "mx":
        codes, scales = blockscale.quantize_mx(wk, t)
    else:
        codes, scales, global_scale = blockscale.quantize_nvfp4(wk, t)
    data = packing.pack_codes(codes, t.name, "float16")
    qw = QuantizedWeight(data.to(weight.device), scales.contiguous().to(weight.device), None,
                         t.name, (n, k), bs, True, 0.0, blockscale.element_exponent(t),
                         FORMAT_VERSION, LAYOUT, scheme, global_scale)
    qw.validate()
    return qw
