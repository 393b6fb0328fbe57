"""The `tilus` command line: cache list/info/clear, build --help / --emit, bench, and TILUS_LOG."""
from __future__ import annotations

import json
import logging

import pytest

from tests.runtime.runtime_helpers import VADD_IR, VERSIONS, fake_artifact, run_python
from tilus.__main__ import main, parse_param
from tilus.logging_config import configure_logging
from tilus.runtime import KernelCache, cache_key


@pytest.fixture
def filled(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TILUS_CACHE_DIR", str(root))
    c = KernelCache(root)
    keys = [cache_key(VADD_IR + str(i), "x86_64", VERSIONS) for i in range(2)]
    for k in keys:
        c.store(k, fake_artifact(k[:4], size=2000))
    return root, keys


def test_cache_info_list_clear(filled, capsys):
    root, keys = filled
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(root) in out and "entries: 2" in out
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 2 and info["bytes"] > 4000
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert all(k[:16] in out for k in keys) and "vadd" in out and "llvm" in out
    assert main(["cache", "list", "--json"]) == 0
    assert sorted(e["key"] for e in json.loads(capsys.readouterr().out)) == sorted(keys)
    assert main(["cache", "clear"]) == 0
    assert "removed 2 cached kernels" in capsys.readouterr().out
    assert main(["cache", "list"]) == 0
    assert "no cached kernels" in capsys.readouterr().out


def test_cache_dir_option(tmp_path, capsys):
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "elsewhere")]) == 0
    assert str(tmp_path / "elsewhere") in capsys.readouterr().out


def test_unwritable_cache_is_reported(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    # reading a cache under a regular file works (it is empty); nothing to clear
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "file" / "c")]) == 0
    assert "removed 0" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["cache", "--help"], ["cache", "list", "--help"],
                                  ["cache", "info", "--help"], ["cache", "clear", "--help"],
                                  ["build", "--help"], ["bench", "--help"], ["bundle", "--help"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: tilus" in capsys.readouterr().out


def test_build_help_lists_the_emits(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = capsys.readouterr().out
    assert all(x in out for x in ("--arch", "--param", "--emit", "ir,cuda,ptx,sass,resources"))


KERNEL_FILE = '''
class Fake:
    """Stands in for a tilus.Script until the DSL lands: anything with program()."""
    def __init__(self, block=128, dtype="float16"):
        self.block, self.dtype = block, dtype
    def program(self):
        return f"program fake(block={self.block!r}, dtype={self.dtype})"
'''


def test_build_emit_ir(tmp_path, capsys):
    f = tmp_path / "k.py"
    f.write_text(KERNEL_FILE)
    assert main(["build", f"{f}:Fake", "--param", "block=256", "--param", "dtype=uint4",
                 "--emit", "ir"]) == 0
    assert capsys.readouterr().out.strip() == "program fake(block=256, dtype=uint4)"


@pytest.mark.parametrize("emit", ["cuda", "ptx", "sass", "resources"])
def test_build_other_emits_need_a_real_script(tmp_path, capsys, emit):
    f = tmp_path / "k.py"
    f.write_text(KERNEL_FILE)
    assert main(["build", f"{f}:Fake", "--emit", emit]) == 2
    assert f"--emit {emit} needs a tilus.Script" in capsys.readouterr().err


VECADD_FILE = '''
import tilus


class VecAdd(tilus.Script):
    def __init__(self, block: int = 256):
        super().__init__()
        self.block = block

    def __call__(self, n: tilus.int32, a: ~tilus.float32, b: ~tilus.float32, c: ~tilus.float32):
        self.attrs.blocks = tilus.cdiv(n, self.block)
        self.attrs.warps = 4
        ga = self.global_view(a, dtype=tilus.float32, shape=[n])
        gb = self.global_view(b, dtype=tilus.float32, shape=[n])
        gc = self.global_view(c, dtype=tilus.float32, shape=[n])
        x = self.load_global(ga, offsets=[self.blockIdx.x * self.block], shape=[self.block])
        y = self.load_global(gb, offsets=[self.blockIdx.x * self.block], shape=[self.block])
        self.store_global(gc, x + y, offsets=[self.blockIdx.x * self.block])
'''


@pytest.mark.parametrize("emit, expect", [("cuda", "__global__"), ("ptx", ".entry"),
                                          ("sass", "LDG.E.128"), ("resources", '"registers"')])
def test_build_emits_compiled_code(tmp_path, capsys, emit, expect):
    from tilus.backend import toolchain

    if not toolchain.have_compiler() or (emit == "sass" and toolchain.find_tool("cuobjdump") is None
                                         and toolchain.find_tool("nvdisasm") is None):
        pytest.skip("needs nvcc (and a disassembler for sass)")
    f = tmp_path / "vadd.py"
    f.write_text(VECADD_FILE)
    assert main(["build", f"{f}:VecAdd", "--param", "block=512", "--arch", "sm_80",
                 "--emit", emit]) == 0
    assert expect in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["build", "nofile.py:K"], "no such file"),
    (["build", "nofile.py"], "expected FILE.py:KernelClass"),
    (["build", "{f}:Missing"], "defines no 'Missing' (kernel classes there: Fake)"),
    (["build", "{f}:Fake", "--param", "nonsense"], "expected NAME=VALUE"),
    (["build", "{f}:Fake", "--param", "zz=1"], "cannot instantiate"),
    (["build", "{f}:Fake", "--arch", "sm_70"], "sm_80 or newer"),
    (["bench"], "name a benchmark: matmul"),
])
def test_build_errors(tmp_path, capsys, argv, message):
    f = tmp_path / "k.py"
    f.write_text(KERNEL_FILE)
    argv = [a.format(f=f) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_build_emit_ir_of_a_dsl_kernel(capsys):
    from pathlib import Path

    import tilus

    example = Path(__file__).resolve().parents[2] / "examples" / "vector_add.py"
    assert main(["build", f"{example}:VecAdd", "--param", "block=128", "--emit", "ir"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("kernel VecAdd(") and "blocks [cdiv(n, 128)]" in text
    assert str(tilus.ir.parse(text)) == text


def test_parse_param():
    from tilus import dtypes

    assert parse_param("a=3") == ("a", 3)
    assert parse_param("a=(1, 2)") == ("a", (1, 2))
    assert parse_param("a=True") == ("a", True)
    assert parse_param("t=uint4") == ("t", dtypes.get("uint4"))
    assert parse_param("s=hello") == ("s", "hello")


def test_console_entry_point_runs(tmp_path):
    proc = run_python("import sys; from tilus.__main__ import main; sys.exit(main(['cache', 'info']))",
                      env={"TILUS_CACHE_DIR": str(tmp_path)})
    assert str(tmp_path) in proc.stdout
    proc = run_python("import runpy, sys; sys.argv = ['tilus', '--version']; "
                      "runpy.run_module('tilus', run_name='__main__')", check=False)
    assert proc.returncode == 0 and "tilus 0." in proc.stdout


def test_tilus_log_debug(tmp_path):
    proc = run_python(f"""
        from tilus.logging_config import configure_logging
        configure_logging()
        import sys; sys.path.insert(0, 'tests/runtime')
        from runtime_helpers import fake_artifact
        from tilus.runtime import KernelCache
        KernelCache({str(tmp_path)!r}).store('ab' * 32, fake_artifact())
    """, env={"TILUS_LOG": "debug"})
    assert "[tilus DEBUG tilus.runtime.cache] stored abababababab" in proc.stderr
    quiet = run_python(proc.args[2])
    assert quiet.stderr == ""


def test_configure_logging_levels():
    logger = configure_logging("warning")
    try:
        assert logger.level == logging.WARNING and len(logger.handlers) == 1
        configure_logging("info")
        assert logger.level == logging.INFO and len(logger.handlers) == 1  # replaced, not stacked
        with pytest.raises(ValueError, match="TILUS_LOG='loud'"):
            configure_logging("loud")
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def test_bench_matmul_dry_run_hands_over_to_the_script(tmp_path, capsys):
    assert main(["bench", "matmul", "--dry-run", "--out", str(tmp_path), "--models", "llama3-8b",
                 "--m", "1", "--types", "u4", "--no-plot"]) == 0
    assert list(tmp_path.glob("*.json"))


def test_cache_info_counts_temporaries(filled, capsys):
    root, _ = filled
    (root / ".tmp-left-by-a-killed-writer").mkdir()
    (root / ".tmp-left-by-a-killed-writer" / "kernel.so").write_bytes(b"x" * 3000)
    assert main(["cache", "info"]) == 0
    assert "temporaries: 1 (2.9 KiB" in capsys.readouterr().out
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["temporaries"] == 1 and info["temporary_bytes"] == 3000


def test_bundle_tgz_packs_this_manifests_kernels_only(tmp_path):
    """`tilus bundle --tgz`: the pieces a GPU machine needs and the manifest's cache entries; an
    entry an earlier build left in DIR/cache stays out (a device call carries 64 MiB)."""
    import json
    import tarfile

    from tilus.bundle import pack_tgz

    out = tmp_path / "b"
    for rel in ("run_on_gpu.sh", "tvm_runtime/libtvm_runtime.so", "src/tilus/__init__.py",
                "cache/aaa/kernel.cubin", "cache/stale/kernel.cubin"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(rel)
    manifest = {"kernels": [{"key": "aaa"}, {"key": "aaa"}]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    size = pack_tgz(out, tmp_path / "b.tgz", manifest)
    assert size == (tmp_path / "b.tgz").stat().st_size
    with tarfile.open(tmp_path / "b.tgz") as tar:
        names = tar.getnames()
    assert "cache/aaa/kernel.cubin" in names and "run_on_gpu.sh" in names
    assert "src/tilus/__init__.py" in names and "tvm_runtime/libtvm_runtime.so" in names
    assert not [n for n in names if "stale" in n] and "wheels" not in names
    assert not list(tmp_path.glob("*.tmp"))


def test_bundle_loads_a_specs_file_that_defines_dataclasses(tmp_path):
    """A bundle_specs() file is loaded as a module registered in sys.modules (dataclasses with
    postponed annotations look their module up there; tests/gpu/kernels.py has one)."""
    from tilus.bundle import resolve_targets

    specs = tmp_path / "specs_dc.py"
    specs.write_text("from __future__ import annotations\nfrom dataclasses import dataclass\n\n"
                     "@dataclass(frozen=True)\nclass Case:\n    name: str\n\n"
                     "def bundle_specs():\n    return []\n")
    assert resolve_targets([str(specs)], {}) == []
