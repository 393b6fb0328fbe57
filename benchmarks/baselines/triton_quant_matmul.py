"""A Triton kernel for the same quantized matmul as ``tilus.ops.matmul``: the baseline of
``benchmarks/bench_matmul.py``. It reads the codes as a ``[K, N_pad]`` row-major bit stream (the
common layout of GPTQ-style kernels; the wrapper repacks a format-2 weight into it once and keeps
the copy), for every weight type of 1-8 bits:

* element n of k-row r sits at bits [n*B, (n+1)*B) of the row: two bytes are loaded (the element
  may straddle a byte for B = 3, 5, 6, 7), combined into 16 bits, shifted and masked;
* the code is decoded with a 2^B-entry float32 lookup table in global memory
  (``decode(code) * 2^-E``, the same table as ``tilus.ops.quantize.value_table``), so integers
  and every float format share one kernel;
* ``w = value * scale + offset`` per group (``(value - zero_point) * scale`` without offsets),
  cast to a's dtype, ``tl.dot`` accumulating in fp32.

Triton is imported lazily (it exists only on the GPU machine): importing this module without it is
fine, calling ``triton_quant_matmul`` raises ImportError with a message.
"""
from __future__ import annotations

import functools

import torch

_KERNEL = None


def _build_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def quant_matmul_kernel(a_ptr, w_ptr, s_ptr, z_ptr, lut_ptr, bias_ptr, c_ptr, M, N, K,
                            row_bytes, group_size, zero_point,
                            NBITS: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        bit = rn * NBITS
        byte0 = bit // 8
        shift = bit % 8
        n_ok = rn < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            k_ok = kk < K
            a = tl.load(a_ptr + rm[:, None] * K + kk[None, :],
                        mask=(rm[:, None] < M) & k_ok[None, :], other=0.0)
            row = w_ptr + kk[:, None].to(tl.int64) * row_bytes
            wmask = k_ok[:, None] & n_ok[None, :]
            b0 = tl.load(row + byte0[None, :], mask=wmask, other=0).to(tl.int32)
            if NBITS % 8 != 0:
                b1 = tl.load(row + byte0[None, :] + 1,
                             mask=wmask & (byte0[None, :] + 1 < row_bytes), other=0).to(tl.int32)
                code = ((b0 | (b1 << 8)) >> shift[None, :]) & ((1 << NBITS) - 1)
            else:
                code = b0
            val = tl.load(lut_ptr + code)
            g = kk // group_size
            sz_off = g[:, None] * N + rn[None, :]
            s = tl.load(s_ptr + sz_off, mask=wmask, other=0.0).to(tl.float32)
            if HAS_Z:
                z = tl.load(z_ptr + sz_off, mask=wmask, other=0.0).to(tl.float32)
                w = (val * s + z).to(a.dtype)
            else:
                w = ((val - zero_point) * s).to(a.dtype)
            acc += tl.dot(a, w)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        c_mask = (rm[:, None] < M) & n_ok[None, :]
        tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc.to(c_ptr.dtype.element_ty),
                 mask=c_mask)

    return quant_matmul_kernel


@functools.lru_cache(maxsize=None)
def _lut(dtype: str, device: str, exponent: int) -> torch.Tensor:
    from tilus.ops.quantize import value_table

    return value_table(dtype, device, exponent).contiguous()


_ROWS: dict = {}


def row_major_codes(qw) -> torch.Tensor:
    """The weight's codes as a ``[K, N_pad * B / 8]`` row-major bit stream (cached per weight)."""
    key = id(qw.data)
    if key not in _ROWS:
        from tilus import dtypes

        codes = qw.codes()
        npad = -(-qw.n // 128) * 128
        full = torch.zeros(qw.k, npad, dtype=torch.uint8, device=codes.device)
        full[:, :qw.n] = codes
        _ROWS[key] = dtypes.pack(full.reshape(-1), qw.wtype).reshape(qw.k, -1)
    return _ROWS[key]


def default_blocks(m: int, group_size: int) -> tuple[int, int, int]:
    bm = 16 if m <= 16 else (32 if m <= 32 else (64 if m <= 64 else 128))
    bk = 64 if group_size % 64 == 0 else (32 if group_size % 32 == 0 else 16)
    return bm, 128 if m <= 64 else 64, bk


def triton_quant_matmul(a: torch.Tensor, qw, bias=None, block_m=None, block_n=None, block_k=None,
                        num_warps: int = 4, num_stages: int = 3) -> torch.Tensor:
    """``a [M, K] @ qw.dequantize(a.dtype).T (+ bias)`` with Triton (CUDA tensors)."""
    global _KERNEL
    try:
        import triton
    except ImportError as e:
        raise ImportError(f"the Triton baseline needs triton (on the GPU machine): {e}") from None
    if _KERNEL is None:
        _KERNEL = _build_kernel()
    m, k = a.shape
    n = qw.n
    bm, bn, bk = default_blocks(m, qw.group_size)
    bm, bn, bk = block_m or bm, block_n or bn, block_k or bk
    c = torch.empty(m, n, dtype=a.dtype, device=a.device)
    lut = _lut(qw.dtype, str(a.device), int(qw.exponent))
    offsets = qw.offsets if qw.offsets is not None else qw.scales
    rows = row_major_codes(qw)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _KERNEL[grid](a.contiguous(), rows, qw.scales, offsets, lut,
                  bias if bias is not None else c, c, m, n, k, rows.shape[1], qw.group_size,
                  float(qw.zero_point), NBITS=qw.nbits, HAS_Z=qw.offsets is not None,
                  HAS_BIAS=bias is not None, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                  num_warps=num_warps, num_stages=num_stages)
    return c
