"""Ready ops: group-wise quantization of weights to every 1-8-bit type, and the quantized matmul.

    qw = tilus.ops.quantize(linear.weight, dtype="uint4", group_size=128)   # [N, K] as nn.Linear
    y = tilus.ops.matmul(x, qw, bias)                                     # x [..., K] fp16/bf16

``quantize`` and the packed format: ``tilus.ops.quantize``; the kernel (Tilus DSL):
``tilus.ops.kernels``; dispatch, schedules and the ``tilus::quant_matmul`` custom op:
``tilus.ops.matmul``; decode attention over a quantized KV cache: ``tilus.ops.attention``
(kernels ``tilus.ops.attention_kernels``, cache format and ``quantize_kv`` ``tilus.ops.kv_cache``);
flash attention over a prompt (prefill): ``tilus.ops.prefill`` (kernels ``tilus.ops.prefill_kernels``);
block-scaled formats (``quantize(..., scheme="mx"|"nvfp4")``): ``tilus.ops.blockscale``; int8
activations and weights: ``tilus.ops.w8a8``; int4: ``tilus.ops.w4a4``; e4m3: ``tilus.ops.fp8``
(per-row activation quantization for all three: ``tilus.ops.rowquant``); bit-sliced 8-bit
weights served at 8/4/2 bits (``quantize_sliced``, ``matmul_sliced``): ``tilus.ops.sliced``; LUT
GEMM for uint1/uint2 at decode (``matmul(..., schedule="lut")``): ``tilus.ops.lut``; the
mixed-bit MoE grouped GEMM (``moe_matmul``): ``tilus.ops.moe`` (kernel ``tilus.ops.moe_kernels``);
mixed-width output features (``quantize(w, dtype={"uint8": cols, "uint4": "rest"})``,
``select_salient_columns``): ``tilus.ops.mixed`` (kernel ``tilus.ops.mixed_kernels``, dispatch
``tilus.ops.mixed_matmul``);
autotuning: ``tilus.ops.tuning``. The user guide: docs/ops.md.
"""
from tilus.ops.quantize import (  # noqa: F401
    FORMAT_VERSION, LAYOUT, QuantizedWeight, quantize, supported_weight_types, value_exponent,
)
from tilus.ops.mixed import MixedQuantizedWeight, select_salient_columns  # noqa: F401
from tilus.ops.matmul import default_schedule, matmul  # noqa: F401
from tilus.ops.compiled import MatmulBuild, compile_matmul  # noqa: F401
from tilus.ops.kv_cache import PagedQuantKVCache, QuantKVCache, quantize_kv  # noqa: F401
from tilus.ops.attention import (  # noqa: F401
    attention_decode, attention_decode_cache, attention_decode_paged,
)
from tilus.ops.moe import MoEExperts, moe_matmul  # noqa: F401
from tilus.ops.prefill import attention_prefill  # noqa: F401
from tilus.ops import fp8, rowquant, w4a4, w8a8  # noqa: F401
from tilus.ops.sliced import SlicedWeight, matmul_sliced, quantize_sliced  # noqa: F401
from tilus.ops import lut  # noqa: F401

__all__ = ["quantize", "QuantizedWeight", "matmul", "supported_weight_types", "default_schedule",
           "compile_matmul", "MatmulBuild", "MixedQuantizedWeight", "select_salient_columns",
           "FORMAT_VERSION", "LAYOUT",
           "QuantKVCache", "PagedQuantKVCache", "quantize_kv", "attention_decode",
           "attention_decode_cache", "attention_decode_paged", "attention_prefill", "w8a8",
           "w4a4", "fp8", "rowquant",
           "SlicedWeight", "quantize_sliced", "matmul_sliced", "lut", "moe_matmul", "MoEExperts"]
