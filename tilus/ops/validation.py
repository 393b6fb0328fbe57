"""Checks of the public ops' arguments (``tilus.ops``, ``tilus.nn``): each returns the value it
accepts or raises a ``tilus.errors`` error that names the argument and what is allowed."""
from __future__ import annotations

from numbers import Integral
from typing import Any, Mapping, Optional, Sequence

import torch

from tilus.errors import ArgumentError, DeviceMismatchError, QuantizationError, TilusError


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(value: Any, name: str, where: str, minimum: int = 1,
              error: type[TilusError] = ArgumentError) -> int:
    """``value`` as an int when it is an integer (not a bool) >= ``minimum``, else ``error``."""
    if not _is_int(value) or value < minimum:
        raise error(f"{where}: {name} must be an integer >= {minimum}, got "
                    f"{type(value).__name__} {value!r}")
    return int(value)


def check_group_size(group_size: Any, k: int, where: str) -> int:
    """The group size along K = ``k``: None or -1 mean one group (``k``); otherwise a positive
    multiple of 32 (the packed format's k-unit) that divides ``k`` (QuantizationError if not)."""
    if group_size is None or (_is_int(group_size) and group_size == -1):
        return k
    allowed = (f"a multiple of 32 that divides in_features = {k}, or None / -1 for one group")
    if not _is_int(group_size) or group_size < 1:
        raise QuantizationError(f"{where}: group_size must be {allowed}; got "
                                f"{type(group_size).__name__} {group_size!r}")
    if k % group_size or (group_size % 32 and group_size != k):
        raise QuantizationError(f"{where}: group_size {group_size} does not fit in_features "
                                f"{k}; group_size must be {allowed}")
    return int(group_size)


def check_optional_bool(value: Any, name: str, where: str,
                        error: type[TilusError]) -> Optional[bool]:
    """``value`` when it is None, True or False, else ``error``."""
    if value is not None and not isinstance(value, bool):
        raise error(f"{where}: {name} must be None, True or False, got "
                    f"{type(value).__name__} {value!r}")
    return value


def check_schedule(schedule: Any, allowed: Sequence[str], where: str) -> dict:
    """A kernel schedule: a mapping from names in ``allowed`` to integers >= 1 (ArgumentError
    naming the bad key or value and the allowed keys)."""
    names = ", ".join(allowed)
    if not isinstance(schedule, Mapping):
        raise ArgumentError(f"{where}: schedule must be a dict with keys among {names} and "
                            f"integer values >= 1, got {type(schedule).__name__} {schedule!r}")
    out = {}
    for key, value in schedule.items():
        if not isinstance(key, str) or key not in allowed:
            raise ArgumentError(f"{where}: unknown schedule key {key!r}; the allowed keys are "
                                f"{names}")
        out[key] = check_int(value, f"schedule[{key!r}]", where)
    return out


def check_activations(x: Any, k: int, device: torch.device, allowed: Sequence[torch.dtype],
                      where: str) -> None:
    """``x`` must be a tensor ``[..., k]`` of a dtype in ``allowed`` on ``device``."""
    if not isinstance(x, torch.Tensor):
        raise ArgumentError(f"{where}: the input must be a torch tensor [..., {k}], got "
                            f"{type(x).__name__}")
    if x.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise ArgumentError(f"{where}: the input has dtype {str(x.dtype).replace('torch.', '')}; "
                            f"allowed: {names} (convert it, e.g. x.float())")
    if x.dim() < 1 or x.shape[-1] != k:
        raise ArgumentError(f"{where}: the input has shape {list(x.shape)}; its last dimension "
                            f"must be in_features = {k}")
    if x.device != device:
        raise DeviceMismatchError(f"{where}: the input is on {x.device} but the weight is on "
                                  f"{device}; move one of them (.to(device))")


_HALF = (torch.float16, torch.bfloat16)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_quant_operands(a: Any, scales: Any, offsets: Any, block_scaled: bool,
                         where: str) -> None:
    """The tensors the quantized matmul kernel reads through raw byte pointers, whose dtypes it
    takes on trust: activations float16/bfloat16; scales float16/bfloat16 (uint8 codes when
    ``block_scaled``); offsets None, of the scales' dtype, or uint8 integer zero points
    (ArgumentError naming the tensor)."""
    for name, x in (("a", a), ("scales", scales), ("offsets", offsets)):
        if not isinstance(x, torch.Tensor) and not (name == "offsets" and x is None):
            raise ArgumentError(f"{where}: {name} must be a torch tensor, got "
                                f"{type(x).__name__}")
    if a.dtype not in _HALF:
        raise ArgumentError(f"{where}: a must be float16 or bfloat16, got {_name(a.dtype)}")
    allowed = (torch.uint8,) if block_scaled else _HALF
    if scales.dtype not in allowed:
        raise ArgumentError(f"{where}: scales must be "
                            f"{' or '.join(_name(d) for d in allowed)}"
                            f"{' (block scale codes)' if block_scaled else ''}, got "
                            f"{_name(scales.dtype)}")
    if offsets is not None and (block_scaled or offsets.dtype not in (scales.dtype, torch.uint8)):
        what = ("block-scaled weights have no offsets" if block_scaled else
                f"offsets must have the scales' dtype {_name(scales.dtype)} or be uint8 integer "
                f"zero points")
        raise ArgumentError(f"{where}: {what}, got {_name(offsets.dtype)} offsets")
