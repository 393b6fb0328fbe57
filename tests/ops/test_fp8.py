"""FP8 (tilus.ops.fp8): e4m3 weights per output channel and e4m3 activations per row, the DSL
kernel in the interpreter against a numpy/ml_dtypes reference of the rule, at M = 20, N = 72,
K = 160 and 170 (M and N divide no tile; 170 not the 32-wide k step)."""
import ml_dtypes
import numpy as np
import pytest
import torch

from tilus.errors import ArgumentError
from tilus.ops import fp8
from tests.ops.test_rowquant import matmul_data as data
from tests.ops.test_rowquant import rows_numpy


def test_weight_quantization_matches_the_rule():
    _, w = data()
    w8 = fp8.quantize_weight_fp8(w)
    want_q, want_s = rows_numpy(w.numpy(), "float8_e4m3")
    assert w8.data.dtype == torch.float8_e4m3fn and w8.shape == (72, 160)
    np.testing.assert_array_equal(w8.data.float().numpy(), want_q)
    np.testing.assert_array_equal(w8.scales.numpy(), want_s)
    assert np.abs(want_q).max() == float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)


@pytest.mark.parametrize("k", [160, 170])      # 170: no multiple of the 32-wide k step, nor of 4
def test_matmul_fp8_interpreter_equals_the_reference(k):
    x, w = data(k=k)
    w8 = fp8.quantize_weight_fp8(w)
    bias = torch.randn(w.shape[0]).half()
    out = fp8.matmul_fp8(x, w8, bias, engine="interpreter")
    qx, sx = rows_numpy(x.float().numpy(), "float8_e4m3")
    qw, sw = rows_numpy(w.numpy(), "float8_e4m3")
    # e4m3 products are exact; the kernel sums them in float32, hence one float16 ulp of slack
    want = (qx @ qw.T) * sx[:, None].astype(np.float64) * sw[None, :].astype(np.float64) \
        + bias.float().numpy()
    want = torch.from_numpy(want).half().float()
    torch.testing.assert_close(out.float(), want, rtol=2 ** -10, atol=2 ** -14)
    torch.testing.assert_close(out, fp8.matmul_fp8(x, w8, bias, engine="fallback"),
                               rtol=2 ** -10, atol=2 ** -14)
    rows = [0, 1, 2, 4]                                  # against the float matmul (no outlier)
    exact = x[rows].float() @ w.t() + bias.float()
    assert ((out[rows].float() - exact).norm() / exact.norm()) < 0.06


def test_bfloat16_activations_and_output():
    x, w = data()
    x = x.bfloat16()
    w8 = fp8.quantize_weight_fp8(w)
    bias = torch.randn(w.shape[0]).bfloat16()
    out = fp8.matmul_fp8(x, w8, bias, engine="interpreter")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, fp8.matmul_fp8(x, w8, bias, engine="fallback"),
                               rtol=2 ** -7, atol=2 ** -10)


def test_arguments():
    x, w = data()
    w8 = fp8.quantize_weight_fp8(w)
    with pytest.raises(ArgumentError, match="float16/bfloat16"):
        fp8.matmul_fp8(x.float(), w8)
    with pytest.raises(ArgumentError):
        fp8.matmul_fp8(x[:, :40], w8)
    with pytest.raises(ArgumentError, match="float tensor"):
        fp8.matmul_fp8_reference(x.int(), w8)
