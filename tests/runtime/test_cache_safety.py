"""The cache loads only what it checked (issue 14, items 6-9): no time-of-check/time-of-use gap,
a checksummed and strictly validated metadata.json, regular files only, and every kind of damaged
metadata reported as CacheCorruptionError and rebuilt."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

import numpy as np
import pytest

from tests.runtime.conftest import build_vadd_library
from tests.runtime.runtime_helpers import cuda_artifact, fake_artifact, time_limit
from tilus.__main__ import main
from tilus.errors import CacheCorruptionError
from tilus.runtime import KernelCache, LoadedKernel, cache_key, kernel as kernel_mod, libraries


def rewrite_metadata(path, key, edit) -> None:
    """Apply ``edit`` to the entry's metadata (a dict, or a function of the text) and write
    metadata.sha256 to match, as a consistent but wrong writer would."""
    meta_file = path / "metadata.json"
    if callable(edit):
        text = edit(meta_file.read_text()).encode()
    else:
        meta = json.loads(meta_file.read_text())
        for dotted, value in edit.items():
            *parents, last = dotted.split(".")
            d = meta
            for p in parents:
                d = d[int(p)] if isinstance(d, list) else d[p]
            if isinstance(d, list):
                d[int(last)] = value
            else:
                d[last] = value
        text = json.dumps(meta).encode()
    meta_file.write_bytes(text)
    (path / "metadata.sha256").write_text(
        hashlib.sha256(key.encode() + b"\0" + text).hexdigest() + "\n")


def assert_rejected(cache, key, caplog, match: str) -> None:
    with caplog.at_level(logging.WARNING, logger="tilus.runtime.cache"), time_limit(20):
        assert KernelCache(cache.root).lookup(key) is None
    assert match in caplog.text, caplog.text
    assert not (cache.root / key).exists() and not (cache.root / key).is_symlink()
    assert KernelCache(cache.root).get_or_build(key, fake_artifact) is not None  # rebuilt


# ---- item 6: load only checked bytes ----------------------------------------------------------
@pytest.fixture(scope="module")
def vsub_library(tmp_path_factory):
    """A library whose function is also called vadd, but subtracts."""
    return build_vadd_library(tmp_path_factory.mktemp("vsub") / "vsub.so", subtract=True)


def test_library_replaced_after_lookup_is_not_loaded(cache, key, vadd_artifact, vsub_library):
    cache.store(key, vadd_artifact)
    entry = KernelCache(cache.root).lookup(key)          # checked here
    shutil.copyfile(vsub_library, entry.library_path)   # replaced afterwards
    with pytest.raises(CacheCorruptionError, match=r"kernel.so (is damaged|has \d+ bytes)"):
        LoadedKernel.load(entry)


def test_the_loader_gets_a_private_checked_copy(cache, key, vadd_artifact, monkeypatch):
    cache.store(key, vadd_artifact)
    entry = KernelCache(cache.root).lookup(key)
    seen = []
    real = libraries.load_module

    def spy(path, cuda):
        seen.append((path, path.read_bytes(), oct(path.stat().st_mode & 0o777)))
        return real(path, cuda)

    monkeypatch.setattr(kernel_mod, "load_module", spy)
    kernel = LoadedKernel.load(entry)
    (path, data, mode), = seen
    assert path != entry.library_path and path.parent.name.startswith(".load-")
    assert data == entry.library_path.read_bytes() and mode == "0o600"
    assert not path.parent.exists()                      # removed once loaded; the mapping stays
    a, b, c = np.arange(4, dtype=np.float32), np.ones(4, np.float32), np.zeros(4, np.float32)
    kernel(a, b, c, 4)
    assert (c == a + 1).all()


@pytest.mark.parametrize("launcher", ["tvm", "driver"])
def test_cubin_is_checked_before_the_loader_gets_it(cache, monkeypatch, launcher):
    key = cache_key("cuda kernel", "sm_90", {})
    cache.store(key, cuda_artifact())
    entry = KernelCache(cache.root).lookup(key)
    (entry.path / "kernel.cubin").write_bytes(b"\x7fELF tampered")
    from tilus.runtime import cubins

    registered = []
    monkeypatch.setattr(cubins, "register", lambda digest, cubin: registered.append(cubin))
    with pytest.raises(CacheCorruptionError, match="kernel.cubin is damaged"):
        LoadedKernel.load(entry, launcher=launcher)
    assert registered == []


# ---- item 7: metadata.json is checksummed and tied to its key ---------------------------------
@pytest.mark.parametrize("field, value", [
    ("launch.grid.0", "n"), ("launch.block.0", 1024), ("params.0.min_count", "1"),
    ("extra.device_params.1.ctype", "long long"), ("params.1.dtype", "int64"),
    ("extra.cuda_source_sha256", "0" * 64)])
def test_edited_metadata_is_detected(cache, caplog, field, value):
    key = cache_key("cuda kernel", "sm_90", {})
    entry = cache.store(key, cuda_artifact())
    meta = json.loads((entry.path / "metadata.json").read_text())
    d = meta
    *parents, last = field.split(".")
    for p in parents:
        d = d[int(p)] if isinstance(d, list) else d[p]
    d[int(last) if isinstance(d, list) else last] = value
    (entry.path / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    assert_rejected(cache, key, caplog, "does not match metadata.sha256")


def test_metadata_of_another_entry_is_rejected(cache, caplog):
    a, b = (cache_key(f"kernel {i}", "x86_64", {}) for i in range(2))
    cache.store(a, fake_artifact("a"))
    cache.store(b, fake_artifact("b"))
    for name in ("metadata.json", "metadata.sha256", "kernel.so", "ir.tilus"):
        shutil.copyfile(cache.root / a / name, cache.root / b / name)
    assert_rejected(cache, b, caplog, "does not match metadata.sha256")


@pytest.mark.parametrize("field, value, match", [
    ("launch.block", [2048, 1, 1], "launch.block[0]"),
    ("launch.block", [512, 4, 1], "2048 threads"),
    ("launch.grid", ["min(n)", 1, 1], "min takes at least 2 arguments"),
    ("launch.grid", ["m", 1, 1], "not scalar parameters"),
    ("launch.grid", [1.5, 1, 1], "launch.grid[0]"),
    ("launch.shared_bytes", -1, "launch.shared_bytes"),
    ("params.0.min_count", -1, "params.0.min_count".replace(".0.", "[0].")),
    ("params.0.min_count", True, "params[0].min_count"),
    ("params.0.align", True, "params[0].align"),
    ("params.0.index_bits", 33, "params[0].index_bits"),
    ("params.0.contiguous", "yes", "params[0].contiguous"),
    ("library", "../evil.so", "library"),
    ("entry", "k; rm -rf", "entry"),
    ("target", "rocm", "target"),
    ("arch", "sm_90; x", "arch"),
    ("extra.pointer_storage", {"x": "Tensor"}, "extra.pointer_storage.x"),
    ("extra.pointer_storage", {"n": "int32"}, "extra.pointer_storage.n"),
    ("extra.pointer_storage", {}, "storage of every pointer parameter"),
    ("extra", {}, "cuda_source_sha256 is missing"),
    ("extra.device_params.1.ctype", "float", "extra.device_params[1]"),
    ("extra.device_params.0.role", "len", "extra.device_params[0]"),
    ("extra.kernel_name", "k\u0000", "extra.kernel_name"),
    ("extra.threads", 0, "extra.threads"),
    ("extra.surprise", 1, "unknown fields"),
    ("files.kernel.so", {"sha256": "x", "bytes": 1}, "files.kernel.so.sha256"),
    ("versions", {"tvm": 27}, "versions.tvm"),
])
def test_every_metadata_field_is_validated(cache, caplog, field, value, match):
    key = cache_key("cuda kernel", "sm_90", {})
    entry = cache.store(key, cuda_artifact())
    parts = field.split(".")
    if parts[0] == "files":
        parts = ["files", ".".join(parts[1:])]
    meta = json.loads((entry.path / "metadata.json").read_text())
    d = meta
    for p in parts[:-1]:
        d = d[int(p)] if isinstance(d, list) else d[p]
    d[int(parts[-1]) if isinstance(d, list) else parts[-1]] = value
    rewrite_metadata(entry.path, key, lambda _: json.dumps(meta))
    assert_rejected(cache, key, caplog, match)


# ---- item 8: regular files only ---------------------------------------------------------------
@pytest.mark.parametrize("target", ["kernel.so", "metadata.json", "ir.tilus"])
@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory"])
def test_special_files_neither_hang_nor_are_read(cache, key, caplog, target, kind):
    entry = cache.store(key, fake_artifact())
    path = entry.path / target
    path.unlink()
    if kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with time_limit(20):
        assert main(["cache", "list", "--cache-dir", str(cache.root)]) == 0
        assert main(["cache", "info", "--cache-dir", str(cache.root)]) == 0
    assert_rejected(cache, key, caplog, target)


def test_library_behind_a_symlink_is_not_loaded(cache, key, caplog, tmp_path):
    entry = cache.store(key, fake_artifact())
    outside = tmp_path / "evil.so"
    shutil.copyfile(entry.library_path, outside)      # same bytes: the checksum would pass
    entry.library_path.unlink()
    entry.library_path.symlink_to(outside)
    assert_rejected(cache, key, caplog, "symbolic link")
    assert outside.exists()


def test_entry_directory_behind_a_symlink_is_not_used(cache, key, caplog, tmp_path):
    elsewhere = KernelCache(tmp_path / "elsewhere")
    elsewhere.store(key, fake_artifact())
    cache.root.mkdir(parents=True)
    (cache.root / key).symlink_to(elsewhere.root / key)
    assert_rejected(cache, key, caplog, "symbolic link")
    assert (elsewhere.root / key / "kernel.so").exists()   # the link went, not its target


def test_oversized_file_is_refused_before_it_is_read(cache, key, caplog):
    entry = cache.store(key, fake_artifact(size=4096))
    with open(entry.library_path, "ab") as f:
        f.truncate(1 << 40)                           # a 1 TiB sparse file
    assert_rejected(cache, key, caplog, "more than the 4096 expected")


# ---- item 9: whatever the damage, CacheCorruptionError and a rebuild --------------------------
@pytest.mark.parametrize("name, edit, match", [
    ("deep_json", lambda t: "[" * 100000, "nested too deeply"),
    ("deep_object", lambda t: '{"a":' * 100000, "nested too deeply"),
    ("long_minus", lambda t: t.replace('"cdiv(n, 128)"', '"' + "-" * 100000 + 'n"'),
     "launch.grid[0]"),
    ("deep_parens", lambda t: t.replace('"cdiv(n, 128)"', '"' + "(" * 250 + "n" + ")" * 250 + '"'),
     "launch.grid[0]"),
    ("nul_in_file_name", lambda t: t.replace('"ir.tilus"', '"ir\\u0000.tilus"'), "files"),
    ("min_of_one", lambda t: t.replace('"cdiv(n, 128)"', '"min(n)"'), "min takes"),
    ("huge_number", lambda t: t.replace('"bytes": 4', '"bytes": 1' + "0" * 5000), "metadata"),
    ("not_utf8", lambda t: t.replace('"k"', '"\udcff"'), "metadata"),
])
def test_damaged_metadata_is_corruption_and_rebuilt(cache, caplog, capsys, name, edit, match):
    key = cache_key("cuda kernel", "sm_90", {})
    entry = cache.store(key, cuda_artifact())

    def encoded(text):
        return edit(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace") \
            if name == "not_utf8" else edit(text)

    rewrite_metadata(entry.path, key, encoded)
    for command in (["cache", "list"], ["cache", "info"], ["cache", "list", "--json"]):
        assert main([*command, "--cache-dir", str(cache.root)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert_rejected(cache, key, caplog, match)
