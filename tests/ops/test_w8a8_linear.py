"""QuantLinear(act_dtype="int8"): W8A8 layers against a numpy reference of the rule (per-row
activation and per-channel weight int8, ties to even, int64 products, float scaling), the
SmoothQuant folding identity, state-dict and save/load round trips, and the argument errors."""
import numpy as np
import pytest
import torch
from torch import nn

import tilus
from tilus.errors import ArgumentError, QuantizationError
from tests.ops.test_w8a8 import rows_numpy

N, K = 72, 80                                            # neither divides the 64 x 32 tiles


def linear(bias=True, n=N, k=K):
    torch.manual_seed(0)
    return nn.Linear(k, n, bias=bias)


def layer_of(lin, smooth=None):
    return tilus.nn.QuantLinear.from_linear(lin, dtype="int8", group_size=None,
                                            act_dtype="int8", smooth=smooth)


def reference(x: torch.Tensor, lin: nn.Linear, smooth=None) -> np.ndarray:
    """float64 [M, N]: x (divided by smooth, rounded to x's dtype) and W (times smooth)
    quantized per row by the rule, products summed in int64, times both scales, plus bias."""
    xs, w = x.float().numpy(), lin.weight.detach().float().numpy()
    if smooth is not None:
        s = smooth.float().numpy()
        xs = torch.from_numpy(xs / s).to(x.dtype).float().numpy()
        w = w * s[None, :]
    qx, sx = rows_numpy(xs)
    qw, sw = rows_numpy(w)
    acc = qx.astype(np.int64) @ qw.astype(np.int64).T
    out = acc.astype(np.float64) * sx[:, None].astype(np.float64) * sw[None, :].astype(np.float64)
    if lin.bias is None:
        return out
    return out + lin.bias.detach().to(x.dtype).double().numpy()     # the bias in x's dtype


def inputs(m=21):
    torch.manual_seed(1)
    x = torch.randn(m, K)
    x[4] = 0                                              # a zero row: output = bias
    return x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_forward_matches_the_reference(dtype):
    lin = linear()
    layer = layer_of(lin)
    x = inputs().to(dtype)
    out = layer(x.reshape(3, 7, K))
    assert out.dtype == dtype and out.shape == (3, 7, N)
    want = torch.from_numpy(reference(x, lin))
    eps = 0 if dtype == torch.float64 else torch.finfo(dtype).eps   # one rounding apart
    torch.testing.assert_close(out.reshape(-1, N).double(), want.to(dtype).double(),
                               rtol=eps, atol=eps)
    exact = x.double() @ lin.weight.double().t() + lin.bias.double()
    assert (out.reshape(-1, N).double() - exact).norm() / exact.norm() < 0.02


def test_smoothing_identity_and_its_effect():
    lin = linear(bias=False)
    x = inputs().double()
    x[:, 5] *= 60.0                                       # an outlier input channel
    w = lin.weight.detach().double()
    s = (x.abs().amax(0) / w.abs().amax(0)).sqrt()        # SmoothQuant, alpha = 0.5
    torch.testing.assert_close((x / s) @ (w * s).t(), x @ w.t(), rtol=1e-12, atol=1e-12)
    plain, smoothed = layer_of(lin), layer_of(lin, smooth=s.float())
    xh = x.half()
    out = smoothed(xh)
    want = torch.from_numpy(reference(xh, lin, s.float())).half().double()
    torch.testing.assert_close(out.double(), want, rtol=2 ** -10, atol=2 ** -10)
    exact = xh.double() @ w.t()
    err = [(m(xh).double() - exact).norm() / exact.norm() for m in (plain, smoothed)]
    assert err[1] < err[0] / 2, err
    torch.testing.assert_close(smoothed.dequantize().double(), w, rtol=0, atol=0.02)


def test_state_dict_round_trip_is_tensors_only():
    lin = linear()
    layer = layer_of(lin, smooth=torch.rand(K) + 0.5)
    sd = layer.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert sd["qweight"].dtype == torch.int8 and sd["scales"].shape == (N,)
    fresh = tilus.nn.QuantLinear(K, N, True, "int8", None, act_dtype="int8", smooth=True)
    fresh.load_state_dict(sd)
    x = inputs().half()
    assert torch.equal(fresh(x), layer(x))
    assert layer.half().scales.dtype == torch.float32 and layer.smooth.dtype == torch.float32
    weight_only = tilus.nn.QuantLinear(K, N, True, "int8", None)
    with pytest.raises((QuantizationError, RuntimeError)):
        weight_only.load_state_dict(sd)


def test_save_and_load_quantized(tmp_path):
    def model():
        torch.manual_seed(2)
        return nn.Sequential(nn.Linear(K, N), nn.ReLU(), nn.Linear(N, 40, bias=False))
    m = tilus.nn.quantize_model(model(), dtype="int8", group_size=None, act_dtype="int8",
                                smooth={"0": torch.rand(K) + 0.5})
    assert m.tilus_quantized == ["0", "2"] and m[0].smooth is not None and m[2].smooth is None
    tilus.nn.save_quantized(m, tmp_path)
    loaded = tilus.nn.load_quantized(model(), tmp_path)
    assert loaded[0].act_dtype == "int8" and loaded[2].smooth is None
    x = inputs().half()
    assert torch.equal(loaded(x), m(x))


def test_bad_arguments_name_the_problem():
    lin = linear()
    with pytest.raises(QuantizationError, match="act_dtype"):
        tilus.nn.QuantLinear.from_linear(lin, "int8", None, act_dtype="int2")
    with pytest.raises(QuantizationError, match="dtype"):
        tilus.nn.QuantLinear.from_linear(lin, "uint4", None, act_dtype="int8")
    with pytest.raises(QuantizationError, match="group_size"):
        tilus.nn.QuantLinear.from_linear(lin, "int8", 16, act_dtype="int8")
    with pytest.raises(QuantizationError, match="scale_dtype"):
        tilus.nn.QuantLinear.from_linear(lin, "int8", None, scale_dtype=torch.float16,
                                         act_dtype="int8")
    with pytest.raises(QuantizationError, match="smooth must be a float tensor"):
        layer_of(lin, smooth=torch.ones(K + 1))
    with pytest.raises(QuantizationError, match="> 0"):
        layer_of(lin, smooth=-torch.ones(K))
    with pytest.raises(QuantizationError, match="needs quantized activations"):
        tilus.nn.QuantLinear.from_linear(lin, "int8", None, smooth=torch.ones(K))
    layer = layer_of(lin)
    with pytest.raises(ArgumentError, match="int32"):
        layer(torch.ones(2, K, dtype=torch.int32))
    with pytest.raises(ArgumentError, match="in_features = 80"):
        layer(torch.ones(2, K - 1).half())
