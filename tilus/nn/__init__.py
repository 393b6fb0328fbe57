"""Modules over quantized weights: ``QuantLinear`` and ``quantize_model``.

    model = tilus.nn.quantize_model(model, dtype="uint4", group_size=128, skip=["lm_head"])
    model = tilus.nn.quantize_model(model, dtype={"*.mlp.*": "uint3", "*.attn.*": "int4"})
    print(tilus.nn.bits_per_weight(model).table())          # stored bits per weight, per layer
    layer = tilus.nn.QuantLinear.from_linear(linear, dtype="int4", group_size=64)
    layer = tilus.nn.QuantLinear.from_linear(linear, "int8", None, act_dtype="int8")  # W8A8
    moe = tilus.nn.QuantMoE.from_linears(experts, dtypes={0: "uint4"}, default="uint2")
    layer = tilus.nn.from_gptq(qweight, qzeros, scales, g_idx, bias, bits=4)   # a GPTQ layer
    layer = tilus.nn.from_awq(qweight, qzeros, scales, bias)                   # an AWQ layer
    layer = tilus.nn.from_compressed_tensors(weight_packed, weight_scale, weight_shape)
    tilus.nn.save_quantized(model, "out/")                  # out/model.safetensors
    model = tilus.nn.load_quantized(float_model_or_config, "out/")
"""
from tilus.nn.importers import from_awq, from_compressed_tensors, from_gptq  # noqa: F401
from tilus.nn.linear import QuantLinear, quantize_model  # noqa: F401
from tilus.nn.moe import QuantMoE  # noqa: F401
from tilus.nn.report import BitsReport, LayerBits, bits_per_weight  # noqa: F401
from tilus.nn.serialization import load_quantized, save_quantized  # noqa: F401

__all__ = ["BitsReport", "LayerBits", "QuantLinear", "QuantMoE", "bits_per_weight", "from_awq",
           "from_compressed_tensors", "from_gptq", "load_quantized", "quantize_model",
           "save_quantized"]
