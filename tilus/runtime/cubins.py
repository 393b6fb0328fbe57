"""Prebuilt cubins for TVM's CUDA runtime: compile here, run there.

TVM 0.27's ``tvm.compile`` keeps a kernel's device code as CUDA *source*: the exported library
embeds the device module serialized as ``[fmt="cuda"][function table][code=source]``, and when the
library is loaded, TVM's CUDA runtime (``ffi.Module.load_from_bytes.cuda`` in
``libtvm_runtime_cuda.so``) sees ``fmt == "cuda"`` and compiles the source by calling the global
function ``tvm_callback_cuda_compile(source) -> bytes`` (normally registered by
``tvm.support.nvcc``, NVRTC through cuda-bindings). It tags the result ``ptx`` when its first byte
is ``/`` and ``cubin`` otherwise, then ``cuModuleLoadData``-s it on first launch.

A machine that only runs kernels has neither TVM's Python nor NVRTC. So Tilus registers its own
``tvm_callback_cuda_compile`` (through ``tvm_ffi.register_global_func``) that answers with the cubin
it built with nvcc for that very source, looked up by the source's sha256. Each cache entry holds
``kernel.cubin`` and records the sha256 of the source its library embeds in its metadata
(``extra["cuda_source_sha256"]``: ``launcher.cu``, the launcher stub's, when Tilus printed the
kernel; ``kernel.cu`` when TVM did);
:func:`register` files it before the library is loaded. A source that Tilus did not build is passed
to the callback that was registered before ours (TVM's, when TVM is imported), or refused with an
error that says why.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from typing import Callable, Optional

from tilus.errors import RuntimeLibraryError

logger = logging.getLogger(__name__)

CALLBACK = "tvm_callback_cuda_compile"

_lock = threading.Lock()
_cubins: dict[str, bytes] = {}          # sha256(source) -> cubin
_installed = False
_previous: Optional[Callable] = None     # the callback ours replaced, if any
served: dict[str, int] = {}             # sha256 -> times our callback answered (tests, logs)


def source_digest(source: "str | bytes") -> str:
    data = source.encode() if isinstance(source, str) else bytes(source)
    return hashlib.sha256(data).hexdigest()


def register(source_sha256: str, cubin: bytes) -> None:
    """Make ``cubin`` the answer for the CUDA source whose sha256 is ``source_sha256``."""
    if not cubin or cubin[:1] == b"/":
        raise RuntimeLibraryError(f"cubin for source {source_sha256[:12]} is empty or not an ELF "
                                  f"image")
    with _lock:
        _cubins[source_sha256] = bytes(cubin)
    install()


def lookup(source: "str | bytes") -> Optional[bytes]:
    return _cubins.get(source_digest(source))


def _callback(source, *rest):
    """``tvm_callback_cuda_compile(source[, target]) -> bytes`` (TVM 0.27 passes the source only;
    older versions also passed a target)."""
    digest = source_digest(str(source))
    cubin = _cubins.get(digest)
    if cubin is not None:
        served[digest] = served.get(digest, 0) + 1
        logger.debug("serving prebuilt cubin for CUDA source %s (%d bytes)", digest[:12],
                     len(cubin))
        return cubin
    if _previous is not None:
        logger.debug("CUDA source %s is not a prebuilt Tilus kernel: passing it to the previous "
                      "%s", digest[:12], CALLBACK)
        return _previous(source, *rest)
    raise RuntimeError(f"tilus: no prebuilt cubin for CUDA source {digest[:12]} and no CUDA "
                       f"compiler callback to fall back on (import tvm to JIT it, or rebuild the "
                       f"kernel's cache entry)")


def install() -> None:
    """Register the callback (once per process), keeping any earlier one as the fallback."""
    global _installed, _previous
    if _installed:
        return
    with _lock:
        if _installed:
            return
        import tvm_ffi

        try:
            prev = tvm_ffi.get_global_func(CALLBACK, allow_missing=True)
        except TypeError:  # older signature
            try:
                prev = tvm_ffi.get_global_func(CALLBACK)
            except Exception:
                prev = None
        _previous = prev
        tvm_ffi.register_global_func(CALLBACK, _callback, override=True)
        _installed = True
        logger.debug("registered %s (prebuilt cubins%s)", CALLBACK,
                     "; falling back on the previous one" if prev is not None else "")


def is_installed() -> bool:
    return _installed
