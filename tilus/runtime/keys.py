"""Cache keys: what a compiled kernel's cache entry is named by, computable without TVM.

The key is the sha256 of the IR text, the arch and the tool versions (:func:`key_versions`: the
apache-tvm version, the entry format and a fingerprint of the compiler's sources).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping, Optional

from tilus.version import __version__


def cache_key(ir_text: str, arch: str, versions: Mapping[str, str]) -> str:
    """sha256 (hex) of the IR text, the arch and the tool versions (``{"tvm": ..., "nvcc": ...}``).

    The tilus version is added when ``versions`` has none, so upgrading tilus invalidates entries.
    """
    v = {"tilus": __version__, **{str(k): str(x) for k, x in versions.items()}}
    blob = json.dumps({"ir": ir_text, "arch": arch, "versions": v}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# The apache-tvm version this tilus is pinned to (pyproject.toml). A machine without TVM (it only
# runs prebuilt kernels) computes cache keys with it; a machine with TVM uses the installed version,
# so kernels built by another TVM are never picked up.
PINNED_TVM_VERSION = "0.27.0.post1"
# Bumped when the layout of a CUDA cache entry changes.
CUDA_ENTRY_FORMAT = "cubin-callback-3"


# The parts of tilus whose source decides what a Program compiles to.
COMPILER_SOURCES = ("backend", "transforms", "ir", "dtypes")
_fingerprint: Optional[str] = None
_package_fingerprint: Optional[str] = None


def _hash_sources(subdirs: tuple) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for sub in subdirs:
        for parts in sorted(_source_files(os.path.join(root, sub), (sub,))):
            h.update("/".join(parts).encode() + b"\0")
            fd = os.open(os.path.join(root, *parts), os.O_RDONLY | os.O_CLOEXEC)
            try:        # os.read: a buffered open() costs a new process 0.5 ms more here
                chunks = [os.read(fd, os.fstat(fd).st_size + 1)]
                while chunks[-1]:
                    chunks.append(os.read(fd, 1 << 20))
                h.update(b"".join(chunks) + b"\0")
            finally:
                os.close(fd)
    return h.hexdigest()


def package_fingerprint() -> str:
    """sha256 of every source file of the ``tilus`` package (2.5 ms once per process here): the
    part of a kernel's pre-key (tilus.runtime.index) that stands for the DSL, the ready ops'
    helpers and the compiler, whichever of them a kernel uses."""
    global _package_fingerprint
    if _package_fingerprint is None:
        _package_fingerprint = _hash_sources(("",))
    return _package_fingerprint


def compiler_fingerprint() -> str:
    """sha256 of the source files of the compiler's packages (:data:`COMPILER_SOURCES`), so that
    a change to the backend never reuses kernels built by the old one. A bundle ships the sources
    it was built with, so the GPU machine computes the same value without TVM."""
    global _fingerprint
    if _fingerprint is None:
        _fingerprint = _hash_sources(COMPILER_SOURCES)
    return _fingerprint


def _source_files(folder: str, parts: tuple) -> list[tuple]:
    """The path parts (from the package root) of every ``.py``/``.lark`` file under ``folder``
    (os.scandir: a new process pays this before its first launch; pathlib's rglob is slower)."""
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                out += _source_files(e.path, parts + (e.name,))
            elif e.name.endswith((".py", ".lark")) and e.is_file():
                out.append(parts + (e.name,))
    return out


_tvm_version: Optional[str] = None


def installed_tvm_version() -> str:
    """The installed apache-tvm distribution's version, else :data:`PINNED_TVM_VERSION`. Read off
    the ``apache_tvm-<version>.dist-info`` folder next to the ``tvm`` package (found without
    importing it): ``importlib.metadata`` scans every distribution on sys.path, which costs a
    new process tens to hundreds of milliseconds before its first launch."""
    global _tvm_version
    if _tvm_version is None:
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec("tvm")
        found = []
        for loc in (spec.submodule_search_locations or []) if spec is not None else []:
            found += [p.name[len("apache_tvm-"):-len(".dist-info")]
                      for p in Path(loc).parent.glob("apache_tvm-*.dist-info")]
        if len(found) == 1:
            _tvm_version = found[0]
        else:                                   # none beside it, or several: ask the metadata
            from importlib import metadata

            try:
                _tvm_version = metadata.version("apache-tvm")
            except metadata.PackageNotFoundError:
                _tvm_version = PINNED_TVM_VERSION
    return _tvm_version


# Who prints a kernel's CUDA source: Tilus' own printer (tilus.backend.cuda_printer, the default)
# or TVM's pipeline and printer (``TILUS_CUDA_PRINTER=tvm``, kept to compare against).
CUDA_PRINTERS = ("tilus", "tvm")


def cuda_printer(printer: "str | None" = None) -> str:
    """``printer``, else ``$TILUS_CUDA_PRINTER``, else ``"tilus"`` (raises ValueError for another
    name). Part of the cache key: the two printers give different CUDA."""
    choice = printer or os.environ.get("TILUS_CUDA_PRINTER") or "tilus"
    if choice not in CUDA_PRINTERS:
        raise ValueError(f"unknown CUDA printer {choice!r} (TILUS_CUDA_PRINTER or printer=): use "
                         f"one of {', '.join(CUDA_PRINTERS)}")
    return choice


def key_versions() -> dict:
    """The tool versions that go into a kernel's cache key: the apache-tvm version (see
    :data:`PINNED_TVM_VERSION`), the entry format, the compiler's source fingerprint and the
    CUDA printer (when not the default, so existing keys stay)."""
    versions = {"tvm": installed_tvm_version(), "entry": CUDA_ENTRY_FORMAT,
                "compiler": compiler_fingerprint()[:16]}
    if cuda_printer() != "tilus":
        versions["printer"] = cuda_printer()
    return versions
