"""Mixed-width output features (MixLLM style): salient output features in a wide type, the rest
in a narrow one, one weight, one matmul launch.

    cols = tilus.ops.select_salient_columns(w, x_calib, count=24)
    mw = tilus.ops.quantize(w, dtype={"uint8": cols, "uint4": "rest"}, group_size=128)
    y = tilus.ops.matmul(x, mw)                   # [..., N] in the original feature order

``quantize(weight, dtype={wide: columns, narrow: "rest"})`` returns a
:class:`MixedQuantizedWeight`: the rows ``columns`` of the ``[N, K]`` weight quantized as
``wide`` and the others as ``narrow``, each part a :class:`~tilus.ops.QuantizedWeight` in the
existing packed format (format 3), the salient rows first, each part in increasing feature
order, plus the permutation ``perm`` (``perm[i]`` = the original output feature of row ``i`` of
the two parts stacked). Group-wise quantization treats every output feature on its own, so each
part's codes, scales and offsets are exactly those ``quantize`` gives the same rows of the whole
weight.

The salient-feature rule (``select_salient_columns``) and the kernel
(``tilus.ops.mixed_kernels.MixedQuantMatmul``) are described where they are defined; the user
guide is docs/ops.md, "Mixed-width output features".
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional

import numpy as np
import torch

from tilus.errors import ArgumentError, QuantizationError
from tilus.ops import packing
from tilus.ops.quantize import (QuantizedWeight, WeightShape, _check_weight, quantize,
                                 weight_type)

REST = "rest"


@dataclass(eq=False)
class MixedQuantizedWeight(WeightShape):
    """An ``[N, K]`` weight whose output features ``perm[:wide.n]`` are quantized in ``wide``
    and ``perm[wide.n:]`` in ``narrow`` (see the module docstring)."""

    wide: QuantizedWeight          # the salient rows, [n_wide, K]
    narrow: QuantizedWeight        # the other rows, [N - n_wide, K]
    perm: torch.Tensor             # int64 [N]: original feature of each stacked row

    @property
    def shape(self) -> tuple:
        return (self.wide.n + self.narrow.n, self.wide.k)

    @property
    def device(self) -> torch.device:
        return self.wide.device

    @property
    def group_size(self) -> int:
        return self.wide.group_size

    @property
    def columns(self) -> torch.Tensor:
        """The salient output features (increasing), those held in ``wide``."""
        return self.perm[:self.wide.n]

    @property
    def wide_columns_padded(self) -> int:
        """The salient part's columns rounded up to whole 128-column tiles: where the narrow
        part's columns start in the kernel's output buffer."""
        return packing.padded(self.k, self.wide.n)[1]

    @cached_property
    def out_index(self) -> torch.Tensor:
        """int64 [N]: the column of the kernel's output buffer (``[M, wide_columns_padded +
        narrow.n]``: the wide part's tiles, then the narrow part's) that holds feature j
        (computed once per weight object)."""
        pos = torch.arange(self.n, device=self.perm.device)
        pos[self.wide.n:] += self.wide_columns_padded - self.wide.n
        index = torch.empty_like(pos)
        index[self.perm] = pos
        return index

    def bits_per_weight(self) -> float:
        """Stored bits per weight element: packed codes (padding included), scales and offsets
        of both parts, and the int64 permutation."""
        total = self.wide.nbytes() + self.narrow.nbytes() + self.perm.numel() * 8
        return 8.0 * total / (self.n * self.k)

    def nbytes(self) -> int:
        return self.wide.nbytes() + self.narrow.nbytes() + self.perm.numel() * 8

    def to(self, device) -> "MixedQuantizedWeight":
        return MixedQuantizedWeight(self.wide.to(device), self.narrow.to(device),
                                    self.perm.to(device))

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """``[N, K]`` in the original feature order: each part's ``dequantize(dtype)``."""
        parts = [self.wide.dequantize(dtype), self.narrow.dequantize(dtype)]
        dt = parts[0].dtype if dtype is None else dtype
        out = torch.empty(self.n, self.k, dtype=dt, device=self.device)
        out[self.perm] = torch.cat([p.to(dt) for p in parts])
        return out


def _columns(spec: Any, n: int) -> torch.Tensor:
    """The salient columns of a spec entry as a sorted int64 tensor (QuantizationError when
    they are not distinct integers in [0, N))."""
    if isinstance(spec, torch.Tensor):
        values = spec.detach().cpu()
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise QuantizationError(f"salient columns must be integers, got a {values.dtype} "
                                    f"tensor")
        values = values.reshape(-1).to(torch.int64)
    else:
        arr = np.asarray(spec)
        if arr.dtype.kind not in "iu" and not (arr.size == 0):
            raise QuantizationError(f"salient columns must be a list or tensor of ints, got "
                                    f"{spec!r}")
        values = torch.from_numpy(arr.astype(np.int64).reshape(-1))
    if values.numel() == 0 or values.numel() >= n:
        raise QuantizationError(f"give between 1 and N - 1 = {n - 1} salient columns, got "
                                f"{values.numel()} (for one width use quantize(w, 'uint4'))")
    bad = values[(values < 0) | (values >= n)]
    if bad.numel():
        raise QuantizationError(f"salient column {int(bad[0])} is out of range: the weight has "
                                f"N = {n} output features (0..{n - 1})")
    sorted_values, _ = torch.sort(values)
    dup = sorted_values[1:][sorted_values[1:] == sorted_values[:-1]]
    if dup.numel():
        raise QuantizationError(f"salient column {int(dup[0])} is given twice; each output "
                                f"feature goes to one width")
    return sorted_values


def split_spec(spec: dict, n: int) -> tuple[str, torch.Tensor, str]:
    """``(wide type, salient columns, narrow type)`` of ``{wide: columns, narrow: "rest"}``."""
    if len(spec) != 2 or sum(isinstance(v, str) and v == REST for v in spec.values()) != 1:
        raise QuantizationError(f"a mixed-width dtype maps two weight types to their output "
                                f"features, one of them \"rest\", e.g. {{'uint8': [0, 5, 9], "
                                f"'uint4': 'rest'}}; got {spec!r}")
    (wide, cols), = [(t, v) for t, v in spec.items() if not (isinstance(v, str) and v == REST)]
    narrow, = [t for t, v in spec.items() if isinstance(v, str) and v == REST]
    return weight_type(wide).name, _columns(cols, n), weight_type(narrow).name


def quantize_mixed(weight: torch.Tensor, spec: dict, group_size: Optional[int] = 128,
                   symmetric: Optional[bool] = None, scale_dtype: Any = None,
                   zero_mode: str = "float") -> MixedQuantizedWeight:
    """``quantize(weight, dtype={wide: columns, narrow: "rest"}, ...)``: the rows ``columns`` of
    ``weight [N, K]`` quantized as ``wide``, the others as ``narrow``, with the same group size
    and options (``symmetric``/``zero_mode`` must suit both types)."""
    if not isinstance(spec, dict):
        raise QuantizationError(f"a mixed-width dtype is a dict, got {type(spec).__name__}")
    w = _check_weight(weight)
    n = w.shape[0]
    wide, cols, narrow = split_spec(spec, n)
    keep = torch.ones(n, dtype=torch.bool)
    keep[cols] = False
    rest = torch.arange(n)[keep]
    perm = torch.cat([cols, rest])
    src = (torch.from_numpy(weight) if isinstance(weight, np.ndarray) else weight).detach()
    dev = src.device
    parts = [quantize(src[idx.to(dev)], t, group_size, symmetric, scale_dtype, zero_mode)
             for t, idx in ((wide, cols), (narrow, rest))]
    return MixedQuantizedWeight(parts[0], parts[1], perm.to(dev))


def select_salient_columns(weight: torch.Tensor, x_calib: torch.Tensor,
                           count: int) -> torch.Tensor:
    """The ``count`` output features of ``weight [N, K]`` with the largest activation-weighted
    norm on the calibration batch ``x_calib [..., K]``, as a sorted int64 tensor (CPU).

    The rule: ``score_j = || X @ w_j ||_2 = sqrt(sum_m (sum_k X[m, k] * W[j, k])^2)`` (X the
    batch flattened to [M, K], computed in float64), the L2 norm of output feature j over the
    batch; the ``count`` largest scores win, ties to the lower index. A feature with large
    outputs has large groups (scales) and so the largest absolute quantization error in its
    outputs; it is the one that profits most from 8 bits. MixLLM (Zheng, Song and Liu, 2024,
    arXiv:2412.14590) ranks output features by their salience, the estimated increase of the
    model's loss when the feature is quantized to the narrow type, across all layers at once;
    this per-layer, gradient-free score stands in for it where no loss is at hand."""
    w = _check_weight(weight).double()      # float32 holds fp16/bf16/fp32 weights exactly
    if not isinstance(x_calib, torch.Tensor) or not x_calib.is_floating_point():
        raise ArgumentError(f"select_salient_columns: x_calib must be a floating-point tensor "
                            f"[..., K], got {type(x_calib).__name__}")
    if x_calib.dim() < 1 or x_calib.shape[-1] != w.shape[1] or x_calib.numel() == 0:
        raise ArgumentError(f"select_salient_columns: x_calib has shape {list(x_calib.shape)}; "
                            f"its last dimension must be K = {w.shape[1]} and it must not be "
                            f"empty")
    n = w.shape[0]
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 0 < count < n:
        raise ArgumentError(f"select_salient_columns: count must be an int in 1..{n - 1} "
                            f"(N = {n}), got {count!r}")
    x = x_calib.detach().reshape(-1, w.shape[1]).double().to(w.device)
    return top_columns((x @ w.t()).square().sum(0), int(count))


def top_columns(score_sq: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` features with the largest squared scores (``sum_m (X @ w_j)_m^2``, float64
    [N]), ties to the lower index, as a sorted int64 CPU tensor."""
    score = score_sq.detach().double().cpu().numpy()
    order = np.lexsort((np.arange(score.size), -score))      # score descending, then index
    return torch.from_numpy(np.sort(order[:count])).to(torch.int64)


__all__ = ["MixedQuantizedWeight", "quantize_mixed", "select_salient_columns", "split_spec",
           "top_columns"]
