"""The kernel cache: round trip, keys, corruption, unwritable roots, maintenance."""
from __future__ import annotations

import errno
import json
import logging
import re

import pytest

from tests.runtime.runtime_helpers import VADD_IR, VERSIONS, fake_artifact, vadd_metadata
from tilus.errors import CacheError, CompilationError, DataTypeError
from tilus.runtime import Artifact, KernelCache, KernelMetadata, Param, cache, cache_key, expr
from tilus.runtime.expr import ExpressionError
from tilus.runtime import cache as cache_mod


def test_round_trip(cache, key):
    art = fake_artifact()
    entry = cache.store(key, art)
    assert entry.path == cache.root / key and entry.persistent
    fresh = KernelCache(cache.root)  # a new process: nothing in memory
    got = fresh.lookup(key)
    assert got is not None and got.metadata == entry.metadata
    assert got.metadata.params == art.metadata.params
    assert got.library_path.read_bytes() == art.files["kernel.so"]
    assert got.ir_text == art.files["ir.tilus"].decode()
    meta = json.loads((got.path / "metadata.json").read_text())
    assert set(meta["files"]) == {"ir.tilus", "kernel.so"}
    assert all(len(f["sha256"]) == 64 for f in meta["files"].values())
    assert key in fresh and "0" * 64 not in fresh


def test_store_copies_files_from_paths(cache, key, tmp_path):
    lib = tmp_path / "build" / "lib.so"
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF" + bytes(range(256)))
    entry = cache.store(key, Artifact(vadd_metadata(), {"ir.tilus": b"ir", "kernel.so": lib}))
    assert entry.library_path.read_bytes() == lib.read_bytes()


def test_memory_cache_in_front(cache, key):
    cache.store(key, fake_artifact())
    first = cache.lookup(key)
    assert cache.lookup(key) is first  # the dict, not the disk


def test_key_depends_on_ir_arch_and_versions():
    base = cache_key(VADD_IR, "sm_90", VERSIONS)
    assert base == cache_key(VADD_IR, "sm_90", dict(reversed(list(VERSIONS.items()))))
    assert len(base) == 64 and int(base, 16) >= 0
    others = {cache_key(VADD_IR + " ", "sm_90", VERSIONS), cache_key(VADD_IR, "sm_80", VERSIONS),
              cache_key(VADD_IR, "sm_90", {**VERSIONS, "tvm": "0.28"}),
              cache_key(VADD_IR, "sm_90", {**VERSIONS, "nvcc": "13.1"}),
              cache_key(VADD_IR, "sm_90", {**VERSIONS, "tilus": "9.9"})}
    assert base not in others and len(others) == 5


def test_get_or_build_builds_once(cache, key):
    calls = []

    def build():
        calls.append(1)
        return fake_artifact()

    a = cache.get_or_build(key, build)
    b = cache.get_or_build(key, build)
    c = KernelCache(cache.root).get_or_build(key, build)
    assert len(calls) == 1 and a is b and c.path == a.path


@pytest.mark.parametrize("damage", ["truncate_library", "flip_byte", "delete_library",
                                    "delete_ir", "edit_metadata", "metadata_not_json",
                                    "metadata_wrong_format", "delete_metadata",
                                    "drop_checksum"])
def test_corruption_detected_removed_and_rebuilt(cache, key, damage, caplog):
    entry = cache.store(key, fake_artifact())
    lib, meta_path = entry.library_path, entry.path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if damage == "truncate_library":
        lib.write_bytes(lib.read_bytes()[:100])
    elif damage == "flip_byte":
        data = bytearray(lib.read_bytes())
        data[7] ^= 1
        lib.write_bytes(bytes(data))
    elif damage == "delete_library":
        lib.unlink()
    elif damage == "delete_ir":
        (entry.path / "ir.tilus").unlink()
    elif damage == "edit_metadata":
        meta["params"][0]["dtype"] = "no_such_type"
        meta_path.write_text(json.dumps(meta))
    elif damage == "metadata_not_json":
        meta_path.write_text("{not json")
    elif damage == "metadata_wrong_format":
        meta["format"] = 999
        meta_path.write_text(json.dumps(meta))
    elif damage == "delete_metadata":
        meta_path.unlink()
    elif damage == "drop_checksum":
        del meta["files"]["kernel.so"]
        meta_path.write_text(json.dumps(meta))
    reader = KernelCache(cache.root)
    with caplog.at_level(logging.WARNING, logger="tilus.runtime.cache"):
        assert reader.lookup(key) is None
    assert "damaged" in caplog.text and str(entry.path) in caplog.text
    assert not entry.path.exists()
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".trash-")]
    rebuilt = reader.get_or_build(key, fake_artifact)
    assert KernelCache(cache.root).lookup(key).metadata == rebuilt.metadata


def test_metadata_is_json_only(cache, key):
    """Nothing in an entry is executed or unpickled: a pickle in metadata.json is just bad JSON."""
    import pickle

    entry = cache.store(key, fake_artifact())
    (entry.path / "metadata.json").write_bytes(pickle.dumps({"format": 1}))
    assert KernelCache(cache.root).lookup(key) is None


def test_store_replaces_a_damaged_entry_in_place(cache, key):
    entry = cache.store(key, fake_artifact("old"))
    entry.library_path.write_bytes(b"garbage")
    new = KernelCache(cache.root).store(key, fake_artifact("new"))
    assert new.library_path.read_bytes().startswith(b"new")


def test_root_under_a_regular_file_raises_cache_error_but_kernel_usable(tmp_path, key, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    c = KernelCache(blocker / "cache")
    with pytest.raises(CacheError) as err:
        c.store(key, fake_artifact())
    assert str(blocker / "cache") in str(err.value)
    assert c.lookup(key) is None and c.list_entries() == [] and c.info()["count"] == 0
    with caplog.at_level(logging.WARNING, logger="tilus.runtime.cache"):
        entry = c.get_or_build(key, fake_artifact)
    assert "in memory" in caplog.text and str(blocker / "cache") in caplog.text
    assert not entry.persistent and entry.library_path.read_bytes() == \
        fake_artifact().files["kernel.so"]
    assert c.get_or_build(key, lambda: pytest.fail("rebuilt")) is entry


def test_full_disk_raises_cache_error_and_leaves_nothing(cache, key, monkeypatch, caplog):
    real = cache_mod._write_file
    calls = []

    def full(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(cache_mod, "_write_file", full)
    with pytest.raises(CacheError, match="full") as err:
        cache.store(key, fake_artifact())
    assert str(cache.root) in str(err.value)
    assert list(cache.root.iterdir()) == []  # the temporary directory is gone
    calls.clear()
    with caplog.at_level(logging.WARNING):
        cache_fallback = KernelCache(cache.root)
        monkeypatch.setattr(cache_mod, "_write_file",
                            lambda p, d: real(p, d) if str(cache.root) not in str(p)
                            else (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
        entry = cache_fallback.get_or_build(key, fake_artifact)
    assert not entry.persistent and entry.library_path.exists()


def test_list_info_clear(cache):
    keys = [cache_key(VADD_IR + str(i), "x86_64", VERSIONS) for i in range(3)]
    for i, k in enumerate(keys):
        cache.store(k, fake_artifact(str(i), size=1000))
    (cache.root / ".tmp-leftover").mkdir()  # a killed writer's
    entries = cache.list_entries()
    assert sorted(e.key for e in entries) == sorted(keys)
    assert all(e.name == "vadd" and e.target == "llvm" and e.bytes > 1000 for e in entries)
    info = cache.info()
    assert info["count"] == 3 and info["root"] == str(cache.root)
    assert info["bytes"] == sum(e.bytes for e in entries)
    assert cache.clear() == 3
    assert list(cache.root.iterdir()) == [] and cache.info()["count"] == 0
    assert cache.lookup(keys[0]) is None  # the memory cache is cleared too


def test_stale_temporaries_removed(cache):
    cache.root.mkdir(parents=True)
    (cache.root / ".tmp-abc").mkdir()
    assert cache.remove_stale_temporaries(older_than=3600) == 0
    assert cache.remove_stale_temporaries(older_than=0) == 1


def test_default_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TILUS_CACHE_DIR", str(tmp_path / "c"))
    assert cache.default_root() == tmp_path / "c"
    assert cache.default_cache().root == tmp_path / "c"
    monkeypatch.delenv("TILUS_CACHE_DIR")
    assert cache.default_root().parts[-2:] == (".cache", "tilus")


def test_bad_key_and_artifact_rejected(cache):
    with pytest.raises(ValueError):
        cache.entry_path("../etc")
    with pytest.raises(ValueError, match="lacks kernel.so"):
        Artifact(vadd_metadata(), {"ir.tilus": b""})
    with pytest.raises(ValueError, match="bad artefact file name"):
        Artifact(vadd_metadata(), {"ir.tilus": b"", "kernel.so": b"", "../x": b""})


def test_metadata_round_trip_and_validation():
    m = vadd_metadata(launch={"grid": ["cdiv(n, 512)", 1, 1], "block": [128, 1, 1]})
    assert KernelMetadata.loads(m.dumps()) == m
    with pytest.raises(ValueError, match="not scalar parameters"):
        vadd_metadata(params=(Param("a", "pointer", "float32", min_count="m"),))
    with pytest.raises(ValueError, match="appears twice"):
        vadd_metadata(params=(Param("a", "scalar", "int32"), Param("a", "scalar", "int32")))
    with pytest.raises(DataTypeError):
        Param("a", "pointer", "float33")
    with pytest.raises(ValueError, match="power of two"):
        Param("a", "pointer", "float32", align=12)
    with pytest.raises(ExpressionError, match="not allowed"):
        Param("a", "pointer", "float32", min_count="__import__('os')")
    with pytest.raises(ValueError, match="callable"):
        Param("a", "pointer", "float32", min_count=lambda env: 4).to_json()


@pytest.mark.parametrize("text, value", [("n", 10), ("n * 4 + 1", 41), ("cdiv(n, 3)", 4),
                                         ("n // 3 % 2", 1), ("-n + max(n, 20)", 10),
                                         ("min(n, 2, 7)", 2), ("(n + 1) * (n - 1)", 99), ("7", 7)])
def test_size_expressions(text, value):
    assert expr.evaluate(text, {"n": 10}) == value


@pytest.mark.parametrize("text", ["n / 2", "n ** 2", "f(n)", "n.real", "[n]", "1.5", "n if n else 1",
                                  "cdiv(n)", "'a'", "n +"])
def test_size_expressions_rejected(text):
    with pytest.raises(ExpressionError):
        expr.evaluate(text, {"n": 10})


def test_size_expression_unknown_name_and_zero_division():
    with pytest.raises(ExpressionError, match="'m'"):
        expr.evaluate("m", {"n": 1})
    with pytest.raises(ExpressionError, match="zero"):
        expr.evaluate("cdiv(n, 0)", {"n": 1})


@pytest.mark.parametrize("text", ["min(n)", "max(n)", "cdiv", "n + min", "-" * 100000 + "n",
                                  "(" * 250 + "n" + ")" * 250, " + ".join(["n"] * 100), "n\0",
                                  "n * " * 2000 + "n"])
def test_size_expressions_beyond_the_grammar_or_limits(text):
    """Rejected when validated, never a TypeError or RecursionError at call time (issue 14, 9)."""
    with pytest.raises(ExpressionError):
        expr.validate(text)


@pytest.mark.parametrize("text", ["[" * 100000, '{"a":' * 100000, "-" * 100000, "1" * 5000])
def test_pathological_metadata_text_is_corruption(text):
    with pytest.raises(CacheError, match="metadata"):
        KernelMetadata.loads(text)


@pytest.mark.parametrize("path, value, match", [
    (("launch",), {"grid": ["min(n)", 1, 1], "block": [128, 1, 1]}, "launch.grid"),
    (("launch",), {"grid": ["a", 1, 1], "block": [128, 1, 1]}, "not scalar parameters"),
    (("launch",), {"grid": [1, 1, 1], "block": [4096, 1, 1]}, "launch.block"),
    (("params", 0, "min_count"), True, "params[0].min_count"),
    (("params", 0, "align"), 2**40, "params[0].align"),
    (("library",), "../x.so", "library"),
    (("files",), {"kernel\0.so": {"sha256": "0" * 64, "bytes": 1}}, "files"),
    (("extra",), {"device_params": [{"name": "n", "ctype": "float", "role": "scalar",
                                     "param": "n"}]}, "extra.device_params[0]"),
])
def test_metadata_fields_are_validated_strictly(path, value, match):
    d = vadd_metadata().to_json()
    target = d
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    with pytest.raises(CacheError, match=re.escape(match)):
        KernelMetadata.from_json(d)


def test_metadata_checksum_file_must_match_exactly(cache, key):
    entry = cache.store(key, fake_artifact())
    digest = (entry.path / "metadata.sha256").read_text()
    for text in (digest.strip(), digest + "\n", digest.upper(), " " + digest):
        (entry.path / "metadata.sha256").write_text(text)
        with pytest.raises(CacheError, match="does not match metadata.sha256"):
            cache_mod.read_entry(key, entry.path)


def test_metadata_the_reader_would_reject_is_never_written(cache, key):
    bad = vadd_metadata(launch={"grid": [1, 1, 1], "block": [4096, 1, 1]})
    with pytest.raises(CompilationError, match=r"launch.block\[0\]"):
        cache.store(key, Artifact(bad, {"ir.tilus": b"ir", "kernel.so": b"lib"}))
    assert [p.name for p in cache.root.iterdir()] == []
