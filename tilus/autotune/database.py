"""The tuning database: the best schedule per (kernel name, shape bucket, device name), in one JSON
file in the cache directory (``$TILUS_CACHE_DIR/tuning.json``, default ``~/.cache/tilus``), so that
a second process starts tuned.

Format (``version`` 1)::

    {"version": 1,
     "entries": {"<kernel>": {"<device>": {"<bucket>": {"config": {...}, "time_ms": 0.0123,
                                                       "tilus": "0.1.0", "timestamp": 1.7e9}}}}}

Writes are atomic: the file is re-read under an exclusive lock (``<file>.lock``, fcntl where
available), the entry merged in, written to a temporary file in the same directory and renamed
over the old one; concurrent tuners never lose each other's entries and readers never see half a
file. An unreadable or malformed file is treated as empty (with a warning) and rewritten on the
next record.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Union

from tilus.errors import AutotuneError
from tilus.version import __version__

logger = logging.getLogger("tilus.autotune")
VERSION = 1
FILENAME = "tuning.json"


def device_name(device: Any = None) -> str:
    """A stable name for the device timings were taken on: the CUDA device name
    (``"NVIDIA H100 80GB HBM3"``) or ``"cpu"``."""
    if isinstance(device, str) and not device.startswith("cuda"):
        return device                       # "cpu", or a name given by the caller
    if getattr(device, "type", None) == "cpu":
        return "cpu"
    torch = sys.modules.get("torch")        # no torch imported: nothing runs on CUDA here
    if torch is None and device is None:
        return "cpu"
    try:
        import torch

        dev = torch.device(device) if device is not None else None
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(dev)
    except Exception:
        pass
    return "cpu"


@contextlib.contextmanager
def _locked(path: Path):
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+") as f:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except (ImportError, OSError):          # no fcntl (Windows) or a filesystem without locks
            pass
        yield


class TuningDatabase:
    """The JSON tuning database at ``path`` (see the module docstring)."""

    def __init__(self, path: Union[str, os.PathLike, None] = None):
        if path is None:
            from tilus.runtime.cache import default_root

            path = default_root() / FILENAME
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TuningDatabase({str(self.path)!r})"

    def _read(self) -> dict:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {"version": VERSION, "entries": {}}
        except OSError as e:
            logger.warning("cannot read the tuning database %s: %s", self.path, e)
            return {"version": VERSION, "entries": {}}
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != VERSION \
                    or not isinstance(data.get("entries"), dict):
                raise ValueError("not a version-1 tuning database")
            return data
        except ValueError as e:
            logger.warning("ignoring the malformed tuning database %s (%s)", self.path, e)
            return {"version": VERSION, "entries": {}}

    def lookup(self, kernel: str, bucket: str, device: str) -> Optional[dict]:
        """The entry ``{"config": ..., "time_ms": ...}`` or None."""
        entry = self._read()["entries"].get(kernel, {}).get(device, {}).get(bucket)
        return entry if isinstance(entry, dict) and isinstance(entry.get("config"), dict) else None

    def record(self, kernel: str, bucket: str, device: str, config: dict, time_ms: float,
               **extra: Any) -> dict:
        """Stores the best ``config`` for (kernel, bucket, device), atomically."""
        entry = {"config": dict(config), "time_ms": float(time_ms), "tilus": __version__,
                 "timestamp": time.time(), **extra}
        try:
            json.dumps(entry)
        except TypeError as e:
            raise AutotuneError(f"tuning entry for {kernel} is not JSON-serializable: {e}") \
                from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(self.path):
                data = self._read()
                data["entries"].setdefault(kernel, {}).setdefault(device, {})[bucket] = entry
                fd, tmp = tempfile.mkstemp(prefix=".tuning-", suffix=".tmp",
                                           dir=self.path.parent)
                try:
                    with os.fdopen(fd, "w") as f:
                        json.dump(data, f, indent=1, sort_keys=True)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except OSError as e:
            raise AutotuneError(f"cannot write the tuning database {self.path}: "
                                f"{e.strerror or e} (set TILUS_CACHE_DIR to a writable "
                                f"directory)") from None
        return entry

    def entries(self) -> dict:
        return self._read()["entries"]

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


_default: Optional[TuningDatabase] = None


def default_database() -> TuningDatabase:
    """The database in the current cache root (follows ``$TILUS_CACHE_DIR``)."""
    global _default
    db = TuningDatabase()
    if _default is None or _default.path != db.path:
        _default = db
    return _default
