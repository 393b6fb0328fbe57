"""What calling a kernel does: interpret it on CPU data, or build (cached) and launch it on CUDA
tensors. The one place that joins the front end, the interpreter, the backend and the runtime.

The CUDA path, per call::

    arch: the tensors' GPU (torch.cuda.get_device_capability), else TILUS_ARCH / sm_80
      -> in-process table (per Script, compile-time values and attributes; or per Program)
      -> a Script: pre-key = sha256(script_fingerprint (its sources, attributes and values),
         package_fingerprint (every tilus source file), tvm version, entry format, arch);
         the cache's index file for it names the full key: "pre-key hit", no Program built
         (any doubt, e.g. an attribute of an unknown type, an absent or odd index file or entry:
         the full path below, which then writes the index file)
      -> Program (memoized per Script instance and compile-time values)
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

_lock = threading.RLock()
_loaded: dict = {}   # (id(program), arch, root) -> (program, LoadedKernel); (id(script), its
                     # program_key, arch, root) -> (script, LoadedKernel)


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
        consts: dict = {}
        runtime_args = list(args)
    else:
        consts, runtime_args = kernel.bind(*args, **kwargs)
    cuda_args = [a for a in runtime_args if _on_cuda(a)]
    if cuda_args:
        compiled = compiled_kernel(kernel, arch=device_arch(cuda_args[0]), **consts)
        return compiled(*runtime_args)
    from tilus.interpreter import interpret

    program = kernel if isinstance(kernel, Program) else kernel.program(**consts)
    return interpret(program, *runtime_args)


def device_arch(x: Any = None) -> str:
    """The architecture (``sm_XY``) of the GPU holding ``x`` (a torch tensor, or a cupy array via
    its ``device.id``), else of the current device; ``TILUS_ARCH`` overrides it."""
    from tilus.runtime.arch import default_arch

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
    table, the kernel cache (a Script's through its pre-key first, without building its Program),
    or built now (and stored)."""
    from tilus.runtime import default_cache
    from tilus.runtime.arch import normalize_arch

    arch = normalize_arch(arch) if arch else device_arch()
    cache = cache if cache is not None else default_cache()
    if not isinstance(kernel_or_program, _DSLScript):
        from tilus.ir.program import as_program

        program = as_program(kernel_or_program, **consts)
        return _compiled_program(program, arch, cache, (id(program), arch, str(cache.root)))
    kernel = kernel_or_program
    values = kernel.compile_time_values(**consts)
    slot = (id(kernel), kernel.program_key(values), arch, str(cache.root))
    hit = _loaded.get(slot)
    if hit is not None and hit[0] is kernel:
        return hit[1]
    with _lock:
        hit = _loaded.get(slot)
        if hit is not None and hit[0] is kernel:
            return hit[1]
        pre = prekey(kernel, values, arch)
        loaded = _load_by_prekey(cache, pre, type(kernel).__name__) if pre else None
        if loaded is None:
            program = kernel.program(**values)
            loaded = _compiled_program(program, arch, cache, (id(program), arch, str(cache.root)))
            if pre and loaded.entry is not None and loaded.entry.persistent:
                from tilus.runtime.index import write_index

                write_index(cache.root, pre, loaded.entry.key)
        _loaded[slot] = (kernel, loaded)
        return loaded


def prekey(kernel: Any, values: dict, arch: str) -> Optional[str]:
    """The pre-key of the Program of the Script ``kernel`` for the compile-time ``values`` (from
    ``kernel.compile_time_values``) and ``arch`` (see the module doc); None when the Script has
    something its fingerprint cannot describe exactly (tilus.lang.fingerprint)."""
    import hashlib

    from tilus.lang.fingerprint import script_fingerprint
    from tilus.runtime.keys import (CUDA_ENTRY_FORMAT, cuda_printer, installed_tvm_version,
                                    package_fingerprint)
    from tilus.version import __version__

    script = script_fingerprint(kernel, values)
    if script is None:
        return None
    parts = (script, package_fingerprint(), __version__, installed_tvm_version(),
             CUDA_ENTRY_FORMAT, arch, cuda_printer())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _load_by_prekey(cache, prekey: str, name: str):
    """The kernel the pre-key's index file names, loaded; None (take the full path) when there is
    no index file, its entry is absent or damaged, or the entry is of another kernel."""
    from tilus.runtime import LoadedKernel
    from tilus.runtime.index import read_index

    t0 = time.perf_counter()
    key = read_index(cache.root, prekey)
    entry = cache.lookup(key) if key is not None else None
    if entry is None or entry.metadata.name != name:
        logger.debug("pre-key miss %s: %s", prekey[:12], name)
        return None
    try:
        loaded = LoadedKernel.load(entry)
    except CacheCorruptionError as e:
        cache.discard(key, e)
        return None
    logger.debug("pre-key hit %s: %s (entry %s) loaded in %.1f ms", prekey[:12], name, key[:12],
                 (time.perf_counter() - t0) * 1e3)
    return loaded


def _compiled_program(program, arch: str, cache, slot: tuple):
    """The LoadedKernel of ``program``: from this process's table, the cache, or built now."""
    from tilus.runtime import LoadedKernel, cache_key, key_versions

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
        logger.debug("built %s for %s in %.0f ms (stages: %s)", program.name, arch,
                     (time.perf_counter() - t0) * 1e3,
                     ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in built.timings.items()))
        return built.artifact

    return cache.get_or_build(key, build)
