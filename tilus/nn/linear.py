"""``QuantLinear``: an ``nn.Linear`` whose weight is quantized by ``tilus.ops.quantize``.

Its state is registered buffers, so ``state_dict()``/``load_state_dict()`` and ``.to(device)``
work as for any module: ``qweight`` (uint8, the packed format of ``tilus.ops.quantize``),
``scales``, ``offsets`` (only for schemes with per-group offsets: in the scale dtype, or uint8
integer zero points with ``zero_mode="int"``) and ``bias`` (optional), plus
a small ``_extra_state`` (weight type, group size, format version, the scales' power of two)
checked on load. A fresh
``QuantLinear(in_features, out_features, bias, dtype=..., group_size=..., symmetric=...)`` has
buffers of the right shapes, ready for ``load_state_dict``.

``forward(x)``: ``x [..., in_features]`` -> ``[..., out_features]`` in x's dtype, through one
custom op (so ``torch.compile(fullgraph=True)`` sees one node). float16/bfloat16 inputs:
``tilus::quant_matmul``, the Tilus kernel on CUDA, dequantize + matmul on the CPU. float32/float64
inputs: ``tilus::dequant_linear``, computed as ``nn.Linear`` would, in their own dtype (no float16
overflow): the weight dequantized to x's dtype and multiplied on x's device. Other dtypes
(integers, bool, float8, complex) raise ArgumentError, a wrong last dimension ArgumentError,
another device DeviceMismatchError.

``act_dtype="int8"`` (``dtype="int8"``, ``group_size=None``): a W8A8 layer, int8 weights per
output channel and activations quantized per token at run time, with an optional SmoothQuant
divisor ``smooth`` (``tilus.nn.w8a8_linear``; buffers ``qweight`` int8 [K, N], float32 ``scales``
[N], ``bias`` and ``smooth`` [K]). ``act_dtype="int4"`` (W4A4) and ``"float8_e4m3"`` (FP8) are
the same with weights and activations of that type (``qweight`` uint8 [N, K/2] packed int4, or
uint8 [N, K] e4m3 codes); W4A4 may also take a ``group_size`` (a multiple of 64: ``scales``
[K/group_size, N]).
"""
from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, overload

import torch
from torch import nn

from tilus.errors import QuantizationError
from tilus.nn import w8a8_linear
from tilus.ops import packing
from tilus.ops.matmul import register_activation_grad
from tilus.ops.quantize import (FORMAT_VERSION, LAYOUT, READ_VERSIONS, ZERO_MODES,
                                QuantizedWeight, _scale_dtype, check_exponent, dequantize_packed,
                                meta_dict, meta_tensor, quantize, weight_type)
from tilus.ops.validation import (check_activations, check_group_size, check_int,
                                  check_optional_bool)

if TYPE_CHECKING:
    from tilus.nn.mixed_linear import MixedQuantLinear

#: Input dtypes that go through the quantized-matmul kernel as they are.
KERNEL_DTYPES = (torch.float16, torch.bfloat16)
#: Input dtypes computed in their own precision from the dequantized weight.
WIDE_DTYPES = (torch.float32, torch.float64)


@torch.library.custom_op("tilus::dequant_linear", mutates_args=())
def dequant_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                   offsets: Optional[torch.Tensor], bias: Optional[torch.Tensor], dtype: str,
                   n: int, k: int, group_size: int, zero_point: float,
                   exponent: int = 0) -> torch.Tensor:
    """``x [M, K] @ dequant(qweight).T + bias`` -> [M, N], computed in x's dtype on x's device."""
    w = dequantize_packed(qweight, scales, offsets, dtype, n, k, group_size, zero_point, x.dtype,
                          exponent)
    return nn.functional.linear(x, w.t(), None if bias is None else bias.to(x.dtype))


@dequant_linear.register_fake
def _dequant_linear_fake(x, qweight, scales, offsets, bias, dtype, n, k, group_size, zero_point,
                         exponent=0):
    return x.new_empty((x.shape[0], n))


register_activation_grad(dequant_linear)


def _scheme(dtype: str, symmetric: Optional[bool]) -> tuple[bool, bool, float]:
    """(symmetric, has_offsets, zero_point) of quantize's scheme for ``dtype``/``symmetric``."""
    t = weight_type(dtype)
    if t.is_float:
        return True, False, 0.0
    sym = (t.is_signed and t.nbits > 1) if symmetric is None else bool(symmetric)
    if not sym:
        return False, True, 0.0
    return True, False, 0.0 if t.is_signed else float(2 ** (t.nbits - 1))


class QuantLinear(nn.Module):
    """A linear layer ``y = x @ W.T + b`` with W quantized group-wise along in_features."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype="uint4", group_size: Optional[int] = 128, symmetric: Optional[bool] = None,
                 scale_dtype=torch.float16, device=None, act_order: bool = False,
                 zero_mode: str = "float", act_dtype: Optional[str] = None,
                 smooth: bool = False):
        super().__init__()
        in_features = check_int(in_features, "in_features", "QuantLinear")
        out_features = check_int(out_features, "out_features", "QuantLinear")
        t = weight_type(dtype)
        group_size = check_group_size(group_size, in_features, "QuantLinear")
        symmetric = check_optional_bool(symmetric, "symmetric", "QuantLinear", QuantizationError)
        self.in_features, self.out_features = in_features, out_features
        self.dtype_name = t.name
        self.group_size = group_size
        self.symmetric, has_offsets, self.zero_point = _scheme(t.name, symmetric)
        if zero_mode not in ZERO_MODES or (zero_mode == "int" and (
                not has_offsets or t.is_signed)):
            raise QuantizationError(f"QuantLinear: zero_mode must be 'float', or 'int' for an "
                                    f"asymmetric uint type, got {zero_mode!r} for {t.name} "
                                    f"symmetric={self.symmetric}")
        self.zero_mode = zero_mode
        self.exponent = 0
        self.act_dtype = None if act_dtype is None else w8a8_linear.check_scheme(
            act_dtype, t.name, group_size, in_features, symmetric, zero_mode, act_order)
        if smooth and self.act_dtype is None:
            raise QuantizationError(f"QuantLinear: smooth (SmoothQuant folding) needs quantized "
                                    f"activations, act_dtype one of {w8a8_linear.ACT_DTYPES}")
        if self.act_dtype is not None:
            self._w8a8_buffers(bias, smooth, device)
            return
        sdt = _scale_dtype(scale_dtype, torch.empty(0))
        g = in_features // self.group_size
        self.register_buffer("qweight", torch.zeros(
            packing.data_shape(in_features, out_features, t.nbits), dtype=torch.uint8,
            device=device))
        self.register_buffer("scales", torch.ones(g, out_features, dtype=sdt, device=device))
        odt = torch.uint8 if zero_mode == "int" else sdt
        self.register_buffer("offsets", torch.zeros(g, out_features, dtype=odt, device=device)
                             if has_offsets else None)
        self.register_buffer("bias", torch.zeros(out_features, dtype=sdt, device=device)
                             if bias else None)
        # act_order: the stored weight's K runs in the order input_perm gives (a GPTQ act-order
        # checkpoint, tilus.nn.importers): forward reads x[..., input_perm].
        self.register_buffer("input_perm", torch.arange(in_features, device=device)
                             if act_order else None)
        self.register_buffer("smooth", None)                  # W8A8 only

    def _w8a8_buffers(self, bias: bool, smooth: bool, device) -> None:
        """The activation-quantized state: ``qweight`` (per ``act_dtype``, see
        ``tilus.nn.w8a8_linear``), ``scales`` float32 [N], ``bias`` float32 [N], ``smooth``
        float32 [K] (the per-input-channel divisor)."""
        k, n = self.in_features, self.out_features
        self.register_buffer("qweight", w8a8_linear.qweight_buffer(self.act_dtype, k, n, device))
        self.register_buffer("scales", w8a8_linear.scales_buffer(k, n, self.group_size, device))
        self.register_buffer("offsets", None)
        self.register_buffer("bias", torch.zeros(n, dtype=torch.float32, device=device)
                             if bias else None)
        self.register_buffer("input_perm", None)
        self.register_buffer("smooth", torch.ones(k, dtype=torch.float32, device=device)
                             if smooth else None)

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_quantized(cls, qw: QuantizedWeight, bias: Optional[torch.Tensor] = None):
        """A layer holding ``qw`` (group-scaled: block-scaled mx/nvfp4 weights run through
        ``tilus.ops.matmul``, not a QuantLinear)."""
        if qw.block_scaled:
            raise QuantizationError(f"QuantLinear holds group-scaled weights; a {qw.scheme} "
                                    f"weight runs through tilus.ops.matmul(x, qw)")
        n, k = qw.shape
        layer = cls(k, n, bias is not None, qw.dtype, qw.group_size, qw.symmetric,
                    qw.scales.dtype, device=qw.device, zero_mode=qw.zero_mode or "float")
        if (qw.offsets is None) != (layer.offsets is None) or qw.zero_point != layer.zero_point:
            raise QuantizationError("the quantized weight's offset scheme does not match "
                                    f"{qw.dtype} symmetric={qw.symmetric}")
        layer.qweight.copy_(qw.data)
        layer.scales.copy_(qw.scales)
        layer.exponent = int(qw.exponent)
        if qw.offsets is not None:
            layer.offsets.copy_(qw.offsets)
        if bias is not None:
            layer.bias.copy_(bias.detach().to(layer.bias.dtype))
        return layer

    @overload
    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: dict, group_size: Optional[int] = 128,
                    symmetric: Optional[bool] = None, scale_dtype=None,
                    zero_mode: str = "float", act_dtype: Optional[str] = None,
                    smooth: Optional[torch.Tensor] = None) -> "MixedQuantLinear": ...

    @overload
    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: Any = "uint4",
                    group_size: Optional[int] = 128, symmetric: Optional[bool] = None,
                    scale_dtype=None, zero_mode: str = "float", act_dtype: Optional[str] = None,
                    smooth: Optional[torch.Tensor] = None) -> "QuantLinear": ...

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: Any = "uint4",
                    group_size: Optional[int] = 128, symmetric: Optional[bool] = None,
                    scale_dtype=None, zero_mode: str = "float", act_dtype: Optional[str] = None,
                    smooth: Optional[torch.Tensor] = None) -> Any:
        """Quantizes ``linear.weight`` ([out, in]) group-wise along in_features; with
        ``act_dtype`` ("int8", "int4", "float8_e4m3") per output channel in that type (W8A8,
        W4A4, FP8), the weight times ``smooth`` [in] if given (forward then divides x by it). A
        dict ``dtype`` (``{"uint8": columns, "uint4": "rest"}``) gives a
        ``tilus.nn.mixed_linear.MixedQuantLinear`` (mixed-width output features,
        ``tilus.ops.mixed``)."""
        if isinstance(dtype, dict):
            if act_dtype is not None or smooth is not None:
                raise QuantizationError("QuantLinear: mixed-width weights (a dict dtype) are "
                                        "weight-only; act_dtype and smooth do not apply")
            from tilus.nn.mixed_linear import MixedQuantLinear

            return MixedQuantLinear.from_linear(linear, dtype, group_size, symmetric,
                                                scale_dtype, zero_mode)
        if not isinstance(linear, nn.Linear):
            raise QuantizationError(f"from_linear takes an nn.Linear, got {type(linear).__name__}")
        if act_dtype is not None or smooth is not None:
            if scale_dtype not in (None, torch.float32, "float32"):
                raise QuantizationError(f"QuantLinear: an activation-quantized layer's scales "
                                        f"are float32, got "
                                        f"scale_dtype={scale_dtype!r}")
            layer = cls(linear.in_features, linear.out_features, linear.bias is not None, dtype,
                        group_size, symmetric, device=linear.weight.device,
                        zero_mode=zero_mode, act_dtype=act_dtype, smooth=smooth is not None)
            s = w8a8_linear.check_smooth(smooth, linear.in_features)
            qweight, scales = w8a8_linear.quantize(linear.weight, s, layer.act_dtype,
                                                   layer.group_size)
            layer.qweight.copy_(qweight)
            layer.scales.copy_(scales)
            if s is not None:
                layer.smooth.copy_(s)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
            return layer
        qw = quantize(linear.weight, dtype, group_size, symmetric, scale_dtype, zero_mode)
        return cls.from_quantized(qw, linear.bias)

    # ---- the weight -------------------------------------------------------------------------
    @property
    def qweight_object(self) -> QuantizedWeight:
        """The buffers as a QuantizedWeight (shares memory); not for an activation-quantized
        layer."""
        if self.act_dtype is not None:
            raise QuantizationError(f"an act_dtype={self.act_dtype!r} QuantLinear's weight is "
                                    f"(layer.qweight, layer.scales) of tilus.nn.w8a8_linear, "
                                    f"not a QuantizedWeight")
        return QuantizedWeight(self.qweight, self.scales, self.offsets, self.dtype_name,
                               (self.out_features, self.in_features), self.group_size,
                               self.symmetric, self.zero_point, self.exponent)

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """[out_features, in_features]: the weight forward multiplies by, in x's column order
        (activation-quantized: the codes times their scales, divided by ``smooth``)."""
        if self.act_dtype is not None:
            w = w8a8_linear.dequantize(self.qweight, self.scales, self.act_dtype,
                                       self.group_size)
            w = w if self.smooth is None else w / self.smooth[None, :]
            return w.to(dtype or torch.float32)
        w = self.qweight_object.dequantize(dtype)
        if self.input_perm is None:
            return w
        out = torch.empty_like(w)
        out[:, self.input_perm] = w
        return out

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` -> ``[..., out_features]`` in x's dtype (see the module doc)."""
        check_activations(x, self.in_features, self.qweight.device, KERNEL_DTYPES + WIDE_DTYPES,
                          "QuantLinear")
        if self.act_dtype is not None:
            out = w8a8_linear.forward(x.reshape(-1, self.in_features), self.qweight,
                                      self.scales, self.smooth, self.bias, self.act_dtype,
                                      self.group_size)
            return out.reshape(*x.shape[:-1], self.out_features)
        bias = self.bias
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        if self.input_perm is not None:
            x = x.index_select(-1, self.input_perm)
        wide = x.dtype in WIDE_DTYPES
        op = torch.ops.tilus.dequant_linear if wide else torch.ops.tilus.quant_matmul
        out = op(x.reshape(-1, self.in_features), self.qweight, self.scales, self.offsets, bias,
                 self.dtype_name, self.out_features, self.in_features, self.group_size,
                 float(self.zero_point), int(self.exponent))
        return out.reshape(*x.shape[:-1], self.out_features)

    def _apply(self, fn, *args, **kwargs):
        """``.to()``/``.float()``/``.half()`` move and convert buffers as usual, except that scales
        and float offsets stay float16/bfloat16 (a float32 conversion keeps their previous dtype);
        integer zero points stay uint8. An activation-quantized layer's scales and smooth stay
        float32."""
        keep = self.scales.dtype
        super()._apply(fn, *args, **kwargs)
        if self.act_dtype is not None:
            for name in ("scales", "smooth"):
                t = self._buffers.get(name)
                if t is not None and t.dtype != torch.float32:
                    self._buffers[name] = t.float()
            return self
        for name in ("scales", "offsets"):
            t = self._buffers.get(name)
            if name == "offsets" and self.zero_mode == "int":
                if t is not None and t.dtype != torch.uint8:
                    self._buffers[name] = t.to(torch.uint8)
                continue
            if t is not None and t.dtype not in (torch.float16, torch.bfloat16):
                self._buffers[name] = t.to(keep)
        return self

    # ---- state dict -------------------------------------------------------------------------
    def scheme(self) -> dict:
        """The layer's format and quantization scheme (what ``_extra_state`` records)."""
        return {"format_version": FORMAT_VERSION, "layout": LAYOUT, "dtype": self.dtype_name,
                "group_size": self.group_size, "symmetric": self.symmetric,
                "zero_point": self.zero_point, "exponent": self.exponent,
                "act_order": self.input_perm is not None, "zero_mode": self.zero_mode,
                **({"act_dtype": self.act_dtype} if self.act_dtype is not None else {})}

    def get_extra_state(self) -> torch.Tensor:
        """``scheme()`` as a uint8 JSON tensor: the state dict holds tensors only (safetensors,
        ``save_pretrained``)."""
        return meta_tensor(self.scheme())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A format-1 layer's state (``zeros``, row-major codes) is converted to format 2 first."""
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:
            extra = meta_dict(extra, "QuantLinear state")
            if extra.get("format_version") == 1:
                _convert_v1(state_dict, prefix, extra, (self.out_features, self.in_features))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_extra_state(self, state: Any) -> None:
        """Checks the saved scheme (a JSON tensor, or a dict as earlier states held it) against
        this layer's; takes the saved scales' exponent. Format 2 (no zero_mode: float offsets)
        loads into a float-offset layer."""
        mine = self.scheme()
        state = meta_dict(state, "QuantLinear state")
        state.setdefault("act_order", False)
        state.setdefault("zero_mode", "float")
        if state.get("format_version") in READ_VERSIONS:
            mine["format_version"] = state["format_version"]
        exponent = check_exponent(state.get("exponent", 0), "QuantLinear state")
        mine["exponent"] = state["exponent"] = exponent
        if state != mine:
            diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
            raise QuantizationError(f"QuantLinear state does not match this layer: "
                                    f"(saved, this) = {diff}; build the layer with the saved "
                                    f"dtype/group_size/symmetric")
        self.exponent = exponent

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, dtype={self.dtype_name}, "
                f"group_size={self.group_size}, symmetric={self.symmetric}"
                + (f", act_dtype={self.act_dtype}, smooth={self.smooth is not None}"
                   if self.act_dtype is not None else "")
                + (", zero_mode=int" if self.zero_mode == "int" else "")
                + (", act_order=True" if self.input_perm is not None else ""))


def _convert_v1(state_dict: dict, prefix: str, extra: dict, shape: tuple) -> None:
    """Rewrite a format-1 QuantLinear state in place as format 2 (QuantizedWeight's converter)."""
    meta = {k: extra.get(k) for k in ("format_version", "layout", "dtype", "group_size",
                                        "symmetric", "zero_point")}
    qw = QuantizedWeight.from_state_dict({
        "qweight": state_dict[prefix + "qweight"], "scales": state_dict[prefix + "scales"],
        "zeros": state_dict.pop(prefix + "zeros", None), "meta": {**meta, "shape": list(shape)}})
    state_dict[prefix + "qweight"] = qw.data
    if qw.offsets is not None:
        state_dict[prefix + "offsets"] = qw.offsets
    state_dict[prefix + "_extra_state"] = meta_tensor({**extra, "format_version": FORMAT_VERSION,
                                                      "layout": LAYOUT,
                                                      "exponent": qw.exponent})


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a module's qualified name matches one of ``patterns`` (fnmatch; a plain name also
    matches as a prefix or suffix component: ``"lm_head"`` in ``"model.lm_head"``)."""
    for pat in patterns:
        if fnmatch.fnmatchcase(name, pat) or name == pat or name.endswith("." + pat) \
                or name.startswith(pat + "."):
            return True
    return False


def layer_dtype(name: str, dtype: Any, bit_map: Optional[Mapping[str, Any]]) -> Any:
    """The weight type of layer ``name``: that of the first ``bit_map`` pattern it matches, else
    ``dtype``; when ``dtype`` is itself a ``{pattern: type or None}`` map, that of its first
    matching pattern, and None (stay in float) when none matches."""
    for pat, t in (bit_map or {}).items():
        if matches(name, [pat]):
            return t
    if isinstance(dtype, Mapping):
        return layer_dtype(name, None, dtype)
    return dtype


def quantize_model(model: nn.Module, dtype="uint4", group_size: Optional[int] = 128,
                   skip: Iterable[str] = (), symmetric: Optional[bool] = None,
                   scale_dtype=None, bit_map: Optional[Mapping[str, Any]] = None,
                   zero_mode: str = "float", act_dtype: Optional[str] = None,
                   smooth: Optional[Mapping[str, torch.Tensor]] = None,
                   salient: Optional[Mapping[str, Any]] = None,
                   salient_dtype: Any = "uint8") -> nn.Module:
    """Replaces every ``nn.Linear`` in ``model`` (in place) by a ``QuantLinear``, except those whose
    qualified name matches a ``skip`` pattern (fnmatch, e.g. ``"lm_head"``, ``"*.gate"``,
    ``"layers.0.*"``; a plain name also matches as a prefix or suffix component). ``bit_map`` gives some layers
    another weight type (``{"*.mlp.*": "uint3"}``: the first matching pattern wins).
    ``dtype`` may itself be such a map, a per-layer bit map: ``{"*.mlp.*": "uint3", "*.attn.*":
    "int4", "lm_head": None}`` (the first matching pattern wins; None, or no match, keeps the
    layer in float). ``zero_mode="int"``: the asymmetric uint layers store integer zero points
    (``tilus.ops.quantize``); layers of other types or schemes are unaffected.
    ``act_dtype="int8"``: W8A8 layers (``dtype="int8"``, ``group_size=None``; likewise "int4"
    and "float8_e4m3" with weights of that type), with ``smooth[name]`` (a float [in_features]
    divisor) folded into the named layers' weights.
    ``salient[name]`` (output-feature indices, e.g. from ``tilus.nn.salient_columns``): that
    layer becomes a mixed-width ``MixedQuantLinear``, ``salient_dtype`` on those features and
    its type on the rest.
    Returns the model; ``model.tilus_quantized`` lists the replaced names."""
    skip = [skip] if isinstance(skip, str) else list(skip)
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and not matches(full, skip):
                name_of_type = layer_dtype(full, dtype, bit_map)
                if name_of_type is None:
                    continue
                try:
                    t = weight_type(name_of_type)
                    zm = zero_mode if _scheme(t.name, symmetric)[1] and not t.is_signed \
                        else "float"
                    cols = (salient or {}).get(full)
                    if cols is not None:
                        q = QuantLinear.from_linear(child, {salient_dtype: cols, t.name: "rest"},
                                                    group_size, symmetric, scale_dtype, zm,
                                                    act_dtype, (smooth or {}).get(full))
                    else:
                        q = QuantLinear.from_linear(child, t, group_size, symmetric,
                                                    scale_dtype, zm, act_dtype,
                                                    (smooth or {}).get(full))
                except QuantizationError as e:
                    raise QuantizationError(f"{full}: {e}") from None
                setattr(module, child_name, q)
                replaced.append(full)
    model.tilus_quantized = replaced
    return model
