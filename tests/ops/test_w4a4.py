"""W4A4 (tilus.ops.w4a4): int4 weights per output channel and int4 activations per row, the DSL
kernel in the interpreter against a numpy reference of the rule (np.rint codes in [-7, 7], int64
products, float scaling), at M = 20, N = 72, K = 160 (none divides the 16 x 64 x 32 tiles)."""
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.errors import ArgumentError
from tilus.ops import w4a4
from tests.ops.test_rowquant import matmul_data as data
from tests.ops.test_rowquant import rows_numpy


def test_weight_quantization_and_packing():
    _, w = data()
    w4 = w4a4.quantize_weight_int4(w)
    want_q, want_s = rows_numpy(w.numpy(), "int4")
    assert w4.data.dtype == torch.uint8 and w4.data.shape == (72, 80) and w4.shape == (72, 160)
    codes = dtypes.unpack(w4.data.reshape(-1), dtypes.int4, 72 * 160)
    np.testing.assert_array_equal(dtypes.int4.decode(np.asarray(codes)).reshape(72, 160), want_q)
    np.testing.assert_array_equal(w4.codes().numpy(), want_q)
    np.testing.assert_array_equal(w4.scales.numpy(), want_s)


@pytest.mark.parametrize("k", [160, 170])      # 170: rows of 85 bytes, no 4-byte alignment
def test_matmul_w4a4_interpreter_equals_the_reference(k):
    x, w = data(k=k)
    w4 = w4a4.quantize_weight_int4(w)
    bias = torch.randn(w.shape[0]).half()
    out = w4a4.matmul_w4a4(x, w4, bias, engine="interpreter")
    qx, sx = rows_numpy(x.float().numpy(), "int4")
    qw, sw = rows_numpy(w.numpy(), "int4")
    acc = qx.astype(np.int64) @ qw.astype(np.int64).T
    want = acc * sx[:, None].astype(np.float64) * sw[None, :].astype(np.float64) \
        + bias.float().numpy()
    torch.testing.assert_close(out.float(), torch.from_numpy(want).half().float(),
                               rtol=2 ** -10, atol=2 ** -14)
    assert torch.equal(out, w4a4.matmul_w4a4(x, w4, bias, engine="fallback"))
    rows = [0, 1, 2, 4]                                  # against the float matmul (no outlier)
    exact = x[rows].float() @ w.t() + bias.float()
    assert ((out[rows].float() - exact).norm() / exact.norm()) < 0.25


@pytest.mark.parametrize("s4_mma", [True, False])
def test_both_kernel_variants_equal_the_fallback(s4_mma):
    x, w = data()
    w4 = w4a4.quantize_weight_int4(w)
    qx, sx = w4a4.quantize_rows(x, "fallback", "int4")
    out = torch.zeros(x.shape[0], w.shape[0]).half()
    tilus.interpret(w4a4.MatmulW4A4(has_bias=False, s4_mma=s4_mma), x.shape[0], w.shape[0],
                    x.shape[1], qx, w4.data, sx, w4.scales, torch.zeros(1).half(), out,
                    torch.zeros(1, 1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32))
    assert torch.equal(out, w4a4.matmul_w4a4(x, w4, engine="fallback"))


def test_split_k_at_decode_equals_the_fallback():
    """Per channel at M <= 16 with three k-tiles: split in two, exact int32 partial sums."""
    x, w = data()
    x = x[:6]
    w4 = w4a4.quantize_weight_int4(w)
    assert w4a4.split_for(6, w.shape[0], w.shape[1]) == 2
    assert w4a4.split_for(6, w.shape[0], w.shape[1], group_size=64) == 1
    assert torch.equal(w4a4.matmul_w4a4(x, w4, engine="interpreter"),
                       w4a4.matmul_w4a4(x, w4, engine="fallback"))


def test_bfloat16_activations_and_output():
    x, w = data()
    x = x.bfloat16()
    w4 = w4a4.quantize_weight_int4(w, group_size=None)
    bias = torch.randn(w.shape[0]).bfloat16()
    out = w4a4.matmul_w4a4(x, w4, bias, engine="interpreter")
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, w4a4.matmul_w4a4(x, w4, bias, engine="fallback"))


def test_arguments():
    x, w = data()
    w4 = w4a4.quantize_weight_int4(w)
    with pytest.raises(ArgumentError, match="float16/bfloat16"):
        w4a4.matmul_w4a4(x.float(), w4)
    with pytest.raises(ArgumentError):
        w4a4.matmul_w4a4(x[:, :40], w4)
    with pytest.raises(ArgumentError, match="even"):
        w4a4.quantize_weight_int4(w[:, :5])


@pytest.mark.parametrize("s4_mma", [True, False])
def test_group_wise_weight_scales(s4_mma):
    """group 64 of K = 192: the codes and scales per group by the rule, the kernel (interpreter)
    against the numpy reference, and a smaller error than per channel."""
    x, w = data(k=192)
    w4 = w4a4.quantize_weight_int4(w, group_size=64)
    assert w4.scales.shape == (3, 72) and w4.data.shape == (72, 96)
    want_q, want_s = rows_numpy(w.reshape(-1, 64).numpy(), "int4")
    np.testing.assert_array_equal(w4.codes().numpy(), want_q.reshape(72, 192))
    np.testing.assert_array_equal(w4.scales.numpy(), want_s.reshape(72, 3).T)
    bias = torch.randn(72).half()
    qx, sx = w4a4.quantize_rows(x, "fallback", "int4")
    out = torch.zeros(20, 72).half()
    tilus.interpret(w4a4.MatmulW4A4(has_bias=True, s4_mma=s4_mma, group_size=64), 20, 72, 192,
                    qx, w4.data, sx, w4.scales, bias, out, torch.zeros(1, 1, dtype=torch.int32),
                    torch.zeros(1, dtype=torch.int32))
    qa, sa = rows_numpy(x.float().numpy(), "int4")
    acc = np.einsum("mgk,ngk->mng", qa.reshape(20, 3, 64), want_q.reshape(72, 3, 64))
    want = (acc * want_s.reshape(72, 3)[None]).sum(axis=2) * sa[:, None] + bias.float().numpy()
    torch.testing.assert_close(out.float(), torch.from_numpy(want).half().float(),
                               rtol=2 ** -10, atol=2 ** -14)
    torch.testing.assert_close(out, w4a4.matmul_w4a4(x, w4, bias, engine="fallback"),
                               rtol=2 ** -10, atol=2 ** -14)
    rows = [0, 1, 2, 4]
    exact = x[rows].float() @ w.t() + bias.float()
    per_channel = w4a4.matmul_w4a4(x, w4a4.quantize_weight_int4(w), bias, engine="fallback")
    err = [(o[rows].float() - exact).norm() / exact.norm() for o in (out, per_channel)]
    assert err[0] < err[1], err
    with pytest.raises(ArgumentError, match="multiple of 64"):
        w4a4.quantize_weight_int4(w, group_size=32)
