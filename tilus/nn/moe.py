"""``QuantMoE``: the experts of a mixture-of-experts layer (``nn.Linear``s of one shape), each
quantized to its own type, run by one kernel launch (``tilus.ops.moe_matmul``).

    moe = tilus.nn.QuantMoE.from_linears(experts, dtypes={0: "uint4", 1: "int4"},  # others: uint2
                                         default="uint2", group_size=128)
    y = moe(x, (topk_ids, topk_weights))     # x [..., K] fp16/bf16, routing [..., top_k]

Buffers (so ``.to(device)`` and ``state_dict()`` work as for any module): ``qweight`` (the
experts' packed units side by side, ``MoEExperts.data``), ``scales``, ``offsets``, ``table`` (the
expert table the kernel reads) and ``bias`` (``[E, N]``, only when the linears have biases), plus
an ``_extra_state`` (types and their variants, shape, group size) that ``load_state_dict`` checks.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from tilus.errors import ArgumentError, QuantizationError
from tilus.ops.moe import MoEExperts, moe_matmul
from tilus.ops.quantize import meta_dict, meta_tensor, quantize


def expert_dtypes(dtypes: Union[str, Sequence[str], Mapping[int, str]], count: int,
                  default: str) -> list[str]:
    """One weight type per expert from a type, a list (one per expert) or ``{index: type}``
    (the others ``default``)."""
    if isinstance(dtypes, str):
        return [dtypes] * count
    if isinstance(dtypes, Mapping):
        bad = [i for i in dtypes if not isinstance(i, int) or not 0 <= i < count]
        if bad:
            raise ArgumentError(f"QuantMoE: dtypes names expert {bad[0]!r}, but there are {count} "
                                f"experts (0..{count - 1})")
        return [str(dtypes.get(i, default)) for i in range(count)]
    out = [str(d) for d in dtypes]
    if len(out) != count:
        raise ArgumentError(f"QuantMoE: {len(out)} dtypes for {count} experts; give one per "
                            f"expert, or a dict {{expert index: dtype}}")
    return out


class QuantMoE(nn.Module):
    """Quantized experts of one shape run together; see the module docstring."""

    def __init__(self, packed: MoEExperts, bias: Optional[torch.Tensor] = None):
        super().__init__()
        self.dtypes = packed.dtypes
        self.variants = packed.variants
        self.in_features, self.out_features = packed.k, packed.n
        self.group_size = packed.group_size
        self.register_buffer("qweight", packed.data)
        self.register_buffer("scales", packed.scales)
        self.register_buffer("offsets", packed.offsets)
        self.register_buffer("table", packed.table)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear],
                     dtypes: Union[str, Sequence[str], Mapping[int, str]] = "uint4",
                     group_size: Optional[int] = 128, default: str = "uint4",
                     symmetric: Optional[bool] = None) -> "QuantMoE":
        """Quantize each expert (``tilus.ops.quantize``) to its type and pack them."""
        linears = list(linears)
        if not linears or not all(isinstance(m, nn.Linear) for m in linears):
            raise ArgumentError("QuantMoE.from_linears takes a non-empty list of nn.Linear experts")
        types = expert_dtypes(dtypes, len(linears), default)
        has_bias = [m.bias is not None for m in linears]
        if any(has_bias) and not all(has_bias):
            raise ArgumentError("QuantMoE.from_linears: some experts have a bias and some do not")
        with torch.no_grad():
            experts = [quantize(m.weight.detach(), dtype=t, group_size=group_size,
                                symmetric=symmetric) for m, t in zip(linears, types)]
            packed = MoEExperts.pack(experts)
            bias = torch.stack([m.bias.detach() for m in linears]) if all(has_bias) else None
        return cls(packed, bias)

    def packed(self) -> MoEExperts:
        """The buffers as the ``MoEExperts`` that ``moe_matmul`` reads."""
        return MoEExperts(self.qweight, self.scales, self.offsets, self.table, self.variants,
                          self.dtypes, self.out_features, self.in_features, self.group_size)

    def forward(self, x: torch.Tensor, routing: Any) -> torch.Tensor:
        """``x [..., K]`` fp16/bf16, ``routing = (topk_ids, topk_weights)`` ``[..., top_k]`` ->
        ``[..., N]`` in x's dtype: each token's experts weighted and summed (plus their biases)."""
        if not (isinstance(routing, (tuple, list)) and len(routing) == 2
                and all(isinstance(r, torch.Tensor) and r.dim() >= 1 for r in routing)):
            raise ArgumentError("QuantMoE: routing must be (topk_ids, topk_weights), two tensors "
                                "[..., top_k]")
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            raise ArgumentError(f"QuantMoE: x must be a tensor [..., {self.in_features}]")
        lead = x.shape[:-1]
        ids, weights = (r.reshape(-1, r.shape[-1]) for r in routing)
        y = moe_matmul(x.reshape(-1, x.shape[-1]), self.packed(), (ids, weights), bias=self.bias)
        return y.reshape(*lead, self.out_features)

    def _apply(self, fn, *args, **kwargs):
        """``.to()``/``.half()``/``.bfloat16()`` move and convert buffers as usual, except that
        scales and offsets stay float16/bfloat16 (a float32 conversion keeps their dtype)."""
        keep = self.scales.dtype
        super()._apply(fn, *args, **kwargs)
        for name in ("scales", "offsets"):
            t = self._buffers[name]
            if t is not None and t.dtype not in (torch.float16, torch.bfloat16):
                self._buffers[name] = t.to(keep)
        return self

    def get_extra_state(self) -> torch.Tensor:
        return meta_tensor({"dtypes": list(self.dtypes), "variants": [list(v) for v in self.variants],
                            "n": self.out_features,
                            "k": self.in_features, "group_size": self.group_size})

    def set_extra_state(self, state: Any) -> None:
        meta = meta_dict(state, "QuantMoE")
        mine = meta_dict(self.get_extra_state(), "QuantMoE")
        if meta != mine:
            raise QuantizationError(f"QuantMoE.load_state_dict: the state holds experts {meta}, "
                                    f"this module {mine}; build it with the same dtypes, shape "
                                    f"and group_size")

    def extra_repr(self) -> str:
        return (f"experts={len(self.dtypes)}, in_features={self.in_features}, "
                f"out_features={self.out_features}, dtypes={list(self.dtypes)}, "
                f"group_size={self.group_size}")
