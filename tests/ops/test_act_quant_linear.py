"""QuantLinear(act_dtype="int4" | "float8_e4m3"): W4A4 and FP8 layers against a numpy reference
of the rule (per-row activation and per-channel weight codes, tests.ops.test_rowquant.rows_numpy:
np.rint for int4, ml_dtypes.float8_e4m3fn for e4m3; float64 products, float scaling), smoothing,
state-dict and save/load round trips, and the argument errors."""
import numpy as np
import pytest
import torch
from torch import nn

import tilus
from tilus.errors import QuantizationError
from tests.ops.test_rowquant import rows_numpy

N, K = 72, 160                                           # neither divides the 64 x 32 tiles
ACTS = ["int4", "float8_e4m3"]
#: relative error against the float product this small layer stays under (int4: 7 levels a side)
BOUND = {"int4": 0.25, "float8_e4m3": 0.06}


def linear(bias=True):
    torch.manual_seed(0)
    return nn.Linear(K, N, bias=bias)


def layer_of(lin, act, smooth=None):
    return tilus.nn.QuantLinear.from_linear(lin, dtype=act, group_size=None, act_dtype=act,
                                            smooth=smooth)


def reference(x: torch.Tensor, lin: nn.Linear, act: str, smooth=None) -> np.ndarray:
    """float64 [M, N]: x (divided by smooth, rounded to x's dtype) and W (times smooth) quantized
    per row by the rule, products summed in float64 (exact), times both scales, plus bias."""
    xs, w = x.float().numpy(), lin.weight.detach().float().numpy()
    if smooth is not None:
        s = smooth.float().numpy()
        xs = torch.from_numpy(xs / s).to(x.dtype).float().numpy()
        w = w * s[None, :]
    qx, sx = rows_numpy(xs, act)
    qw, sw = rows_numpy(w, act)
    out = (qx @ qw.T) * sx[:, None].astype(np.float64) * sw[None, :].astype(np.float64)
    if lin.bias is None:
        return out
    return out + lin.bias.detach().to(x.dtype).double().numpy()


def inputs(m=21):
    torch.manual_seed(1)
    x = torch.randn(m, K)
    x[4] = 0                                              # a zero row: output = bias
    return x


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_forward_matches_the_reference(act, dtype):
    lin = linear()
    layer = layer_of(lin, act)
    x = inputs().to(dtype)
    out = layer(x.reshape(3, 7, K))
    assert out.dtype == dtype and out.shape == (3, 7, N)
    want = torch.from_numpy(reference(x, lin, act))
    eps = 0 if dtype == torch.float64 else torch.finfo(dtype).eps   # one rounding apart
    torch.testing.assert_close(out.reshape(-1, N).double(), want.to(dtype).double(),
                               rtol=eps, atol=eps)
    exact = x.double() @ lin.weight.double().t() + lin.bias.double()
    assert (out.reshape(-1, N).double() - exact).norm() / exact.norm() < BOUND[act]


@pytest.mark.parametrize("act", ACTS)
def test_weights_and_smoothing(act):
    lin = linear(bias=False)
    layer = layer_of(lin, act)
    w = lin.weight.detach()
    qw, sw = rows_numpy(w.numpy(), act)
    torch.testing.assert_close(layer.dequantize().double(),
                               torch.from_numpy(qw * sw[:, None].astype(np.float64)),
                               rtol=1e-7, atol=0)
    assert layer.qweight.dtype == torch.uint8
    assert layer.qweight.shape == ((N, K // 2) if act == "int4" else (N, K))
    x = inputs()
    x[:, 5] *= 60.0                                       # an outlier input channel
    s = (x.abs().amax(0) / w.abs().amax(0)).sqrt()        # SmoothQuant, alpha = 0.5
    smoothed = layer_of(lin, act, smooth=s)
    xh = x.half()
    want = torch.from_numpy(reference(xh, lin, act, s)).half().double()
    torch.testing.assert_close(smoothed(xh).double(), want, rtol=2 ** -10, atol=2 ** -10)


@pytest.mark.parametrize("act", ACTS)
def test_state_dict_round_trip_and_half(act):
    lin = linear()
    layer = layer_of(lin, act, smooth=torch.rand(K) + 0.5)
    sd = layer.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    fresh = tilus.nn.QuantLinear(K, N, True, act, None, act_dtype=act, smooth=True)
    fresh.load_state_dict(sd)
    x = inputs().half()
    assert torch.equal(fresh(x), layer(x))
    halved = layer.half()
    assert halved.qweight.dtype == torch.uint8 and halved.scales.dtype == torch.float32
    other = "int4" if act != "int4" else "float8_e4m3"
    with pytest.raises((QuantizationError, RuntimeError)):
        tilus.nn.QuantLinear(K, N, True, other, None, act_dtype=other).load_state_dict(sd)


@pytest.mark.parametrize("act", ACTS)
def test_save_and_load_quantized(act, tmp_path):
    def model():
        torch.manual_seed(2)
        return nn.Sequential(nn.Linear(K, N), nn.ReLU(), nn.Linear(N, 40, bias=False))
    m = tilus.nn.quantize_model(model(), dtype=act, group_size=None, act_dtype=act)
    tilus.nn.save_quantized(m, tmp_path)
    loaded = tilus.nn.load_quantized(model(), tmp_path)
    assert loaded[0].act_dtype == act and loaded[2].act_dtype == act
    x = inputs().half()
    assert torch.equal(loaded(x), m(x))


def test_bad_arguments_name_the_problem():
    lin = linear()
    with pytest.raises(QuantizationError, match="act_dtype='int4' takes int4 weights"):
        tilus.nn.QuantLinear.from_linear(lin, "int8", None, act_dtype="int4")
    with pytest.raises(QuantizationError, match="group_size"):
        tilus.nn.QuantLinear.from_linear(lin, "float8_e4m3", 32, act_dtype="float8_e4m3")
    with pytest.raises(QuantizationError, match="even"):
        tilus.nn.QuantLinear(K + 1, N, True, "int4", None, act_dtype="int4")


def test_group_wise_w4a4_layer(tmp_path):
    """act_dtype="int4" with group_size=64 (K = 192): scales [3, N], forward against the rule
    with per-group weight scales, a smaller error than per channel, and the round trips."""
    torch.manual_seed(3)
    lin = nn.Linear(192, N)
    layer = tilus.nn.QuantLinear.from_linear(lin, "int4", 64, act_dtype="int4")
    assert layer.scales.shape == (3, N) and layer.qweight.shape == (N, 96)
    x = torch.randn(21, 192).half()
    qx, sx = rows_numpy(x.float().numpy(), "int4")
    qw, sw = rows_numpy(lin.weight.detach().reshape(-1, 64).numpy(), "int4")
    acc = np.einsum("mgk,ngk->mng", qx.reshape(21, 3, 64), qw.reshape(N, 3, 64))
    want = (acc * sw.reshape(N, 3)[None]).sum(axis=2) * sx[:, None] \
        + lin.bias.detach().half().double().numpy()
    out = layer(x)
    torch.testing.assert_close(out.double(), torch.from_numpy(want).half().double(),
                               rtol=2 ** -10, atol=2 ** -10)
    exact = x.double() @ lin.weight.double().t() + lin.bias.double()
    per_channel = tilus.nn.QuantLinear.from_linear(lin, "int4", None, act_dtype="int4")(x)
    err = [(o.double() - exact).norm() / exact.norm() for o in (out, per_channel)]
    assert err[0] < err[1], err
    fresh = tilus.nn.QuantLinear(192, N, True, "int4", 64, act_dtype="int4")
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), out)
    model = nn.Sequential(lin)
    tilus.nn.quantize_model(model, dtype="int4", group_size=64, act_dtype="int4")
    tilus.nn.save_quantized(model, tmp_path)
    loaded = tilus.nn.load_quantized(nn.Sequential(nn.Linear(192, N)), tmp_path)
    assert loaded[0].group_size == 64 and torch.equal(loaded(x), out)
    with pytest.raises(QuantizationError, match="group_size"):
        tilus.nn.QuantLinear.from_linear(lin, "int4", 32, act_dtype="int4")
    with pytest.raises(QuantizationError, match="group_size"):
        tilus.nn.QuantLinear.from_linear(lin, "float8_e4m3", 64, act_dtype="float8_e4m3")
