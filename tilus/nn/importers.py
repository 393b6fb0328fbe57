"""Import GPTQ and AWQ checkpoints into ``QuantLinear`` without re-quantizing.

The GPTQ layout (AutoGPTQ / GPTQModel, ``checkpoint_format="gptq"``) of one linear layer with
``K = in_features``, ``N = out_features``, ``b`` bits (2, 4 or 8; ``p = 32 // b`` codes per int32):

* ``qweight`` int32 ``[K / p, N]``: code ``q[k, n]`` is bits ``[b * (k % p), b * (k % p) + b)`` of
  ``qweight[k // p, n]`` (packed along K, lowest bits first);
* ``qzeros`` int32 ``[G, N / p]``: the zero point of group g, column n, packed the same way along
  N; the ``"gptq"`` format stores ``z - 1`` (``"gptq_v2"`` stores z);
* ``scales`` fp16 ``[G, N]``; ``g_idx`` int32 ``[K]``: the group of row k (``k // group_size``
  unless the checkpoint was quantized in activation order, ``desc_act``);
* ``w[k, n] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n]``.

Symmetric checkpoints (every z = 2^(b-1)) become ``uint{b}`` with ``symmetric=True``: Tilus computes
``(q - 2^(b-1)) * s`` exactly as GPTQ does. Others store the offset ``-z * s`` rounded to fp16
(exact unless ``z * s`` needs more than 11 significant bits; the import logs the largest
difference). Activation order: the rows are sorted by group (stable) and the layer reads
``x[..., input_perm]``, so groups are contiguous as Tilus needs.

The AWQ layout (AutoAWQ's GEMM format, 4 bits): ``qweight`` int32 ``[K, N / 8]`` and ``qzeros``
int32 ``[G, N / 8]`` pack along N, word ``c`` holding at bits ``[4i, 4i + 4)`` the code of column
``8c + (0, 2, 4, 6, 1, 3, 5, 7)[i]``; zeros are stored as they are; ``scales`` fp16 ``[G, N]``;
``w[k, n] = (q[k, n] - z[k // group_size, n]) * scales[k // group_size, n]``.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from tilus.errors import QuantizationError
from tilus.nn.linear import QuantLinear
from tilus.ops import packing
from tilus.ops.quantize import QuantizedWeight

log = logging.getLogger(__name__)

BITS = (2, 4, 8)
FORMATS = ("gptq", "gptq_v2")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)    # the column of each nibble of an AWQ word


def unpack_int32(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """The b-bit codes (uint8) of an int32 tensor packed along ``dim``, lowest bits first."""
    p = 32 // bits
    words = packed.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(0, 32, bits, device=packed.device, dtype=torch.int64)
    codes = (words.unsqueeze(dim + 1) >> shifts.view(*([1] * (dim + 1)), p,
                                                     *([1] * (packed.dim() - dim - 1))))
    codes = codes & ((1 << bits) - 1)
    shape = list(packed.shape)
    shape[dim] *= p
    return codes.reshape(shape).to(torch.uint8)


def from_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
              g_idx: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
              bits: int = 4, checkpoint_format: str = "gptq") -> QuantLinear:
    """A ``QuantLinear`` computing exactly the GPTQ layer's ``x @ W.T + bias`` (see module doc)."""
    if bits not in BITS:
        raise QuantizationError(f"from_gptq: bits must be one of {BITS} (GPTQ's 3-bit packing "
                                f"crosses int32 words and is not supported), got {bits}")
    if checkpoint_format not in FORMATS:
        raise QuantizationError(f"from_gptq: checkpoint_format must be one of {FORMATS}, got "
                                f"{checkpoint_format!r}")
    _check_packed("from_gptq", qweight=qweight, qzeros=qzeros)
    p = 32 // bits
    k, n = qweight.shape[0] * p, qweight.shape[1]
    groups = scales.shape[0] if scales.dim() == 2 else 0
    if scales.dim() != 2 or scales.shape[1] != n or scales.dtype not in (torch.float16,
                                                                          torch.bfloat16):
        raise QuantizationError(f"from_gptq: scales must be float16/bfloat16 [G, {n}], got "
                                f"{scales.dtype} {list(scales.shape)}")
    if tuple(qzeros.shape) != (groups, n // p) or n % p:
        raise QuantizationError(f"from_gptq: qzeros must be [{groups}, {n // p}] for {n} columns "
                                f"of {bits} bits, got {list(qzeros.shape)}")
    if k % groups:
        raise QuantizationError(f"from_gptq: {k} rows do not split into {groups} groups")
    group_size = k // groups
    codes = unpack_int32(qweight, bits, 0)                                   # [K, N]
    zeros = unpack_int32(qzeros, bits, 1).to(torch.int64)                    # [G, N]
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


def _check_packed(who: str, **tensors) -> None:
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor) or x.dtype != torch.int32 or x.dim() != 2:
            raise QuantizationError(f"{who}: {name} must be a 2-D int32 tensor, got "
                                    f"{getattr(x, 'dtype', type(x).__name__)}")


def _layer(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor,
           bias: Optional[torch.Tensor], bits: int, perm: Optional[torch.Tensor]) -> QuantLinear:
    """The QuantLinear of ``(codes [K, N] - zeros[group]) * scales[group]`` (rows in ``perm``
    order when given): symmetric uint when every zero is 2^(bits-1), else stored offsets."""
    k, n = codes.shape
    group_size = k // scales.shape[0]
    half = 2 ** (bits - 1)
    symmetric = bool((zeros == half).all())
    offsets = None
    if not symmetric:
        exact = -zeros.double() * scales.double()
        offsets = exact.to(scales.dtype)
        err = float((offsets.double() - exact).abs().max())
        if err:
            log.info("imported offsets -z*s rounded to %s (largest difference %.3g)",
                     scales.dtype, err)
    data = packing.pack_codes(codes, f"uint{bits}", str(scales.dtype).split(".")[-1])
    qw = QuantizedWeight(data, scales.contiguous(), offsets, f"uint{bits}", (n, k), group_size,
                         symmetric, float(half) if symmetric else 0.0)
    qw.validate()
    layer = QuantLinear(k, n, bias is not None, qw.dtype, group_size, symmetric, scales.dtype,
                        device=codes.device, act_order=perm is not None)
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
