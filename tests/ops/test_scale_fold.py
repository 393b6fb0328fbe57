"""Float weight types fold their cast's exponent-bias multiply into the scale rows
(``QuantMatmul(fold_scale=True)``) exactly when every scale times that power of two is exact and
finite: the folded kernel gives bit-identical results to the unfolded one, and weights whose
scales would overflow keep the multiply."""
import pytest
import torch

from tilus.ops import matmul, quantize
from tilus.ops.kernels import QuantMatmul, scale_fold_exponent
from tilus.ops.matmul import can_fold_scale, kernel_for, weight_meta


def _case(dtype, scale=0.1, act=torch.float16, m=3, n=24, k=64, group=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    qw = quantize(torch.randn(n, k, generator=g) * scale, dtype, group_size=group,
                  scale_dtype=act)
    return torch.randn(m, k, generator=g).to(act), qw


def test_fold_exponent_is_the_bias_difference():
    assert scale_fold_exponent("float4_e2m1", "float16", 0) == 14       # 2^(15 - 1)
    assert scale_fold_exponent("float4_e2m1", "bfloat16", 0) == 126     # 2^(127 - 1)
    assert scale_fold_exponent("float8_e4m3", "float16", 2) == 8 - 2
    assert scale_fold_exponent("uint4", "float16", 0) == 0


def test_which_weights_fold():
    _, small = _case("float4_e2m1")
    assert can_fold_scale(small.scales, "float4_e2m1", "float16", small.exponent)
    # e2m1 stores s = absmax / 6; s * 2^14 overflows float16 once absmax >= 24
    _, big = _case("float4_e2m1", scale=40.0)
    assert float(big.scales.float().abs().max()) * 2 ** 14 > 65504
    assert not can_fold_scale(big.scales, "float4_e2m1", "float16", big.exponent)
    assert not weight_meta(big, torch.float16)["fold_scale"]
    _, ints = _case("uint4")
    assert not weight_meta(ints, torch.float16)["fold_scale"]
    # the cached answer follows in-place changes of the scales
    small.scales[0, 0] = 30000.0
    assert not can_fold_scale(small.scales, "float4_e2m1", "float16", small.exponent)


@pytest.mark.parametrize("dtype,act", [("float4_e2m1", torch.float16),
                                       ("float6_e3m2", torch.float16),
                                       ("float8_e4m3", torch.float16),
                                       ("float4_e2m1", torch.bfloat16)])
def test_folded_kernel_equals_the_unfolded_one_bit_for_bit(dtype, act):
    a, qw = _case(dtype, act=act)
    meta = weight_meta(qw, act)
    assert meta["fold_scale"]
    sched = {"block_m": 16, "block_k": 32, "split_k": 1, "warps": 4, "stages": 2}
    act_name = str(act).split(".")[-1]
    folded = kernel_for(meta, act_name, False, sched)
    plain = kernel_for(dict(meta, fold_scale=False), act_name, False, sched)
    assert folded.fold_scale and not plain.fold_scale
    ref = (a.float() @ qw.dequantize(act).float().t()).to(act)
    outs = []
    for kern in (folded, plain):
        out = torch.zeros(a.shape[0], qw.n, dtype=act)
        kern(a.shape[0], qw.n, qw.k, a, qw.data, qw.scales, torch.zeros(1, dtype=act),
             torch.zeros(1, dtype=act), out, torch.zeros(1), torch.zeros(1, dtype=torch.int32),
             1.0)
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(outs[0], ref, rtol=4e-3, atol=2e-3)
    assert "exponent=" in str(folded.program()) and "exponent=" not in str(plain.program())


def test_overflowing_scales_still_multiply_and_stay_right():
    a, qw = _case("float4_e2m1", scale=40.0)
    out = matmul(a, qw, engine="interpreter")
    ref = (a.float() @ qw.dequantize(torch.float16).float().t()).half()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=4e-3, atol=0.5)


def test_fold_scale_is_refused_where_it_does_not_apply():
    from tilus.errors import TilusError

    with pytest.raises(TilusError, match="fold_scale needs a float weight type"):
        QuantMatmul("uint4", 32, fold_scale=True)
    with pytest.raises(TilusError, match="fold_scale needs a float weight type"):
        QuantMatmul("float4_e2m1", 32, scale="bfloat16", fold_scale=True)
