"""tilus.autotune on the CPU: the decorator's space, pruning, parallel builds in 2 worker processes
(injectable builder), a FakeTimer (only here), the persisted choice, a second tuner (and a second
process) that starts tuned without building or timing."""
import json
import os
import subprocess
import sys
import time

import pytest

import tilus
from tilus.autotune import Autotuner, FakeTimer, TuningDatabase, configs_of, space_of
from tilus.errors import AutotuneError


@tilus.autotune("block", [32, 64, 128, 256])
@tilus.autotune("warps", [2, 4])
class ToyAdd(tilus.Script):
    def __init__(self, scale: float = 1.0, block: int = 64, warps: int = 4):
        super().__init__()
        self.scale, self.block, self.warps = scale, block, warps

    @staticmethod
    def prune_config(config, fixed):
        return "too many warps for a small block" if config["block"] == 32 and \
            config["warps"] == 4 else None

    def __call__(self, n: tilus.int32, a: ~tilus.float32, c: ~tilus.float32):
        self.attrs.blocks = tilus.cdiv(n, self.block)
        self.attrs.warps = self.warps
        ga = self.global_view(a, dtype=tilus.float32, shape=[n])
        gc = self.global_view(c, dtype=tilus.float32, shape=[n])
        x = self.load_global(ga, offsets=[self.blockIdx.x * self.block], shape=[self.block])
        self.store_global(gc, x * self.scale, offsets=[self.blockIdx.x * self.block])


def slow_builder(kernel):
    """Builds (constructs the Program) slowly enough that both workers get work; records its pid."""
    time.sleep(0.15)
    if kernel.block == 256 and kernel.warps == 2:
        raise RuntimeError("pretend ptxas ran out of registers")
    return {"pid": os.getpid(), "ir_lines": len(str(kernel.program()).splitlines())}


def quick_builder(kernel):
    return "ok"


def failing_builder(kernel):
    raise AssertionError("a tuned second instance must not build")


def cost(config):      # fake milliseconds: block 128 with 4 warps is the fastest
    return abs(config["block"] - 128) / 64 + (0 if config["warps"] == 4 else 0.5) + 1.0


def test_space_and_decorator_errors():
    assert space_of(ToyAdd) == [("block", [32, 64, 128, 256]), ("warps", [2, 4])]
    assert len(configs_of(space_of(ToyAdd))) == 8
    assert callable(tilus.autotune) and tilus.autotune.autotune is not None
    with pytest.raises(AutotuneError, match="no parameter 'nope'"):
        tilus.autotune("nope", [1])(ToyAdd)
    with pytest.raises(AutotuneError, match="given twice"):
        tilus.autotune("block", [1])(ToyAdd)
    with pytest.raises(AutotuneError, match="at least one value"):
        tilus.autotune("block", [])


def test_tune_parallel_prune_persist_and_reload(tmp_path):
    db = TuningDatabase(tmp_path / "cache" / "tuning.json")
    timer = FakeTimer(cost)
    extra_prune = lambda c: c["block"] == 64 and c["warps"] == 2     # noqa: E731
    tuner = Autotuner(ToyAdd, fixed={"scale": 2.0}, prune=extra_prune, builder=slow_builder,
                      timer=timer, jobs=2, database=db, progress=False)
    keep, pruned = tuner.candidates()
    assert len(keep) == 6 and len(pruned) == 2
    assert ({"block": 32, "warps": 4}, "too many warps for a small block") in pruned
    ran = []
    res = tuner.tune("n1024", run=lambda k: ran.append(k), device="cpu")
    assert res.config == {"block": 128, "warps": 4} and not res.from_database
    assert res.time_ms == pytest.approx(1.0)
    pids = {b.pid for b in res.builds}
    assert len(pids) == 2 and os.getpid() not in pids           # two worker processes built
    assert [b.config for b in res.failed] == [{"block": 256, "warps": 2}]
    assert len(timer.calls) == 5 and not ran                     # FakeTimer never runs kernels
    assert all(b.summary["ir_lines"] > 3 for b in res.builds if b.ok)
    data = json.loads(db.path.read_text())
    entry = data["entries"][tuner.name]["cpu"]["n1024"]
    assert entry["config"] == {"block": 128, "warps": 4} and entry["candidates"] == 5
    assert not list(db.path.parent.glob(".tuning-*"))            # no temporaries left

    # a second tuner (same kernel, new objects) starts tuned: no builds, no timing
    timer2 = FakeTimer(cost)
    again = Autotuner(ToyAdd, fixed={"scale": 2.0}, builder=failing_builder, timer=timer2,
                      jobs=2, database=TuningDatabase(db.path))
    res2 = again.tune("n1024", run=lambda k: None, device="cpu")
    assert res2.from_database and res2.config == {"block": 128, "warps": 4}
    assert timer2.calls == [] and res2.builds == []
    kern = again.best_kernel("n1024", run=lambda k: None, device="cpu")
    assert isinstance(kern, ToyAdd) and kern.block == 128 and kern.scale == 2.0
    # another bucket / other fixed parameters are separate entries
    other = Autotuner(ToyAdd, fixed={"scale": 3.0}, builder=slow_builder, timer=FakeTimer(cost),
                      jobs=1, database=db)
    assert other.name != tuner.name and other.lookup("n1024", "cpu") is None


def test_second_process_starts_tuned(tmp_path):
    db = TuningDatabase(tmp_path / "tuning.json")
    Autotuner(ToyAdd, builder=quick_builder, timer=FakeTimer(cost), jobs=1,
              database=db).tune("b", run=lambda k: None, device="cpu")
    code = (
        "import sys; from tilus.autotune import Autotuner, TuningDatabase\n"
        "from tests.ops.test_autotune import ToyAdd, failing_builder\n"
        "def no_timer(fn, config): raise AssertionError('timed')\n"
        f"t = Autotuner(ToyAdd, builder=failing_builder, timer=no_timer, "
        f"database=TuningDatabase({str(db.path)!r}))\n"
        "r = t.tune('b', run=None, device='cpu'); print(r.from_database, r.config)\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True {'block': 128, 'warps': 4}"


def test_default_builder_and_env_jobs(tmp_path, monkeypatch):
    from tilus.autotune import build_jobs, default_builder

    built = default_builder(ToyAdd(block=64))
    assert built["built"] == "CompiledKernel" and built["resources"].registers > 0
    monkeypatch.setenv("TILUS_BUILD_JOBS", "3")
    assert build_jobs() == 3
    monkeypatch.setenv("TILUS_BUILD_JOBS", "x")
    with pytest.raises(AutotuneError, match="TILUS_BUILD_JOBS"):
        build_jobs()


def test_everything_pruned_or_failed(tmp_path):
    db = TuningDatabase(tmp_path / "t.json")
    with pytest.raises(AutotuneError, match="pruned"):
        Autotuner(ToyAdd, prune=lambda c: True, timer=FakeTimer(cost), database=db,
                  jobs=1).tune("x", run=None)
    with pytest.raises(AutotuneError, match="all 7 builds failed"):
        Autotuner(ToyAdd, builder=failing_builder, timer=FakeTimer(cost), database=db,
                  jobs=1).tune("x", run=None)


def test_malformed_database_is_ignored_and_rewritten(tmp_path):
    db = TuningDatabase(tmp_path / "tuning.json")
    db.path.write_text("{not json")
    assert db.lookup("k", "b", "cpu") is None
    db.record("k", "b", "cpu", {"block": 1}, 0.5)
    assert db.lookup("k", "b", "cpu")["config"] == {"block": 1}
    assert TuningDatabase(db.path).entries()["k"]["cpu"]["b"]["time_ms"] == 0.5


def test_matmul_tuning_space_prune_and_database(tmp_path):
    import torch

    from tilus.ops import quantize
    from tilus.ops.matmul import matmul_bucket
    from tilus.ops.tuning import matmul_tuner, prune_matmul, tune_matmul

    qw = quantize(torch.randn(24, 64), "uint4", group_size=32)
    db = TuningDatabase(tmp_path / "tuning.json")
    tuner = matmul_tuner(1, qw, database=db)
    keep, pruned = tuner.candidates()
    assert keep and all(c["block_k"] in (32, 64) and c["block_m"] == 16 and c["split_k"] == 1
                        for c in keep)
    reasons = " ".join(r for _, r in pruned)
    assert "> K = 64" in reasons and "block_m" in reasons
    big = {"block_m": 128, "block_n": 128, "block_k": 64, "split_k": 1, "warps": 8,
           "stages": 4}
    assert "neither divides nor is a multiple of group_size 96" in prune_matmul(
        big, dict(tuner.fixed, group_size=96), 4096, 4096, 4096)
    assert "M bucket" in prune_matmul(big, tuner.fixed, 1, 4096, 4096)
    assert prune_matmul(big, tuner.fixed, 4096, 4096, 4096) is None
    res = tune_matmul(1, qw, timer=FakeTimer(lambda c: c["block_k"] / 64 + c["stages"]), jobs=2,
                      database=db, progress=False)
    assert res.config["block_k"] == 32 and res.config["stages"] == 1
    entry = db.lookup(tuner.name, matmul_bucket(1, 24, 64), "cpu")
    assert entry["config"] == res.config
    # the tuned schedule runs the real kernel (interpreter) correctly
    from tilus.ops import matmul

    a = torch.randn(1, 64).half()
    torch.testing.assert_close(matmul(a, qw, engine="interpreter", schedule=res.config),
                               matmul(a, qw), rtol=4e-3, atol=2e-3)


def test_tune_cli(tmp_path, capsys):
    from tilus.__main__ import main

    png = tmp_path / "tune.png"
    assert main(["tune", "matmul", "--n", "64", "--k", "64", "--m", "1", "--group-size", "32",
                 "--dry-run", "--jobs", "1", "--png", str(png)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["bucket", "best", "config", "ms", "built", "pruned", "failed",
                                "source"]
    row = lines[2].split()
    assert row[0] == "m1-n64-k64" and row[-2:] == ["dry", "run"]
    built, pruned, failed = map(int, row[3:6])
    assert built > 0 and f"(built {built}, failed {failed}, pruned {pruned})" in captured.err
    assert f"wrote {png}" in captured.out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import torch

    if not torch.cuda.is_available():
        assert main(["tune", "matmul", "--n", "64", "--k", "64"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err


def test_tune_report_table_and_plot_of_timed_buckets(tmp_path):
    """What `tilus tune` prints and plots on a GPU: the best config per bucket and every time."""
    from tilus.autotune.report import BucketResult, plot, table

    rows = [BucketResult("m1-n4096-k4096", {"block_k": 512, "stages": 2}, 0.0123, 10, 2, 1,
                         "10 timed", [({"block_k": 256}, 0.02), ({"block_k": 512}, 0.0123)]),
            BucketResult("m16-n4096-k4096", {"block_k": 256}, 0.5, 0, 0, 0, "database")]
    lines = table(rows).splitlines()
    assert lines[2].split() == ["m1-n4096-k4096", "block_k=512", "stages=2", "0.0123", "10",
                                "2", "1", "10", "timed"]
    assert lines[3].split() == ["m16-n4096-k4096", "block_k=256", "0.5000", "0", "0", "0",
                                "database"]
    path = plot(rows, tmp_path / "p.png", "t")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_matmul_tuner_builds_the_kernel_matmul_launches():
    """The tuner's fixed parameters are kernel_for's, also for integer zero points and the
    block-scaled schemes (the kernel reads their pointers untyped: a wrong mode would not fail)."""
    import torch

    from tilus.ops import quantize
    from tilus.ops.matmul import kernel_for, weight_meta
    from tilus.ops.tuning import matmul_tuner

    sched = {"block_m": 16, "block_k": 32}
    for qw in (quantize(torch.randn(24, 64), "uint4", group_size=32, zero_mode="int"),
               quantize(torch.randn(24, 64), "float4_e2m1", scheme="mx")):
        tuner = matmul_tuner(1, qw)
        launched = kernel_for(weight_meta(qw, torch.float16), "float16", False, sched)
        assert repr(tuner.cls(**tuner.fixed, **sched)) == repr(launched)
