"""benchmarks/bench_prefill_cost.py on the CPU for one configuration: the table row and the JSON
(written to a temporary directory) agree with the build: no spills, head_dim HMMA per iteration."""
import json

from benchmarks import bench_prefill_cost as bench


def test_one_config_prints_and_writes_its_row(tmp_path, capsys, need_nvcc, need_disassembler):
    assert bench.main(["--configs", "16,sm_90,none,float16,1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (js,) = tmp_path.glob("cpu-*-prefill-cost.json")
    (row,) = json.loads(js.read_text())["rows"]
    assert row["spill_bytes"] == 0 and row["stack_frame_bytes"] == 0
    assert row["mma_per_iteration"] == 16 and row["instructions_per_iteration"] > 16
    assert f"{row['registers']:>5}" in out.splitlines()[2]
