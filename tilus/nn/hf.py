"""Tilus as a Hugging Face transformers quantizer: ``TilusConfig`` and ``TilusHfQuantizer``.

Importing this module registers the quantization method ``"tilus"`` with transformers' plugin API
(``register_quantization_config`` / ``register_quantizer``), so that::

    import tilus.nn.hf
    from tilus.nn.hf import TilusConfig
    cfg = TilusConfig(dtype="uint4", group_size=128, skip=["lm_head"], bit_map={"*.mlp.*": "uint3"})
    model = AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=cfg)  # quantized
    model.save_pretrained(out)                       # config.json holds the TilusConfig
    model = AutoModelForCausalLM.from_pretrained(out)  # QuantLinear layers, loaded as saved

A model already in memory: ``tilus.nn.hf.quantize(model, cfg)``; one quantized by other means
(``tilus.nn.quantize_model``, ``from_gptq``): ``tilus.nn.hf.mark_quantized(model)``. Both set
``model.config.quantization_config``, so ``save_pretrained`` writes a checkpoint that
``from_pretrained`` reloads. The saved config lists every quantized layer (``modules``: name ->
``tilus.nn.serialization.layer_spec``); loading builds those layers empty before the weights
are read. Needs transformers >= 5 (``pip install 'tilus[hf]'``).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn
from transformers.quantizers.auto import (AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING,
                                          register_quantization_config, register_quantizer)
from transformers.quantizers.base import HfQuantizer, get_keys_to_not_convert
from transformers.utils.quantization_config import QuantizationConfigMixin

from tilus.errors import QuantizationError
from tilus.nn.linear import quantize_model
from tilus.nn.serialization import install_layers, quantized_layers
from tilus.ops.quantize import weight_type

METHOD = "tilus"


class TilusConfig(QuantizationConfigMixin):
    """How ``from_pretrained`` quantizes a model with Tilus, and (``modules``) how a saved one was
    quantized.

    ``dtype``: the weight type of every linear layer (any 1-8-bit Tilus type); ``group_size``: a
    multiple of 32 or None for one group; ``skip``: names or fnmatch patterns of layers to keep
    in float (None: transformers' default, the output embedding and tied weights);
    ``bit_map``: ``{pattern: weight type}`` for some layers (the first match wins);
    ``symmetric``/``scale_dtype``: as ``tilus.ops.quantize``; ``modules``: filled when the model
    is quantized (do not set it by hand).
    """

    def __init__(self, dtype: str = "uint4", group_size: Optional[int] = 128,
                 skip: Optional[list] = None, bit_map: Optional[Mapping[str, str]] = None,
                 symmetric: Optional[bool] = None, scale_dtype: Optional[str] = None,
                 modules: Optional[dict] = None, **kwargs: Any):
        self.quant_method = METHOD
        self.dtype = weight_type(dtype).name
        self.group_size = None if group_size in (None, -1) else group_size
        self.skip = None if skip is None else list(skip)
        self.bit_map = {p: weight_type(t).name for p, t in (bit_map or {}).items()}
        self.symmetric = symmetric
        self.scale_dtype = None if scale_dtype is None else str(scale_dtype).removeprefix("torch.")
        self.modules = dict(modules or {})
        if self.group_size is not None and (not isinstance(self.group_size, int) or
                                            isinstance(self.group_size, bool) or
                                            self.group_size < 1 or self.group_size % 32):
            raise QuantizationError(f"TilusConfig: group_size must be a positive multiple of 32 "
                                    f"or None / -1 for one group, got {group_size!r}")


class TilusHfQuantizer(HfQuantizer):
    """transformers' hooks for ``TilusConfig``: a pre-quantized checkpoint gets empty
    ``QuantLinear`` layers before its weights load; a float one is quantized after they load."""

    requires_calibration = False

    def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        if self.pre_quantized:
            if not self.quantization_config.modules:
                raise QuantizationError("a pre-quantized Tilus checkpoint must list its layers "
                                        "(quantization_config.modules); save it with "
                                        "save_pretrained after tilus.nn.hf.quantize")
            install_layers(model, self.quantization_config.modules)
        return model

    def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        if not self.pre_quantized:
            quantize(model, self.quantization_config)
        return model

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        """Adapters on top of the quantized layers train (gradients reach the activations)."""
        return True

    @property
    def is_compileable(self) -> bool:
        return True


def quantize(model: nn.Module, config: TilusConfig) -> nn.Module:
    """``tilus.nn.quantize_model`` with ``config``'s options on a transformers model (in place),
    then ``mark_quantized``. ``skip=None`` keeps transformers' default float layers."""
    skip = config.skip if config.skip is not None else get_keys_to_not_convert(model)
    scale_dtype = None if config.scale_dtype is None else getattr(torch, config.scale_dtype)
    quantize_model(model, config.dtype, config.group_size, skip, config.symmetric, scale_dtype,
                   config.bit_map)
    return mark_quantized(model, config)


def mark_quantized(model: nn.Module, config: Optional[TilusConfig] = None) -> nn.Module:
    """Records the model's ``QuantLinear`` layers in ``config.modules`` (a new ``TilusConfig`` when
    None) and sets it as ``model.config.quantization_config``, so ``save_pretrained`` writes a
    checkpoint ``from_pretrained`` reloads."""
    config = config or TilusConfig()
    config.modules = quantized_layers(model)
    if not config.modules:
        raise QuantizationError("mark_quantized: the model has no QuantLinear layer")
    model.config.quantization_config = config
    model.hf_quantizer = TilusHfQuantizer(config, pre_quantized=True)
    model.is_quantized = True
    model.quantization_method = METHOD
    return model


def register() -> None:
    """Registers ``"tilus"`` with transformers (done on import; idempotent)."""
    if METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(METHOD)(TilusConfig)
    if METHOD not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(METHOD)(TilusHfQuantizer)


register()
