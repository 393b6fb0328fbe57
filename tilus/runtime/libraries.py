"""Finding and loading TVM's runtime libraries and kernel libraries, without TVM's compiler.

``libtvm_runtime.so`` (and, for CUDA kernels, ``libtvm_runtime_cuda.so``) are looked up in
``$TILUS_TVM_RUNTIME_DIR`` or in the ``lib`` folder of the installed apache-tvm package, found with
:class:`importlib.machinery.PathFinder` so that ``tvm`` is never imported. They are loaded with
``ctypes`` (``RTLD_GLOBAL``) once per process; a kernel library is then loaded with
``tvm_ffi.load_module``.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import logging
import os
import re
import threading
from pathlib import Path
from typing import Optional

from tilus.errors import RuntimeLibraryError

logger = logging.getLogger(__name__)

RUNTIME_LIB = "libtvm_runtime.so"
CUDA_RUNTIME_LIB = "libtvm_runtime_cuda.so"
DRIVER_LIB = "libcuda.so.1"

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL] = {}

_HINTS = {
    "libcuda.so": "the NVIDIA driver library; it exists only on a machine with an NVIDIA GPU and "
                  "driver installed",
    "libcudart.so": "the CUDA runtime; install the CUDA toolkit or `pip install "
                    "nvidia-cuda-runtime` and make it visible through LD_LIBRARY_PATH",
    "libtvm_ffi.so": "part of the apache-tvm-ffi package (`import tvm_ffi` loads it)",
}


def tvm_runtime_dir() -> Path:
    """The folder holding TVM's runtime libraries (see module doc); RuntimeLibraryError if none."""
    env = os.environ.get("TILUS_TVM_RUNTIME_DIR")
    if env:
        path = Path(env).expanduser()
        if not (path / RUNTIME_LIB).is_file():
            raise RuntimeLibraryError(f"TILUS_TVM_RUNTIME_DIR={env} holds no {RUNTIME_LIB}")
        return path
    spec = importlib.machinery.PathFinder.find_spec("tvm")  # searches sys.path, imports nothing
    candidates = []
    if spec is not None:
        for loc in spec.submodule_search_locations or []:
            candidates.append(Path(loc) / "lib")
        if spec.origin:
            candidates.append(Path(spec.origin).parent / "lib")
    for c in candidates:
        if (c / RUNTIME_LIB).is_file():
            return c
    raise RuntimeLibraryError(
        f"cannot find {RUNTIME_LIB}: install apache-tvm, or set TILUS_TVM_RUNTIME_DIR to a folder "
        f"holding {RUNTIME_LIB} and {CUDA_RUNTIME_LIB}"
        + (f" (looked in {', '.join(map(str, candidates))})" if candidates else ""))


def _missing_library(message: str) -> Optional[str]:
    m = re.search(r"([\w.+-]+\.so[\w.]*): cannot open shared object file", message)
    return m.group(1) if m else None


def _explain(path: Path, err: OSError) -> RuntimeLibraryError:
    missing = _missing_library(str(err))
    if missing and missing != path.name:
        hint = next((h for k, h in _HINTS.items() if missing.startswith(k)), "")
        return RuntimeLibraryError(f"cannot load {path.name}: it needs {missing}, which is not "
                                   f"found" + (f" ({hint})" if hint else "") + f" [{err}]")
    return RuntimeLibraryError(f"cannot load {path}: {err}")


def _load_global(path: Path) -> ctypes.CDLL:
    key = str(path)
    with _lock:
        lib = _loaded.get(key)
        if lib is None:
            import tvm_ffi  # noqa: F401  (loads libtvm_ffi.so, which TVM's libraries link to)

            try:
                lib = ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise _explain(path, e) from None
            _loaded[key] = lib
            logger.debug("loaded %s", path)
        return lib


def load_tvm_runtime() -> ctypes.CDLL:
    """Load ``libtvm_runtime.so`` (once)."""
    return _load_global(tvm_runtime_dir() / RUNTIME_LIB)


def load_cuda_runtime() -> ctypes.CDLL:
    """Load ``libtvm_runtime_cuda.so`` (once), after checking for the driver library."""
    load_tvm_runtime()
    path = tvm_runtime_dir() / CUDA_RUNTIME_LIB
    if str(path) in _loaded:
        return _loaded[str(path)]
    if not path.is_file():
        raise RuntimeLibraryError(f"{CUDA_RUNTIME_LIB} is not in {path.parent}; this TVM was "
                                  f"built without CUDA")
    try:
        ctypes.CDLL(DRIVER_LIB, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise RuntimeLibraryError(f"cannot run CUDA kernels: {DRIVER_LIB} is not found "
                                  f"({_HINTS['libcuda.so']}) [{e}]") from None
    _preload_cudart()
    return _load_global(path)


CUDART = "libcudart.so.13"


def _preload_cudart() -> None:
    """Load ``libcudart.so.13`` (which libtvm_runtime_cuda.so needs) from the nvidia-cuda-runtime
    wheel (torch cu13x brings it) when the dynamic linker would not find it by itself."""
    try:
        ctypes.CDLL(CUDART, mode=ctypes.RTLD_GLOBAL)
        return
    except OSError:
        pass
    import sys

    for root in sys.path:
        for cand in sorted(Path(root or ".").glob(f"nvidia/*/lib/{CUDART}")):
            try:
                ctypes.CDLL(str(cand), mode=ctypes.RTLD_GLOBAL)
                logger.debug("loaded %s", cand)
                return
            except OSError:
                continue


def load_module(path: "str | os.PathLike", cuda: bool):
    """Load a kernel library with ``tvm_ffi.load_module`` after the runtime libraries it needs."""
    load_tvm_runtime()
    if cuda:
        load_cuda_runtime()
    import tvm_ffi

    try:
        return tvm_ffi.load_module(str(path))
    except Exception as e:  # tvm_ffi raises its own error classes
        raise RuntimeLibraryError(f"cannot load kernel library {path}: {e}") from None
