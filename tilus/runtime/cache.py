"""The on-disk kernel cache, with an in-memory cache in front.

Layout: ``<root>/<key>/`` holds ``ir.tilus``, ``kernel.cu`` (CUDA kernels), the library (e.g.
``kernel.so``), ``metadata.json`` (parameters, launch, target, versions, and a sha256 per file) and
``metadata.sha256``: :func:`metadata_digest` of the key and metadata.json's bytes, which ties the
metadata to its entry. ``root`` is ``$TILUS_CACHE_DIR`` or ``~/.cache/tilus``; ``key`` is
:func:`tilus.runtime.keys.cache_key` of the IR text, the arch and the tool versions.

Writes are atomic: an entry is written to ``<root>/.tmp-*`` (locked by its writer, see
tilus.runtime.locks) and renamed into place with one ``os.rename``; if another process got there
first, ours is discarded and theirs used. ``get_or_build`` holds a per-key lock file
(``<root>/.lock-<key>``) while it builds, so concurrent processes build a kernel once.

Readers trust nothing on disk (tilus.runtime.safefile): regular files only, opened without following
links, sizes bounded, the metadata checked against ``metadata.sha256`` and then field by field
(tilus.runtime.schema), every file against its checksum. What is loaded later is read again and
checked as it is read (:meth:`CacheEntry.read`), never reopened by path after the check. A damaged
entry is renamed to ``.trash-*`` (so that only one process removes it), deleted, and reported with a
warning so the caller rebuilds. One benign race remains: a reader that found an entry damaged may,
in the instant between its check and its rename, remove a fresh entry another process just
installed; that costs a rebuild, never a half-written entry. A library already loaded from a
removed entry stays usable (it is mapped).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Union

from tilus.errors import (CacheCorruptionError, CacheError, CompilationError,
                          KernelNotFoundError)
from tilus.runtime import locks, safefile, schema
from tilus.runtime.index import INDEX_DIR
from tilus.runtime.metadata import KernelMetadata

logger = logging.getLogger(__name__)

METADATA = "metadata.json"
METADATA_SUM = "metadata.sha256"
IR_FILE = "ir.tilus"
CUDA_FILE = "kernel.cu"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
LOAD_PREFIX = ".load-"
LOCK_PREFIX = ".lock-"
TEMP_PREFIXES = (TMP_PREFIX, TRASH_PREFIX, LOAD_PREFIX)
STALE_TMP_SECONDS = 600.0          # unlocked temporaries older than this are removed on store
BUILD_LOCK_WAIT = 1800.0           # seconds to wait for another process's build of a kernel
MAX_METADATA_BYTES = 1 << 20


def default_root() -> Path:
    env = os.environ.get("TILUS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tilus"


@dataclass(frozen=True)
class Artifact:
    """What a build produces: files (name -> bytes, or a path to copy) and the metadata.

    ``files`` must hold ``ir.tilus`` and ``metadata.library``; ``metadata.files`` is computed here.
    """

    metadata: KernelMetadata
    files: Mapping[str, Union[bytes, str, os.PathLike]]

    def __post_init__(self):
        for name in self.files:
            if name == METADATA or "/" in name or name.startswith(".") or not name:
                raise ValueError(f"bad artefact file name {name!r}")
        for name in required_files(self.metadata):
            if name not in self.files:
                raise ValueError(f"artefact of {self.metadata.name} lacks {name}")


def metadata_digest(key: str, metadata_bytes: bytes) -> str:
    """The content of ``metadata.sha256``: sha256 of the entry's key and metadata.json's bytes."""
    return hashlib.sha256(key.encode() + b"\0" + metadata_bytes).hexdigest()


def required_files(meta: KernelMetadata) -> list[str]:
    names = [IR_FILE, meta.library]
    if meta.is_cuda:
        names.append(CUDA_FILE)
        cubin = meta.extra.get("cubin")
        if isinstance(cubin, str) and cubin:
            names.append(cubin)
    return names


@dataclass(frozen=True)
class CacheEntry:
    """A kernel's files in a directory: a cache entry, or (``persistent=False``) a private
    temporary directory used when the cache could not be written."""

    key: str
    path: Path
    metadata: KernelMetadata
    persistent: bool = True

    def file(self, name: str) -> Path:
        """The path of a file of the entry (for messages and tools; load with :meth:`read`)."""
        return self.path / name

    @property
    def library_path(self) -> Path:
        return self.path / self.metadata.library

    @property
    def ir_text(self) -> str:
        return self.read(IR_FILE).decode()

    def read(self, name: str) -> bytes:
        """The bytes of file ``name``, checked against the metadata's checksum as they are read:
        CacheCorruptionError if it changed since the entry was validated."""
        info = self.metadata.files.get(name)
        if info is None:
            raise CacheCorruptionError(f"{self.path}: metadata lists no checksum for {name}")
        try:
            dir_fd = safefile.open_dir(self.path)
        except FileNotFoundError:
            raise CacheCorruptionError(f"{self.path}: the entry was removed") from None
        try:
            return safefile.read_checked(dir_fd, name, info["sha256"], info["bytes"], self.path)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def private_copy(self, name: str) -> Iterator[Path]:
        """A copy of file ``name``, written from checked bytes into a fresh locked directory that
        this process alone created, for loaders that need a path; deleted afterwards."""
        data = self.read(name)
        tmp = None
        for parent in (self.path.parent, Path(tempfile.gettempdir())):
            try:
                tmp = locks.TempDir(parent, LOAD_PREFIX)
                break
            except OSError as e:
                logger.debug("cannot create a private directory in %s: %s", parent, e)
        if tmp is None:
            raise CacheError(f"cannot create a private directory to load {name} of {self.path} "
                             f"from (in {self.path.parent} or {tempfile.gettempdir()})")
        try:
            path = tmp.path / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield path
        finally:
            tmp.close()


@dataclass(frozen=True)
class EntryInfo:
    key: str
    path: Path
    bytes: int
    name: str
    target: str
    arch: str
    mtime: float


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (a separate function so tests can slow it down or make it fail)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _content(src: Union[bytes, str, os.PathLike]) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    return Path(src).read_bytes()


def _remove_tree(path: Path) -> bool:
    """Rename ``path`` to a trash name and delete it; False if it was already gone (another process
    removed it first). Safe against concurrent removers and readers."""
    trash = path.parent / f"{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:12]}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return False
    except OSError as e:
        logger.warning("cannot remove %s: %s", path, e.strerror or e)
        return False
    if stat.S_ISDIR(os.lstat(trash).st_mode):
        shutil.rmtree(trash, ignore_errors=True)
    else:   # a link or special file where an entry should be
        os.unlink(trash)
    return True


def _is_key(path: Path) -> bool:
    return all(c in "0123456789abcdef" for c in path.name)


def write_entry(directory: Path, key: str, artifact: Artifact) -> KernelMetadata:
    """Write an artefact's files, metadata.json and metadata.sha256 into the empty ``directory``;
    CompilationError if the build's metadata would not pass the checks a reader makes."""
    files = {}
    for name, src in artifact.files.items():
        data = _content(src)
        _write_file(directory / name, data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    meta = artifact.metadata.with_files(files)
    text = meta.dumps().encode()
    try:
        schema.check(json.loads(text))
    except ValueError as e:
        raise CompilationError(f"kernel {meta.name}: the build produced metadata that the cache "
                               f"would reject when read: {e}") from None
    _write_file(directory / METADATA, text)
    _write_file(directory / METADATA_SUM, (metadata_digest(key, text) + "\n").encode())
    return meta


def _read_metadata(dir_fd: int, key: str, path: Path) -> KernelMetadata:
    """The entry's metadata, checked against metadata.sha256 and then field by field."""
    text = safefile.read_regular(dir_fd, METADATA, MAX_METADATA_BYTES, path)
    stored = safefile.read_regular(dir_fd, METADATA_SUM, 128, path)
    if stored != metadata_digest(key, text).encode() + b"\n":
        raise CacheCorruptionError(f"{path}: {METADATA} does not match {METADATA_SUM} (it was "
                                   f"damaged or edited, or belongs to another entry)")
    return KernelMetadata.loads(text)


def read_entry(key: str, path: Path) -> CacheEntry:
    """Validate the entry at ``path``: raises KernelNotFoundError if absent, CacheCorruptionError if
    damaged (missing or special file, bad checksum, bad metadata)."""
    try:
        dir_fd = safefile.open_dir(path)
    except FileNotFoundError:
        raise KernelNotFoundError(f"no cache entry {key} at {path}") from None
    try:
        meta = _read_metadata(dir_fd, key, path)
        for name in required_files(meta):
            if name not in meta.files:
                raise CacheCorruptionError(f"{path}: metadata lists no checksum for {name}")
        for name, info in meta.files.items():
            safefile.read_checked(dir_fd, name, info["sha256"], info["bytes"], path)
    except CacheCorruptionError:
        if not _still_at(path, dir_fd):   # removed (clear, a rebuild) while we read: not damage
            raise KernelNotFoundError(f"cache entry {key} at {path} was removed while read") \
                from None
        raise
    finally:
        os.close(dir_fd)
    return CacheEntry(key, path, meta)


def _still_at(path: Path, dir_fd: int) -> bool:
    """Whether ``path`` still names the directory open as ``dir_fd``."""
    try:
        return os.path.samestat(os.lstat(path), os.fstat(dir_fd))
    except OSError:
        return False


class KernelCache:
    """Kernel cache at ``root`` (default ``$TILUS_CACHE_DIR`` or ``~/.cache/tilus``)."""

    def __init__(self, root: Union[str, os.PathLike, None] = None,
                 lock_wait: float = BUILD_LOCK_WAIT):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.lock_wait = lock_wait
        self._memory: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KernelCache({str(self.root)!r})"

    def entry_path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be lower-case hex, got {key!r}")
        return self.root / key

    # ---- reading -----------------------------------------------------------------------------
    def lookup(self, key: str) -> Optional[CacheEntry]:
        """The valid entry for ``key``, or None. A damaged entry is removed (with a warning)."""
        entry = self._memory.get(key)
        if entry is not None:
            return entry
        path = self.entry_path(key)
        try:
            entry = read_entry(key, path)
        except KernelNotFoundError:
            return None
        except CacheCorruptionError as e:
            self.discard(key, e)
            return None
        except OSError as e:  # e.g. root is unreadable
            logger.debug("cannot read cache entry %s: %s", path, e)
            return None
        logger.debug("cache hit %s (%s) at %s", key[:12], entry.metadata.name, path)
        self._memory[key] = entry
        return entry

    def discard(self, key: str, reason: Exception) -> None:
        """Forget the entry ``key`` and remove it from disk, warning with ``reason``."""
        self._memory.pop(key, None)
        path = self.entry_path(key)
        where = "" if str(path) in str(reason) else f"{path}: "
        logger.warning("removing damaged kernel cache entry (it will be rebuilt): %s%s", where,
                       reason)
        _remove_tree(path)

    def __contains__(self, key: str) -> bool:
        return self.lookup(key) is not None

    # ---- writing -----------------------------------------------------------------------------
    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot create the kernel cache directory {self.root}: "
                             f"{e.strerror or e} (set TILUS_CACHE_DIR to a writable directory)") \
                from None
        if not self.root.is_dir():
            raise CacheError(f"the kernel cache path {self.root} is not a directory")

    def store(self, key: str, artifact: Artifact) -> CacheEntry:
        """Write ``artifact`` as the entry ``key``, atomically; returns the entry (ours, or the one
        a concurrent writer put there first). Raises CacheError (with the path) when the cache
        cannot be written: read-only, full, not a directory. Removes abandoned temporaries."""
        final = self.entry_path(key)
        self._ensure_root()
        self.remove_stale_temporaries()
        t0 = time.perf_counter()
        try:
            tmp = locks.TempDir(self.root, f"{TMP_PREFIX}{key[:16]}-")
        except OSError as e:
            raise CacheError(f"cannot write to the kernel cache {self.root}: {e.strerror or e}") \
                from None
        installed = False
        try:
            try:
                meta = write_entry(tmp.path, key, artifact)
            except OSError as e:
                what = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
                raise CacheError(f"cannot write kernel cache entry under {self.root}: {what}") \
                    from None
            for attempt in range(3):
                try:
                    os.rename(tmp.path, final)
                    installed = True
                    entry = CacheEntry(key, final, meta)
                    logger.debug("stored %s (%s) in %.1f ms", key[:12], meta.name,
                                 (time.perf_counter() - t0) * 1e3)
                    break
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR,
                                       errno.ENOTDIR):
                        raise CacheError(f"cannot rename {tmp.path} to {final}: "
                                         f"{e.strerror or e}") from None
                # Another process won the race: use its entry if it is valid.
                try:
                    entry = read_entry(key, final)
                    logger.debug("cache entry %s was written concurrently; using it", key[:12])
                    break
                except KernelNotFoundError:
                    continue  # removed in between: try our rename again
                except CacheCorruptionError as e:
                    logger.warning("replacing damaged kernel cache entry: %s", e)
                    _remove_tree(final)
            else:
                raise CacheError(f"could not install cache entry {final} (kept changing)")
        finally:
            tmp.close(remove=not installed)
        self._memory[key] = entry
        return entry

    def store_private(self, key: str, artifact: Artifact) -> CacheEntry:
        """Write ``artifact`` to a private temporary directory outside the cache (removed at exit
        by nobody: the OS temp cleaner owns it); used when the cache itself cannot be written."""
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f"tilus-{key[:16]}-"))
            meta = write_entry(tmp, key, artifact)
        except OSError as e:
            raise CacheError(f"cannot write the kernel {artifact.metadata.name} even to a "
                             f"temporary directory ({tempfile.gettempdir()}): {e.strerror or e}") \
                from None
        entry = CacheEntry(key, tmp, meta, persistent=False)
        self._memory[key] = entry
        return entry

    def get_or_build(self, key: str, build: Callable[[], Artifact]) -> CacheEntry:
        """The entry for ``key``: from memory, from disk, or built now and stored. Processes
        sharing the cache build a key once: one holds ``<root>/.lock-<key>`` while it builds, the
        others wait (up to ``lock_wait`` seconds) and then load its entry. When the cache cannot
        be written the kernel is kept in memory (a private temp dir) with a warning."""
        entry = self.lookup(key)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                return entry
            with self._build_lock(key):
                entry = self.lookup(key)      # built by the process we waited for
                if entry is not None:
                    return entry
                artifact = build()
                try:
                    return self.store(key, artifact)
                except CacheError as e:
                    logger.warning("%s; keeping the kernel %s in memory for this process only",
                                   e, artifact.metadata.name)
                    return self.store_private(key, artifact)

    def _build_lock(self, key: str) -> contextlib.AbstractContextManager:
        try:
            self._ensure_root()
        except CacheError:
            return contextlib.nullcontext()
        return locks.KeyLock(self.root / f"{LOCK_PREFIX}{key}", self.lock_wait, f"kernel {key[:12]}")

    # ---- maintenance -------------------------------------------------------------------------
    def _children(self) -> list[Path]:
        try:
            return list(self.root.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise CacheError(f"cannot list the kernel cache {self.root}: {e.strerror or e}") \
                from None

    def list_entries(self) -> list[EntryInfo]:
        """Every entry on disk whose metadata passes its checks (the other files' checksums are
        not verified here); damaged entries are left out, never raised."""
        out = []
        for p in sorted(self._children()):
            if not _is_key(p):
                continue
            try:
                dir_fd = safefile.open_dir(p)
            except (OSError, CacheError):
                continue
            try:
                meta = _read_metadata(dir_fd, p.name, p)
                mtime = os.fstat(dir_fd).st_mtime
            except (OSError, CacheError):
                continue
            finally:
                os.close(dir_fd)
            out.append(EntryInfo(p.name, p, safefile.regular_bytes(p), meta.name, meta.target,
                                 meta.arch, mtime))
        return out

    def clear(self) -> int:
        """Remove every entry, the pre-key index (tilus.runtime.index), and the temporaries and
        lock files no live process holds; returns the entries removed. Writers still at work keep
        theirs."""
        n = 0
        for p in self._children():
            if p.name.startswith(TEMP_PREFIXES + (LOCK_PREFIX,)):
                locks.remove_abandoned(p, older_than=0)
            elif _is_key(p):
                n += _remove_tree(p)
            elif p.name == INDEX_DIR:
                _remove_tree(p)
        self._memory.clear()
        return n

    def remove_stale_temporaries(self, older_than: float = STALE_TMP_SECONDS) -> int:
        """Delete temporaries (``.tmp-*``, ``.trash-*``, ``.load-*``) and lock files that no live
        process holds and that are at least ``older_than`` seconds old: those of killed writers."""
        return sum(locks.remove_abandoned(p, older_than) for p in self._children()
                   if p.name.startswith(TEMP_PREFIXES + (LOCK_PREFIX,)))

    def temporaries(self) -> list[Path]:
        """The temporary directories under the root (in use, or left by killed processes)."""
        return [p for p in self._children() if p.name.startswith(TEMP_PREFIXES)]

    def info(self) -> dict:
        entries = self.list_entries()
        temps = self.temporaries()
        return {"root": str(self.root), "count": len(entries),
                "bytes": sum(e.bytes for e in entries), "temporaries": len(temps),
                "temporary_bytes": sum(safefile.regular_bytes(p) for p in temps)}


_default_cache: Optional[KernelCache] = None


def default_cache() -> KernelCache:
    """The process-wide cache at :func:`default_root` (re-created if ``TILUS_CACHE_DIR`` changed)."""
    global _default_cache
    if _default_cache is None or _default_cache.root != default_root():
        _default_cache = KernelCache()
    return _default_cache
