"""tilus.ops.rowquant's kernel for int4 and float8_e4m3 lowered and simulated against the
interpreter, at M = 20, K = 160 (neither divides the 16 x 128 tile)."""
import pytest
import torch

from tilus.ops import rowquant
from tests.backend.test_w8a8_simulated import simulate_and_interpret

pytest.importorskip("tilus.simulator")


@pytest.mark.parametrize("dtype", ["int4", "float8_e4m3"])
def test_quantize_rows_simulated(dtype):
    torch.manual_seed(0)
    m, k = 20, 160
    x = torch.randn(m, k).half()
    x[3] = 0
    q = torch.zeros(m, k // 2, dtype=torch.uint8) if dtype == "int4" else \
        torch.zeros(m, k, dtype=torch.float8_e4m3fn)
    args = [m, k, x, q, torch.zeros(m)]
    simulate_and_interpret(rowquant.QuantizeRows(dtype), args, [3, 4])
    want, _ = rowquant.rows_reference(x, dtype)     # and the codes (torch.equal on float8 too)
    assert torch.equal(args[3].view(torch.uint8), want.view(torch.uint8))
