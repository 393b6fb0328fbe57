"""Tune-on-call (``MyKernel()`` without its schedule parameters) and multi-name autotune entries,
on the CPU: the interpreter takes the first valid config and logs it; the GPU path is driven with
a fake "CUDA" detection, a FakeTimer and a temporary database."""
import functools
import logging

import numpy as np
import pytest

import tilus
from tilus.autotune import FakeTimer, TuningDatabase, configs_of, on_call, space_of
from tilus.errors import AutotuneError


@tilus.autotune("block, warps", [(2048, 4), (128, 8), (64, 2)])
@tilus.autotune("scale_twice", [False, True])
class Scale(tilus.Script):
    def __init__(self, factor: float, block: int, warps: int, scale_twice: bool):
        super().__init__()
        self.factor, self.block, self.warps, self.twice = factor, block, warps, scale_twice

    def __call__(self, n: tilus.int32, a: ~tilus.float32, c: ~tilus.float32, rows: int):
        self.static_assert(self.block * rows <= 4096, "the tile is too big")
        self.attrs.blocks = tilus.cdiv(n, self.block)
        self.attrs.warps = self.warps
        ga = self.global_view(a, dtype=tilus.float32, shape=[n])
        gc = self.global_view(c, dtype=tilus.float32, shape=[n])
        x = self.load_global(ga, offsets=[self.blockIdx.x * self.block], shape=[self.block])
        y = x * self.factor
        if self.twice:
            y = y * self.factor
        self.store_global(gc, y, offsets=[self.blockIdx.x * self.block])


def test_multi_name_entries_give_tuples_together():
    assert space_of(Scale) == [("block, warps", [(2048, 4), (128, 8), (64, 2)]),
                               ("scale_twice", [False, True])]
    assert configs_of(space_of(Scale))[:3] == [
        {"block": 2048, "warps": 4, "scale_twice": False},
        {"block": 2048, "warps": 4, "scale_twice": True},
        {"block": 128, "warps": 8, "scale_twice": False}]
    with pytest.raises(AutotuneError, match="tuple of 2 values"):
        tilus.autotune("block, warps", [64])
    with pytest.raises(AutotuneError, match="identifier"):
        tilus.autotune("block, 3d", [(1, 2)])


def test_interpreter_call_takes_the_first_valid_config_and_logs_it(caplog):
    kernel = Scale(3.0)                       # no schedule: decided at the first call
    a = np.arange(300, dtype=np.float32)
    c = np.zeros(300, np.float32)
    with caplog.at_level(logging.INFO, logger="tilus.autotune"):
        kernel(300, a, c, 4)                  # block 2048 * 4 rows fails the static_assert
    np.testing.assert_array_equal(c, a * 3)
    assert (kernel.block, kernel.warps, kernel.twice) == (128, 8, False)
    assert "first valid config {'block': 128, 'warps': 8, 'scale_twice': False}" in caplog.text


def test_program_and_partial_schedules():
    assert Scale(2.0).program(rows=1).warps == 4   # the first config fits one row
    with pytest.raises(AutotuneError, match="every tuned parameter or none"):
        Scale(2.0, block=64)
    with pytest.raises(AutotuneError, match="none of its 6 configs"):
        Scale(2.0).program(rows=4096)


def test_cuda_call_tunes_and_records(monkeypatch, tmp_path):
    db = TuningDatabase(tmp_path / "tuning.json")
    timer = FakeTimer(lambda cfg: 1.0 if cfg == {"block": 64, "warps": 2, "scale_twice": True}
                      else 2.0)
    monkeypatch.setattr(on_call, "_on_cuda", lambda values: True)
    monkeypatch.setattr(on_call, "Autotuner", functools.partial(
        on_call.Autotuner, timer=timer, database=db, jobs=1, progress=False))
    monkeypatch.setattr(on_call, "build_for_call", lambda consts, kernel: consts)
    kernel = Scale(0.5)
    a = np.ones(64, np.float32)
    c = np.zeros(64, np.float32)
    kernel(64, a, c, 2)   # tuned (fake), then interpreted: the arrays are not really on a GPU
    assert (kernel.block, kernel.warps, kernel.twice) == (64, 2, True)
    np.testing.assert_array_equal(c, a * 0.25)
    assert len(timer.calls) == 6


def test_debug_schedule_is_the_whole_space(caplog):
    class Debug(Scale):
        debug_schedule = dict(block=64, warps=2, scale_twice=True)

    kernel = Debug(2.0)
    a = np.arange(100, dtype=np.float32)
    c = np.zeros(100, np.float32)
    with caplog.at_level(logging.INFO, logger="tilus.autotune"):
        kernel(100, a, c, 1)
    np.testing.assert_array_equal(c, a * 4)
    assert (kernel.block, kernel.warps) == (64, 2)
    assert "(of 1)" in caplog.text
