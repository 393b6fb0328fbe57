"""Per-row dynamic activation quantization: ``x [M, K]`` float16/bfloat16 -> codes and one float32 scale
per row, for the W8A8, W4A4 and FP8 matmuls (``tilus.ops.w8a8``, ``w4a4``, ``fp8``).

The rule, in float32 arithmetic, with ``Q`` the target's largest magnitude (int8: 127, int4: 7,
float8_e4m3: 448): ``s = absmax(row) / Q`` and ``q = round(x * (Q / absmax))``, rounded to nearest
even (to an integer for int8/int4, to an e4m3 value for float8_e4m3); a zero row gets ``s = 0``,
``q = 0``. int4 codes are symmetric, in [-7, 7] (-8 is never produced), and packed two per byte as
Tilus bit streams are (element ``k`` in bits ``[4k, 4k + 4)`` of its row: even k in the low nibble),
the layout the W4A4 kernel reads; K must then be even so that every row starts on a byte.

Results: int8 -> ``(q int8 [M, K], s)``; int4 -> ``(q uint8 [M, K / 2], s)``;
float8_e4m3 -> ``(q torch.float8_e4m3fn [M, K], s)``; ``s`` float32 [M].
"""
from __future__ import annotations

import torch

import tilus
from tilus import dtypes
from tilus.errors import ArgumentError
from tilus.ir.layout import local, spatial

ROUND = 12582912.0             # 1.5 * 2^23: (v + ROUND) - ROUND is v rounded to nearest even
BLOCK_M = 16
ROW_TILE = spatial(BLOCK_M, 8) * local(1, 16)     # [16, 128]: 8 threads per row, 16 k each
#: The activation dtypes the kernels read and write.
ACTS = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
#: Largest code magnitude of each activation type.
QMAX = {"int8": 127.0, "int4": 7.0, "float8_e4m3": 448.0}


class QuantizeRows(tilus.Script):
    """One block per 16 rows: a pass over K for the row maxima, a second that writes the codes
    (``ROW_TILE``: eight threads share a row, each 16 consecutive k). Integers round by adding and
    subtracting 1.5 * 2^23 (the cast to an integer truncates); e4m3 by its cast (RNE)."""

    def __init__(self, qtype: str = "int8", act: str = "float16"):
        super().__init__()
        self.qtype = dtypes.get(qtype)
        self.act = dtypes.get(act)
        self.qmax = QMAX[self.qtype.name]

    def __call__(self, m: tilus.int32, k: tilus.int32, x: tilus.void_p, q: tilus.void_p,
                 s: ~tilus.float32):
        self.attrs.blocks = [tilus.cdiv(m, BLOCK_M)]
        self.attrs.warps = 4
        gx = self.global_view(x, dtype=self.act, shape=[m, k])
        gq = self.global_view(q, dtype=self.qtype, shape=[m, k])
        gs = self.global_view(s, dtype=tilus.float32, shape=[m, 1])
        m0 = self.blockIdx.x * BLOCK_M
        amax = self.register_tensor(dtype=tilus.float32, shape=[BLOCK_M, 1], init=0.0)
        for kt in self.range(0, tilus.cdiv(k, 128)):
            raw = self.load_global(gx, offsets=[m0, kt * 128], shape=[BLOCK_M, 128])
            self.annotate_layout(raw, ROW_TILE)
            t = self.cast(raw, dtype=tilus.float32)
            amax = self.maximum(amax, self.max(self.abs(t), dim=1, keepdim=True))
        self.store_global(gs, amax / self.qmax, offsets=[m0, 0])
        inv = self.where(amax > 0.0, self.qmax / self.maximum(amax, 1e-30), 0.0)
        for kt in self.range(0, tilus.cdiv(k, 128)):
            raw = self.load_global(gx, offsets=[m0, kt * 128], shape=[BLOCK_M, 128])
            self.annotate_layout(raw, ROW_TILE)
            t = self.cast(raw, dtype=tilus.float32) * inv
            if not self.qtype.is_float:
                t = (t + ROUND) - ROUND
            self.store_global(gq, self.cast(t, dtype=self.qtype), offsets=[m0, kt * 128])


def check_2d(x, name: str, where: str) -> None:
    """ArgumentError unless ``x`` is a 2-D torch tensor (the activation-quantized ops' inputs)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ArgumentError(f"{where}: {name} must be a 2-D torch tensor, got "
                            f"{getattr(x, 'shape', type(x).__name__)}")


def check_activations(x, k: int, where: str) -> None:
    """ArgumentError unless ``x`` is a float16/bfloat16 [M, k] tensor (W4A4's and FP8's input)."""
    check_2d(x, "x", where)
    if x.dtype not in ACTS or x.shape[1] != k:
        raise ArgumentError(f"{where}: x must be float16/bfloat16 [M, {k}], got {x.dtype} "
                            f"{list(x.shape)}")


class RescaledStore:
    """The epilogue the W8A8, W4A4 and FP8 kernels share: ``out`` (float32, already rescaled)
    plus the optional bias row, rounded once to the activation dtype and stored at
    ``[m0, n0]`` (the Script sets ``act`` and ``has_bias``)."""

    def store_rescaled(self, out, bias, gc, n, m0, n0, block_n: int) -> None:
        if self.has_bias:
            gbias = self.global_view(bias, dtype=self.act, shape=[1, n])
            out = out + self.cast(self.load_global(gbias, offsets=[0, n0], shape=[1, block_n]),
                                  dtype=tilus.float32)
        self.store_global(gc, self.cast(out, dtype=self.act), offsets=[m0, n0])


class SplitKSum:
    """Split-k for the integer-accumulating kernels (W8A8, per-channel W4A4): the splits
    (``blockIdx.z``) add their int32 partial sums through ``workspace`` (int32 [M, N]) in split
    order, serialized by one int32 semaphore per output tile in ``sema`` (zeroed; the last split
    resets it), and the last one rescales and stores (the Script's ``rescale_store``). Integer
    sums are exact, so the result is the unsplit one bit for bit."""

    def sum_splits(self, acc, sa, sb, bias, gc, workspace, sema, m, n, m0, n0,
                   block_m: int, block_n: int) -> None:
        split = self.blockIdx.z
        tiles_n = tilus.cdiv(n, block_n)
        gws = self.global_view(workspace, dtype=tilus.int32, shape=[m, n])
        gsema = self.global_view(sema, dtype=tilus.int32, shape=[tilus.cdiv(m, block_m) * tiles_n])
        tile = self.blockIdx.x * tiles_n + self.blockIdx.y
        self.lock_semaphore(gsema, index=[tile], value=split)
        if split > 0:
            self.add(acc, self.load_global(gws, offsets=[m0, n0], shape=[block_m, block_n]),
                     out=acc)
        if split == self.split_k - 1:
            self.rescale_store(acc, sa, sb, bias, gc, m, n, m0, n0)
        else:
            self.store_global(gws, acc, offsets=[m0, n0])
        self.release_semaphore(gsema, index=[tile], value=(split + 1) % self.split_k)


def split_k_buffers(m: int, n: int, split: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The int32 workspace [M, N] and zeroed semaphores (one per 16 x 64 tile) of ``SplitKSum``
    (one element each when ``split`` is 1)."""
    tiles = -(-m // BLOCK_M) * -(-n // 64)
    ws = torch.empty((m, n) if split > 1 else (1, 1), dtype=torch.int32, device=device)
    return ws, torch.zeros(tiles if split > 1 else 1, dtype=torch.int32, device=device)


def _check(x, dtype: str, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ArgumentError(f"{where}: x must be a 2-D torch tensor, got "
                            f"{getattr(x, 'shape', type(x).__name__)}")
    if dtype not in QMAX:
        raise ArgumentError(f"{where}: dtype must be one of {tuple(QMAX)}, got {dtype!r}")
    if dtype == "int4" and x.shape[1] % 2:
        raise ArgumentError(f"{where}: int4 rows are packed two codes per byte, so K must be "
                            f"even, got K = {x.shape[1]}")


def rows_reference(x: torch.Tensor, dtype: str = "int8") -> tuple[torch.Tensor, torch.Tensor]:
    """The rule of the module docstring in float32 torch ops, for any float ``x [M, K]`` (the
    fallback, and the weights' per-channel quantization)."""
    _check(x, dtype, "rows_reference")
    qmax = QMAX[dtype]
    x = x.float()
    amax = x.abs().amax(dim=1, keepdim=True)
    # a tensor / tensor division: torch computes ``Q / t`` as ``Q * (1 / t)``, which can be one
    # ulp off the correctly rounded quotient (and then a code off the rule)
    inv = torch.where(amax > 0, torch.full_like(amax, qmax) / amax.clamp_min(1e-30),
                      torch.zeros_like(amax))
    scales = (amax / qmax).reshape(-1)
    if dtype == "float8_e4m3":
        return (x * inv).to(torch.float8_e4m3fn), scales
    q = ((x * inv + ROUND) - ROUND).to(torch.int8)
    if dtype == "int8":
        return q, scales
    return dtypes.pack(q.to(torch.uint8) & 0xF, dtypes.int4).reshape(x.shape[0], -1), scales


def quantize_rows(x: torch.Tensor, engine: str = "auto",
                  dtype: str = "int8") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row dynamic quantization of ``x [M, K]`` float16/bfloat16 to ``dtype`` (int8, int4 or
    float8_e4m3; see the module docstring). Engines: ``"interpreter"`` (the DSL kernel on the CPU),
    ``"fallback"`` (torch), ``"auto"`` (the kernel on CUDA tensors, the fallback elsewhere)."""
    _check(x, dtype, "quantize_rows")
    if x.dtype not in ACTS:
        raise ArgumentError(f"quantize_rows: x must be float16 or bfloat16, got {x.dtype}")
    if engine == "fallback" or (engine == "auto" and x.device.type != "cuda"):
        return rows_reference(x, dtype)
    m, k = x.shape
    if dtype == "int4":
        q = torch.empty(m, k // 2, dtype=torch.uint8, device=x.device)
    else:
        q = torch.empty(m, k, dtype=torch.int8 if dtype == "int8" else torch.float8_e4m3fn,
                        device=x.device)
    s = torch.empty(m, dtype=torch.float32, device=x.device)
    QuantizeRows(dtype, ACTS[x.dtype])(m, k, x.contiguous(), q, s)
    return q, s
