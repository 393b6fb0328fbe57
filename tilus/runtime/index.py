"""The pre-key index: a cached kernel found without building its Program.

A kernel's cache key hashes its IR text, so finding it needs the Program, whose transpilation is
most of a cached kernel's first call in a new process. A *pre-key* (computed by ``tilus.jit``
from what determines the Program: the kernel's sources, its attributes and compile-time values,
the arch and the versions) names a small file ``<root>/index/<pre-key>`` holding the full key.
It is a hint, never trusted: the entry it names is read and checked like any other, and anything
odd about the file (missing, special, oversized, not one key) reads as a miss, after which the
caller takes the full path and writes the file again. Writes go to a temporary name in the same
folder and are renamed, so a reader sees a whole file or none.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Optional

from tilus.errors import CacheError
from tilus.runtime import safefile

logger = logging.getLogger(__name__)

INDEX_DIR = "index"
KEY_CHARS = frozenset("0123456789abcdef")
_KEY_LEN = 64


def _valid(text: str) -> bool:
    return len(text) == _KEY_LEN and set(text) <= KEY_CHARS


def read_index(root: Path, prekey: str) -> Optional[str]:
    """The full cache key recorded for ``prekey`` under the cache ``root``, or None (no file, or a
    file that is not exactly one key: damaged, partial, replaced by a link)."""
    if not _valid(prekey):
        return None
    try:
        dir_fd = safefile.open_dir(root / INDEX_DIR)
    except (OSError, CacheError):
        return None
    try:
        data = safefile.read_regular(dir_fd, prekey, _KEY_LEN + 1, root / INDEX_DIR)
    except CacheError as e:
        logger.debug("pre-key index %s ignored: %s", prekey[:12], e)
        return None
    finally:
        os.close(dir_fd)
    text = data.decode("ascii", "replace").rstrip("\n")
    return text if _valid(text) else None


def write_index(root: Path, prekey: str, key: str) -> None:
    """Record ``key`` for ``prekey`` (atomically, by rename); a cache that cannot be written only
    costs the next process the full path, so failures are logged, not raised."""
    if not (_valid(prekey) and _valid(key)):
        raise ValueError(f"pre-key and key must be sha256 hex digests, got {prekey!r}, {key!r}")
    folder = root / INDEX_DIR
    tmp = folder / f".tmp-{prekey[:16]}-{uuid.uuid4().hex[:12]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        os.replace(tmp, folder / prekey)
    except OSError as e:
        logger.debug("cannot write the pre-key index %s: %s", folder / prekey, e)
        try:
            os.unlink(tmp)
        except OSError:
            pass
