"""LUT GEMM for 1- and 2-bit weights at decode (T-MAC / LUT Tensor Core idea): a schedule kept
beside the dequantize + mma kernel. By the static decode cost (docs/ops.md "LUT GEMM") it wins for
uint1 weights at M = 1 only, so ``tilus.ops.matmul(x, qw, schedule="lut")`` selects it there
(and refuses it elsewhere); ``matmul`` never picks it by itself.

    lw = tilus.ops.lut.pack_lut(tilus.ops.quantize(w, "uint2", group_size=128))
    y = tilus.ops.lut.matmul_lut(x, lw, engine="interpreter")   # or "compiled" on CUDA

``LutWeight.planes``: uint8 ``[bits, K_pad / 32, N, 4]``: plane p, 32-k unit u, column n holds bit
p of the codes of k = 32u .. 32u + 31 as a little-endian 32-bit word (bit t = k 32u + t), so the
4-bit nibble e of the word is the table index of chunk (u, e). ``scales``/``offsets``: the
QuantizedWeight's ``[K / group_size, N]``.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

import torch

from tilus.errors import ArgumentError, QuantizationError
from tilus.ops.lut_kernels import UNIT_K, LutMatmul
from tilus.ops.matmul import _ACT
from tilus.ops.quantize import QuantizedWeight, WeightShape

ENGINES = ("reference", "interpreter", "compiled")


@dataclass(eq=False)
class LutWeight(WeightShape):
    """A 1- or 2-bit asymmetric weight as bit planes for ``LutMatmul`` (module doc)."""

    planes: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor
    codes: torch.Tensor             # [K, N] uint8: the reference's codes
    shape: tuple
    bits: int
    group_size: int


def pack_lut(qw: QuantizedWeight) -> LutWeight:
    """The bit planes of a uint1/uint2 QuantizedWeight with float offsets (the default asymmetric
    scheme), else QuantizationError."""
    if qw.dtype not in ("uint1", "uint2") or qw.zero_mode != "float":
        raise QuantizationError(f"pack_lut: LUT GEMM takes uint1/uint2 weights with float offsets "
                                f"(tilus.ops.quantize(w, 'uint2'), the default scheme), got "
                                f"{qw.dtype} with zero mode {qw.zero_mode}")
    codes = qw.codes()
    k, n = codes.shape
    kp = -(-k // UNIT_K) * UNIT_K
    full = torch.zeros(kp, n, dtype=torch.int64, device=codes.device)
    full[:k] = codes.long()
    weights = (1 << torch.arange(8, device=codes.device)).view(1, 1, 8, 1)
    planes = []
    for p in range(qw.nbits):
        bits = ((full >> p) & 1).view(kp // UNIT_K, 4, 8, n)        # [unit, byte, bit, n]
        planes.append((bits * weights).sum(dim=2).permute(0, 2, 1))  # [unit, n, byte]
    assert qw.offsets is not None
    return LutWeight(torch.stack(planes).to(torch.uint8).contiguous(), qw.scales, qw.offsets,
                     codes, tuple(qw.shape), qw.nbits, qw.group_size)


def lut_reference(a: torch.Tensor, lw: LutWeight) -> torch.Tensor:
    """``sum_g s_g (a_g . q_g) + b_g sum(a_g)`` in float64, rounded once to a's dtype: the
    kernel's formula (``q * s + b`` is never rounded to the activation dtype)."""
    gs, groups = lw.group_size, lw.k // lw.group_size
    a3 = a.double().reshape(a.shape[0], groups, gs)
    q3 = lw.codes.double().reshape(groups, gs, lw.n)
    dots = torch.einsum("mgk,gkn->mgn", a3, q3)
    out = (dots * lw.scales.double() + a3.sum(dim=2, keepdim=True) * lw.offsets.double()).sum(1)
    return out.to(a.dtype)


_KERNELS: dict = {}


def matmul_lut(a: torch.Tensor, lw: LutWeight, *, engine: str = "interpreter",
               schedule: Optional[dict] = None) -> torch.Tensor:
    """``a [M, K] @ dequant(W).T`` -> ``[M, N]`` by the LUT kernel (``engine="interpreter"`` on
    CPU tensors, ``"compiled"`` on CUDA) or ``lut_reference`` (``"reference"``). ``schedule``:
    ``LutMatmul``'s block_m, block_k, warps (default 1, the largest of 128/64/32 dividing the
    group, 4)."""
    if engine not in ENGINES:
        raise ArgumentError(f"matmul_lut: engine must be one of {', '.join(ENGINES)}, got "
                            f"{engine!r}")
    if a.dim() != 2 or a.shape[1] != lw.k or a.dtype not in _ACT:
        raise ArgumentError(f"matmul_lut: a must be float16/bfloat16 [M, {lw.k}], got "
                            f"{a.dtype} {list(a.shape)}")
    if engine == "reference":
        return lut_reference(a, lw)
    if (engine == "compiled") != (a.device.type == "cuda"):
        raise ArgumentError(f"matmul_lut(engine={engine!r}) got tensors on {a.device}")
    if lw.scales.dtype != a.dtype:
        raise ArgumentError(f"matmul_lut: the scales are {lw.scales.dtype}, a is {a.dtype}; "
                            f"quantize with scale_dtype={a.dtype}")
    kernel = kernel_for(lw.bits, lw.group_size, _ACT[a.dtype], schedule)
    c = torch.empty(a.shape[0], lw.n, dtype=a.dtype, device=a.device)
    kernel(a.shape[0], lw.n, lw.k, a.contiguous(), lw.planes, lw.scales.contiguous(),
                  lw.offsets.contiguous(), c)
    return c


def kernel_for(bits: int, group_size: int, act: str, schedule: Optional[dict] = None) -> LutMatmul:
    """The LutMatmul Script ``matmul_lut`` launches: ``schedule`` over the default (block_m 1,
    the largest block_k of 128/64/32 dividing the group, 4 warps), one instance per key."""
    sched = {"block_m": 1, "block_k": next(b for b in (128, 64, 32) if group_size % b == 0),
             "warps": 4, **(schedule or {})}
    key = (bits, group_size, act, tuple(sorted(sched.items())))
    if key not in _KERNELS:
        _KERNELS[key] = LutMatmul(bits, group_size, act, **sched)
    return _KERNELS[key]


#: Where the LUT schedule wins by the static decode cost (docs/ops.md): weight types, rows.
WINS = {"uint1": 1}
_PACKED: "weakref.WeakKeyDictionary[QuantizedWeight, tuple]" = weakref.WeakKeyDictionary()


def lut_schedule(a2: torch.Tensor, qw: QuantizedWeight, bias: Optional[torch.Tensor],
                 engine: str) -> torch.Tensor:
    """``tilus.ops.matmul(..., schedule="lut")``: the LUT kernel where it wins (``WINS``: uint1
    weights with float offsets, one row), else ArgumentError. ``engine``: "interpreter" (CPU),
    "compiled" or "auto" on CUDA, "fallback" or "auto" on the CPU (``lut_reference``). The
    bit planes are packed once per weight (cached while the weight lives)."""
    rows = WINS.get(qw.dtype)
    if rows is None or qw.zero_mode != "float" or a2.shape[0] > rows:
        wins = ", ".join(f"{t} at M <= {m}" for t, m in WINS.items())
        raise ArgumentError(f"matmul(schedule='lut'): the LUT schedule wins only for weights "
                            f"with float offsets of {wins} (docs/ops.md, 'LUT GEMM'); got "
                            f"{qw.dtype} (zero mode {qw.zero_mode}) at M = {a2.shape[0]}: use "
                            f"the default schedule")
    if bias is not None:
        raise ArgumentError("matmul(schedule='lut') takes no bias; add it to the result")
    hit = _PACKED.get(qw)
    if hit is None or hit[0] != qw.data._version:
        hit = (qw.data._version, pack_lut(qw))
        _PACKED[qw] = hit
    lw = hit[1]
    if engine == "fallback" or (engine == "auto" and a2.device.type != "cuda"):
        return lut_reference(a2, lw)
    return matmul_lut(a2, lw, engine="interpreter" if engine == "interpreter" else "compiled")
