"""``tilus.build`` through the kernel cache: the entry the JIT path would load (same key, same
files) is built once, stored atomically, and given back as a CompiledKernel by every later build
in any process, without TVM's codegen or nvcc.

A CompiledKernel from the cache holds the entry's CUDA source, cubin, PTX and ptxas report; its
``program`` (the IR after the passes) is parsed from ``ir.tilus`` and its ``prim_func`` lowered
again only when asked for (``tilus.simulate`` of a built kernel, tests).
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from tilus.backend.artifact import CUBIN, PTX, PTXAS_LOG, build_artifact, kernel_key
from tilus.backend.build_program import Clock, as_program
from tilus.backend.compiled import CompiledKernel
from tilus.backend.toolchain import normalize_arch, parse_ptxas_log
from tilus.errors import CacheCorruptionError
from tilus.runtime.cache import (CUDA_FILE, IR_FILE, Artifact, CacheEntry, KernelCache,
                                 default_cache)

logger = logging.getLogger(__name__)

stats = {"hits": 0, "builds": 0}     # this process's cached builds (tests, logs)


def restore(entry: CacheEntry) -> CompiledKernel:
    """The CompiledKernel of a cache entry (files read and checked against their checksums);
    CacheCorruptionError when the entry lacks a file a CompiledKernel needs."""
    meta = entry.metadata
    missing = [n for n in (CUDA_FILE, CUBIN, PTX, PTXAS_LOG, IR_FILE) if n not in meta.files]
    if missing or not meta.is_cuda:
        raise CacheCorruptionError(f"{entry.path}: entry of {meta.name} has no "
                                   f"{', '.join(missing) or 'CUDA kernel'}")
    log = entry.read(PTXAS_LOG).decode()
    kernel = CompiledKernel(entry.read(CUDA_FILE).decode(), meta.arch, entry.read(CUBIN),
                            entry.read(PTX).decode(), str(meta.extra["kernel_name"]),
                            parse_ptxas_log(log), str(meta.extra.get("compiler", "nvcc")), log)
    kernel.program_text = entry.read(IR_FILE).decode()
    kernel.launch = dict(meta.launch)
    kernel.assumptions = list(meta.extra.get("assumptions", []))
    return kernel


def cached_entry(program, arch: str, cache: KernelCache, built: Optional[dict] = None) -> CacheEntry:
    """The cache entry of a Program (before the passes) for ``arch``: looked up, or built once
    across processes and stored (``built["kernel"]`` then holds the fresh CompiledKernel)."""
    built = {} if built is None else built

    def build():
        result = build_artifact(program, arch)
        built["kernel"] = result.kernel
        stats["builds"] += 1
        return result.artifact

    return cache.get_or_build(kernel_key(program, arch), build)


def cached_build(kernel_or_program: Any, arch: "str | int | None" = None,
                 cache: Optional[KernelCache] = None, **consts) -> CompiledKernel:
    """The CompiledKernel of a Script (with ``consts``) or Program for ``arch``: from the kernel
    cache (``cache``, default the process's :func:`default_cache`) when there, else built, stored
    and returned. A damaged entry is removed and rebuilt. ``.timings``: the build's stages, or for
    a hit the program, the cache lookup and the restore."""
    clock = Clock()
    arch = normalize_arch(arch)
    program = as_program(kernel_or_program, **consts)
    clock.lap("program")
    cache = cache if cache is not None else default_cache()
    built: dict = {}
    entry = cached_entry(program, arch, cache, built)
    if "kernel" not in built:
        clock.lap("cache_lookup")
        try:
            kernel = restore(entry)
            clock.lap("restore")
            kernel.timings = clock.laps
            return _hit(kernel, program, arch, entry.key)
        except CacheCorruptionError as e:      # changed since its check: rebuild it
            if not entry.persistent:
                raise
            cache.discard(entry.key, e)
            entry = cached_entry(program, arch, cache, built)
    if "kernel" in built:
        kernel = built["kernel"]
        kernel.timings = {"program": clock.laps["program"], **kernel.timings}
        return kernel
    return _hit(restore(entry), program, arch, entry.key)


def entry_artifact(entry: CacheEntry) -> Artifact:
    """An entry's files (read and checked) and metadata, to store it in another cache."""
    return Artifact(entry.metadata, {name: entry.read(name) for name in entry.metadata.files})


def _hit(kernel: CompiledKernel, program, arch: str, key: str) -> CompiledKernel:
    stats["hits"] += 1
    logger.debug("tilus.build %s for %s: cache hit %s", program.name, arch, key[:12])
    return kernel
