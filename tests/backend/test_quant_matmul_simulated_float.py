"""tilus.ops' QuantMatmul lowered and simulated against the interpreter and dequantize() + torch
(tests/backend/quant_matmul_sim.py): the float types of 3 to 6 bits."""
import pytest

from tests.backend.quant_matmul_sim import case_id, check_quant_matmul_simulated, every_type

pytest.importorskip("tilus.simulator")

CASES = every_type(lambda t: t.is_float and t.nbits <= 6)


@pytest.mark.parametrize("wtype, sched, m", CASES, ids=[case_id(*c) for c in CASES])
def test_ops_quant_matmul_simulated(wtype, sched, m, monkeypatch):
    check_quant_matmul_simulated(wtype, sched, m, monkeypatch)
