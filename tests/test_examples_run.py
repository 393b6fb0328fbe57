"""The demo and the examples that need no kernel inputs run as scripts and print what they promise."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_prints_value_tables_and_packing():
    out = _run("examples/demo.py")
    assert "float4_e2m1: 16 codes" in out
    assert "uint3 [1, 2, 3, 4, 5, 6, 7, 0] -> bytes d1 58 1f" in out
    assert "%codes: register[uint3, (32, 32)] = view(%raw)" in out
    for wtype in ("uint3", "int4", "uint6", "float6_e3m2", "float4_e2m1"):
        assert f"  {wtype:12s} A[20, 80] fp16 @ W[80, 40]" in out
    assert "Compiled for sm_90 without a GPU" in out and "0 spill bytes" in out
    assert "HMMA" in out and "ran on the CPU simulator of the compiled kernel" in out
    simulated_error = float(out.rsplit("max |C - torch| = ", 1)[1].split()[0])
    assert simulated_error < 3e-2
    assert "uint4        14 layers quantized" in out and "float4_e2m1  14 layers quantized" in out


def test_layout_pictures_draws_the_c_fragment(tmp_path):
    png = tmp_path / "c.png"
    out = _run("examples/layout_pictures.py", str(png))
    assert " 8  0:2  0:3  1:2  1:3" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_w8a8_layer_prints_its_error_table():
    rows = {line.split(" | ")[0].strip("| "): [float(v) for v in line.strip(" |").split(" | ")[1:]]
            for line in _run("examples/w8a8_layer.py").splitlines()[2:]}
    w8a8, smoothed = rows["W8A8 (int8 per channel, int8 per token)"], \
        rows["W8A8 + smooth (alpha 0.5, from the outlier x)"]
    assert all(e < 5e-3 for e in rows["int8 weight-only, per channel"])
    assert w8a8[0] < 2e-2 and smoothed[1] < w8a8[1] / 3         # smoothing tames the outlier
    fp8 = rows["FP8 (e4m3 per channel, e4m3 per token)"]
    assert fp8[0] < 5e-2 and fp8[1] < w8a8[1]                   # e4m3's range shrugs off outliers
    w4a4, w4a4_smoothed = rows["W4A4 (int4 per channel, int4 per token)"], \
        rows["W4A4 + smooth (alpha 0.5, from the outlier x)"]
    assert all(e < 0.1 for e in rows["int4 weight-only, per channel"])
    assert w4a4[0] < 0.25 and w4a4_smoothed[1] < w4a4[1] / 1.5
    grouped = rows["W4A4, group 128 + smooth"]                  # per-group weight scales help
    assert grouped[0] < w4a4_smoothed[0] and grouped[1] < w4a4_smoothed[1]


def test_mixed_width_prints_bits_and_errors():
    """The salient rule finds the large features; 8 bits there beat all-uint4 and a random
    choice of the same size; the one-launch kernel (interpreter) equals dequantize + matmul."""
    out = _run("examples/mixed_width.py")
    assert "the 40 large ones among them: 40" in out
    rows = {line.split(" | ")[0].strip("| "): [float(v) for v in line.strip(" |").split(" | ")[1:]]
            for line in out.splitlines() if line.startswith("| ") and "---" not in line
            and "bits per weight" not in line}
    bits_u4, err_u4 = rows["uint4, group 128"]
    bits_mix, err_mix = rows["mixed: 128 salient uint8 + uint4"]
    assert bits_u4 < bits_mix < rows["uint8, group 128"][0]
    assert err_mix < err_u4 / 2 and err_mix < rows["mixed: 128 random uint8 + uint4"][1] / 2
    assert float(out.rsplit("max |diff| = ", 1)[1].split()[0]) < 2e-3


def test_paged_attention_decode_prints_its_errors():
    lines = [line for line in _run("examples/attention_decode_paged.py").splitlines()
             if line.startswith("attention_decode_paged uint4 step")]
    assert len(lines) == 3 and "lengths [31, 6, 48]" in lines[0] and "[33, 8, 50]" in lines[2]
    for line in lines:
        ref = float(line.split("dequantized reference| ")[1].split(",")[0])
        flat = float(line.rsplit("contiguous cache| ", 1)[1])
        assert ref < 5e-3 and flat < 5e-3


def test_bit_sliced_prints_the_error_per_width():
    rows = {int(line.split(" | ")[0].strip("| ")): [float(v) for v in
                                                    line.strip(" |").split(" | ")[1:]]
            for line in _run("examples/bit_sliced.py").splitlines()[2:]}
    assert sorted(rows) == [2, 4, 8]
    assert rows[8][0] < 0.01 < rows[4][0] < 0.2 < rows[2][0] < 0.5
    for bits in (4, 2):
        served, bottom, _, separate, _, _ = rows[bits]
        assert served < bottom and served <= separate
    assert rows[2][4] < rows[4][4] < rows[8][4] and all(r[5] < 3e-2 for r in rows.values())


def test_moe_mixed_bits_matches_torch():
    out = _run("examples/moe_mixed_bits.py")
    assert "experts: ('uint4', 'uint3', 'uint2', 'uint3', 'uint2', 'int4')" in out
    assert "['uint4', 'uint3', 'uint2', 'int4']" in out
    error = float(out.split("max |y - torch(dequantized experts)| = ", 1)[1].split()[0])
    assert error < 2e-3
    relative = float(out.rsplit("relative error vs the float experts = ", 1)[1].split()[0])
    assert relative < 0.3


def test_attention_prefill_prints_its_errors_against_torch():
    rows = [line for line in _run("examples/attention_prefill.py").splitlines()
            if "max |out - torch|" in line]
    assert len(rows) == 6 and any("K/V float8_e4m3" in r for r in rows)
    for row in rows:
        err = float(row.split("max |out - torch| ")[1].split()[0])
        assert err < (2e-2 if row.strip().startswith("bfloat16") else 5e-3), row


def _table(out: str) -> dict:
    return {line.split(" | ")[0].strip("| "): line.strip(" |").split(" | ")[1:]
            for line in out.splitlines() if line.startswith("| ") and "---" not in line}


def test_lut_gemm_matches_torch_and_the_mma_kernel():
    """The LUT kernel (interpreter) is the float64 LUT formula rounded once, and agrees with
    torch on the dequantized weight and with the dequantize + mma kernel to fp16 rounding."""
    out = _run("examples/lut_gemm.py")
    rows = {name: [float(v) for v in values] for name, values in _table(out).items()
            if name != "kernel"}
    lut, mma = rows["LUT (schedule='lut')"], rows["dequantize + mma"]
    assert lut[2] == 0.0 and lut[1] < 1e-3 and mma[1] < 1e-3
    assert float(out.rsplit("max |LUT - dequantize+mma| = ", 1)[1].split()[0]) < 0.1


def test_per_layer_bits_prints_the_table_and_its_error():
    """Per-layer types reach the right layers, the table's bits are the stored bits (codes,
    fp16 scale and offset per group of 64, padding to 128 columns), and more bits buy less
    error."""
    out = _run("examples/per_layer_bits.py")
    layers = {line.split()[0]: line.split()[1:] for line in out.splitlines()
              if line.startswith(("layers.", "lm_head", "total"))}
    assert layers["layers.0.attn.q_proj"] == ["uint8", "16384", "8.500"]
    assert layers["layers.1.attn.k_proj"] == ["uint8", "8192", "16.500"]   # 64 of 128 columns
    assert layers["layers.0.mlp.down_proj"] == ["uint4", "49152", "4.500"]
    assert layers["lm_head"] == ["float32", "65536", "32.000"]
    weights = sum(int(v[1]) for k, v in layers.items() if k != "total")
    bits = sum(int(v[1]) * float(v[2]) for k, v in layers.items() if k != "total")
    assert int(layers["total"][0]) == weights
    assert abs(float(layers["total"][1]) - bits / weights) < 1e-3
    rows = {name: [float(v.rstrip("%")) for v in values] for name, values in _table(out).items()
            if name != "bit map"}
    u4, mixed, u3 = (rows["uniform uint4 (lm_head float)"], rows["per-layer map"],
                     rows["uniform uint3 (lm_head float)"])
    assert u3[0] < u4[0] < mixed[0] and mixed[1] < u4[1] < u3[1] and mixed[1] < 0.25
