"""Bit-sliced weights: one stored 8-bit weight served at 8, 4 or 2 bits (MatGPTQ / any-precision
style), without a second copy.

    sw = tilus.ops.quantize_sliced(linear.weight, group_size=128)   # [N, K], uint8 codes
    y4 = tilus.ops.matmul_sliced(x, sw, bits=4)                    # reads half of the codes

**Quantization.** ``quantize(weight, "uint8", group_size, symmetric=False)``: asymmetric uint8
codes ``q`` with a scale ``s`` and an offset ``b`` per group (``w' = q * s + b``).

**Serving at b bits** takes the code's top b bits, ``q_b = q >> (8 - b)`` (truncation), and
reconstructs the middle of the 2^(8-b) codes that share them:

    w'_b = (q_b * 2^(8-b) + (2^(8-b) - 1) / 2) * s + b  =  q_b * S_b + B_b,
    S_b = s * 2^(8-b),   B_b = b + (2^(8-b) - 1) / 2 * s

(``SlicedWeight.params``: both computed exactly and rounded once to the activation dtype, per
group; the kernel's fma then rounds ``q_b * S_b + B_b`` once, as for every asymmetric type).
The middle is the nearest level of that grid to every code in the bin, so truncation *is*
round-to-nearest there; rounding the code to the nearest multiple of 2^(8-b) instead (the grid
``q_b * 2^(8-b)``) needs the carry out of the low bits, so it cannot be served from the top bits
alone. ``serving_errors`` measures the rules (table in docs/ops.md).

**Storage.** The codes are stored as three slices, top first: ``q >> 6`` (uint2),
``(q >> 4) & 3`` (uint2), ``q & 15`` (uint4), each in packed format 3 (``tilus.ops.packing``:
units laid out for the mma B operand). ``data`` is ``uint8 [N_pad / 128, K_pad / 32 * 4096]``:
each column tile's row holds slice 0 of all its units, then slice 1, then slice 2. Serving at b
bits reads the leading slices of b bits only (2 bits: a quarter of the bytes, 4 bits: half),
and every slice reuses the packed lop3/prmt casts of uint2/uint4 (``tilus.ops.sliced_kernels``).
Why not eight one-bit planes: serving at 8 bits would cost eight uint1 casts and seven adds per
weight pair instead of three casts and two adds, and no width other than 2, 4, 8 is asked for;
why not the uint8 codes as they are: the narrow widths would read all 8 bits.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from tilus.errors import ArgumentError, DeviceMismatchError, QuantizationError
from tilus.ops import packing
from tilus.ops.matmul import _ACT, default_schedule, run_kernel
from tilus.ops.quantize import WeightShape, quantize
from tilus.ops.sliced_kernels import (SERVE_BITS, SLICE_WIDTHS, STORED_BITS, scale_shift,
                                      slices_for)
from tilus.ops.validation import check_schedule

ENGINES = ("auto", "interpreter", "fallback", "compiled")
_TARGET = "float16"      # uint2/uint4 pair strides are the same for float16 and bfloat16


@dataclass(eq=False)
class SlicedWeight(WeightShape):
    """A weight ``[N, K]`` quantized to asymmetric uint8 and stored as bit slices (module doc).

    ``data``: uint8 ``[N_pad / 128, K_pad / 32 * 4096]``; ``scales``/``offsets``:
    ``[K / group_size, N]`` in the scale dtype; ``shape``: ``(N, K)``."""

    data: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor
    shape: tuple
    group_size: int
    _params: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.data.device

    def _slice_data(self, i: int) -> torch.Tensor:
        """Slice i's packed format-3 data (``[N_pad / 128, K_pad / 32 * 512 * width]``)."""
        ku = packing.padded(self.k, self.n)[0] // packing.UNIT_K
        above = sum(SLICE_WIDTHS[:i])
        per_bit = ku * packing.UNIT_K * packing.UNIT_N // 8
        return self.data[:, per_bit * above:per_bit * (above + SLICE_WIDTHS[i])]

    def codes(self, bits: int = STORED_BITS) -> torch.Tensor:
        """The served codes ``q >> (8 - bits)``, ``[K, N]`` uint8, read from the leading slices
        (the stored uint8 codes for ``bits=8``)."""
        q = torch.zeros(self.k, self.n, dtype=torch.uint8, device=self.device)
        for i, w in enumerate(slices_for(bits)):
            part = packing.unpack_codes(self._slice_data(i).contiguous(), f"uint{w}", _TARGET,
                                        self.n, self.k)
            q = (q << w) | part
        return q

    def params(self, bits: int, dtype: Optional[torch.dtype] = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(S_b, B_b) ``[K / group_size, N]`` in ``dtype`` (default the scale dtype): the scale
        and offset of the served width (module doc), exact then rounded once. Cached."""
        slices_for(bits)
        dtype = dtype or self.scales.dtype
        key = (bits, dtype, self.scales._version, self.offsets._version)
        if key not in self._params:
            s, b = self.scales.double(), self.offsets.double()
            step = 2.0 ** (STORED_BITS - bits)
            out = ((s * step).to(dtype), (b + (step - 1) / 2 * s).to(dtype))
            kernel_scale = out[0].double() * 2.0 ** scale_shift(bits)
            if not (bool(torch.isfinite(out[1]).all())
                    and bool(torch.isfinite(kernel_scale.to(dtype)).all())):
                raise QuantizationError(f"the {bits}-bit scales (scale * {step:g}, the kernel's "
                                        f"times {2 ** scale_shift(bits)}) overflow {dtype}; "
                                        f"quantize with scale_dtype=torch.bfloat16")
            self._params[key] = out
        return self._params[key]

    def dequantize(self, bits: int = STORED_BITS, dtype: Optional[torch.dtype] = None
                   ) -> torch.Tensor:
        """``[N, K]``: the weight served at ``bits``, ``q_b * S_b + B_b`` exact, rounded once to
        ``dtype`` (default the scale dtype): exactly what the kernel computes with."""
        dtype = dtype or self.scales.dtype
        s, b = (t.double().repeat_interleave(self.group_size, dim=0)
                for t in self.params(bits, dtype))
        return (self.codes(bits).double() * s + b).to(dtype).t().contiguous()

    def nbytes(self) -> int:
        """Stored bytes: all slices, scales and offsets."""
        return sum(t.numel() * t.element_size() for t in (self.data, self.scales, self.offsets))

    def bytes_read(self, bits: int) -> int:
        """Bytes a matmul at ``bits`` reads of the weight: its leading slices (padded units),
        the scale and offset rows."""
        per_bit = self.data.shape[1] // STORED_BITS
        params = 2 * self.scales.numel() * self.scales.element_size()
        return self.data.shape[0] * per_bit * sum(slices_for(bits)) + params

    def to(self, device) -> "SlicedWeight":
        return SlicedWeight(self.data.to(device), self.scales.to(device),
                            self.offsets.to(device), tuple(self.shape), self.group_size)


def quantize_sliced(weight: torch.Tensor, group_size: Optional[int] = 128,
                    scale_dtype: Any = None) -> SlicedWeight:
    """``weight [N, K]`` (nn.Linear layout) quantized to asymmetric uint8 group-wise along K
    (``tilus.ops.quantize``'s rules and errors) and stored as bit slices (module doc)."""
    qw = quantize(weight, "uint8", group_size=group_size, symmetric=False,
                  scale_dtype=scale_dtype)
    q = qw.codes()
    slices, above = [], 0
    for w in SLICE_WIDTHS:
        part = (q >> (STORED_BITS - above - w)) & ((1 << w) - 1)
        slices.append(packing.pack_codes(part.contiguous(), f"uint{w}", _TARGET))
        above += w
    assert qw.offsets is not None
    return SlicedWeight(torch.cat(slices, dim=1).contiguous(), qw.scales, qw.offsets,
                        tuple(qw.shape), qw.group_size)


_KERNELS: dict = {}


def kernel_for(bits: int, group_size: int, k: int, act: str, has_bias: bool, schedule: dict):
    """The SlicedMatmul Script for a width, group size, activations, bias and schedule."""
    from tilus.ops.sliced_kernels import SlicedMatmul

    key = (bits, group_size, group_size == k, act, has_bias, tuple(sorted(schedule.items())))
    if key not in _KERNELS:
        _KERNELS[key] = SlicedMatmul(bits, group_size, act=act, has_bias=has_bias,
                                     single_group=group_size == k, **schedule)
    return _KERNELS[key]


def _check(a: Any, sw: Any, bits: Any, bias: Any) -> None:
    if not isinstance(sw, SlicedWeight):
        raise ArgumentError(f"matmul_sliced: sw must be a SlicedWeight (tilus.ops.quantize_"
                            f"sliced), got {type(sw).__name__}")
    if bits not in SERVE_BITS or isinstance(bits, bool):
        raise ArgumentError(f"matmul_sliced: bits must be one of {SERVE_BITS}, got {bits!r}")
    if not isinstance(a, torch.Tensor) or a.dtype not in _ACT:
        raise ArgumentError(f"matmul_sliced: a must be a float16 or bfloat16 tensor [..., K], got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
    if a.dim() < 1 or a.shape[-1] != sw.k:
        raise ArgumentError(f"matmul_sliced: a has shape {list(a.shape)} but the weight is "
                            f"[N, K] = {list(sw.shape)}: a's last dimension must be K = {sw.k}")
    for name, t in (("a", a), ("bias", bias)):
        if t is not None and t.device != sw.device:
            raise DeviceMismatchError(f"matmul_sliced: {name} is on {t.device} but the weight "
                                      f"on {sw.device}; move one of them (sw.to(device))")
    if bias is not None and tuple(bias.shape) != (sw.n,):
        raise ArgumentError(f"matmul_sliced: bias must have shape [{sw.n}], got "
                            f"{list(bias.shape)}")


def matmul_sliced(a: torch.Tensor, sw: SlicedWeight, bits: int = STORED_BITS,
                  bias: Optional[torch.Tensor] = None, *, engine: str = "auto",
                  schedule: Optional[dict] = None) -> torch.Tensor:
    """``a [..., K] @ sw.dequantize(bits, a.dtype).T (+ bias)`` -> ``[..., N]`` in a's dtype,
    float32 accumulation. ``engine``: as ``tilus.ops.matmul`` ("auto": the compiled kernel on
    CUDA, dequantize + torch on the CPU; "interpreter": the DSL kernel on the CPU interpreter).
    ``schedule``: QuantMatmul's schedule parameters (default: ``default_schedule`` for ``bits``)."""
    if engine not in ENGINES:
        raise ArgumentError(f"matmul_sliced: engine must be one of {', '.join(ENGINES)}, got "
                            f"{engine!r}")
    _check(a, sw, bits, bias)
    lead = a.shape[:-1]
    a2 = a.reshape(-1, sw.k)
    if engine == "fallback" or (engine == "auto" and a.device.type != "cuda"):
        out = a2.float() @ sw.dequantize(bits, a.dtype).float().t()
        if bias is not None:
            out = out + bias.float()
        return out.to(a.dtype).reshape(*lead, sw.n)
    if engine == "interpreter" and a.device.type != "cpu":
        raise DeviceMismatchError(f"matmul_sliced(engine='interpreter') runs on the CPU; got "
                                  f"tensors on {a.device}")
    if engine == "compiled" and a.device.type != "cuda":
        raise ArgumentError(f"matmul_sliced(engine='compiled') needs CUDA tensors, got "
                            f"{a.device}")
    from tilus.ops.kernels import QuantMatmul

    eng = "interpreter" if engine == "interpreter" else "compiled"
    if schedule is None:
        sms = torch.cuda.get_device_properties(a.device).multi_processor_count \
            if a.device.type == "cuda" else 132
        schedule = default_schedule(a2.shape[0], sw.n, sw.k, sw.group_size, eng, sms, bits)
    else:
        schedule = check_schedule(schedule, QuantMatmul.schedule_names(), "matmul_sliced")
    kern = kernel_for(bits, sw.group_size, sw.k, _ACT[a.dtype], bias is not None, schedule)
    s, b = sw.params(bits, a.dtype)
    out = run_kernel(kern, a2, sw.data, s, b,
                     None if bias is None else bias.to(a.dtype), sw.n, sw.k,
                     schedule.get("split_k", 1), 1.0, eng)
    return out.reshape(*lead, sw.n)


def serving_errors(weight: torch.Tensor, group_size: Optional[int] = 128,
                   bits: tuple = SERVE_BITS) -> dict:
    """Relative RMS error ``||W' - W|| / ||W||`` of ``weight`` served at each width by each
    rule: ``{bits: {rule: error}}`` with the rules

    * ``"truncate"``: ``q_b = q >> (8-b)`` at the bottom of its bin (``w' = q_b 2^(8-b) s + b``);
    * ``"nearest"``: q rounded to the nearest multiple of 2^(8-b) (clamped; needs the low bits);
    * ``"truncate_mid"``: ``q >> (8-b)`` at the middle of its bin, what ``matmul_sliced`` serves;
    * ``"direct"``: ``tilus.ops.quantize(weight, f"uint{b}")``, a separately stored b-bit weight.
    """
    w = weight.detach().double()
    sw = quantize_sliced(weight, group_size)
    q = sw.codes().long()
    gs = sw.group_size
    s = sw.scales.double().repeat_interleave(gs, dim=0)
    off = sw.offsets.double().repeat_interleave(gs, dim=0)
    norm = float(w.norm())

    def err(wk: torch.Tensor) -> float:
        return float((wk.t() - w).norm()) / norm

    out = {}
    for b in bits:
        step = 2 ** (STORED_BITS - b)
        nearest = torch.clamp(torch.div(q + step // 2, step, rounding_mode="floor"), 0,
                              2 ** b - 1)
        out[b] = {"truncate": err((q // step) * step * s + off),
                  "nearest": err(nearest * step * s + off),
                  "truncate_mid": float((sw.dequantize(b, torch.float64) - w).norm()) / norm,
                  "direct": float((quantize(weight, f"uint{b}", group_size=group_size)
                                   .dequantize(torch.float64) - w).norm()) / norm}
    return out
