"""Atomicity of cache writes across processes: a killed writer, and racing writers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.runtime.runtime_helpers import REPO, VADD_IR, VERSIONS, fake_artifact
from tilus.runtime import KernelCache, cache_key
from tilus.runtime.cache import STALE_TMP_SECONDS

WRITER = """
import sys, time
from tilus.runtime import cache as cache_mod
sys.path.insert(0, {tests!r})
from tests.runtime.runtime_helpers import fake_artifact
real = cache_mod._write_file
def slow(path, data):
    real(path, data)
    print("wrote", path.name, flush=True)
    time.sleep({pause})
cache_mod._write_file = slow
from tilus.logging_config import configure_logging; configure_logging()
c = cache_mod.KernelCache({root!r})
{go}
entry = c.store({key!r}, fake_artifact({tag!r}, size=1 << 16))
print("stored", entry.path, flush=True)
"""


def _writer(root, key, tag, pause=0.0, go=""):
    code = WRITER.format(tests=str(REPO / "tests" / "runtime"), pause=pause, root=str(root),
                         key=key, tag=tag, go=go)
    env = dict(os.environ, PYTHONPATH=str(REPO), TILUS_LOG="debug")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))


def test_writer_killed_mid_write_leaves_no_usable_entry(cache, key):
    proc = _writer(cache.root, key, "killed", pause=30)
    try:
        line = proc.stdout.readline()  # one file is written, the writer sleeps before the next
        assert line.startswith("wrote"), line + proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in cache.root.iterdir()]
    assert leftovers and all(n.startswith(".tmp-") for n in leftovers), leftovers
    reader = KernelCache(cache.root)
    assert reader.lookup(key) is None and reader.list_entries() == []
    # the next writer succeeds, and the killed writer's directory is cleaned up later
    entry = reader.get_or_build(key, lambda: fake_artifact("fresh"))
    assert KernelCache(cache.root).lookup(key).metadata == entry.metadata
    assert reader.remove_stale_temporaries(older_than=0) == 1
    assert [p.name for p in cache.root.iterdir()] == [key]


def test_eight_processes_store_the_same_key(cache, key):
    start = time.time() + 3.0  # everyone imports first, then all write at once
    go = f"time.sleep(max(0.0, {start} - time.time()))"
    procs = [_writer(cache.root, key, f"w{i}", go=go) for i in range(8)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        outputs.append((p.returncode, out, err))
    assert all(rc == 0 for rc, _, _ in outputs), outputs
    assert all("stored " + str(cache.root / key) in out for _, out, _ in outputs)
    assert [p.name for p in cache.root.iterdir()] == [key]  # one entry, no temporaries left
    entry = KernelCache(cache.root).lookup(key)
    assert entry is not None
    tag = entry.library_path.read_bytes()[:2].decode()
    assert tag in {f"w{i}" for i in range(8)}
    assert entry.ir_text.endswith(tag)  # all files come from the same writer
    lost = sum("written concurrently" in err for _, _, err in outputs)
    assert lost == 7  # store() never reads first: every writer but one finds the entry there


# ---- issue 14, item 10: clear() and cleanup spare live writers; one build per key -------------
def test_clear_spares_a_writer_at_work(cache, key):
    proc = _writer(cache.root, key, "busy", pause=1.5)
    try:
        line = proc.stdout.readline()
        assert line.startswith("wrote"), line + proc.stderr.read()
        temps = [p for p in cache.root.iterdir() if p.name.startswith(".tmp-")]
        assert KernelCache(cache.root).clear() == 0
        assert all(p.exists() for p in temps) and temps
        assert KernelCache(cache.root).info()["temporaries"] == 1
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stored" in out, out + err
    assert KernelCache(cache.root).lookup(key) is not None


def test_killed_writers_temporaries_are_counted_and_removed_by_age(cache, key):
    proc = _writer(cache.root, key, "killed", pause=30)
    try:
        assert proc.stdout.readline().startswith("wrote")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    (tmp,) = [p for p in cache.root.iterdir() if p.name.startswith(".tmp-")]
    info = KernelCache(cache.root).info()
    assert info["temporaries"] == 1 and info["temporary_bytes"] > 0
    other = cache_key(VADD_IR + "other", "x86_64", VERSIONS)
    KernelCache(cache.root).store(other, fake_artifact("o"))
    assert tmp.exists()                         # too recent to tell from a slow writer
    old = time.time() - 2 * STALE_TMP_SECONDS
    os.utime(tmp, (old, old))
    KernelCache(cache.root).store(other, fake_artifact("o"))
    assert not tmp.exists()                     # its owner is gone: removed on the next store
    assert KernelCache(cache.root).info()["temporaries"] == 0


BUILDER = """
import os, sys, time
sys.path.insert(0, {tests!r})
from tests.runtime.runtime_helpers import fake_artifact
from tilus.runtime import KernelCache
def build():
    with open({log!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    time.sleep(1.0)
    return fake_artifact("built")
time.sleep(max(0.0, {start} - time.time()))
entry = KernelCache({root!r}).get_or_build({key!r}, build)
print("got", entry.path, flush=True)
"""


def test_eight_processes_build_a_kernel_once(cache, key, tmp_path):
    log = tmp_path / "builds.log"
    start = time.time() + 6.0
    code = BUILDER.format(tests=str(REPO / "tests" / "runtime"), log=str(log), start=start,
                          root=str(cache.root), key=key)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
             for _ in range(8)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert all(f"got {cache.root / key}" in out for out, _ in outputs)
    assert len(log.read_text().split()) == 1, log.read_text()
    assert sorted(p.name for p in cache.root.iterdir()) == [key]   # no lock file left


def test_build_lock_held_elsewhere_is_waited_for_then_given_up(cache, key, caplog):
    import fcntl
    import logging

    cache.root.mkdir(parents=True)
    lock = cache.root / f".lock-{key}"
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)          # a builder that stopped
        slow = KernelCache(cache.root, lock_wait=0.5)
        t0 = time.monotonic()
        with caplog.at_level(logging.INFO, logger="tilus.runtime.locks"):
            entry = slow.get_or_build(key, fake_artifact)
        assert 0.5 <= time.monotonic() - t0 < 10
    assert entry.persistent and "building it here" in caplog.text
    assert "waiting for another process" in caplog.text


def test_entry_removed_while_read_is_not_reported_damaged(cache, key, monkeypatch, caplog):
    """clear() in another process removes an entry while a reader hashes its files: the reader
    finds nothing, warns about nothing and removes nothing."""
    import logging
    import shutil

    from tilus.runtime import safefile

    cache.store(key, fake_artifact())
    real = safefile.read_checked

    def cleared_meanwhile(dir_fd, name, *args):
        trash = cache.root / ".trash-by-clear"
        if not trash.exists():
            os.rename(cache.root / key, trash)
            shutil.rmtree(trash)
            trash.mkdir()
        return real(dir_fd, name, *args)

    monkeypatch.setattr(safefile, "read_checked", cleared_meanwhile)
    with caplog.at_level(logging.WARNING, logger="tilus.runtime.cache"):
        assert KernelCache(cache.root).lookup(key) is None
    assert "damaged" not in caplog.text
