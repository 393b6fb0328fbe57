"""FP8: ``matmul_fp8`` on e4m3 tensor cores, per-row activation and per-channel weight scales.

``quantize_weight_fp8(w)``: ``w [N, K]`` (nn.Linear) -> :class:`Fp8Weight`: per output channel
``s = absmax / 448``, codes ``e4m3(w * (448 / absmax))`` (float32 arithmetic, nearest even),
kept ``[N, K]`` (k contiguous: a thread's four k of the mma B fragment are one 32-bit load).
``matmul_fp8(x, w8)``: ``x [M, K]`` float16 or bfloat16 quantized per row the same way
(``tilus.ops.rowquant``), ``(q_x @ q_w) * s_x[m] * s_w[n] (+ bias)`` -> ``[M, N]`` in x's dtype. The
kernel ``MatmulFP8`` runs ``mma.m16n8k32.row.col.f32.e4m3.e4m3.f32`` (sm_89 and newer: Ada,
Hopper): e4m3 products are exact in float32, accumulated in float32 per 32-wide k step, then one
float32 rescale per output and one rounding to x's dtype.

Engines: ``"interpreter"`` (the DSL kernels on the CPU), ``"fallback"`` (torch, the reference),
``"auto"``: the compiled kernels on CUDA tensors of an sm_89+ GPU, the fallback elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import tilus
from tilus.errors import ArgumentError, UnsupportedLaunchError
from tilus.ops.rowquant import (ACTS, RescaledStore, check_2d, check_activations, quantize_rows,
                               rows_reference)

BLOCK_M, BLOCK_N, BLOCK_K = 16, 64, 128
#: The first architecture with e4m3 mma.sync.
MIN_ARCH = 89


class MatmulFP8(RescaledStore, tilus.Script):
    """C [M, N] = (A_q [M, K] @ B_q[N, K]^T) * s_a[m] * s_b[n] (+ bias), float32 accumulation.
    A and B (e4m3 codes, k contiguous) are loaded as bytes, so that a thread's four k are one
    32-bit load, and viewed as e4m3; B's tile is transposed to [k, n] in registers."""

    def __init__(self, has_bias: bool = False, act: str = "float16"):
        super().__init__()
        self.has_bias = bool(has_bias)
        self.act = tilus.dtypes.get(act)

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: tilus.void_p,
                 b: tilus.void_p, sa: ~tilus.float32, sb: ~tilus.float32,
                 bias: tilus.void_p, c: tilus.void_p):
        self.attrs.blocks = [tilus.cdiv(m, BLOCK_M), tilus.cdiv(n, BLOCK_N)]
        self.attrs.warps = 4
        ga = self.global_view(a, dtype=tilus.uint8, shape=[m, k])
        gb = self.global_view(b, dtype=tilus.uint8, shape=[n, k])
        gsa = self.global_view(sa, dtype=tilus.float32, shape=[m, 1])
        gsb = self.global_view(sb, dtype=tilus.float32, shape=[1, n])
        gc = self.global_view(c, dtype=self.act, shape=[m, n])
        m0, n0 = self.blockIdx.x * BLOCK_M, self.blockIdx.y * BLOCK_N
        acc = self.register_tensor(dtype=tilus.float32, shape=[BLOCK_M, BLOCK_N], init=0.0)
        for kt in self.range(0, tilus.cdiv(k, BLOCK_K)):
            ta = self.load_global(ga, offsets=[m0, kt * BLOCK_K], shape=[BLOCK_M, BLOCK_K])
            tb = self.load_global(gb, offsets=[n0, kt * BLOCK_K], shape=[BLOCK_N, BLOCK_K])
            self.dot(self.view(ta, dtype=tilus.float8_e4m3),
                     self.transpose(self.view(tb, dtype=tilus.float8_e4m3)), acc, out=acc)
        out = acc * self.load_global(gsa, offsets=[m0, 0], shape=[BLOCK_M, 1]) \
            * self.load_global(gsb, offsets=[0, n0], shape=[1, BLOCK_N])
        self.store_rescaled(out, bias, gc, n, m0, n0, BLOCK_N)


@dataclass(eq=False)
class Fp8Weight:
    """A per-output-channel e4m3 weight: ``data`` torch.float8_e4m3fn [N, K], ``scales`` float32
    [N]; the weight is ``data * scales[:, None]``."""

    data: torch.Tensor
    scales: torch.Tensor

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    def dequantize(self) -> torch.Tensor:
        """[N, K] float32."""
        return self.data.float() * self.scales[:, None]


def quantize_weight_fp8(w: torch.Tensor) -> Fp8Weight:
    """``w [N, K]`` -> per-output-channel e4m3 (see the module docstring)."""
    check_2d(w, "w", "quantize_weight_fp8")
    q, s = rows_reference(w.detach(), "float8_e4m3")
    return Fp8Weight(q.contiguous(), s.contiguous())


def check_arch(x: torch.Tensor) -> None:
    """UnsupportedLaunchError unless ``x``'s GPU has e4m3 mma (sm_89 or newer)."""
    major, minor = torch.cuda.get_device_capability(x.device)
    if major * 10 + minor < MIN_ARCH:
        raise UnsupportedLaunchError(f"matmul_fp8 runs e4m3 mma.sync, which needs sm_89 or newer "
                                     f"(Ada, Hopper); this GPU is sm_{major}{minor}: use "
                                     f"engine='fallback' or W8A8")


def matmul_fp8(x: torch.Tensor, w8: Fp8Weight, bias: Optional[torch.Tensor] = None,
               engine: str = "auto") -> torch.Tensor:
    """``x [M, K]`` float16/bfloat16 quantized per row to e4m3, times ``w8``: ``[M, N]`` in x's
    dtype."""
    n, k = w8.shape
    check_activations(x, k, "matmul_fp8")
    if engine == "fallback" or (engine == "auto" and x.device.type != "cuda"):
        return matmul_fp8_reference(x, w8, bias)
    if x.device.type == "cuda":
        check_arch(x)
    qx, sx = quantize_rows(x, engine, "float8_e4m3")
    m = x.shape[0]
    c = torch.empty(m, n, dtype=x.dtype, device=x.device)
    b = torch.zeros(1, dtype=x.dtype, device=x.device) if bias is None else bias.to(x.dtype)
    MatmulFP8(has_bias=bias is not None, act=ACTS[x.dtype])(m, n, k, qx.view(torch.uint8), w8.data.view(torch.uint8),
                                         sx, w8.scales, b, c)
    return c


def matmul_fp8_reference(x: torch.Tensor, w8: Fp8Weight,
                         bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The rule of ``matmul_fp8`` in torch for any float ``x [M, K]``: x quantized per row to e4m3,
    the (exact) products summed in float64, the rescale (+ bias) in float32 (float64 for float64
    x), one rounding to x's dtype. The kernel's float32 accumulation may differ from it by the
    float32 rounding of its partial sums."""
    check_2d(x, "x", "matmul_fp8_reference")
    if not x.dtype.is_floating_point or x.shape[1] != w8.shape[1]:
        raise ArgumentError(f"matmul_fp8_reference: x must be a float tensor "
                            f"[M, {w8.shape[1]}], got {x.dtype} {list(x.shape)}")
    qx, sx = rows_reference(x, "float8_e4m3")
    out = (qx.double() @ w8.data.double().t()) * sx.double()[:, None] * w8.scales.double()
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = out.to(wide) if bias is None else out.to(wide) + bias.to(wide)
    return out.to(x.dtype)
