"""What calling a kernel does: interpret it on CPU data, or build (cached) and launch it on CUDA
tensors. The one place that joins the front end, the interpreter, the backend and the runtime.

The CUDA path, per call::

    Program (memoized per Script instance and compile-time values)
      -> arch: the tensors' GPU (torch.cuda.get_device_capability), else TILUS_ARCH / sm_80
      -> key = cache_key(IR text of the Program, arch, key_versions())   (no TVM needed)
      -> in-process table -> KernelCache (memory, then disk: "cache hit")
         -> on a miss ("cache miss"): tilus.backend.artifact.build_artifact under the key's
            build lock (one process builds, others wait and load), stored atomically;
            without TVM: KernelNotFoundError naming the kernel and `tilus bundle`
      -> LoadedKernel (registers the prebuilt cubin, loads the library through tvm_ffi, both
         from bytes checked as read; an entry changed since its check is removed and rebuilt)
      -> argument checks -> launch on the current torch (or cupy) stream
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
from typing import Any, Optional

from tilus.errors import CacheCorruptionError, KernelNotFoundError, TilusError
from tilus.lang.script import Script as _DSLScript

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_loaded: dict = {}          # (id(program), arch, cache root) -> (program, LoadedKernel)


class Script(_DSLScript, runner=True):
    """``tilus.Script``: a DSL kernel that runs when called (``kernel(*args)``, see :func:`launch`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the kernel: interpreted on CPU tensors / numpy arrays, compiled on CUDA tensors."""
        return launch(self, args, kwargs)


def _on_cuda(x: Any) -> bool:
    if getattr(x, "is_cuda", False):
        return True
    return hasattr(x, "__cuda_array_interface__")


def launch(kernel: Any, args: tuple, kwargs: dict | None = None) -> Any:
    """Runs ``kernel`` (a tilus.Script or a tilus.ir.Program) on ``args``.

    CPU torch tensors and numpy arrays: the CPU interpreter (``tilus.interpret``).
    CUDA tensors (torch or cupy): the compiled kernel, built once and cached (see module doc).
    """
    from tilus.ir.program import Program

    kwargs = kwargs or {}
    if isinstance(kernel, Program):
        if kwargs:
            raise TilusError("a Program takes positional arguments only")
        program, runtime_args = kernel, list(args)
    else:
        program, runtime_args = kernel.instantiate(*args, **kwargs)
    cuda_args = [a for a in runtime_args if _on_cuda(a)]
    if cuda_args:
        compiled = compiled_kernel(program, arch=device_arch(cuda_args[0]))
        return compiled(*runtime_args)
    from tilus.interpreter import interpret

    return interpret(program, *runtime_args)


def device_arch(x: Any = None) -> str:
    """The architecture (``sm_XY``) of the GPU holding ``x`` (a torch tensor, or a cupy array via
    its ``device.id``), else of the current device; ``TILUS_ARCH`` overrides it."""
    from tilus.backend.toolchain import default_arch  # no TVM

    index = None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor) and x.is_cuda:
        index = x.device.index
    elif x is not None and hasattr(x, "device") and hasattr(x.device, "id"):
        index = x.device.id
    return default_arch(index)


def have_compiler() -> bool:
    """True when this machine can build kernels (TVM importable)."""
    return importlib.util.find_spec("tvm") is not None


def compiled_kernel(kernel_or_program: Any, arch: Optional[str] = None, cache=None, **consts):
    """The LoadedKernel of a Script (with ``consts``) or Program for ``arch``: from this process's
    table, the kernel cache, or built now (and stored)."""
    from tilus.backend.build_program import as_program
    from tilus.backend.toolchain import normalize_arch
    from tilus.runtime import LoadedKernel, cache_key, default_cache, key_versions

    program = as_program(kernel_or_program, **consts)
    arch = normalize_arch(arch) if arch else device_arch()
    cache = cache if cache is not None else default_cache()
    slot = (id(program), arch, str(cache.root))
    hit = _loaded.get(slot)
    if hit is not None and hit[0] is program:
        return hit[1]
    with _lock:
        hit = _loaded.get(slot)
        if hit is not None and hit[0] is program:
            return hit[1]
        key = cache_key(str(program), arch, key_versions())
        for attempt in range(2):
            entry = _entry(cache, key, program, arch)
            t2 = time.perf_counter()
            try:
                loaded = LoadedKernel.load(entry)
                break
            except CacheCorruptionError as e:
                if attempt or not entry.persistent:
                    raise
                cache.discard(key, e)   # changed after its check: rebuild it
        logger.debug("loaded %s in %.1f ms", program.name, (time.perf_counter() - t2) * 1e3)
        _loaded[slot] = (program, loaded)
        return loaded


def _entry(cache, key: str, program, arch: str):
    """The cache entry of ``program`` for ``arch``: from the cache, or built now (once across
    processes, see KernelCache.get_or_build)."""
    t0 = time.perf_counter()
    entry = cache.lookup(key)
    if entry is not None:
        logger.debug("cache hit %s: %s for %s", key[:12], program.name, arch)
        return entry
    logger.debug("cache miss %s: %s for %s", key[:12], program.name, arch)
    if not have_compiler():
        raise KernelNotFoundError(
            f"kernel {program.name} for {arch} is not in the kernel cache {cache.root} "
            f"(key {key[:16]}) and this machine cannot build it (TVM is not installed). "
            f"Prebuild it on a machine with TVM and nvcc: `tilus bundle --arch {arch} "
            f"--out DIR FILE.py:Kernel --param ...`, then set TILUS_CACHE_DIR=DIR/cache "
            f"here (DIR/run_on_gpu.sh does)")
    from tilus.backend.artifact import build_artifact

    def build():
        built = build_artifact(program, arch)
        logger.debug("built %s for %s in %.0f ms (tilus.build %.0f ms, export %.0f ms)",
                     program.name, arch, (time.perf_counter() - t0) * 1e3,
                     built.timings["build"] * 1e3, built.timings["export"] * 1e3)
        return built.artifact

    return cache.get_or_build(key, build)
