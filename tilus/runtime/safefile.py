"""Reading files of a cache entry without trusting the file system: regular files only, no symbolic
links, sizes bounded before reading, checksums checked on the bytes that are then used.

Every file is opened relative to the entry directory's descriptor with ``O_NOFOLLOW | O_NONBLOCK``
(a FIFO or a device neither blocks nor is read) and checked with ``fstat`` to be a regular file.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Union

from tilus.errors import CacheCorruptionError

MAX_FILE_BYTES = 1 << 30          # no file of a kernel comes near 1 GiB
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def file_kind(mode: int) -> str:
    """A word for what a ``st_mode`` is ("a FIFO", "a symbolic link", ...)."""
    for test, word in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return word
    return "not a regular file"


def open_dir(path: Union[str, os.PathLike]) -> int:
    """A descriptor of the directory ``path``; FileNotFoundError if absent, CacheCorruptionError
    if it is a symbolic link or not a directory."""
    try:
        mode = os.lstat(path).st_mode
    except NotADirectoryError:  # a parent is a regular file: nothing is there
        raise FileNotFoundError(errno.ENOENT, "no such directory", str(path)) from None
    if not stat.S_ISDIR(mode):
        raise CacheCorruptionError(f"{path} is {file_kind(mode)}, not a directory")
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise
        raise CacheCorruptionError(f"cannot open {path}: {e.strerror or e}") from None


def read_regular(dir_fd: int, name: str, limit: int, where: Union[str, Path]) -> bytes:
    """The bytes of the regular file ``name`` in the directory ``dir_fd``, at most ``limit``;
    CacheCorruptionError (naming ``where``) for a missing, special, linked or oversized file."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise CacheCorruptionError(f"{where}: {name} is missing") from None
    except (OSError, ValueError) as e:
        why = "it is a symbolic link" if getattr(e, "errno", None) == errno.ELOOP else \
            (getattr(e, "strerror", None) or str(e))
        raise CacheCorruptionError(f"{where}: cannot open {name!r}: {why}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheCorruptionError(f"{where}: {name} is {file_kind(st.st_mode)}, not a "
                                       f"regular file")
        if st.st_size > limit:
            raise CacheCorruptionError(f"{where}: {name} has {st.st_size} bytes, more than the "
                                       f"{limit} expected")
        chunks, n = [], 0
        while n <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
        if n > limit:
            raise CacheCorruptionError(f"{where}: {name} grew past {limit} bytes while read")
        return b"".join(chunks)
    except OSError as e:
        raise CacheCorruptionError(f"{where}: cannot read {name}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def read_checked(dir_fd: int, name: str, sha256: str, size: int, where: Union[str, Path]) -> bytes:
    """:func:`read_regular` of ``name``, which must have ``size`` bytes and the digest ``sha256``."""
    data = read_regular(dir_fd, name, min(size, MAX_FILE_BYTES), where)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != size or digest != sha256:
        raise CacheCorruptionError(f"{where}: {name} is damaged ({len(data)} bytes, checksum "
                                   f"{digest[:12]}..., expected {size} bytes, {sha256[:12]}...)")
    return data


def regular_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``, following no symbolic link."""
    total, stack = 0, [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total
