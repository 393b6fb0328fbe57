"""Hugging Face round trips on a tiny random-weight Llama built from a LlamaConfig (no downloads):
tilus.nn.load_quantized of save_pretrained and save_quantized directories. Greedy generation
gives the same tokens before and after each round trip."""
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from tilus.nn import from_gptq, load_quantized, quantize_model, save_quantized  # noqa: E402
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


def test_load_quantized_reads_save_pretrained_and_save_quantized(tmp_path):
    m = _mixed(_llama())                       # tilus.nn only: no quantization_config
    tokens = _generate(m)
    m.save_pretrained(tmp_path / "hf")
    save_quantized(m, tmp_path / "tilus")
    for d in ("hf", "tilus"):
        back = load_quantized(_config(), tmp_path / d)
        _same_state(m, back)
        assert torch.equal(_generate(back), tokens), d
