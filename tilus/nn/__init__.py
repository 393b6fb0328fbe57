"""Modules over quantized weights: ``QuantLinear`` and ``quantize_model``.

    model = tilus.nn.quantize_model(model, dtype="uint4", group_size=128, skip=["lm_head"])
    layer = tilus.nn.QuantLinear.from_linear(linear, dtype="int4", group_size=64)
    layer = tilus.nn.from_gptq(qweight, qzeros, scales, g_idx, bias, bits=4)   # a GPTQ layer
    layer = tilus.nn.from_awq(qweight, qzeros, scales, bias)                   # an AWQ layer
    layer = tilus.nn.from_compressed_tensors(weight_packed, weight_scale, weight_shape)
    tilus.nn.save_quantized(model, "out/")                  # out/model.safetensors
    model = tilus.nn.load_quantized(float_model_or_config, "out/")
"""
from tilus.nn.importers import from_awq, from_compressed_tensors, from_gptq  # noqa: F401
from tilus.nn.linear import QuantLinear, quantize_model  # noqa: F401
from tilus.nn.serialization import load_quantized, save_quantized  # noqa: F401

__all__ = ["QuantLinear", "from_awq", "from_compressed_tensors", "from_gptq", "load_quantized",
           "quantize_model",
           "save_quantized"]
