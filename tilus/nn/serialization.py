"""Save and load quantized models as safetensors: ``save_quantized`` / ``load_quantized``.

    tilus.nn.save_quantized(model, "out/")          # out/model.safetensors
    model = tilus.nn.load_quantized(MyModel(), "out/")   # or a transformers config

The file holds the model's state dict (tensors only: every ``QuantLinear``'s ``qweight``,
``scales``, ``offsets``, ``bias``, ``input_perm``, a W8A8 layer's ``smooth``, and its
``_extra_state``, the uint8 JSON of its scheme) and, in the safetensors header (strings only):
``tilus.format`` (``"quantized-model"``), ``tilus.format_version`` (the packed-weight format,
``"3"``; files of format 2 still load), ``tilus.layout``, ``tilus.version`` and
``tilus.layers``, the JSON of ``{layer name: layer_spec}``. Loading rebuilds every quantized
layer from the tensors' ``_extra_state`` (so a Hugging Face ``save_pretrained`` directory of a
quantized model loads too), checks it against the header when the header has one, and loads the
state: every key of the model is loaded or tied to one that is, and no key is left over.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

import tilus
from tilus.errors import QuantizationError
from tilus.nn.linear import QuantLinear
from tilus.nn.mixed_linear import MixedQuantLinear
from tilus.ops.quantize import FORMAT_VERSION, LAYOUT, READ_VERSIONS, meta_dict

FILENAME = "model.safetensors"
FORMAT = "quantized-model"
EXTRA = "._extra_state"
SCALE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def layer_spec(layer: QuantLinear) -> dict:
    """What building an empty ``QuantLinear`` like ``layer`` takes (JSON-able)."""
    return {"in_features": layer.in_features, "out_features": layer.out_features,
            "bias": layer.bias is not None, "dtype": layer.dtype_name,
            "group_size": layer.group_size, "symmetric": layer.symmetric,
            "scale_dtype": str(layer.scales.dtype).removeprefix("torch."),
            "act_order": layer.input_perm is not None, **_zero_mode_spec(layer.zero_mode),
            **_act_spec(layer.act_dtype, layer.smooth is not None)}


def _act_spec(act_dtype: Any, smooth: bool) -> dict:
    """The spec's ``act_dtype``/``smooth`` entries: present only for W8A8 layers."""
    return {"act_dtype": act_dtype, "smooth": smooth} if act_dtype is not None else {}


def _zero_mode_spec(zero_mode: str) -> dict:
    """The spec's ``zero_mode`` entry: present only for integer zero points (so that the specs
    of format-2 files, which have none, stay as they were)."""
    return {"zero_mode": zero_mode} if zero_mode == "int" else {}


def quantized_layers(model: nn.Module) -> dict[str, dict]:
    """``{qualified name: layer_spec}`` of every ``QuantLinear`` in ``model``."""
    return {name: layer_spec(m) for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def install_layers(model: nn.Module, specs: dict[str, dict]) -> nn.Module:
    """Replaces each named module (an ``nn.Linear`` or ``QuantLinear`` of the spec's shape) by an
    empty ``QuantLinear`` built from its spec, on that module's device, ready for
    ``load_state_dict``. Returns the model."""
    for name, spec in specs.items():
        parent_name, _, child = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name)
            old = parent.get_submodule(child)
        except AttributeError:
            raise QuantizationError(f"the model has no module {name!r} for a saved quantized "
                                    f"layer") from None
        if not isinstance(old, (nn.Linear, QuantLinear)) or \
                (old.in_features, old.out_features) != (spec["in_features"], spec["out_features"]):
            raise QuantizationError(f"{name}: saved as a [{spec['out_features']}, "
                                    f"{spec['in_features']}] quantized linear layer, but the "
                                    f"model has {old!r}")
        device = next(iter(old.buffers() if isinstance(old, QuantLinear) else old.parameters()),
                      torch.empty(0)).device
        act = spec.get("act_dtype")
        allowed = {"float32": torch.float32} if act is not None else SCALE_DTYPES
        if spec["scale_dtype"] not in allowed:
            raise QuantizationError(f"{name}: scale_dtype must be one of {list(allowed)}, "
                                    f"got {spec['scale_dtype']!r}")
        setattr(parent, child, QuantLinear(
            spec["in_features"], spec["out_features"], spec["bias"], spec["dtype"],
            spec["group_size"], spec["symmetric"], allowed[spec["scale_dtype"]],
            device=device, act_order=spec["act_order"],
            zero_mode=spec.get("zero_mode", "float"), act_dtype=act,
            smooth=bool(spec.get("smooth", False))))
    return model


def save_quantized(model: nn.Module, directory: Union[str, os.PathLike]) -> Path:
    """Writes ``model``'s state dict to ``directory/model.safetensors`` with the format metadata in
    the header (see the module doc); tied tensors are stored once. Returns the file's path."""
    from safetensors.torch import save_model
    mixed = [name for name, m in model.named_modules() if isinstance(m, MixedQuantLinear)]
    if mixed:
        raise QuantizationError(f"save_quantized: mixed-width layers ({mixed[0]}) are not in "
                                f"the file format yet; save their state dict with "
                                f"safetensors.torch.save_model")
    layers = quantized_layers(model)
    if not layers:
        raise QuantizationError("save_quantized: the model has no QuantLinear layer "
                                "(quantize it first, e.g. tilus.nn.quantize_model)")
    path = Path(directory) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path), metadata=header(layers))
    return path


def header(layers: dict[str, dict]) -> dict[str, str]:
    """The safetensors header metadata of a quantized model with these layers (strings only)."""
    return {"format": "pt", "tilus.format": FORMAT, "tilus.format_version": str(FORMAT_VERSION),
            "tilus.layout": LAYOUT, "tilus.version": tilus.__version__,
            "tilus.layers": json.dumps(layers, sort_keys=True)}


def load_quantized(model_or_config: Any, directory: Union[str, os.PathLike]) -> nn.Module:
    """The model of ``directory`` (written by ``save_quantized``, or a Hugging Face
    ``save_pretrained`` directory of a Tilus-quantized model): ``model_or_config`` is the float
    model to fill (its saved linear layers become ``QuantLinear``s, in place) or a transformers
    config (the model is built with ``AutoModelForCausalLM.from_config``). The state is copied
    into the model's tensors where they are (move the model with ``.to`` afterwards)."""
    from safetensors import safe_open
    files = _files(Path(directory))
    state, headers = {}, []
    for f in files:
        with safe_open(str(f), "pt") as sf:
            headers.append(sf.metadata() or {})
            state.update({k: sf.get_tensor(k) for k in sf.keys()})
    specs = specs_from_state(state)
    if not specs:
        raise QuantizationError(f"{directory}: no Tilus-quantized layer in {[f.name for f in files]}")
    for h in headers:
        _check_header(h, specs, directory)
    model = model_or_config if isinstance(model_or_config, nn.Module) else \
        _from_config(model_or_config)
    install_layers(model, specs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded = {t.data_ptr() for k, t in own.items() if k in state}
    missing = [k for k in missing if own[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise QuantizationError(f"{directory} does not match the model: missing {missing[:8]}, "
                                f"unexpected {unexpected[:8]}")
    return model


def specs_from_state(state: dict[str, torch.Tensor]) -> dict[str, dict]:
    """``{layer name: layer_spec}`` of the quantized layers of a state dict, read from their
    ``_extra_state`` (scheme), ``scales`` (shape, dtype) and ``bias`` (presence)."""
    specs = {}
    for key, value in state.items():
        if not key.endswith(EXTRA) or value.dtype != torch.uint8 or value.dim() != 1:
            continue
        name = key[:-len(EXTRA)]
        try:
            scheme = meta_dict(value, key)
        except QuantizationError:
            continue
        if scheme.get("layout") != LAYOUT or scheme.get("format_version") not in READ_VERSIONS:
            continue
        scales = state.get(name + ".scales")
        act = scheme.get("act_dtype")
        if scales is None or scales.dim() not in ((1, 2) if act is not None else (2,)):
            raise QuantizationError(f"{name}: a quantized layer without its scales "
                                    f"{'[N] or [G, N]' if act is not None else '[G, N]'}")
        groups, n = (1, scales.shape[0]) if scales.dim() == 1 else scales.shape
        specs[name] = {"in_features": int(groups) * scheme["group_size"], "out_features": int(n),
                       "bias": name + ".bias" in state,
                       "dtype": scheme["dtype"], "group_size": scheme["group_size"],
                       "symmetric": scheme["symmetric"],
                       "scale_dtype": str(scales.dtype).removeprefix("torch."),
                       "act_order": bool(scheme.get("act_order", False)),
                       **_zero_mode_spec(scheme.get("zero_mode", "float")),
                       **_act_spec(act, name + ".smooth" in state)}
    return specs


def _files(directory: Path) -> list[Path]:
    if directory.is_file():
        return [directory]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise QuantizationError(f"{directory}: no .safetensors file")
    return files


def _check_header(h: dict, specs: dict, where: Any) -> None:
    """A file written by save_quantized must agree with the tensors it holds."""
    if "tilus.format" not in h:
        return
    if (h.get("tilus.format"), h.get("tilus.layout")) != (FORMAT, LAYOUT) or \
            h.get("tilus.format_version") not in [str(v) for v in READ_VERSIONS]:
        raise QuantizationError(f"{where}: unsupported Tilus format {h.get('tilus.format')!r} "
                                f"version {h.get('tilus.format_version')!r} layout "
                                f"{h.get('tilus.layout')!r}; this Tilus reads {FORMAT} "
                                f"{'/'.join(map(str, READ_VERSIONS))} {LAYOUT}")
    if json.loads(h.get("tilus.layers", "{}")) != specs:
        raise QuantizationError(f"{where}: the header's tilus.layers does not match the "
                                f"layers stored in the file")


def _from_config(config: Any) -> nn.Module:
    """A transformers config's causal LM with random weights (they are all overwritten)."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise QuantizationError("load_quantized with a config needs transformers "
                                "(pip install 'tilus[hf]'); or pass the model") from None
    return AutoModelForCausalLM.from_config(config)
