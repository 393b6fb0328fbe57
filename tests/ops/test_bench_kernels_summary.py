"""benchmarks/bench_kernels_summary.py without builds: a section stubbed with two rows goes to the
printed Markdown table and the JSON file under the common names, missing costs shown as "-"."""
import json

from benchmarks import bench_kernels_summary as bench


def test_rows_reach_the_table_and_the_json(tmp_path, capsys, monkeypatch):
    rows = [bench.row("k1", "cfg a", 96, 0, 4096, 484, 15.1249, 0.27349),
            bench.row("k2", "cfg b", 168, 8, 69632, 909)]
    monkeypatch.setattr(bench, "SECTIONS", {"stub": lambda: rows})
    assert bench.main(["--sections", "stub", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| k1 | cfg a | 96 | 0 | 4096 | 484 | 15.12 | 0.27 |"
    assert lines[3] == "| k2 | cfg b | 168 | 8 | 69632 | 909 | - | - |"
    (path,) = tmp_path.glob("cpu-*-sm_90-kernels-summary.json")
    written = json.loads(path.read_text())["rows"]
    assert written[0]["instructions_per_element"] == 15.125
    assert written[0]["memory_over_issue"] == 0.273
    assert written[1]["instructions_per_element"] is None and written[1]["spill_bytes"] == 8
