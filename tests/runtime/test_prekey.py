"""The pre-key: a cached Script kernel found in a new process without building its Program, and
every doubt (changed source, changed argument, an attribute it cannot describe, a damaged or
foreign index file) falling back to the full path."""
from __future__ import annotations

import os
import dataclasses
import sys

import pytest

import tilus
from tests.runtime.runtime_helpers import REPO, run_python
from tilus.runtime import KernelCache
from tilus.runtime.index import INDEX_DIR, read_index, write_index

pytest.importorskip("tvm")
EXAMPLES = REPO / "examples"


def _vecadd(block: int = 256):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import vector_add

    return vector_add.VecAdd(block)


@pytest.fixture(scope="module")
def built():
    from tilus.backend import toolchain

    if toolchain.find_tool("nvcc") is None:
        pytest.skip("nvcc not installed")
    from tilus.backend.artifact import build_artifact

    return build_artifact(_vecadd(), "sm_90")


@pytest.fixture
def root(built, tmp_path, monkeypatch):
    """A fresh cache holding the VecAdd(256) entry; the driver launcher (loads with no GPU)."""
    KernelCache(tmp_path).store(built.key, built.artifact)
    monkeypatch.setenv("TILUS_LAUNCHER", "driver")
    return tmp_path


def _prekey(kernel, arch="sm_90"):
    from tilus import jit

    return jit.prekey(kernel, kernel.compile_time_values(), arch)


def test_second_process_loads_through_the_prekey_without_a_program(built, root):
    from tilus import jit

    kernel = _vecadd()
    first = jit.compiled_kernel(kernel, arch="sm_90", cache=KernelCache(root))
    assert first.entry.key == built.key
    assert read_index(root, _prekey(kernel)) == built.key       # written by the full path
    code = f"""
import sys
sys.path.insert(0, {str(EXAMPLES)!r})
from tilus import jit
from tilus.runtime import KernelCache
from vector_add import VecAdd
kernel = VecAdd(256)
loaded = jit.compiled_kernel(kernel, arch="sm_90", cache=KernelCache({str(root)!r}))
print("KEY", loaded.entry.key, "PROGRAMS", len(kernel.__dict__.get("_tilus_programs", {{}})))
"""
    proc = run_python(code, env={"TILUS_LOG": "debug", "TILUS_LAUNCHER": "driver"})
    assert f"KEY {built.key} PROGRAMS 0" in proc.stdout     # no Program was transpiled
    assert "pre-key hit" in proc.stderr and "cache miss" not in proc.stderr


def test_arguments_arch_and_attributes_change_the_prekey():
    a = _vecadd(256)
    assert _prekey(a) == _prekey(_vecadd(256))
    assert _prekey(a) != _prekey(_vecadd(128))
    assert _prekey(a) != _prekey(_vecadd(256), arch="sm_80")
    b = _vecadd(256)
    b.block = 512                  # attributes changed after construction
    assert _prekey(b) == _prekey(_vecadd(512))
    b.extra = 256.0                # float vs int: different programs may follow
    c = _vecadd(512)
    c.extra = 256
    assert _prekey(b) != _prekey(c)


def _scaled_kernel(scale: float):
    """A kernel class made by a factory: its closure holds ``scale``."""
    class Scaled(tilus.Script):
        def __init__(self):
            super().__init__()

        def __call__(self, n: tilus.int32, a: ~tilus.float32):
            self.attrs.blocks = 1
            self.attrs.warps = 1
            g = self.global_view(a, dtype=tilus.float32, shape=[n])
            self.store_global(g, self.load_global(g, offsets=[0], shape=[32]) * scale,
                              offsets=[0])

    return Scaled


def test_closures_and_class_attributes_are_part_of_the_prekey():
    two, three = _scaled_kernel(2.0)(), _scaled_kernel(3.0)()
    assert str(two.program()) != str(three.program())
    assert _prekey(two) != _prekey(three) and _prekey(two) == _prekey(_scaled_kernel(2.0)())
    base = type(_vecadd())
    made = [type("VecAdd", (base,), {"__module__": base.__module__, "factor": f}) for f in (2, 3)]
    assert _prekey(made[0](256)) != _prekey(made[1](256))


def test_an_attribute_it_cannot_describe_gives_no_prekey(root):
    from tilus import jit

    kernel = _vecadd()
    kernel.table = object()
    assert _prekey(kernel) is None
    loaded = jit.compiled_kernel(kernel, arch="sm_90", cache=KernelCache(root))
    assert loaded.entry is not None and not (root / INDEX_DIR).exists()


KERNEL_MODULE = """
import tilus
from helper_mod import scale


class Scaled(tilus.Script):
    def __init__(self, block: int):
        super().__init__()
        self.block = block

    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        self.attrs.blocks = tilus.cdiv(n, self.block)
        self.attrs.warps = 4
        g = self.global_view(a, dtype=tilus.float32, shape=[n])
        x = self.load_global(g, offsets=[self.blockIdx.x * self.block], shape=[self.block])
        self.store_global(g, x * scale(), offsets=[self.blockIdx.x * self.block])
"""
PRINT_PREKEY = """
import sys
sys.path.insert(0, {folder!r})
from tilus import jit
from kernel_mod import Scaled
k = Scaled(128)
print("PREKEY", jit.prekey(k, k.compile_time_values(), "sm_90"))
print("IR", str(k.program()).count("2.0"), str(k.program()).count("3.0"))
"""


def _prekey_in_new_process(folder) -> tuple[str, str]:
    out = run_python(PRINT_PREKEY.format(folder=str(folder))).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    return lines["PREKEY"], lines["IR"]


def test_a_changed_kernel_source_or_helper_module_changes_the_prekey(tmp_path):
    (tmp_path / "kernel_mod.py").write_text(KERNEL_MODULE)
    (tmp_path / "helper_mod.py").write_text("def scale():\n    return 2.0\n")
    first, ir = _prekey_in_new_process(tmp_path)
    assert ir == "1 0"
    assert _prekey_in_new_process(tmp_path)[0] == first
    (tmp_path / "helper_mod.py").write_text("def scale():\n    return 3.0\n")
    second, ir = _prekey_in_new_process(tmp_path)
    assert ir == "0 1" and second != first
    (tmp_path / "kernel_mod.py").write_text(KERNEL_MODULE.replace("x * scale()", "scale() * x"))
    third, _ = _prekey_in_new_process(tmp_path)
    assert third not in (first, second)


@pytest.mark.parametrize("damage", ["garbage", "partial", "foreign key", "directory", "link",
                                    "other kernel"])
def test_a_damaged_or_foreign_index_file_falls_back_to_the_full_path(built, root, damage,
                                                                      caplog):
    from tilus import jit

    kernel = _vecadd()
    prekey = _prekey(kernel)
    path = root / INDEX_DIR / prekey
    path.parent.mkdir()
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot a key at all" * 100)
    elif damage == "partial":
        path.write_text(built.key[:40])
    elif damage == "foreign key":
        path.write_text("0" * 64 + "\n")
    elif damage == "directory":
        path.mkdir()
    elif damage == "link":
        (root / "elsewhere").write_text(built.key + "\n")
        os.symlink(root / "elsewhere", path)
    else:   # a valid entry of another kernel: the index must not make VecAdd load it
        from tilus.runtime.cache import Artifact

        other = KernelCache(root)
        renamed = Artifact(dataclasses.replace(built.artifact.metadata, name="Other"),
                           built.artifact.files)
        foreign = "f" * 64
        other.store(foreign, renamed)
        path.write_text(foreign + "\n")
    caplog.set_level("DEBUG", logger="tilus")
    loaded = jit.compiled_kernel(kernel, arch="sm_90", cache=KernelCache(root))
    assert loaded.entry.key == built.key and loaded.entry.metadata.name == "VecAdd"
    assert "pre-key miss" in caplog.text and "pre-key hit" not in caplog.text
    if damage != "directory":                    # rewritten with the right key
        assert read_index(root, prekey) == built.key


def test_write_index_is_atomic_and_clear_removes_the_index(root):
    prekey, key = "a" * 64, "b" * 64
    write_index(root, prekey, key)
    assert read_index(root, prekey) == key
    assert [p.name for p in (root / INDEX_DIR).iterdir()] == [prekey]    # no temporary left
    with pytest.raises(ValueError):
        write_index(root, "not hex", key)
    assert read_index(root, "../" + prekey[3:]) is None
    KernelCache(root).clear()
    assert not (root / INDEX_DIR).exists()


def test_index_file_content_is_checked_not_trusted(tmp_path):
    write_index(tmp_path, "c" * 64, "d" * 64)
    (tmp_path / INDEX_DIR / ("c" * 64)).write_text("d" * 64 + "\n" + "e" * 10)
    assert read_index(tmp_path, "c" * 64) is None
