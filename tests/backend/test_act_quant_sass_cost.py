"""bench_decode_cost's rows for the activation-quantized matmuls (W8A8, W4A4, FP8) at M = 1: the
weights one counted iteration covers equal its mma instructions' share of B (m16n8k32: 8 per
thread, m16n8k64: 16), a group of 128 k counts its two inner iterations, and the estimate is the
module's memory/issue model on the SMs the 64 column tiles (times the split-k) occupy."""
import re

import pytest

from benchmarks import bench_decode_cost as bench


def _weights_per_thread(cost) -> float:
    """B elements per thread of the IMMA instructions on the counted path."""
    shapes = [m.group(1) for m in map(re.compile(r"\bIMMA\.(\d+)").search, cost.path) if m]
    return sum(8 * int(s[3:]) / 32 for s in shapes)         # n8 x k, shared by 32 lanes


@pytest.mark.parametrize("wtype", ["w8a8", "w4a4-s8-g128", "w4a4-s4-sm80"])
def test_act_quant_rows(need_nvcc, need_disassembler, wtype):
    import tilus

    _, arch, nbits, group = bench.ACT_QUANT[wtype]
    row = bench.act_quant_cost(wtype)
    built = tilus.build(bench.act_quant_script(wtype), arch=arch)
    inner = built.main_loop_cost(innermost=True)
    if group:
        outer = built.main_loop_cost()
        assert _weights_per_thread(outer) == _weights_per_thread(inner)   # one inner iteration
        steps = group // row["schedule"]["block_k"]
        want = (outer.instructions + (steps - 1) * inner.instructions) / (
            steps * _weights_per_thread(inner))
    else:
        want = inner.instructions / _weights_per_thread(inner)
    assert row["instructions_per_weight_element"] == pytest.approx(want, abs=1e-3)
    assert row["spill_bytes"] == 0 and row["registers"] == built.resources.registers
    memory = (nbits / 8 + 4 / (group or 4096)) / 4.3e12
    issue = want / 32 / (132 * 4 * 1.98e9)
    assert row["estimated_fraction_of_bandwidth"] == pytest.approx(
        min(1.0, memory / issue * min(1.0, 64 * row["schedule"]["split_k"] / 132)), abs=2e-3)
