"""tilus.nn: QuantLinear, quantize_model, state dicts, torch.compile(fullgraph=True)."""
import io
import json

import pytest
import torch
from torch import nn

import tilus
from tilus.errors import QuantizationError
from tilus.nn import QuantLinear, quantize_model
from tilus.ops import matmul, quantize


class Tiny(nn.Module):
    def __init__(self, d=64, h=96, out=40):
        super().__init__()
        self.up = nn.Linear(d, h)
        self.act = nn.SiLU()
        self.down = nn.Linear(h, d, bias=False)
        self.block = nn.Sequential(nn.Linear(d, d), nn.ReLU())
        self.lm_head = nn.Linear(d, out)

    def forward(self, x):
        x = x + self.down(self.act(self.up(x)))
        return self.lm_head(self.block(x))


def _model(seed=0):
    torch.manual_seed(seed)
    return Tiny().eval()


def test_from_linear_matches_ops_matmul():
    torch.manual_seed(1)
    lin = nn.Linear(64, 40)
    q = QuantLinear.from_linear(lin, dtype="int4", group_size=32)
    assert "dtype=int4" in repr(q) and q.offsets is None
    x = torch.randn(2, 3, 64).half()
    out = q(x)
    assert out.shape == (2, 3, 40) and out.dtype == torch.float16
    qw = quantize(lin.weight, "int4", group_size=32)
    ref = matmul(x, qw, lin.bias.detach().half())
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    ref_i = matmul(x, qw, lin.bias.detach().half(), engine="interpreter")
    torch.testing.assert_close(out, ref_i, rtol=4e-3, atol=2e-3)
    # float32 input: computed in float32 (as nn.Linear), close to the float layer
    y = q(x.float())
    assert y.dtype == torch.float32
    assert (y - lin(x.float())).abs().max() < 0.25


def test_quantize_model_skip_and_accuracy():
    m = _model()
    x = torch.randn(5, 64)
    ref = m(x)
    quantize_model(m, dtype="uint8", group_size=32, skip=["lm_head"])
    assert sorted(m.tilus_quantized) == ["block.0", "down", "up"]
    assert isinstance(m.up, QuantLinear) and isinstance(m.block[0], QuantLinear)
    assert type(m.lm_head) is nn.Linear
    out = m(x)
    assert (out - ref).abs().max() < 2e-2 * ref.abs().max()
    m2 = quantize_model(_model(), dtype="float4_e2m1", group_size=32, skip=["block.*", "*head"])
    assert sorted(m2.tilus_quantized) == ["down", "up"]
    with pytest.raises(QuantizationError, match="up: group_size 48 does not divide"):
        quantize_model(_model(), dtype="uint4", group_size=48)


@pytest.mark.parametrize("dtype", ["uint4", "int3", "float6_e3m2"])
def test_state_dict_round_trip(dtype):
    m = quantize_model(_model(), dtype=dtype, group_size=32)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    sd = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert "up.qweight" in sd and "up.scales" in sd and sd["up.qweight"].dtype == torch.uint8
    fresh = Tiny()
    for name in ("up", "down", "lm_head"):
        lin = getattr(fresh, name)
        setattr(fresh, name, QuantLinear(lin.in_features, lin.out_features, lin.bias is not None,
                                         dtype=dtype, group_size=32))
    fresh.block[0] = QuantLinear(64, 64, True, dtype=dtype, group_size=32)
    fresh.load_state_dict(sd)
    x = torch.randn(4, 64)
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    wrong = QuantLinear(64, 96, True, dtype="uint2", group_size=32)
    with pytest.raises((QuantizationError, RuntimeError)):
        wrong.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("up.")})


def test_torch_compile_fullgraph_aot_eager():
    m = quantize_model(_model(), dtype="uint4", group_size=32).half()
    x = torch.randn(3, 64).half()
    eager = m(x)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    # the custom op appears as one node in the traced graph
    gm = torch.fx.symbolic_trace(lambda a, q, s, z: torch.ops.tilus.quant_matmul(
        a, q, s, z, None, "uint4", 96, 64, 32, 0.0))
    assert any("quant_matmul" in str(n.target) for n in gm.graph.nodes)


def test_custom_op_fake_and_opcheck():
    qw = quantize(torch.randn(24, 32), "uint4", group_size=32)
    a = torch.randn(5, 32).half()
    args = (a, qw.data, qw.scales, qw.offsets, None, "uint4", 24, 32, 32, 0.0, 0)
    torch.library.opcheck(torch.ops.tilus.quant_matmul.default, args)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fa = mode.from_tensor(a)
        fake = torch.ops.tilus.quant_matmul(fa, *[mode.from_tensor(t) if isinstance(t, torch.Tensor)
                                                  else t for t in args[1:]])
        assert fake.shape == (5, 24) and fake.dtype == torch.float16


def test_public_names():
    assert tilus.nn.QuantLinear is QuantLinear and tilus.ops.quantize is quantize


def test_module_conversions_keep_scale_dtype():
    q = QuantLinear.from_linear(nn.Linear(32, 16), dtype="uint4", group_size=32)
    q.float()
    assert q.scales.dtype == torch.float16 and q.offsets.dtype == torch.float16
    assert q.qweight.dtype == torch.uint8 and q.bias.dtype == torch.float32
    x = torch.randn(2, 32)
    assert q(x).dtype == torch.float32
    q.bfloat16()
    assert q.scales.dtype == torch.bfloat16 and q(x.bfloat16()).dtype == torch.bfloat16


def test_format_1_quant_linear_state_loads_as_format_2():
    """A QuantLinear state saved by format 1 (row-major codes, integer zero points) loads into a
    format-2 layer: same codes, offsets -z*s, the forward close to (q - z) * s."""
    import numpy as np

    from tilus.nn import QuantLinear

    k, n, g = 64, 24, 32
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 16, size=(k, n)).astype(np.uint8)
    full = np.zeros((k, 128), np.uint8)
    full[:, :n] = codes
    bits = (full[..., None].astype(np.uint16) >> np.arange(4)) & 1
    v1 = np.packbits(bits.reshape(k, 128 * 4).astype(np.uint8), axis=1, bitorder="little")
    scales = (torch.rand(k // g, n) * 0.05 + 0.01).half()
    zeros = torch.randint(0, 16, (k // g, n)).half()
    sd = {"qweight": torch.from_numpy(v1), "scales": scales, "zeros": zeros,
          "_extra_state": {"format_version": 1, "layout": "kn-rowmajor-pad128", "dtype": "uint4",
                           "group_size": g, "symmetric": False, "zero_point": 0.0}}
    layer = QuantLinear(k, n, bias=False, dtype="uint4", group_size=g)
    layer.load_state_dict(sd)
    w = (torch.from_numpy(codes).float() - zeros.float().repeat_interleave(g, 0)) \
        * scales.float().repeat_interleave(g, 0)
    torch.testing.assert_close(layer.dequantize(torch.float32).t(), w, rtol=0, atol=2e-3)


def test_activation_gradient_equals_the_dequantized_weights():
    """quant_matmul / dequant_linear backward: x.grad = grad_y @ dequant(W); W gets none."""
    lin = nn.Linear(64, 48)
    q = QuantLinear.from_linear(lin, dtype="int4", group_size=32)
    w = q.dequantize(torch.float32)                       # [N, K] as nn.Linear stores it
    for dt in (torch.float16, torch.float32):
        x = torch.randn(5, 64).to(dt).requires_grad_()
        g = torch.randn(5, 48).to(dt)
        q.to(dt)(x).backward(g)
        ref = (g.float() @ w.float()).to(dt)
        torch.testing.assert_close(x.grad, ref, rtol=2e-3, atol=2e-3)
    assert not any(b.requires_grad for b in q.buffers())


class _LoRA(nn.Module):
    """A frozen quantized layer plus a trainable low-rank adapter (QLoRA-style)."""

    def __init__(self, base: QuantLinear, rank: int = 4):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compile-fullgraph"])
def test_lora_adapter_trains_on_a_quantized_model(compiled):
    torch.manual_seed(0)
    first = QuantLinear.from_linear(nn.Linear(64, 64), dtype="uint4", group_size=32)
    model = nn.Sequential(_LoRA(first), nn.ReLU(),
                          _LoRA(QuantLinear.from_linear(nn.Linear(64, 16), dtype="uint4",
                                                        group_size=32)))
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(not b.requires_grad for b in model.buffers())
    step = torch.compile(model, fullgraph=True, backend="aot_eager") if compiled else model
    x, target = torch.randn(32, 64), torch.randn(32, 16)
    opt = torch.optim.Adam(params, lr=1e-2)
    frozen = first.qweight.clone()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.mse_loss(step(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert torch.equal(first.qweight, frozen)             # the quantized weight never changes


def test_state_dict_is_tensors_only_and_round_trips_through_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    m = quantize_model(_model(), dtype="uint3", group_size=32)
    sd = m.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    fresh = quantize_model(_model(), dtype="uint3", group_size=32)
    fresh.load_state_dict(safetensors_torch.load_file(str(path)))
    x = torch.randn(4, 64)
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    # an earlier state dict with a dict _extra_state still loads
    legacy = dict(sd)
    for key in [k for k in sd if k.endswith("_extra_state")]:
        legacy[key] = json.loads(bytes(sd[key].tolist()).decode())
    fresh.load_state_dict(legacy)
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)


def test_integer_zero_point_layers():
    """QuantLinear(zero_mode="int"): uint8 zero points survive .half()/.float() and the state
    dict; a float-offset layer refuses that state; forward computes with (q - z) * s."""
    torch.manual_seed(2)
    lin = torch.nn.Linear(64, 24)
    layer = QuantLinear.from_linear(lin, "uint4", group_size=32, zero_mode="int")
    assert layer.zero_mode == "int" and "zero_mode=int" in repr(layer)
    layer.half().float()
    assert layer.offsets.dtype == torch.uint8 and layer.scales.dtype == torch.float16
    fresh = QuantLinear(64, 24, True, "uint4", group_size=32, zero_mode="int")
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh.dequantize(), layer.dequantize())
    with pytest.raises((QuantizationError, RuntimeError)):
        QuantLinear(64, 24, True, "uint4", group_size=32).load_state_dict(layer.state_dict())
    with pytest.raises(QuantizationError, match="zero_mode"):
        QuantLinear(64, 24, True, "int4", group_size=32, zero_mode="int")
    x = torch.randn(3, 64).half()
    ref = x.float() @ layer.dequantize(torch.float16).float().t() + layer.bias.float()
    torch.testing.assert_close(layer(x).float(), ref, rtol=2e-3, atol=2e-3)


def test_quantize_model_integer_zero_points_apply_to_asymmetric_uint_layers():
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 64))
    quantize_model(m, "uint4", group_size=32, bit_map={"1": "int4"}, zero_mode="int")
    assert (m[0].zero_mode, m[1].zero_mode) == ("int", "float")
    assert m[0].offsets.dtype == torch.uint8 and m[1].offsets is None
