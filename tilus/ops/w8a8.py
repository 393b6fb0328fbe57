"""W8A8: per-row dynamic int8 activation quantization and ``matmul_w8a8`` on int8 tensor cores.

``quantize_rows(x)`` (``tilus.ops.rowquant``): ``x [M, K]`` float16 -> ``(q int8 [M, K],
s float32 [M])`` with ``s = absmax(row) / 127`` and ``q = rne(x * (127 / absmax))`` (float32
arithmetic, ties to even; a zero row gets ``s = 0``, ``q = 0``). ``quantize_weight_int8(w)``:
``w [N, K]`` (nn.Linear) -> :class:`Int8Weight`: per-output-channel symmetric int8 by the same rule, stored transposed
``[K, N]`` (the mma B operand's row-major tiles). ``matmul_w8a8(x, w8)``:
``(q_x @ q_w) * s_x[m] * s_w[n]`` -> ``[M, N]`` in x's dtype: int32 accumulation on
``mma.m16n8k32.s8.s8.s32``, one float32 rescale per output, one rounding.

Engines: ``"interpreter"`` (the DSL kernels on the CPU), ``"fallback"`` (torch, the reference),
``"auto"``: the compiled kernels on CUDA tensors, the fallback elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import tilus
from tilus.errors import ArgumentError
from tilus.ops.rowquant import (QuantizeRows, RescaledStore, SplitKSum,  # noqa: F401
                                check_2d, quantize_rows, rows_reference, split_k_buffers)

BLOCK_M, BLOCK_N, BLOCK_K = 16, 64, 96


class MatmulW8A8(RescaledStore, SplitKSum, tilus.Script):
    """C [M, N] = (A_q [M, K] @ B_q [K, N]) * s_a[m] * s_b[n] (+ bias), int32 accumulation.

    ``split_k`` > 1 splits the k-tiles over ``blockIdx.z`` (``SplitKSum``: exact)."""

    def __init__(self, act: str = "float16", has_bias: bool = False, split_k: int = 1):
        super().__init__()
        self.act = tilus.dtypes.get(act)
        self.has_bias = bool(has_bias)
        self.split_k = int(split_k)

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: ~tilus.int8,
                 b: ~tilus.int8, sa: ~tilus.float32, sb: ~tilus.float32, bias: ~tilus.float16,
                 c: ~tilus.float16, workspace: ~tilus.int32, sema: ~tilus.int32):
        tiles_n = tilus.cdiv(n, BLOCK_N)
        self.attrs.blocks = [tilus.cdiv(m, BLOCK_M), tiles_n, self.split_k]
        self.attrs.warps = 4
        ga = self.global_view(a, dtype=tilus.int8, shape=[m, k])
        gb = self.global_view(b, dtype=tilus.int8, shape=[k, n])
        gc = self.global_view(c, dtype=self.act, shape=[m, n])
        m0, n0 = self.blockIdx.x * BLOCK_M, self.blockIdx.y * BLOCK_N
        split = self.blockIdx.z
        k_tiles = tilus.cdiv(k, BLOCK_K)
        per_split = tilus.cdiv(k_tiles, self.split_k)
        first = split * per_split
        last = min(first + per_split, k_tiles)
        acc = self.register_tensor(dtype=tilus.int32, shape=[BLOCK_M, BLOCK_N], init=0)
        for kt in self.range(first, last):
            ta = self.load_global(ga, offsets=[m0, kt * BLOCK_K], shape=[BLOCK_M, BLOCK_K])
            tb = self.load_global(gb, offsets=[kt * BLOCK_K, n0], shape=[BLOCK_K, BLOCK_N])
            self.dot(ta, tb, acc, out=acc)
        if self.split_k == 1:
            self.rescale_store(acc, sa, sb, bias, gc, m, n, m0, n0)
        else:
            self.sum_splits(acc, sa, sb, bias, gc, workspace, sema, m, n, m0, n0, BLOCK_M, BLOCK_N)

    def rescale_store(self, acc, sa, sb, bias, gc, m, n, m0, n0) -> None:
        """The tile's int32 sums times the row and column scales, stored (+ bias) at [m0, n0]."""
        gsa = self.global_view(sa, dtype=tilus.float32, shape=[m, 1])
        gsb = self.global_view(sb, dtype=tilus.float32, shape=[1, n])
        out = self.cast(acc, dtype=tilus.float32) \
            * self.load_global(gsa, offsets=[m0, 0], shape=[BLOCK_M, 1]) \
            * self.load_global(gsb, offsets=[0, n0], shape=[1, BLOCK_N])
        self.store_rescaled(out, bias, gc, n, m0, n0, BLOCK_N)


def split_for(m: int, n: int, k: int) -> int:
    """The split-k of ``matmul_w8a8``: at M <= 16 (one row tile) the N / 64 column tiles alone
    leave SMs idle, so the k-tiles are split in two (when there are at least two)."""
    return 2 if m <= BLOCK_M and -(-k // BLOCK_K) >= 2 else 1


@dataclass(eq=False)
class Int8Weight:
    """A per-output-channel symmetric int8 weight: ``data`` int8 [K, N] (transposed), ``scales``
    float32 [N]; the weight is ``data.T * scales[:, None]``."""

    data: torch.Tensor
    scales: torch.Tensor

    @property
    def shape(self) -> tuple:
        return (self.data.shape[1], self.data.shape[0])

    def dequantize(self) -> torch.Tensor:
        """[N, K] float32."""
        return self.data.t().float() * self.scales[:, None]


def quantize_weight_int8(w: torch.Tensor) -> Int8Weight:
    """``w [N, K]`` -> per-output-channel symmetric int8, transposed for the kernel."""
    check_2d(w, "w", "quantize_weight_int8")
    q, s = rows_reference(w.detach())
    return Int8Weight(q.t().contiguous(), s.contiguous())


def matmul_w8a8(x: torch.Tensor, w8: Int8Weight, bias: Optional[torch.Tensor] = None,
                engine: str = "auto") -> torch.Tensor:
    """``x [M, K]`` float16 quantized per row, times ``w8``: ``[M, N]`` float16."""
    check_2d(x, "x", "matmul_w8a8")
    n, k = w8.shape
    if x.dtype != torch.float16 or x.shape[1] != k:
        raise ArgumentError(f"matmul_w8a8: x must be float16 [M, {k}], got {x.dtype} "
                            f"{list(x.shape)}")
    if engine == "fallback" or (engine == "auto" and x.device.type != "cuda"):
        return matmul_w8a8_reference(x, w8, bias)
    qx, sx = quantize_rows(x, engine)
    m = x.shape[0]
    c = torch.empty(m, n, dtype=x.dtype, device=x.device)
    b = torch.zeros(1, dtype=x.dtype, device=x.device) if bias is None else bias.to(x.dtype)
    split = split_for(m, n, k)
    ws, sema = split_k_buffers(m, n, split, x.device)
    MatmulW8A8(has_bias=bias is not None, split_k=split)(m, n, k, qx, w8.data, sx, w8.scales, b,
                                                           c, ws, sema)
    return c


def matmul_w8a8_reference(x: torch.Tensor, w8: Int8Weight,
                          bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The rule of ``matmul_w8a8`` in torch for any float ``x [M, K]`` (float16 as the kernels
    round; bfloat16/float32/float64 rounded once to x's dtype): the int products summed exactly
    in float64, the rescale (+ bias) in float32, or float64 for float64 input."""
    check_2d(x, "x", "matmul_w8a8_reference")
    if not x.dtype.is_floating_point or x.shape[1] != w8.shape[1]:
        raise ArgumentError(f"matmul_w8a8_reference: x must be a float tensor "
                            f"[M, {w8.shape[1]}], got {x.dtype} {list(x.shape)}")
    qx, sx = rows_reference(x)
    out = (qx.double() @ w8.data.double()) * sx.double()[:, None] * w8.scales.double()
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = out.to(wide) if bias is None else out.to(wide) + bias.to(wide)
    return out.to(x.dtype)
