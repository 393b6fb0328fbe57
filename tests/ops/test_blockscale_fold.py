"""The block-scaled fast path (``QuantMatmul(scheme=..., fold_scale=True)``: scales applied to the
weights in the activation dtype) is taken exactly where every weight ``element * scale`` is exact
there, and both paths equal dequantize()-then-matmul (interpreter; the simulated kernels:
tests/backend/test_quant_matmul_simulated_block.py)."""
import pytest
import torch

from tilus.ops import quantize
from tilus.ops.matmul import can_fold_scale, kernel_for, weight_meta

MX_TYPES = ["float4_e2m1", "float6_e2m3", "float6_e3m2", "float8_e4m3", "float8_e5m2", "int8"]


def mx_blocks(exponents) -> torch.Tensor:
    """[4, 32 * len(exponents)] weights whose k-block b has absmax (4.5 .. 6) * 2^e_b: MXFP4's
    shared exponent is floor(log2(absmax)) - emax(e2m1) = e + 2 - 2 = e."""
    row = torch.linspace(-6.0, 6.0, 32, dtype=torch.float64)
    w = torch.cat([row * 2.0 ** e for e in exponents]).repeat(4, 1)
    return w * torch.tensor([1.0, -1.0, 0.875, -0.75], dtype=torch.float64).unsqueeze(1)


def fold(qw, act=torch.float16) -> bool:
    return weight_meta(qw, act)["fold_scale"]


def run(qw, a, fold_scale: bool) -> torch.Tensor:
    """The kernel (interpreter, one unit per k-tile) with the fast path on or off."""
    act = "float16" if a.dtype == torch.float16 else "bfloat16"
    meta = dict(weight_meta(qw, a.dtype), fold_scale=fold_scale)
    kern = kernel_for(meta, act, False, {"block_m": 16, "block_k": 32, "split_k": 1,
                                         "warps": 4, "stages": 1})
    assert kern.fold_scale == fold_scale
    out = torch.zeros(a.shape[0], qw.n, dtype=a.dtype)
    kern(a.shape[0], qw.n, qw.k, a, qw.data, qw.scales, torch.zeros(1, dtype=torch.uint8),
         torch.zeros(1, dtype=a.dtype), out, torch.zeros(1), torch.zeros(1, dtype=torch.int32),
         float(qw.global_scale))
    return out


def test_mxfp4_float16_range():
    """float16 holds v * 2^e exactly for every e2m1 value v (0.5 .. 6) iff 0.5 * 2^e >= 2^-24
    (e >= -23), and the decoded scale 2^(e + 14) (the cast's bias fix folded in) is a normal
    float16 iff e + 14 <= 15 (e <= 1)."""
    for exps, want in [((-23, 1), True), ((-24, -3), False), ((-3, 2), False)]:
        qw = quantize(mx_blocks(exps).float(), dtype="float4_e2m1", scheme="mx")
        assert sorted(set((qw.scales.long() - 127).flatten().tolist())) == sorted(exps)
        assert fold(qw) == want, exps
    # bfloat16 reaches further down (2^-133) but not up: 2^(e + 126) overflows for e > 1
    assert fold(quantize(mx_blocks((-100, 1)).float(), "float4_e2m1", scheme="mx"),
                torch.bfloat16)
    assert not fold(quantize(mx_blocks((2,)).float(), "float4_e2m1", scheme="mx"),
                    torch.bfloat16)


def test_mxfp4_range_edges_are_exact():
    """The extreme exponents the fast path accepts give dequantize()-then-matmul's result."""
    qw = quantize(mx_blocks((-23, 1, -10)).float(), dtype="float4_e2m1", scheme="mx")
    assert fold(qw)
    a = torch.randn(3, qw.k).half()
    ref = a.float() @ qw.dequantize(torch.float32).t()
    torch.testing.assert_close(run(qw, a, True).float(), ref, rtol=1e-3, atol=0)


def test_nvfp4_scales():
    """float16: an E4M3 code shifted into float16's bits is s * 2^-8 for every code (zero and
    subnormal scales included), times 2^8 is s, and e2m1 * s * 2^-14 is exact: every NVFP4
    tensor takes the fast path, but one with a negative (sign bit) scale code. bfloat16 raises
    the exponent field instead, exact for normal codes only: a zero block falls back."""
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    w[0, :16] = 0.0                          # a zero block: scale code 0
    w[1, 16:32] *= 1e-6                      # s = 448 * absmax_b / absmax(W): subnormal E4M3
    qw = quantize(w, scheme="nvfp4")
    assert int(qw.scales.min()) == 0 and int(qw.scales[1, 1]) < 8
    assert fold(qw) and not fold(qw, torch.bfloat16)
    assert fold(quantize(w[2:], scheme="nvfp4"), torch.bfloat16)
    a = torch.randn(3, qw.k).half()
    ref = a.float() @ qw.dequantize(torch.float32).t()
    torch.testing.assert_close(run(qw, a, True).float(), ref, rtol=1e-3, atol=1e-5)
    qw.scales[2, 0] |= 0x80                  # -s: dequantize() is exact, the fast path is not
    assert not fold(qw)
    torch.testing.assert_close(run(qw, a, False).float(),
                               a.float() @ qw.dequantize(torch.float32).t(), rtol=1e-3,
                               atol=1e-5)


@pytest.mark.parametrize("act", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scheme, name", [("mx", t) for t in MX_TYPES] + [("nvfp4",
                                                                            "float4_e2m1")])
def test_both_paths_equal_dequantize_then_matmul(scheme, name, act):
    """K = 64, N = 40: one k-tile per unit, columns past N masked."""
    torch.manual_seed(3)
    qw = quantize(torch.randn(40, 64) * 0.05, dtype=name, scheme=scheme)
    a = torch.randn(2, 64).to(act)
    ref = a.float() @ qw.dequantize(torch.float32).t()
    # float16 keeps e5m2 values times 2^e exact only for e in -8..0: these blocks fall back
    fast = fold(qw, act)
    assert fast == (name != "float8_e5m2" or act == torch.bfloat16)
    tol = 1e-2 if act == torch.bfloat16 else 1e-3
    for path in (True, False) if fast else (False,):
        torch.testing.assert_close(run(qw, a, path).float(), ref, rtol=tol, atol=1e-3)


def test_cache_follows_in_place_changes():
    torch.manual_seed(1)
    qw = quantize(torch.randn(8, 64), dtype="float4_e2m1", scheme="mx")
    assert can_fold_scale(qw.scales, "float4_e2m1", "float16", 0, scheme="mx")
    qw.scales[0, 0] = 255                    # the E8M0 NaN code
    assert not can_fold_scale(qw.scales, "float4_e2m1", "float16", 0, scheme="mx")


@pytest.mark.parametrize("nbits", [4, 6, 8])
@pytest.mark.parametrize("k", [2048, 4096, 14336])
def test_decode_schedules_fit_sm80_shared_memory(nbits, k):
    """The fast path's decode stages, their scale codes included, fit sm_80's 163 KB."""
    from tilus.ops.matmul import block_k_limit, default_schedule, stage_bytes

    limit = 163 * 1024
    for scheme, block in (("mx", 32), ("nvfp4", 16)):
        s = default_schedule(1, 4096, k, block, "compiled", 108, nbits,
                             block_k_limit(scheme, True, nbits), block, limit)
        assert s["stages"] >= 2
        assert s["stages"] * stage_bytes(16, s["block_k"], nbits, 128, block) <= limit, s
