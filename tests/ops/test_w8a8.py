"""W8A8 (tilus.ops.w8a8): per-row dynamic int8 quantization and the int8-mma matmul in the
interpreter, against a numpy reference of the rule (float32 arithmetic, ties to even) and
against the float matmul."""
import numpy as np
import pytest
import torch

from tilus.errors import ArgumentError
from tilus.ops import w8a8


def rows_numpy(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s = absmax / 127, q = rint(x * (127 / absmax)) in float32; a zero row: s = 0, q = 0."""
    x = x.astype(np.float32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint((x * inv).astype(np.float32)).astype(np.int8)
    return q, (amax / np.float32(127)).astype(np.float32).reshape(-1)


def data(m=20, n=72, k=80):
    torch.manual_seed(0)
    x = torch.randn(m, k).half()
    x[3] = 0
    x[5, 7] = 60000.0                                  # an outlier row
    return x, torch.randn(n, k)


def test_quantize_rows_matches_the_rule():
    x, _ = data()
    q, s = w8a8.quantize_rows(x, engine="interpreter")
    want_q, want_s = rows_numpy(x.float().numpy())
    np.testing.assert_array_equal(q.numpy(), want_q)
    np.testing.assert_array_equal(s.numpy(), want_s)
    assert s[3] == 0 and (q[3] == 0).all() and q.abs().max() == 127


def test_matmul_w8a8_interpreter_equals_the_reference():
    x, w = data()
    w8 = w8a8.quantize_weight_int8(w)
    bias = torch.randn(w.shape[0]).half()
    out = w8a8.matmul_w8a8(x, w8, bias, engine="interpreter")
    qx, sx = rows_numpy(x.float().numpy())
    want = (qx.astype(np.float64) @ w8.data.numpy().astype(np.float64)) * sx[:, None].astype(
        np.float64) * w8.scales.numpy()[None, :].astype(np.float64) + bias.float().numpy()
    torch.testing.assert_close(out.float(), torch.from_numpy(want).float().half().float(),
                               rtol=1e-3, atol=1e-3)
    assert torch.equal(out, w8a8.matmul_w8a8(x, w8, bias, engine="fallback"))
    rows = [0, 1, 2, 4]                                  # against the float matmul (no outlier)
    exact = x[rows].float() @ w.t() + bias.float()
    assert ((out[rows].float() - exact).norm() / exact.norm()) < 0.02


def test_split_k_at_decode_equals_the_reference():
    """M <= 16 with four k-tiles runs split in two; the int32 partial sums make it exact."""
    x, w = data(m=6, n=72, k=300)
    w8 = w8a8.quantize_weight_int8(w)
    assert w8a8.split_for(6, 72, 300) == 2
    out = w8a8.matmul_w8a8(x, w8, engine="interpreter")
    assert torch.equal(out, w8a8.matmul_w8a8(x, w8, engine="fallback"))


def test_arguments():
    x, w = data()
    w8 = w8a8.quantize_weight_int8(w)
    with pytest.raises(ArgumentError, match="float16"):
        w8a8.matmul_w8a8(x.bfloat16(), w8)
    with pytest.raises(ArgumentError):
        w8a8.matmul_w8a8(x[:, :40], w8)
