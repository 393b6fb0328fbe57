"""Fuzzing cache entries (issue 14): byte flips, truncation, metadata rewritten consistently but
wrongly, special files, and concurrent writers, readers and ``clear``. Deterministic seeds; the
whole file runs in well under 30 s.

Each test collects the cases that misbehave and asserts there are none, printing the count tried.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.runtime.runtime_helpers import REPO, Hung, cuda_artifact, time_limit
from tilus.errors import CacheCorruptionError, KernelNotFoundError, TilusError
from tilus.runtime import KernelCache, cache_key, launch_dims
from tilus.runtime.cache import read_entry

SEED = 14
KEY = cache_key("fuzzed kernel", "sm_90", {})


@pytest.fixture
def entry(tmp_path):
    """A stored CUDA entry and its pristine files: ``(cache, path, {name: bytes})``."""
    cache = KernelCache(tmp_path / "cache")
    path = cache.store(KEY, cuda_artifact("fuzz")).path
    return cache, path, {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def restore(path: Path, files: dict) -> None:
    for p in list(path.iterdir()):
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()
    for name, data in files.items():
        (path / name).write_bytes(data)


def outcome(path: Path) -> str:
    """'rejected' (CacheCorruptionError), 'accepted', or what else happened."""
    try:
        with time_limit(10):
            read_entry(KEY, path)
    except CacheCorruptionError:
        return "rejected"
    except Hung:
        return "hung"
    except Exception as e:  # noqa: BLE001  (anything else is a finding)
        return f"{type(e).__name__}: {str(e)[:80]}"
    return "accepted"


def report(category: str, tried: int, failures: list) -> None:
    print(f"\n{category}: {tried} cases, {len(failures)} failed")
    assert not failures, f"{category}: {len(failures)} of {tried} failed, e.g. {failures[:5]}"


def test_byte_flips_are_detected(entry):
    """One flipped bit anywhere in any file, and every single-byte change of metadata.json."""
    _, path, files = entry
    rng = random.Random(SEED)
    cases = [(name, pos, 1 << rng.randrange(8)) for name, data in files.items()
             for pos in rng.sample(range(len(data)), min(40, len(data)))]
    meta = files["metadata.json"]
    cases += [("metadata.json", pos, rng.randrange(1, 256)) for pos in range(len(meta))]
    failures = []
    for name, pos, mask in cases:
        data = bytearray(files[name])
        data[pos] ^= mask
        (path / name).write_bytes(bytes(data))
        got = outcome(path)
        if got != "rejected":
            failures.append((name, pos, mask, got))
        (path / name).write_bytes(files[name])
    report("byte flips", len(cases), failures)


def test_truncation_is_detected(entry):
    _, path, files = entry
    cases = [(name, n) for name, data in files.items()
             for n in sorted({0, 1, len(data) // 2, len(data) - 1})]
    cases += [(name, -1) for name in files]       # the file deleted
    failures = []
    for name, n in cases:
        if n < 0:
            (path / name).unlink()
        else:
            (path / name).write_bytes(files[name][:n])
        got = outcome(path)
        if got != "rejected":
            failures.append((name, n, got))
        (path / name).write_bytes(files[name])
    report("truncation", len(cases), failures)


PALETTE = [None, True, False, 0, -1, 1, 2**31, 2**63, -(2**63), 10**30, 1.5, float("nan"), "",
           "n", "m", "min(n)", "cdiv(n)", "n / 2", "__import__('os')", "-" * 5000 + "n",
           "kernel.so", "../kernel.so", "/dev/zero", "a\0b", "\udcff".encode("utf-8", "surrogatepass")
           .decode("utf-8", "replace"), [], [1], [1, 1, 1, 1], [2048, 1, 1], {}, {"x": 1},
           [[[[[]]]]], "sm_90", "void*", "float", "scalar", "pointer", "0" * 64]
TEXT_INSERTS = ["[" * 100000, "{" * 50000, "-" * 100000, "\\u0000", "NaN", "1e999", '"', ",",
                "9" * 5000, "\\ud800"]


def _paths(node, prefix=()):
    """Every (path to a value) in a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(doc, where, value):
    d = doc
    for k in where[:-1]:
        d = d[k]
    d[where[-1]] = value


def write_consistently(path: Path, text: bytes) -> None:
    """metadata.json and a metadata.sha256 that matches it: a wrong but consistent writer."""
    (path / "metadata.json").write_bytes(text)
    (path / "metadata.sha256").write_text(
        hashlib.sha256(KEY.encode() + b"\0" + text).hexdigest() + "\n")


def test_consistently_rewritten_metadata_never_escapes_as_another_error(entry):
    """Metadata values replaced (sidecar recomputed): rejected as CacheCorruptionError, or
    accepted as a metadata whose launch evaluates or raises a TilusError; nothing else."""
    _, path, files = entry
    rng = random.Random(SEED)
    doc = json.loads(files["metadata.json"])
    paths = [p for p in _paths(doc) if p]
    cases = [("value", rng.choice(paths), rng.choice(PALETTE)) for _ in range(600)]
    text = files["metadata.json"].decode()
    cases += [("insert", rng.randrange(len(text)), s) for s in TEXT_INSERTS for _ in range(4)]
    failures, accepted = [], 0
    for kind, where, what in cases:
        if kind == "value":
            mutated = json.loads(files["metadata.json"])
            _set(mutated, where, what)
            data = json.dumps(mutated).encode()
        else:
            data = (text[:where] + what + text[where:]).encode("utf-8", "surrogatepass")
        write_consistently(path, data)
        got = outcome(path)
        if got == "accepted":
            accepted += 1
            try:
                launch_dims(read_entry(KEY, path).metadata, {"n": 1000})
            except TilusError:
                pass
            except Exception as e:  # noqa: BLE001
                got = f"at launch: {type(e).__name__}: {e}"
        if got not in ("rejected", "accepted"):
            failures.append((kind, where, repr(what)[:40], got))
        restore(path, files)
    print(f"\n  ({accepted} benign rewrites accepted)")
    report("consistent metadata rewrites", len(cases), failures)


def _special(kind: str, target: Path, tmp_path: Path, original: bytes) -> None:
    if kind == "link_dev_zero":
        target.symlink_to("/dev/zero")
    elif kind == "link_outside_copy":
        outside = tmp_path / f"outside-{target.name}"
        outside.write_bytes(original)
        target.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    elif kind == "socket":
        cwd = os.getcwd()
        os.chdir(target.parent)        # a relative name: socket paths are short
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(target.name)
        finally:
            os.chdir(cwd)


SPECIAL = ["link_dev_zero", "link_outside_copy", "fifo", "directory", "socket"]


def test_special_files_are_refused_without_hanging(entry, tmp_path):
    cache, path, files = entry
    cases = [(name, kind) for name in files for kind in SPECIAL]
    failures = []
    for name, kind in cases:
        (path / name).unlink()
        _special(kind, path / name, tmp_path, files[name])
        got = outcome(path)
        try:
            with time_limit(10):
                listed = [e.key for e in KernelCache(cache.root).list_entries()]
                KernelCache(cache.root).info()
        except BaseException as e:  # noqa: BLE001  (a hang is a finding too)
            listed = [f"{type(e).__name__}"]
        if got != "rejected" or (name.startswith("metadata") and listed):
            failures.append((name, kind, got, listed))
        restore(path, files)
    # the entry directory itself, and odd things at the root
    for kind in SPECIAL:
        if kind == "link_outside_copy":
            continue
        odd = cache.root / cache_key(kind, "x", {})
        name = f".tmp-{kind}"
        _special(kind, odd, tmp_path, b"")
        _special(kind, cache.root / name, tmp_path, b"")
        cases.append((odd.name, kind))
        try:
            with time_limit(10):
                found = KernelCache(cache.root).lookup(odd.name)
                KernelCache(cache.root).info()
                KernelCache(cache.root).clear()
            if found is not None or any(p.name != KEY and p.exists() for p in cache.root.iterdir()):
                failures.append(("root", kind, found, sorted(os.listdir(cache.root))))
        except BaseException as e:  # noqa: BLE001
            failures.append(("root", kind, f"{type(e).__name__}: {e}"))
        cache.store(KEY, cuda_artifact("fuzz"))
    assert all(p.exists() for p in tmp_path.glob("outside-*"))   # links removed, not targets
    report("special files", len(cases), failures)


WRITER = """
import sys
sys.path.insert(0, {tests!r})
from tests.runtime.runtime_helpers import fake_artifact
from tilus.runtime import KernelCache, cache_key
cache = KernelCache({root!r})
for i in range({count}):
    key = cache_key(f"writer {w} kernel {{i}}", "x86_64", {{}})
    cache.store(key, fake_artifact(f"{w}-{{i}}", size=1 << 17))
print("done", flush=True)
"""


def test_concurrent_writers_readers_and_clear(tmp_path, caplog):
    """Three writers storing 15 entries each while this process clears and reads in a loop:
    every store succeeds, no reader reports damage, and whatever is left is whole."""
    root = tmp_path / "cache"
    root.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER.format(
        tests=str(REPO / "tests" / "runtime"), root=str(root), count=15, w=w))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for w in range(3)]
    keys = [cache_key(f"writer {w} kernel {i}", "x86_64", {}) for w in range(3) for i in range(15)]
    rng = random.Random(SEED)
    rounds = 0
    with caplog.at_level(logging.WARNING, logger="tilus.runtime.cache"):
        while any(p.poll() is None for p in procs) and rounds < 2000:
            KernelCache(root).clear()
            for k in rng.sample(keys, 5):
                KernelCache(root).lookup(k)
            KernelCache(root).list_entries()
            rounds += 1
            time.sleep(0.005)
    outputs = [p.communicate(timeout=60) for p in procs]
    failures = [err[-300:] for p, (out, err) in zip(procs, outputs)
                if p.returncode != 0 or "done" not in out]
    failures += [r.getMessage()[:200] for r in caplog.records]
    failures += _half_entries(root)
    KernelCache(root).clear()
    assert list(root.iterdir()) == []
    report(f"concurrent writers vs clear ({rounds} clear rounds)", 3 * 15 + rounds, failures)


def _half_entries(root) -> list:
    """Entries under ``root`` that do not read back whole."""
    out = []
    for p in root.iterdir():
        if not p.name.startswith("."):
            try:
                read_entry(p.name, p)
            except (CacheCorruptionError, KernelNotFoundError) as e:
                out.append(f"half entry {p.name[:12]}: {e}")
    return out


def test_killed_writers_leave_nothing_usable_and_are_cleaned(tmp_path):
    """Writers killed at random moments: no entry is ever half there, and clear() removes all
    their temporaries."""
    root = tmp_path / "cache"
    root.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rng = random.Random(SEED)
    failures, cases = [], 4
    for w in range(cases):
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER.format(
            tests=str(REPO / "tests" / "runtime"), root=str(root), count=200, w=w))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        time.sleep(0.7 + rng.random() * 0.6)
        proc.kill()
        proc.wait()
    failures += _half_entries(root)
    KernelCache(root).clear()
    if list(root.iterdir()):
        failures.append(f"left after clear: {os.listdir(root)}")
    report("killed writers", cases, failures)
