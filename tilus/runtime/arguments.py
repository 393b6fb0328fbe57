"""Checking a kernel call's arguments against its signature, before anything is launched.

Works on torch tensors, numpy arrays and cupy arrays (duck-typed through
``__cuda_array_interface__``: cupy is never imported, nor is torch). Every failure raises
:class:`tilus.errors.ArgumentError` naming the parameter and saying what was expected.
"""
from __future__ import annotations

import math
import sys
from functools import lru_cache
from typing import Any, Mapping, NamedTuple, Optional, Sequence

from tilus import dtypes
from tilus.errors import ArgumentError
from tilus.runtime import expr as _expr
from tilus.runtime.expr import ExpressionError
from tilus.runtime.metadata import KernelMetadata, Param

INT32_MAX = 2**31 - 1
_FLOAT_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38,
              "float32": 3.4028234663852886e38}
# framework dtype names that differ from tilus names
_DTYPE_ALIASES = {"float8_e4m3fn": "float8_e4m3", "half": "float16", "float": "float32",
                  "double": "float64"}
_TYPESTR_KIND = {"f": "float", "i": "int", "u": "uint"}


class BufferInfo:
    """What the checks need to know about an array argument, whatever its framework.

    ``framework``: torch | numpy | cupy. ``dtype``: the framework's dtype, as a tilus name when it
    has one. ``itemsize``: bytes per element. ``strides``: in elements, None = C-contiguous.
    ``device_type``: cpu | cuda | ... (A plain class with slots: it is built on every call.)
    """

    __slots__ = ("framework", "dtype", "itemsize", "shape", "strides", "device_type", "device_id",
                 "data_ptr", "numel")

    def __init__(self, framework: str, dtype: str, itemsize: int, shape: tuple,
                 strides: Optional[tuple], device_type: str, device_id: int, data_ptr: int,
                 numel: Optional[int] = None):
        self.framework, self.dtype, self.itemsize = framework, dtype, itemsize
        self.shape, self.strides = shape, strides
        self.device_type, self.device_id, self.data_ptr = device_type, device_id, data_ptr
        self.numel = math.prod(shape) if numel is None else numel

    def __repr__(self) -> str:
        return (f"BufferInfo({self.framework} {self.dtype} shape={list(self.shape)} "
                f"strides={self.strides} on {self.device} at 0x{self.data_ptr:x})")

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def device(self) -> str:
        return self.device_type if self.device_type == "cpu" else f"{self.device_type}:{self.device_id}"

    def is_contiguous(self) -> bool:
        if self.strides is None or self.numel == 0:
            return True
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True


@lru_cache(maxsize=256)
def _dtype_name(name: str) -> str:
    name = _DTYPE_ALIASES.get(name, name)
    try:
        return dtypes.get(name).name
    except Exception:
        return name


@lru_cache(maxsize=64)
def _torch_dtype_name(dtype) -> str:
    return _dtype_name(str(dtype).rsplit(".", 1)[-1])


def _torch_tensor_type():
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def describe(x: Any) -> Optional[BufferInfo]:
    """A BufferInfo for a torch tensor, numpy array or cupy-like array; None for anything else."""
    tt = _torch_tensor_type()
    if tt is not None and isinstance(x, tt):
        dev = x.device
        dev_type = dev.type
        return BufferInfo("torch", _torch_dtype_name(x.dtype), x.element_size(),
                          tuple(x.shape), x.stride(), dev_type,
                          dev.index if dev.index is not None else 0,
                          x.data_ptr() if dev_type != "meta" else 0, x.numel())
    np = sys.modules.get("numpy")
    if np is not None and isinstance(x, np.ndarray):
        return BufferInfo("numpy", _dtype_name(x.dtype.name), x.itemsize, tuple(x.shape),
                          _element_strides(x.strides, x.itemsize), "cpu", 0,
                          x.__array_interface__["data"][0])
    cai = getattr(x, "__cuda_array_interface__", None)
    if isinstance(cai, Mapping):
        typestr = cai["typestr"]
        itemsize = int(typestr[2:])
        if typestr[1] == "b":
            name = "bool"
        elif typestr[1] in _TYPESTR_KIND:
            name = _dtype_name(f"{_TYPESTR_KIND[typestr[1]]}{8 * itemsize}")
        else:
            name = typestr
        device = getattr(x, "device", None)
        dev_id = getattr(device, "id", None)
        if dev_id is None and hasattr(x, "__dlpack_device__"):
            dev_id = x.__dlpack_device__()[1]
        strides = cai.get("strides")
        return BufferInfo("cupy", name, itemsize, tuple(cai["shape"]),
                          None if strides is None else _element_strides(strides, itemsize),
                          "cuda", int(dev_id or 0), int(cai["data"][0]))
    return None


def _element_strides(byte_strides, itemsize: int) -> tuple[int, ...]:
    # a byte stride that is not a whole number of elements can never be contiguous: mark it -1
    return tuple(s // itemsize if s % itemsize == 0 else -1 for s in byte_strides)


# The functional form keeps the field types evaluated (the module postpones annotations), so the
# API reference (pdoc) can resolve them.
BoundArguments = NamedTuple("BoundArguments", [("values", tuple), ("scalars", Mapping[str, Any]),
                                               ("device_type", str),
                                               ("device_id", Optional[int])])
BoundArguments.__doc__ = ("The checked arguments: ``values`` in parameter order (scalars as "
                          "Python numbers).")


def _fail(kernel: str, param: Param, message: str) -> ArgumentError:
    return ArgumentError(f"{kernel}: argument {param.name!r}: {message}")


def bind(meta: KernelMetadata, args: Sequence, kwargs: Optional[Mapping] = None) -> list:
    """Match positional and keyword arguments to the parameters (count, names)."""
    params = meta.params
    names = [p.name for p in params]
    signature = f"{meta.name}({', '.join(names)})"
    if len(args) > len(params):
        raise ArgumentError(f"{signature} takes {len(params)} arguments but got {len(args)}: "
                            f"{len(args) - len(params)} unexpected extra argument(s)")
    values: list = list(args) + [_MISSING] * (len(params) - len(args))
    for k, v in (kwargs or {}).items():
        if k not in names:
            raise ArgumentError(f"{signature} got an unexpected keyword argument {k!r}")
        i = names.index(k)
        if values[i] is not _MISSING:
            raise ArgumentError(f"{signature} got argument {k!r} twice")
        values[i] = v
    missing = [n for n, v in zip(names, values) if v is _MISSING]
    if missing:
        raise ArgumentError(f"{signature} is missing argument(s) {', '.join(missing)}")
    return values


_MISSING = object()


def _check_scalar(kernel: str, p: Param, v: Any):
    t = p.data_type
    if type(v) is int and t.is_integer and t.nbits <= 64:  # the common case, fast
        lo, hi = _int_range(t.name)
        if lo <= v <= hi:
            return v
    np = sys.modules.get("numpy")
    if describe(v) is not None or (np is not None and isinstance(v, np.ndarray)):
        raise _fail(kernel, p, f"expected a Python scalar of type {t.name}, got an array/tensor "
                               f"(pass a number)")
    is_bool = isinstance(v, bool) or (np is not None and isinstance(v, np.bool_))
    if t.is_bool:
        if not is_bool:
            raise _fail(kernel, p, f"expected a bool, got {type(v).__name__} {v!r}")
        return bool(v)
    if is_bool:
        raise _fail(kernel, p, f"expected {t.name}, got a bool")
    if t.is_integer:
        if isinstance(v, float) or not hasattr(v, "__index__"):
            raise _fail(kernel, p, f"expected an integer ({t.name}), got {type(v).__name__} {v!r}")
        v = int(v.__index__())
        lo, hi = _int_range(t.name)
        if not lo <= v <= hi:
            raise _fail(kernel, p, f"{v} is out of range for {t.name} [{lo}, {hi}]")
        return v
    # float
    if not (isinstance(v, (int, float)) or (np is not None and isinstance(v, (np.integer,
                                                                              np.floating)))):
        raise _fail(kernel, p, f"expected a number ({t.name}), got {type(v).__name__} {v!r}")
    v = float(v)
    limit = _FLOAT_MAX.get(t.name)
    if limit is not None and math.isfinite(v) and abs(v) > limit:
        raise _fail(kernel, p, f"{v} overflows {t.name} (largest finite value {limit:g})")
    return v


@lru_cache(maxsize=256)
def _int_range(name: str) -> tuple[int, int]:
    t = dtypes.get(name)
    if t.is_signed:
        return -(1 << (t.nbits - 1)), (1 << (t.nbits - 1)) - 1
    return 0, (1 << t.nbits) - 1


@lru_cache(maxsize=1024)
def _accepts(t: dtypes.DataType, dtype: str, itemsize: int) -> bool:
    if t is dtypes.uint8:
        return True  # a raw byte pointer (void_p = ~uint8) reads any buffer's bytes
    if t.is_subbyte:
        return dtype == "uint8"
    if dtype == t.name and itemsize * 8 == t.nbits:
        return True
    return t.is_lowbit and dtype == "uint8"  # raw codes of an 8-bit low-bit type


def _expected_dtype(t: dtypes.DataType) -> str:
    if t.is_subbyte:
        return (f"a uint8 buffer holding the packed {t.name} bit stream "
                f"({t.nbits} bits per element, see tilus.dtypes.pack)")
    if t.is_lowbit:
        return f"{t.name} (or a uint8 buffer of its codes)"
    return t.name


def _required_bytes(kernel: str, p: Param, scalars: Mapping[str, int]) -> list:
    """[(bytes needed, expression, element count or None)] for the pointer's size requirements."""
    out: list[tuple[int, Any, Optional[int]]] = []
    t = p.data_type
    for key in ("min_count", "min_bytes"):
        e = getattr(p, key)
        if e is None:
            continue
        try:
            n = _expr.evaluate(e, scalars)
        except ExpressionError as err:
            raise _fail(kernel, p, f"cannot evaluate its size requirement: {err}") from None
        if n < 0:
            raise _fail(kernel, p, f"size requirement {e if isinstance(e, str) else key} is "
                                   f"negative ({n}) for {_fmt_env(e, scalars)}")
        if key == "min_count":
            out.append((-(-n * t.nbits // 8), e, n))
        else:
            out.append((n, e, None))
    return out


@lru_cache(maxsize=1024)
def _torch_accepts(t: dtypes.DataType, dtype) -> bool:
    return _accepts(t, _torch_dtype_name(dtype), dtype.itemsize)


def _torch_fast(p: Param, x: Any, needs: list, device_type: str) -> Optional[int]:
    """The device index if torch tensor ``x`` passes every check, else None (then the slow path
    finds what is wrong and says so). Avoids building a BufferInfo on the common path."""
    t = p.data_type
    dev = x.device
    if dev.type != device_type or not _torch_accepts(t, x.dtype):
        return None
    nbytes = x.numel() * x.element_size()
    if p.index_bits == 32 and nbytes * 8 // t.nbits > INT32_MAX:
        return None
    if p.contiguous and not x.is_contiguous():
        return None
    if p.align > 1 and nbytes and x.data_ptr() % p.align:
        return None
    for need, _, _ in needs:
        if nbytes < need:
            return None
    return dev.index if dev.index is not None else 0


@lru_cache(maxsize=1024)
def _numpy_accepts(t: dtypes.DataType, dtype) -> bool:
    return _accepts(t, _dtype_name(dtype.name), dtype.itemsize)


def _numpy_fast(p: Param, x: Any, needs: list, device_type: str) -> bool:
    """True if numpy array ``x`` passes every check (see _torch_fast)."""
    t = p.data_type
    if device_type != "cpu" or not _numpy_accepts(t, x.dtype):
        return False
    nbytes = x.nbytes
    if p.index_bits == 32 and nbytes * 8 // t.nbits > INT32_MAX:
        return False
    if p.contiguous and not x.flags.c_contiguous:
        return False
    if p.align > 1 and nbytes and x.__array_interface__["data"][0] % p.align:
        return False
    for need, _, _ in needs:
        if nbytes < need:
            return False
    return True


def _device(v: Any) -> str:
    """The device a checked pointer argument is on (``cuda:0``)."""
    info = describe(v)
    return "?" if info is None else info.device


def _check_pointer(kernel: str, p: Param, v: Any, scalars: Mapping[str, int],
                   device_type: str) -> int:
    """Check one pointer argument; returns its device index."""
    needs = _required_bytes(kernel, p, scalars)
    tt = _torch_tensor_type()
    if tt is not None and isinstance(v, tt):
        dev_id = _torch_fast(p, v, needs, device_type)
        if dev_id is not None:
            return dev_id
    else:
        np = sys.modules.get("numpy")
        if np is not None and type(v) is np.ndarray and _numpy_fast(p, v, needs, device_type):
            return 0
    t = p.data_type
    info = describe(v)
    if info is None:
        raise _fail(kernel, p, f"expected a tensor/array of {_expected_dtype(t)} (torch, numpy "
                               f"or cupy), got {type(v).__name__}")
    if not _accepts(t, info.dtype, info.itemsize):
        extra = ""
        if t.is_subbyte and info.dtype == t.name:
            extra = " (this array holds one element per byte: pack it with tilus.dtypes.pack)"
        raise _fail(kernel, p, f"expected {_expected_dtype(t)}, got {info.framework} "
                               f"{info.dtype}{extra}")
    if info.device_type != device_type:
        raise _fail(kernel, p, f"expected a tensor on {device_type} (this kernel was built for "
                               f"{device_type}), got one on {info.device}")
    elements = info.nbytes * 8 // t.nbits
    if p.index_bits == 32 and elements > INT32_MAX:
        raise _fail(kernel, p, f"holds {elements} {t.name} elements ({info.nbytes} bytes), more "
                               f"than 32-bit indexing allows ({INT32_MAX}); split the call")
    if p.contiguous and not info.is_contiguous():
        raise _fail(kernel, p, f"expected a contiguous (row-major) tensor, got shape "
                               f"{list(info.shape)} with strides {list(info.strides or ())} "
                               f"(call .contiguous())")
    if p.align > 1 and info.nbytes > 0 and info.data_ptr % p.align:
        raise _fail(kernel, p, f"data pointer 0x{info.data_ptr:x} is not {p.align}-byte aligned "
                               f"(offset {info.data_ptr % p.align}); a sliced view? pass a fresh "
                               f"or .clone()d tensor")
    for need, e, n in needs:
        if info.nbytes < need:
            what = f"{n} {t.name} elements = {need} bytes" if n is not None else f"{need} bytes"
            shown = e if isinstance(e, str) else "its size requirement"
            raise _fail(kernel, p, f"too small: needs at least {what} ({shown} with "
                                   f"{_fmt_env(e, scalars)}), got {info.nbytes} bytes "
                                   f"(shape {list(info.shape)}, {info.dtype})")
    return info.device_id


def _fmt_env(e, scalars: Mapping[str, int]) -> str:
    used = _expr.names(e) or list(scalars)
    return ", ".join(f"{k}={scalars[k]}" for k in used if k in scalars) or "no parameters"


def check_arguments(meta: KernelMetadata, args: Sequence,
                    kwargs: Optional[Mapping] = None) -> BoundArguments:
    """Check a call against ``meta``'s signature; raises ArgumentError, else returns the bound
    arguments. Scalars are checked first, since pointer sizes are expressions over them."""
    if not kwargs and len(args) == len(meta.params):
        values = args
    else:
        values = bind(meta, args, kwargs)
    kernel = meta.name
    out = list(values)
    scalars: dict[str, Any] = {}
    for i, (p, v) in enumerate(zip(meta.params, values)):
        if not p.is_pointer:
            out[i] = scalars[p.name] = _check_scalar(kernel, p, v)
    device_type = meta.device_type
    first: Optional[tuple[Param, Any, Any]] = None
    for p, v in zip(meta.params, values):
        if p.is_pointer:
            dev_id = _check_pointer(kernel, p, v, scalars, device_type)
            if first is None:
                first = (p, v, dev_id)
            elif dev_id != first[2]:
                raise _fail(kernel, p, f"is on {_device(v)} but {first[0].name!r} is on "
                                       f"{_device(first[1])}: all tensors must be on the "
                                       f"same GPU")
    return BoundArguments(tuple(out), scalars, device_type, first[2] if first else None)
