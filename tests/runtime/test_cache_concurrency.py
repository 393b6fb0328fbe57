"""Atomicity of cache writes across processes: a killed writer, and racing writers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.runtime.runtime_helpers import REPO, fake_artifact
from tilus.runtime import KernelCache

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
