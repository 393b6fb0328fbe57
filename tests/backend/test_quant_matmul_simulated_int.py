"""tilus.ops' QuantMatmul lowered and simulated against the interpreter and dequantize() + torch
(tests/backend/quant_matmul_sim.py): the integer types of 1 to 8 bits, and the pipelined
schedules (copy_async rings of 2-4 stages, k-tiles spanning two groups, 8 warps, split-k)."""
import pytest

from tests.backend.quant_matmul_sim import (PIPELINED, case_id, check_quant_matmul_simulated,
                                            every_type)

pytest.importorskip("tilus.simulator")

CASES = PIPELINED + every_type(lambda t: not t.is_float)


@pytest.mark.parametrize("wtype, sched, m", CASES, ids=[case_id(*c) for c in CASES])
def test_ops_quant_matmul_simulated(wtype, sched, m, monkeypatch):
    check_quant_matmul_simulated(wtype, sched, m, monkeypatch)
