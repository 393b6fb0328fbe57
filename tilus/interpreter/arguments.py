"""Binding a call's arguments to a Program's parameters, with checks that name the parameter.

* Scalar parameters take Python ``int``/``float``/``bool`` or numpy scalars; integer parameters
  must get whole numbers within their type's range (``int32``: -2^31 .. 2^31-1); float parameters
  are rounded to their type.
* Pointer parameters take a **C-contiguous** numpy array or **CPU** torch tensor (any shape: the
  pointer is its first element) whose dtype matches the pointee:

  ============================  ==========================================================
  pointee                       accepted buffers
  ============================  ==========================================================
  float16/32/64, (u)int8..64,    the numpy / torch dtype of the same name (torch ``uint16``
  bool                           .. ``uint64`` where torch has them)
  bfloat16                      ``torch.bfloat16`` or ``ml_dtypes.bfloat16``
  float8_e4m3 / float8_e5m2     ``torch.float8_e4m3fn`` / ``torch.float8_e5m2``,
                                ``ml_dtypes.float8_e4m3fn`` / ``float8_e5m2``, or ``uint8``
                                holding the codes
  every other type of <= 8      ``uint8`` holding the bit stream (element i at bits
  bits (uint3, float6_e3m2, ..)  [i*K, (i+1)*K), little-endian; ``tilus.dtypes.pack``)
  ============================  ==========================================================

  A raw byte pointer (``tilus.void_p``, the same as ``~uint8``) takes any contiguous buffer: its
  bytes are what ``global_view(ptr, dtype=..., shape=...)`` reads.

  CUDA tensors are refused (the interpreter runs on the CPU; calling a kernel on CUDA tensors
  compiles and launches it instead), and so are non-contiguous ones (``.contiguous()`` them).
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from tilus.dtypes import DataType
from tilus.errors import ArgumentError
from tilus.interpreter.memory import Buffer
from tilus.ir.expr import Var
from tilus.ir.program import Program
from tilus.ir.types import PointerType, is_raw_pointer

_SAME_NAME = ("float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
              "uint32", "int64", "uint64", "bool")
_ML_DTYPES = {"bfloat16": "bfloat16", "float8_e4m3": "float8_e4m3fn", "float8_e5m2": "float8_e5m2"}
_TORCH = {"bfloat16": "bfloat16", "float8_e4m3": "float8_e4m3fn", "float8_e5m2": "float8_e5m2"}


def _numpy_dtypes(dtype: DataType) -> list[np.dtype]:
    out = []
    if dtype.name in _SAME_NAME:
        out.append(np.dtype(dtype.name if dtype.name != "bool" else np.bool_))
    if dtype.name in _ML_DTYPES:
        import ml_dtypes

        out.append(np.dtype(getattr(ml_dtypes, _ML_DTYPES[dtype.name])))
    if dtype.nbits <= 8 and not dtype.is_bool and dtype.name not in ("int8",):
        out.append(np.dtype(np.uint8))
    return list(dict.fromkeys(out))


def _torch_dtypes(dtype: DataType) -> list:
    import torch

    out = []
    if dtype.name in _SAME_NAME and hasattr(torch, dtype.name):
        out.append(getattr(torch, dtype.name))
    if dtype.name in _TORCH and hasattr(torch, _TORCH[dtype.name]):
        out.append(getattr(torch, _TORCH[dtype.name]))
    if dtype.nbits <= 8 and not dtype.is_bool and dtype.name not in ("int8",):
        out.append(torch.uint8)
    return list(dict.fromkeys(out))


def _accepted(dtype: DataType) -> str:
    names = [str(d) for d in _numpy_dtypes(dtype)]
    text = ", ".join(dict.fromkeys(names))
    if dtype.nbits < 8:
        return f"a uint8 array or tensor holding the packed {dtype.name} bit stream"
    return f"a numpy array or torch tensor of dtype {text}"


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def bind_pointer(param: Var, value: Any) -> Buffer:
    """A Buffer sharing memory with ``value``; ArgumentError when it does not fit ``param``."""
    dtype = param.dtype.dtype
    where = f"parameter '{param.name}' ({param.dtype})"
    if _is_torch(value):
        if value.device.type != "cpu":
            raise ArgumentError(f"{where} got a tensor on {value.device}: the interpreter runs on "
                                f"the CPU and takes CPU tensors or numpy arrays (call the compiled "
                                f"kernel to run on the GPU, or move the tensor with .cpu())")
        if value.dtype not in _torch_dtypes(dtype) and not is_raw_pointer(param.dtype):
            raise ArgumentError(f"{where} got a torch tensor of dtype {value.dtype}; expected "
                                f"{_accepted(dtype)}")
        if not value.is_contiguous():
            raise ArgumentError(f"{where} got a non-contiguous tensor (shape {tuple(value.shape)}, "
                                f"strides {value.stride()}); pass .contiguous()")
        import torch

        t = value.detach().reshape(-1)
        data = t.view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
        return Buffer(param.name, dtype, data)
    if isinstance(value, np.ndarray):
        if value.dtype not in _numpy_dtypes(dtype) and not is_raw_pointer(param.dtype):
            raise ArgumentError(f"{where} got a numpy array of dtype {value.dtype}; expected "
                                f"{_accepted(dtype)}")
        if not value.flags.c_contiguous:
            raise ArgumentError(f"{where} got a non-contiguous array (shape {value.shape}, strides "
                                f"{value.strides}); pass numpy.ascontiguousarray(...)")
        data = value.reshape(-1).view(np.uint8)
        return Buffer(param.name, dtype, data)
    raise ArgumentError(f"{where} takes {_accepted(dtype)}, got {type(value).__name__}")


def bind_scalar(param: Var, value: Any) -> Any:
    """The Python value of a scalar argument; ArgumentError when it does not fit ``param``."""
    dtype: DataType = param.dtype
    where = f"parameter '{param.name}' ({dtype})"
    if _is_torch(value) or isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise ArgumentError(f"{where} is a scalar, got an array of shape {tuple(value.shape)}")
        if _is_torch(value) and value.device.type != "cpu":
            raise ArgumentError(f"{where} got a tensor on {value.device}; pass a Python number")
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (bool, int, float)):
        raise ArgumentError(f"{where} takes a number, got {type(value).__name__}: {value!r}")
    if dtype.is_bool:
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise ArgumentError(f"{where} takes True or False, got {value!r}")
        return bool(value)
    if dtype.is_integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise ArgumentError(f"{where} takes an integer, got {value!r}")
            value = int(value)
        value = int(value)
        if not dtype.min_value <= value <= dtype.max_value:
            raise ArgumentError(f"{where} got {value}, outside {dtype}'s range "
                                f"{dtype.min_value} .. {dtype.max_value}")
        return value
    from tilus.interpreter.values import round_float

    return float(round_float(dtype, np.float64(value)))


def bind_arguments(program: Program, args: Sequence[Any]) -> dict[Var, Any]:
    """Parameter -> value (a Python number or a Buffer) for every parameter of ``program``."""
    params = program.params
    if len(args) != len(params):
        listed = ", ".join(f"{p.name}: {p.dtype}" for p in params) or "none"
        raise ArgumentError(f"kernel '{program.name}' takes {len(params)} argument"
                            f"{'s' if len(params) != 1 else ''} ({listed}), got {len(args)}")
    env: dict[Var, Any] = {}
    for p, a in zip(params, args):
        env[p] = bind_pointer(p, a) if isinstance(p.dtype, PointerType) else bind_scalar(p, a)
    return env
