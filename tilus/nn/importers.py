"""Import GPTQ, AWQ and compressed-tensors checkpoints into ``QuantLinear`` without re-quantizing.

The GPTQ layout (AutoGPTQ / GPTQModel, ``checkpoint_format="gptq"``) of one linear layer with
``K = in_features``, ``N = out_features``, ``b`` bits (2, 3, 4 or 8):

* ``qweight`` int32 ``[K * b / 32, N]``: column n's codes along K as one little-endian bit
  stream, code ``q[k, n]`` at bits ``[b * k, b * k + b)`` (lowest bits first: for b = 2, 4, 8
  word ``k // (32 / b)`` holds it; 3-bit codes 10 and 21 of each 32 cross two words);
* ``qzeros`` int32 ``[G, N * b / 32]``: the zero point of group g, column n, packed the same way
  along N; the ``"gptq"`` format stores ``z - 1`` (``"gptq_v2"`` stores z);
* ``scales`` fp16 ``[G, N]``; ``g_idx`` int32 ``[K]``: the group of row k (``k // group_size``
  unless the checkpoint was quantized in activation order, ``desc_act``);
* ``w[k, n] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n]``.

Symmetric checkpoints (every z = 2^(b-1)) become ``uint{b}`` with ``symmetric=True``: Tilus computes
``(q - 2^(b-1)) * s`` exactly as GPTQ does. Others keep their integer zero points (uint8,
``zero_mode="int"``): Tilus computes ``(q - z) * s`` with ``q - z`` exact and one rounding, also
exactly as GPTQ does. Activation order: the rows are sorted by group (stable) and the layer reads
``x[..., input_perm]``, so groups are contiguous as Tilus needs.

The AWQ layout (AutoAWQ's GEMM format, 4 bits): ``qweight`` int32 ``[K, N / 8]`` and ``qzeros``
int32 ``[G, N / 8]`` pack along N, word ``c`` holding at bits ``[4i, 4i + 4)`` the code of column
``8c + (0, 2, 4, 6, 1, 3, 5, 7)[i]``; zeros are stored as they are; ``scales`` fp16 ``[G, N]``;
``w[k, n] = (q[k, n] - z[k // group_size, n]) * scales[k // group_size, n]``.

The compressed-tensors ``pack-quantized`` layout (``type: int``, ``num_bits`` b = 1..8,
``group``/``channel``/``tensor`` strategies) of a weight ``[N, K]``:

* ``weight_packed`` int32 ``[N, ceil(K * b / 32)]``: row n's codes along K (the input dim) as one
  dense little-endian bit stream, code k at bits ``[b * k, b * k + b)``; a code stores the signed
  value ``q`` in ``[-2^(b-1), 2^(b-1))`` offset to ``q + 2^(b-1)``;
* ``weight_scale`` ``[N, G]`` (``G = K / group_size``; 1 per channel; one value per tensor);
* ``weight_zero_point`` (asymmetric only) int32 ``[ceil(N * b / 32), G]``: the signed zero points
  ``zp`` packed the same way along N (dim 0), offset the same way; ``weight_shape`` = ``[N, K]``;
* ``w[n, k] = (q[n, k] - zp[n, g]) * weight_scale[n, g]`` with ``g = k // group_size``
  (``zp = 0`` when symmetric), rounded once to the scale dtype.

It is imported on the unsigned grid: codes ``q + 2^(b-1)``, zero points ``zp + 2^(b-1)``, so a
symmetric layer is ``uint{b}`` with ``symmetric=True`` (bit-exact) and an asymmetric one stores
the zero points ``zp + 2^(b-1)`` as GPTQ's (bit-exact too).
"""
from __future__ import annotations

from typing import Optional

import torch

from tilus.errors import QuantizationError
from tilus.nn.linear import QuantLinear
from tilus.ops import packing
from tilus.ops.quantize import QuantizedWeight


BITS = (2, 3, 4, 8)
FORMATS = ("gptq", "gptq_v2")
CT_BITS = tuple(range(1, 9))
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)    # the column of each nibble of an AWQ word


def unpack_int32(packed: torch.Tensor, bits: int, dim: int,
                 count: Optional[int] = None) -> torch.Tensor:
    """The first ``count`` (default: all) b-bit codes (uint8) of an int32 tensor packed densely
    along ``dim``: code i is bits ``[b * i, b * i + b)`` of the words' little-endian bit stream
    (lowest bits first; for b = 3 a code may cross two words)."""
    words = packed.movedim(dim, -1).to(torch.int64) & 0xFFFFFFFF
    nbytes = words.shape[-1] * 4
    count = nbytes * 8 // bits if count is None else count
    shifts = torch.arange(0, 32, 8, device=packed.device, dtype=torch.int64)
    stream = ((words.unsqueeze(-1) >> shifts) & 0xFF).reshape(*words.shape[:-1], nbytes)
    stream = torch.nn.functional.pad(stream, (0, 1))            # a code may end in the last byte
    start = torch.arange(count, device=packed.device, dtype=torch.int64) * bits
    pair = stream[..., start // 8] | (stream[..., start // 8 + 1] << 8)
    codes = (pair >> (start % 8)) & ((1 << bits) - 1)
    return codes.to(torch.uint8).movedim(-1, dim)


def from_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
              g_idx: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
              bits: int = 4, checkpoint_format: str = "gptq") -> QuantLinear:
    """A ``QuantLinear`` computing exactly the GPTQ layer's ``x @ W.T + bias`` (see module doc)."""
    if bits not in BITS:
        raise QuantizationError(f"from_gptq: bits must be one of {BITS}, got {bits}")
    if checkpoint_format not in FORMATS:
        raise QuantizationError(f"from_gptq: checkpoint_format must be one of {FORMATS}, got "
                                f"{checkpoint_format!r}")
    _check_packed("from_gptq", qweight=qweight, qzeros=qzeros)
    k, n = qweight.shape[0] * 32 // bits, qweight.shape[1]
    if qweight.shape[0] * 32 % bits:
        raise QuantizationError(f"from_gptq: {qweight.shape[0]} rows of int32 words do not hold "
                                f"a whole number of {bits}-bit codes")
    groups = scales.shape[0] if scales.dim() == 2 else 0
    if scales.dim() != 2 or scales.shape[1] != n or scales.dtype not in (torch.float16,
                                                                          torch.bfloat16):
        raise QuantizationError(f"from_gptq: scales must be float16/bfloat16 [G, {n}], got "
                                f"{scales.dtype} {list(scales.shape)}")
    if tuple(qzeros.shape) != (groups, n * bits // 32) or n * bits % 32:
        raise QuantizationError(f"from_gptq: qzeros must be [{groups}, {n * bits // 32}] for {n} "
                                f"columns of {bits} bits, got {list(qzeros.shape)}")
    if k % groups:
        raise QuantizationError(f"from_gptq: {k} rows do not split into {groups} groups")
    group_size = k // groups
    codes = unpack_int32(qweight, bits, 0, k)                                # [K, N]
    zeros = unpack_int32(qzeros, bits, 1, n).to(torch.int64)                 # [G, N]
    if checkpoint_format == "gptq":
        zeros = zeros + 1
    perm = _group_order(g_idx, k, group_size, groups)
    if perm is not None:
        codes = codes[perm]
    return _layer(codes, zeros, scales, bias, bits, perm)


def from_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
             bias: Optional[torch.Tensor] = None) -> QuantLinear:
    """A ``QuantLinear`` computing exactly the AWQ (GEMM, 4-bit) layer's ``x @ W.T + bias``."""
    _check_packed("from_awq", qweight=qweight, qzeros=qzeros)
    k, n = qweight.shape[0], qweight.shape[1] * 8
    if scales.dim() != 2 or scales.shape[1] != n or scales.dtype not in (torch.float16,
                                                                          torch.bfloat16):
        raise QuantizationError(f"from_awq: scales must be float16/bfloat16 [G, {n}], got "
                                f"{scales.dtype} {list(scales.shape)}")
    groups = scales.shape[0]
    if tuple(qzeros.shape) != (groups, n // 8) or k % groups:
        raise QuantizationError(f"from_awq: qzeros must be [{groups}, {n // 8}] and {k} rows "
                                f"must split into {groups} groups, got {list(qzeros.shape)}")
    order = torch.argsort(torch.tensor(AWQ_ORDER, device=qweight.device))
    columns = (torch.arange(n // 8, device=qweight.device).unsqueeze(1) * 8 + order).reshape(-1)
    codes = unpack_int32(qweight, 4, 1)[:, columns]
    zeros = unpack_int32(qzeros, 4, 1)[:, columns].to(torch.int64)
    return _layer(codes, zeros, scales, bias, 4, None)


def from_compressed_tensors(weight_packed: torch.Tensor, weight_scale: torch.Tensor,
                            weight_shape, weight_zero_point: Optional[torch.Tensor] = None,
                            bias: Optional[torch.Tensor] = None, bits: int = 4) -> QuantLinear:
    """A ``QuantLinear`` computing exactly the compressed-tensors ``pack-quantized`` int layer's
    ``x @ W.T + bias`` (see the module doc); ``bits`` is the scheme's ``num_bits``."""
    if bits not in CT_BITS:
        raise QuantizationError(f"from_compressed_tensors: bits must be in 1..8, got {bits}")
    _check_packed("from_compressed_tensors", weight_packed=weight_packed)
    n, k = (int(x) for x in (weight_shape.tolist() if isinstance(weight_shape, torch.Tensor)
                             else weight_shape))
    words = -(-k * bits // 32)
    if tuple(weight_packed.shape) != (n, words):
        raise QuantizationError(f"from_compressed_tensors: weight_packed must be int32 [{n}, "
                                f"{words}] for weight_shape [{n}, {k}] at {bits} bits, got "
                                f"{list(weight_packed.shape)}")
    scale = weight_scale.reshape(1, 1) if weight_scale.numel() == 1 else weight_scale
    if scale.dim() != 2 or scale.shape[0] not in (1, n) or k % scale.shape[1] or \
            scale.dtype not in (torch.float16, torch.bfloat16):
        raise QuantizationError(f"from_compressed_tensors: weight_scale must be float16/bfloat16 "
                                f"[{n}, G] with G dividing {k} (or one scale per tensor), got "
                                f"{scale.dtype} {list(weight_scale.shape)}")
    scales = scale.expand(n, scale.shape[1]).t().contiguous()                # [G, N]
    half = 2 ** (bits - 1)
    codes = unpack_int32(weight_packed, bits, 1, k).t()                       # [K, N], q + half
    if weight_zero_point is None:
        zeros = torch.full(scales.shape, half, dtype=torch.int64, device=codes.device)
    else:
        _check_packed("from_compressed_tensors", weight_zero_point=weight_zero_point)
        if tuple(weight_zero_point.shape) != (-(-n * bits // 32), scales.shape[0]):
            raise QuantizationError(f"from_compressed_tensors: weight_zero_point must be int32 "
                                    f"[{-(-n * bits // 32)}, {scales.shape[0]}], got "
                                    f"{list(weight_zero_point.shape)}")
        zeros = unpack_int32(weight_zero_point, bits, 0, n).t().to(torch.int64)  # [G, N]
    return _layer(codes, zeros, scales, bias, bits, None)


def _check_packed(who: str, **tensors) -> None:
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor) or x.dtype != torch.int32 or x.dim() != 2:
            raise QuantizationError(f"{who}: {name} must be a 2-D int32 tensor, got "
                                    f"{getattr(x, 'dtype', type(x).__name__)}")


def _layer(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
           bias: Optional[torch.Tensor], bits: int, perm: Optional[torch.Tensor]) -> QuantLinear:
    """The QuantLinear of ``(codes [K, N] - zeros[group]) * scales[group]`` (rows in ``perm``
    order when given): symmetric uint when every zero is 2^(bits-1), else integer zero points."""
    k, n = codes.shape
    group_size = k // scales.shape[0]
    half = 2 ** (bits - 1)
    symmetric = bool((zeros == half).all())
    offsets = None
    if not symmetric:
        if bool((zeros < 0).any()) or bool((zeros > 255).any()):
            raise QuantizationError(f"zero points must lie in [0, 255], got [{int(zeros.min())}, "
                                    f"{int(zeros.max())}]")
        offsets = zeros.to(torch.uint8)
    data = packing.pack_codes(codes, f"uint{bits}", str(scales.dtype).split(".")[-1])
    qw = QuantizedWeight(data, scales.contiguous(), offsets, f"uint{bits}", (n, k), group_size,
                         symmetric, float(half) if symmetric else 0.0)
    qw.validate()
    layer = QuantLinear(k, n, bias is not None, qw.dtype, group_size, symmetric, scales.dtype,
                        device=codes.device, act_order=perm is not None,
                        zero_mode="float" if symmetric else "int")
    layer.qweight.copy_(qw.data)
    layer.scales.copy_(qw.scales)
    if offsets is not None:
        layer.offsets.copy_(offsets)
    if bias is not None:
        layer.bias.copy_(bias.detach().to(layer.bias.dtype))
    if perm is not None:
        layer.input_perm.copy_(perm)
    return layer


def _group_order(g_idx: Optional[torch.Tensor], k: int, group_size: int,
                 groups: int) -> Optional[torch.Tensor]:
    """None when row k is in group k // group_size; else the stable sort of the rows by group
    (QuantizationError unless every group has group_size rows)."""
    if g_idx is None:
        return None
    g = g_idx.to(torch.int64).reshape(-1)
    if g.numel() != k or bool((g < 0).any()) or bool((g >= groups).any()):
        raise QuantizationError(f"from_gptq: g_idx must hold {k} group indices in [0, {groups})")
    if torch.equal(g, torch.arange(k, device=g.device) // group_size):
        return None
    if not bool((torch.bincount(g, minlength=groups) == group_size).all()):
        raise QuantizationError(f"from_gptq: every group of g_idx must have {group_size} rows")
    return torch.sort(g, stable=True).indices
