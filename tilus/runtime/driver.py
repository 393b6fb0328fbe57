"""A second launcher that needs nothing of TVM: the cubin through the CUDA driver API (ctypes).

``TILUS_LAUNCHER=driver`` makes :class:`tilus.runtime.LoadedKernel` use it instead of TVM's host
library (the default, ``tvm``). It is the fallback should TVM's runtime misbehave on a GPU machine,
and the lowest-overhead path: ``cuModuleLoadData(kernel.cubin)``, ``cuModuleGetFunction``, and per
call ``cuLaunchKernel`` with the grid from the metadata's launch expressions, the block, the dynamic
shared memory (``cuFuncSetAttribute`` above 48 KiB) and the current stream.

The device function's parameters come from the metadata (``extra["device_params"]``, read off the
``extern "C" __global__`` signature of ``kernel.cu`` at build time): each is a pointer parameter's
data (``X_ptr``), a pointer's length in storage elements (``X_len``, TVM's buffer extent) or a
scalar parameter, with its C type.
"""
from __future__ import annotations

import ctypes
import re
import threading
from typing import Any, Optional

from tilus.errors import RuntimeLibraryError

_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?'
                  r'(\w+)\s*\(([^)]*)\)\s*\{')
CTYPES = {"int": ctypes.c_int32, "unsigned int": ctypes.c_uint32, "uint": ctypes.c_uint32,
          "long long": ctypes.c_int64, "int64_t": ctypes.c_int64, "float": ctypes.c_float,
          "double": ctypes.c_double, "bool": ctypes.c_bool, "short": ctypes.c_int16,
          "signed char": ctypes.c_int8, "char": ctypes.c_int8, "unsigned char": ctypes.c_uint8,
          "uchar": ctypes.c_uint8, "ushort": ctypes.c_uint16, "unsigned short": ctypes.c_uint16,
          "unsigned long long": ctypes.c_uint64, "uint64_t": ctypes.c_uint64}
MAX_STATIC_SMEM = 48 * 1024
CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


def kernel_declarations(cuda_source: str, kernel_name: str) -> Optional[list[str]]:
    """The parameter declarations (``"uchar* __restrict__ a_ptr"``, ...) of the ``extern "C"``
    kernel ``kernel_name`` in a CUDA source, or None when there is no such kernel."""
    for m in _SIG.finditer(cuda_source):
        if m.group(1) == kernel_name:
            return [a.strip() for a in m.group(2).split(",") if a.strip()]
    return None


def device_params(cuda_source: str, kernel_name: str, params, workspaces=()) -> Optional[list]:
    """``[{"name", "ctype", "role": "ptr"|"len"|"scalar", "param"}]`` for the kernel's device
    signature, or None when a parameter does not map onto ``params`` (tilus Params) or the
    names of the kernel's hidden workspace pointers (``workspaces``, after the params)."""
    by_name: dict = {p.name: p for p in params}
    by_name.update({name: _WORKSPACE for name in workspaces})
    declarations = kernel_declarations(cuda_source, kernel_name)
    if declarations is None:
        return None
    out = []
    for raw in declarations:
        decl = raw.replace("__restrict__", " ").replace("const ", " ")
        name = decl.split()[-1].lstrip("*")
        ctype = " ".join(decl.replace("*", " * ").split()[:-1]).strip()
        pointer = "*" in decl
        if pointer and name.endswith("_ptr") and name[:-4] in by_name \
                and by_name[name[:-4]].is_pointer:
            out.append({"name": name, "ctype": "void*", "role": "ptr", "param": name[:-4]})
        elif not pointer and name.endswith("_len") and name[:-4] in by_name \
                and by_name[name[:-4]].is_pointer and ctype in CTYPES:
            out.append({"name": name, "ctype": ctype, "role": "len", "param": name[:-4]})
        elif not pointer and name in by_name and not by_name[name].is_pointer \
                and ctype in CTYPES:
            out.append({"name": name, "ctype": ctype, "role": "scalar", "param": name})
        else:
            return None
    return out


class _Workspace:
    """What :func:`device_params` knows of a hidden workspace parameter: a pointer."""

    is_pointer = True


_WORKSPACE = _Workspace()


class _Driver:
    """The few libcuda entry points we need (loaded once)."""

    _lib = None
    _lock = threading.Lock()

    @classmethod
    def lib(cls):
        with cls._lock:
            if cls._lib is None:
                try:
                    lib = ctypes.CDLL("libcuda.so.1")
                except OSError as e:
                    raise RuntimeLibraryError(f"cannot use the driver launcher: libcuda.so.1 is "
                                              f"not found [{e}]") from None
                lib.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
                lib.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 6 + [
                    ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
                cls.check(lib, lib.cuInit(0), "cuInit")
                cls._lib = lib
            return cls._lib

    @staticmethod
    def check(lib, code: int, what: str) -> None:
        if code != 0:
            name = ctypes.c_char_p()
            lib.cuGetErrorName(code, ctypes.byref(name))
            raise RuntimeLibraryError(f"{what} failed: {(name.value or b'?').decode()} ({code})")


class DriverFunction:
    """Callable like TVM's entry function, but the pointer arguments may be any tensor/array with
    ``data_ptr()`` or ``__cuda_array_interface__``; launches on ``stream`` (set per call by
    :class:`LoadedKernel`)."""

    def __init__(self, metadata, cubin: bytes):
        self.meta = metadata
        self.cubin = cubin
        sig = metadata.extra.get("device_params")
        if not sig:
            raise RuntimeLibraryError(f"{metadata.name}: metadata has no device_params; the "
                                      f"driver launcher cannot call it (rebuild the entry)")
        self.sig = sig
        names = [p.name for p in metadata.params] + \
            [w["name"] for w in metadata.extra.get("workspaces", [])]
        index = {name: i for i, name in enumerate(names)}
        self.plan = [(d["role"], index[d["param"]], CTYPES.get(d["ctype"], ctypes.c_void_p))
                     for d in sig]
        self.kernel_name = metadata.extra["kernel_name"]
        self.shared = int(metadata.launch.get("shared_bytes", 0) or 0)
        self.block = [int(b) for b in metadata.launch["block"]]
        self._functions: dict = {}

    def function(self, device: int):
        f = self._functions.get(device)
        if f is None:
            lib = _Driver.lib()
            ctx = ctypes.c_void_p()
            lib.cuCtxGetCurrent(ctypes.byref(ctx))
            if not ctx.value:   # no current context: the device's primary one (torch's)
                dev = ctypes.c_int()
                _Driver.check(lib, lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
                _Driver.check(lib, lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev),
                              "cuDevicePrimaryCtxRetain")
                _Driver.check(lib, lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
            module = ctypes.c_void_p()
            _Driver.check(lib, lib.cuModuleLoadData(ctypes.byref(module), self.cubin),
                          "cuModuleLoadData")
            fn = ctypes.c_void_p()
            _Driver.check(lib, lib.cuModuleGetFunction(ctypes.byref(fn), module,
                                                       self.kernel_name.encode()),
                          f"cuModuleGetFunction({self.kernel_name})")
            if self.shared > MAX_STATIC_SMEM:
                _Driver.check(lib, lib.cuFuncSetAttribute(
                    fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, self.shared),
                    "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)")
            f = self._functions[device] = (module, fn)
        return f[1]

    def pack(self, values) -> list:
        """The ctypes values of the device parameters, in the device signature's order."""
        out: list[Any] = []
        for role, i, ct in self.plan:
            v = values[i]
            if role == "ptr":
                out.append(ctypes.c_void_p(_data_ptr(v)))
            elif role == "len":
                out.append(ct(_numel(v)))
            else:
                out.append(ct(v))
        return out

    def launch(self, values, grid, stream: int = 0, device: int = 0) -> None:
        args = self.pack(values)
        params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        fn = self.function(device)
        lib = _Driver.lib()
        gx, gy, gz = (list(grid) + [1, 1])[:3]
        bx, by, bz = self.block
        _Driver.check(lib, lib.cuLaunchKernel(fn, gx, gy, gz, bx, by, bz, self.shared,
                                              ctypes.c_void_p(stream or 0), params, None),
                      f"cuLaunchKernel({self.kernel_name})")


def _data_ptr(x: Any) -> int:
    dp = getattr(x, "data_ptr", None)
    if callable(dp):
        return int(dp())
    return int(x.__cuda_array_interface__["data"][0])


def _numel(x: Any) -> int:
    n = getattr(x, "numel", None)
    if callable(n):
        return int(n())
    return int(getattr(x, "size"))
