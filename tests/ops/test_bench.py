"""benchmarks/bench_matmul.py --dry-run on the CPU: table, JSON and plot of the static estimate
(the SASS cost model of bench_decode_cost and rooflines), written to a temporary directory (never
into benchmarks/results)."""
import json
from pathlib import Path

import pytest

from benchmarks import bench_matmul as bench

RESULTS = Path(bench.__file__).parent / "results"


def _listing():
    return sorted(p.name for p in RESULTS.iterdir()) if RESULTS.exists() else []


def test_dry_run_writes_table_json_and_plot(tmp_path, capsys):
    before = _listing()
    assert bench.main(["--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN: ESTIMATE" in out and "tilus/fp16" in out and "f6e3m2" in out
    assert _listing() == before                                   # results/ untouched
    (js,) = tmp_path.glob("dry-run-*.json")
    (png,) = tmp_path.glob("dry-run-*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    data = json.loads(js.read_text())
    rows = data["rows"]
    assert len(rows) == 6 * len(bench.TYPES) * len(bench.MS) * len(bench.METHODS)
    assert {(r["k"], r["n"]) for r in rows} == {s for v in bench.SHAPES.values() for s in v}
    assert data["copy_bandwidth_gbs"] == 4300 and data["dry_run"] is True and data["estimate"]
    assert data["estimate_from"].endswith("-decode-cost.json")
    fp16 = [r for r in rows if r["method"] == "fp16"]
    assert all(r["speedup_vs_fp16"] == pytest.approx(1.0) for r in fp16)
    assert all(r["ms"] is None for r in rows if r["method"] == "triton")      # no model
    tilus_m1 = [r for r in rows if r["method"] == "tilus" and r["m"] == 1 and r["type"] == "u4"]
    assert all(r["speedup_vs_fp16"] > 3 and 0 < r["bandwidth_fraction"] <= 1 for r in tilus_m1)


def test_estimate_is_the_decode_cost_model():
    """Tilus at M <= 16: max(memory time, issue time of the SASS loop); 1-bit is issue-bound."""
    est = bench.StaticEstimate()
    cost = json.loads(est.cost_json.read_text())
    ipe = {r["type"]: r["instructions_per_weight_element"] for r in cost["rows"]}
    k = n = 4096
    issue = k * n * ipe["uint1"] / 32 / (132 * 4 * 1.98e9) * 1e3
    assert est.time_ms("tilus", 1, k, n, "uint1", 1) == pytest.approx(issue)
    mem = bench.traffic_bytes("tilus", 1, k, n, 8) / 4.3e12 * 1e3
    assert est.time_ms("tilus", 1, k, n, "uint8", 8) == pytest.approx(max(mem, k * n * ipe[
        "uint8"] / 32 / (132 * 4 * 1.98e9) * 1e3))
    assert est.time_ms("fp16", 1, k, n, "uint4", 4) == pytest.approx(
        bench.traffic_bytes("fp16", 1, k, n, 4) / 4.3e12 * 1e3)


def test_dry_run_defaults_to_a_temporary_directory(capsys):
    before = _listing()
    assert bench.main(["--dry-run", "--models", "llama3-8b", "--m", "1", "--types", "u4",
                       "--methods", "tilus", "--no-plot"]) == 0
    out = capsys.readouterr().out
    written = Path(out.split("wrote ")[-1].strip())
    assert written.exists() and "tilus-bench-dry-run-" in str(written.parent)
    assert _listing() == before


def test_subset_and_no_plot(tmp_path):
    assert bench.main(["--dry-run", "--out", str(tmp_path), "--models", "llama3-8b", "--m", "1",
                       "16", "--types", "u3", "i8", "--methods", "tilus", "fp16",
                       "--no-plot"]) == 0
    assert not list(tmp_path.glob("*.png"))
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert len(data["rows"]) == 3 * 2 * 2 * 2


def test_budget_stops_measuring_and_still_writes_the_json(tmp_path, capsys):
    """--budget-s (benchmarks/gpu_session.sh gives the time left): past it, rows are recorded as
    not measured, and the table and JSON are still written (no plot without a timing)."""
    assert bench.main(["--dry-run", "--out", str(tmp_path), "--models", "llama3-8b", "--m", "1",
                       "--types", "u4", "--budget-s", "0"]) == 0
    assert "note: --budget-s 0: 12 of 12 timings not taken" in capsys.readouterr().out
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert data["budget_s"] == 0 and data["not_measured"] == len(data["rows"]) == 3 * 4
    assert all(r["ms"] is None and r["speedup_vs_fp16"] is None for r in data["rows"])
    assert not list(tmp_path.glob("*.png"))
    assert bench.parse_args([]).budget_s is None


def test_traffic_and_paths():
    k, n = 4096, 4096
    assert bench.traffic_bytes("fp16", 1, k, n, 4) == 2 * k + 2 * n + 2 * k * n
    packed = bench.traffic_bytes("tilus", 1, k, n, 4)
    assert packed < bench.traffic_bytes("fp16", 1, k, n, 4) / 3
    assert bench.traffic_bytes("dequant", 1, k, n, 4) > packed
    j, p = bench.output_paths(Path("/x"), "NVIDIA H100 80GB HBM3", "2026-01-02")
    assert j.name == "nvidia-h100-80gb-hbm3-2026-01-02.json" and p.suffix == ".png"


def test_triton_baseline_imports_lazily():
    import importlib.util

    from benchmarks.baselines import triton_quant_matmul as tq

    assert tq.default_blocks(1, 128) == (16, 128, 64)
    if importlib.util.find_spec("triton") is None:
        import torch

        from tilus.ops import quantize

        qw = quantize(torch.randn(16, 32), "uint4", group_size=32)
        with pytest.raises(ImportError, match="triton"):
            tq.triton_quant_matmul(torch.randn(1, 32).half(), qw)
