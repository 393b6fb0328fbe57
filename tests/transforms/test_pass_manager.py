"""PassManager: runs passes in order, verifies after each, dumps the IR, logs timings."""
from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from tilus import dtypes as D
from tilus.errors import CompilationError
from tilus.ir import parse
from tilus.ir.builder import ProgramBuilder
from tilus.transforms import LayoutInference, Pass, PassManager
from tilus.transforms.base import DUMP_ENV


def small_program():
    b = ProgramBuilder("small")
    pa = b.param("a", ~D.float32)
    ga = b.global_view(pa, D.float32, [64], name="ga")
    b.warps = 1
    x = b.load_global(ga, [0], [64], name="x")
    b.store_global(ga, b.unary("exp", x, name="y"), [0])
    return b.finish()


class Rename(Pass):
    name = "rename"

    def __init__(self, log):
        self.log = log

    def run(self, program):
        self.log.append(self.name)
        return replace(program, name=program.name + "_r")


class Breaker(Pass):
    name = "breaker"

    def run(self, program):
        return replace(program, warps=0)


def test_passes_run_in_order():
    log = []
    out = PassManager([Rename(log), Rename(log)], dump_dir=None).run(small_program())
    assert out.name == "small_r_r" and log == ["rename", "rename"]


def test_dump_dir_receives_the_ir_after_every_pass(tmp_path):
    pm = PassManager([Rename([]), LayoutInference()], dump_dir=tmp_path / "ir")
    out = pm.run(small_program())
    files = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert files == ["00-input.tilus", "01-rename.tilus", "02-layout_inference.tilus"]
    text = (tmp_path / "ir" / "02-layout_inference.tilus").read_text()
    assert parse(text) == out
    assert "layout=" in text and "layout=" not in (tmp_path / "ir" / "01-rename.tilus").read_text()


def test_dump_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(DUMP_ENV, str(tmp_path))
    PassManager([LayoutInference()]).run(small_program())
    assert (tmp_path / "01-layout_inference.tilus").exists()
    monkeypatch.delenv(DUMP_ENV)
    other = tmp_path / "none"
    PassManager([LayoutInference()]).run(small_program())
    assert not other.exists()


def test_a_pass_that_breaks_the_ir_is_named():
    with pytest.raises(CompilationError, match="after pass breaker"):
        PassManager([Breaker()]).run(small_program())
    PassManager([Breaker()], verify=False).run(small_program())


def test_pass_times_are_logged_at_debug(caplog):
    pm = PassManager([LayoutInference()])
    with caplog.at_level(logging.DEBUG, logger="tilus"):
        pm.run(small_program())
    assert any("pass layout_inference took" in r.getMessage() for r in caplog.records)
    assert pm.times["layout_inference"] >= 0
