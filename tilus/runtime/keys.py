"""Cache keys: what a compiled kernel's cache entry is named by, computable without TVM.

The key is the sha256 of the IR text, the arch and the tool versions (:func:`key_versions`: the
apache-tvm version, the entry format and a fingerprint of the compiler's sources).
"""
from __future__ import annotations

import hashlib
import json
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
CUDA_ENTRY_FORMAT = "cubin-callback-2"


# The parts of tilus whose source decides what a Program compiles to.
COMPILER_SOURCES = ("backend", "transforms", "ir", "dtypes")
_fingerprint: Optional[str] = None


def compiler_fingerprint() -> str:
    """sha256 of the source files of the compiler's packages (:data:`COMPILER_SOURCES`), so that
    a change to the backend never reuses kernels built by the old one. A bundle ships the sources
    it was built with, so the GPU machine computes the same value without TVM."""
    global _fingerprint
    if _fingerprint is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for sub in COMPILER_SOURCES:
            for f in sorted((root / sub).rglob("*")):
                if f.suffix in (".py", ".lark") and f.is_file():
                    h.update(f.relative_to(root).as_posix().encode() + b"\0")
                    h.update(f.read_bytes() + b"\0")
        _fingerprint = h.hexdigest()
    return _fingerprint


def key_versions() -> dict:
    """The tool versions that go into a kernel's cache key: the apache-tvm version (see
    :data:`PINNED_TVM_VERSION`), the entry format and the compiler's source fingerprint."""
    from importlib import metadata

    try:
        tvm = metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:
        tvm = PINNED_TVM_VERSION
    return {"tvm": tvm, "entry": CUDA_ENTRY_FORMAT, "compiler": compiler_fingerprint()[:16]}
