"""Hugging Face round trips on a tiny random-weight Llama built from a LlamaConfig (no downloads):
save_pretrained / from_pretrained through the "tilus" quantizer (TilusConfig), quantize-on-load,
and tilus.nn.load_quantized of save_pretrained and save_quantized directories. Greedy generation
gives the same tokens before and after each round trip."""
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from tilus.errors import QuantizationError  # noqa: E402
from tilus.nn import QuantLinear, from_gptq, load_quantized, quantize_model, save_quantized  # noqa
from tilus.nn.hf import TilusConfig, mark_quantized, quantize  # noqa: E402
from tests.ops.test_importers import _layer as gptq_layer  # noqa: E402

PROMPT = torch.tensor([[5, 17, 42, 9]])
NEW = 6


def _config():
    return LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def _llama(seed=0):
    torch.manual_seed(seed)
    m = LlamaForCausalLM(_config()).eval()
    with torch.no_grad():                    # tiny weights: float4 scales need the exponent E
        m.model.layers[1].mlp.down_proj.weight.mul_(1e-3)
    return m


def _generate(m):
    out = m.generate(PROMPT, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    assert out.shape == (1, PROMPT.shape[1] + NEW)
    return out


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def _mixed(m):
    """quantize_model with a bit_map, and one layer imported from a GPTQ act-order checkpoint."""
    quantize_model(m, "uint4", group_size=32, skip=["lm_head"],
                   bit_map={"*.mlp.*": "float4_e2m1", "*.v_proj": "int8"})
    qweight, qzeros, s, g_idx, _ = gptq_layer(k=64, n=64, act_order=True)
    m.model.layers[0].self_attn.o_proj = from_gptq(qweight, qzeros, s, g_idx)
    return m


def test_save_pretrained_from_pretrained_round_trip(tmp_path):
    m = _mixed(_llama())
    assert m.model.layers[1].mlp.down_proj.exponent == 2
    tokens = _generate(m)
    logits = m(PROMPT).logits
    mark_quantized(m)
    m.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(back.model.layers[0].self_attn.o_proj, QuantLinear)
    assert back.model.layers[0].self_attn.o_proj.input_perm is not None
    assert back.config.quantization_config.modules["model.layers.0.self_attn.v_proj"]["dtype"] \
        == "int8"
    assert type(back.lm_head) is torch.nn.Linear
    _same_state(m, back)
    assert back.model.layers[1].mlp.down_proj.exponent == 2
    torch.testing.assert_close(back(PROMPT).logits, logits, rtol=0, atol=0)
    assert torch.equal(_generate(back), tokens)
    # and once more: a reloaded model saves and reloads the same
    back.save_pretrained(tmp_path / "again")
    _same_state(m, AutoModelForCausalLM.from_pretrained(tmp_path / "again"))


def test_load_quantized_reads_save_pretrained_and_save_quantized(tmp_path):
    m = _mixed(_llama())                       # tilus.nn only: no quantization_config
    tokens = _generate(m)
    m.save_pretrained(tmp_path / "hf")
    save_quantized(m, tmp_path / "tilus")
    for d in ("hf", "tilus"):
        back = load_quantized(_config(), tmp_path / d)
        _same_state(m, back)
        assert torch.equal(_generate(back), tokens), d


def test_quantize_on_load_with_tilus_config(tmp_path):
    _llama().save_pretrained(tmp_path / "float")
    cfg = dict(dtype="uint4", group_size=32, bit_map={"*.mlp.*": "uint3"})
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "float",
                                             quantization_config=TilusConfig(**cfg))
    ref = quantize(_llama(), TilusConfig(**cfg))
    assert type(m.lm_head) is torch.nn.Linear            # transformers' default skip
    assert m.model.layers[0].mlp.up_proj.dtype_name == "uint3"
    assert m.model.layers[0].self_attn.q_proj.dtype_name == "uint4"
    _same_state(ref, m)
    float_logits = _llama()(PROMPT).logits                 # close to the float model
    assert (m(PROMPT).logits - float_logits).norm() < 0.25 * float_logits.norm()
    tokens = _generate(m)
    m.save_pretrained(tmp_path / "q")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    _same_state(m, back)
    assert torch.equal(_generate(back), tokens)


def test_config_checks_its_arguments():
    with pytest.raises(QuantizationError, match="unsupported weight type"):
        TilusConfig(dtype="uint9")
    with pytest.raises(QuantizationError, match="group_size must be a positive multiple of 32"):
        TilusConfig(group_size=48)
    with pytest.raises(QuantizationError, match="unsupported weight type"):
        TilusConfig(bit_map={"*.mlp.*": "int12"})
    assert TilusConfig.from_dict(TilusConfig(group_size=-1, skip=["lm_head"]).to_dict()).skip \
        == ["lm_head"]
    with pytest.raises(QuantizationError, match="no QuantLinear"):
        mark_quantized(_llama())
