"""Advisory locks (``flock``) between processes that share a kernel cache.

- A writer holds a lock on its temporary directory while it works in it, so a cleaner removes only
  temporaries whose owner is gone (the kernel drops a killed process's locks).
- A per-key lock file makes one process build a kernel while the others wait, then load it.

Where the file system has no ``flock`` (some network file systems) nothing is locked: builds may
repeat, and temporaries count as abandoned only when older than :data:`UNLOCKED_STALE_SECONDS`.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Optional, Union

logger = logging.getLogger(__name__)

UNLOCKED_STALE_SECONDS = 3600.0
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_FLOCK = (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


def _flock(fd: int, blocking: bool) -> Optional[bool]:
    """Lock ``fd`` exclusively: True when locked, False when another process holds it, None when
    the file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in _NO_FLOCK:
            return None
        raise


def _same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a cleaner may have removed it)."""
    try:
        a, b = os.lstat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class TempDir:
    """A fresh directory ``<parent>/<prefix>XXXXXXXX`` (mode 0700), locked until :meth:`close`."""

    def __init__(self, parent: Union[str, os.PathLike], prefix: str):
        while True:
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            try:
                fd = os.open(path, _DIR_FLAGS)
            except FileNotFoundError:   # a cleaner took it before we locked it
                continue
            _flock(fd, blocking=True)
            if _same_file(path, fd):
                break
            os.close(fd)
        self.path = path
        self._fd: Optional[int] = fd

    def close(self, remove: bool = True) -> None:
        """Release the lock, deleting the directory first unless ``remove`` is False (it was
        renamed into place)."""
        if self._fd is None:
            return
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "TempDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def remove_abandoned(path: Path, older_than: float) -> bool:
    """Delete the temporary ``path`` (directory or lock file) if no process holds its lock and it
    was last changed ``older_than`` seconds ago or earlier; True if deleted."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    age = time.time() - st.st_mtime
    if age < older_than:
        return False
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return _unlink(path)        # a stray link or FIFO: nobody's lock
    try:
        fd = os.open(path, (_DIR_FLAGS if stat.S_ISDIR(st.st_mode) else os.O_RDONLY)
                     | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        got = _flock(fd, blocking=False)
        if got is False or (got is None and age < UNLOCKED_STALE_SECONDS):
            return False
        if not _same_file(path, fd):
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path, ignore_errors=True)
            return not path.exists()
        return _unlink(path)
    finally:
        os.close(fd)


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


class KeyLock:
    """``with KeyLock(path, wait, what) as held:`` holds the lock file ``path`` (created, and
    deleted on exit). After ``wait`` seconds without it (its holder stopped, say), or where it
    cannot be created or locked, ``held`` is False and the caller goes on unlocked."""

    def __init__(self, path: Path, wait: float, what: str):
        self.path, self.wait, self.what = path, wait, what
        self._fd: Optional[int] = None

    def __enter__(self) -> bool:
        deadline = time.monotonic() + self.wait
        delay, told = 0.02, False
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o644)
            except OSError as e:
                logger.debug("cannot create the lock %s (%s); going on unlocked", self.path, e)
                return False
            got = _flock(fd, blocking=False)
            if got and _same_file(self.path, fd):
                self._fd = fd
                return True
            os.close(fd)
            if got is None:
                return False
            if got:
                continue                    # removed by its last holder: take a new one
            if time.monotonic() > deadline:
                logger.warning("waited %.0f s for another process building %s (lock %s); "
                               "building it here", self.wait, self.what, self.path)
                return False
            if not told:
                logger.info("waiting for another process building %s (lock %s)", self.what,
                            self.path)
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            _unlink(self.path)
            os.close(self._fd)
            self._fd = None
