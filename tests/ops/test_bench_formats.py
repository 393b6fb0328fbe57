"""benchmarks/bench_formats.py on a small matrix: its table and JSON (bits per weight by the
formats' definitions; errors ordered as the element precisions say), written to a temporary
directory."""
import json

from benchmarks import bench_formats as bench


def test_table_and_json(tmp_path, capsys):
    assert bench.main(["--size", "128", "--out", str(tmp_path)]) == 0
    assert "MXFP4" in capsys.readouterr().out
    (js,) = tmp_path.glob("cpu-*-formats.json")
    rows = {r["format"]: r for r in json.loads(js.read_text())["rows"]}
    assert set(rows) == {f[0] for f in bench.FORMATS} | {f[0] for f in bench.ACT_FORMATS}
    # element bits + 8-bit scale per block (+ the 32-bit tensor scale of NVFP4); fp16 group scales
    assert rows["MXFP4"]["bits_per_weight"] == 4.25 and rows["MXINT8"]["bits_per_weight"] == 8.25
    assert rows["NVFP4"]["bits_per_weight"] == round(4 + 8 / 16 + 32 / 128 ** 2, 4)
    assert rows["uint4 g128 (offsets)"]["bits_per_weight"] == 4 + 32 / 128
    assert rows["MXFP4"]["scale_type"] == "float8_e8m0" and rows["NVFP4"]["block"] == 16
    for m in ("gaussian_rel_rms", "student_t3_rel_rms"):
        assert rows["MXINT8"][m] < rows["MXFP6 (e2m3)"][m] < rows["MXFP4"][m] < 0.25
        assert rows["NVFP4"][m] < rows["MXFP4"][m]          # finer blocks and scales
    # activation-quantized: codes + a float32 scale per channel (K = 128) or group of 128
    assert rows["W8A8 (int8 per channel)"]["bits_per_weight"] == 8 + 32 / 128
    assert rows["W4A4 (int4 g128)"]["bits_per_weight"] == 4 + 32 / 128
    assert rows["FP8 (e4m3 per channel)"]["scale_type"] == "float32"
    for m in ("gaussian_rel_rms", "gaussian_matmul_rel_rms", "student_t3_matmul_rel_rms"):
        assert (rows["W8A8 (int8 per channel)"][m] < rows["FP8 (e4m3 per channel)"][m]
                < rows["W4A4 (int4 per channel)"][m] < 0.3)
