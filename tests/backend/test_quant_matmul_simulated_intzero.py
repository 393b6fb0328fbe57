"""QuantMatmul with integer zero points (``zero_mode="int"``: ``(v - z) * s``) lowered and
simulated against the interpreter and dequantize() + torch (tests/backend/quant_matmul_sim.py):
uint4 on the plain schedule, uint3 and uint2 pipelined (k-tiles of one and two groups)."""
import pytest

from tests.backend.quant_matmul_sim import SMALL, case_id, check_quant_matmul_simulated

pytest.importorskip("tilus.simulator")

CASES = [
    ("uint4", SMALL, 5),
    ("uint3", dict(block_m=16, block_n=128, block_k=128, stages=2, split_k=1, warps=4), 1),
    ("uint2", dict(block_m=16, block_n=128, block_k=64, stages=2, split_k=1, warps=4), 3),
]


@pytest.mark.parametrize("wtype, sched, m", CASES, ids=[case_id(*c) for c in CASES])
def test_int_zero_quant_matmul_simulated(wtype, sched, m, monkeypatch):
    check_quant_matmul_simulated(wtype, sched, m, monkeypatch, zero_mode="int")
