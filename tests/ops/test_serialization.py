"""tilus.nn.save_quantized / load_quantized: a quantized model (several weight types, a bf16
layer, a GPTQ act-order layer) goes through one safetensors file with the format in its header
and comes back with the same state and the same outputs; bad files name the problem."""
import json

import pytest
import torch
from torch import nn

from tilus.errors import QuantizationError
from tilus.nn import QuantLinear, from_gptq, load_quantized, quantize_model, save_quantized
from tests.ops.test_importers import _layer as gptq_layer

safetensors = pytest.importorskip("safetensors")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 64)
        self.up = nn.Linear(64, 128)
        self.gate = nn.Linear(64, 128, bias=False)
        self.down = nn.Linear(128, 64)
        self.act_order = nn.Linear(128, 64)
        self.head = nn.Linear(64, 16, bias=False)
        self.head.weight = self.embed.weight                     # tied, stored once

    def forward(self, x):
        h = self.down(nn.functional.silu(self.gate(x)) * self.up(x))
        return self.head(h + self.act_order(torch.cat([h, h], -1)))


def _quantized(seed=0):
    torch.manual_seed(seed)
    m = Net().eval()
    quantize_model(m, "uint4", group_size=32, skip=["head", "act_order"],
                   bit_map={"gate": "float4_e2m1", "down": "int3"})
    qweight, qzeros, s, g_idx, _ = gptq_layer(k=128, n=64, act_order=True, sym=False, seed=seed)
    m.act_order = from_gptq(qweight, qzeros, s, g_idx, torch.randn(64).half())
    assert m.act_order.zero_mode == "int"                     # integer zero points round-trip
    return m


def test_round_trip_is_exact_and_the_header_describes_the_layers(tmp_path):
    m = _quantized()
    assert m.gate.dtype_name == "float4_e2m1" and m.down.dtype_name == "int3"
    path = save_quantized(m, tmp_path)
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert "head.weight" not in f.keys() or "embed.weight" not in f.keys()
    assert all(isinstance(v, str) for v in meta.values())
    assert (meta["tilus.format"], meta["tilus.format_version"]) == ("quantized-model", "3")
    layers = json.loads(meta["tilus.layers"])
    assert sorted(layers) == ["act_order", "down", "gate", "up"]
    assert layers["act_order"]["act_order"] and layers["gate"]["dtype"] == "float4_e2m1"
    assert layers["gate"]["bias"] is False and layers["up"]["scale_dtype"] == "float16"

    torch.manual_seed(1)
    fresh = load_quantized(Net().eval(), tmp_path)             # a float model with other weights
    assert isinstance(fresh.gate, QuantLinear) and fresh.act_order.input_perm is not None
    want, got = m.state_dict(), fresh.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert fresh.head.weight is fresh.embed.weight
    x = torch.randn(3, 64)
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    h = torch.randn(3, 128).half()                                # the fp16 path of each layer
    for name in ("up", "gate", "act_order", "down"):
        a = h[:, :getattr(m, name).in_features]
        torch.testing.assert_close(getattr(fresh, name)(a), getattr(m, name)(a), rtol=0, atol=0)


def test_bf16_scales_and_an_already_quantized_target(tmp_path):
    m = _quantized()
    m.up = QuantLinear.from_linear(nn.Linear(64, 128).bfloat16(), "uint8", group_size=64)
    save_quantized(m, tmp_path)
    target = quantize_model(Net(), "uint2", group_size=32, skip=["head"])   # rebuilt as saved
    load_quantized(target, tmp_path)
    assert target.up.scales.dtype == torch.bfloat16 and target.up.dtype_name == "uint8"
    x = torch.randn(2, 64)
    torch.testing.assert_close(target(x), m(x), rtol=0, atol=0)


def test_bad_files_and_models_name_the_problem(tmp_path):
    from safetensors.torch import load_file, save_file
    with pytest.raises(QuantizationError, match="no QuantLinear"):
        save_quantized(Net(), tmp_path)
    path = save_quantized(_quantized(), tmp_path)
    with pytest.raises(QuantizationError, match="missing \\['head.qweight'"):
        load_quantized(quantize_model(Net(), "uint4", group_size=32), tmp_path)
    with pytest.raises(QuantizationError, match="no module 'act_order'"):
        load_quantized(nn.Sequential(), tmp_path)

    class Small(Net):
        def __init__(self):
            super().__init__()
            self.down = nn.Linear(128, 32)
    with pytest.raises(QuantizationError, match="down: saved as a \\[64, 128\\]"):
        load_quantized(Small(), tmp_path)
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    save_file(tensors, str(path), {**meta, "tilus.format_version": "4"})
    with pytest.raises(QuantizationError, match="version '4'"):
        load_quantized(Net(), tmp_path)
    layers = json.loads(meta["tilus.layers"])
    layers["up"]["dtype"] = "uint3"
    save_file(tensors, str(path), {**meta, "tilus.layers": json.dumps(layers)})
    with pytest.raises(QuantizationError, match="header's tilus.layers does not match"):
        load_quantized(Net(), tmp_path)
    del tensors["up.scales"]
    save_file(tensors, str(path))
    with pytest.raises(QuantizationError, match="up: a quantized layer without its scales"):
        load_quantized(Net(), tmp_path)
    with pytest.raises(QuantizationError, match="no .safetensors file"):
        load_quantized(Net(), tmp_path / "empty")


def test_format_2_files_still_load(tmp_path):
    """A file written before integer zero points (format 2: header "2", schemes without
    zero_mode) loads into a float-offset model and computes the same."""
    from safetensors.torch import load_file, save_file

    from tilus.ops.quantize import meta_dict, meta_tensor

    torch.manual_seed(1)
    m = quantize_model(Net().eval(), "uint4", group_size=32, skip=["head"])
    path = save_quantized(m, tmp_path)
    state = load_file(str(path))
    for key in [k for k in state if k.endswith("_extra_state")]:
        scheme = meta_dict(state[key], key)
        assert scheme.pop("zero_mode") == "float"
        state[key] = meta_tensor(dict(scheme, format_version=2))
    with safetensors.safe_open(str(path), "pt") as f:
        header = dict(f.metadata(), **{"tilus.format_version": "2"})
    save_file(state, str(path), metadata=header)
    back = load_quantized(quantize_model(Net(), "uint2", group_size=32, skip=["head"]), tmp_path)
    x = torch.randn(2, 64)
    torch.testing.assert_close(back(x), m(x), rtol=0, atol=0)
