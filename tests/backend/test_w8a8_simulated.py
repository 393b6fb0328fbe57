"""tilus.ops.w8a8's kernels (per-row int8 quantization; the int8 m16n8k32 matmul) lowered and
simulated against the interpreter, at M = 20, N = 72, K = 80 (none divides its tile), and
split-k at K = 300."""
import pytest
import torch

import tilus
from tilus.ops import w8a8

pytest.importorskip("tilus.simulator")


def simulate_and_interpret(kernel, args, outputs) -> None:
    from tilus.simulator import run_prim_func
    from tilus.simulator.machine import as_prim_func

    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    run_prim_func(as_prim_func(kernel),
                  [a.reshape(-1) if isinstance(a, torch.Tensor) else a for a in args])
    tilus.interpret(kernel, *ref)
    for i in outputs:
        assert torch.equal(args[i], ref[i])


def test_quantize_rows_simulated():
    torch.manual_seed(0)
    m, k = 20, 200
    x = torch.randn(m, k).half()
    x[3] = 0
    args = [m, k, x, torch.zeros(m, k, dtype=torch.int8), torch.zeros(m)]
    simulate_and_interpret(w8a8.QuantizeRows(), args, [3, 4])


@pytest.mark.parametrize("split_k, k", [(1, 80), (2, 300)])
def test_matmul_w8a8_simulated(split_k, k):
    """split_k = 2 at K = 300 (four 96-wide k-tiles: splits of two and two) sums through the
    int32 workspace under the semaphore, exactly as the interpreter."""
    torch.manual_seed(1)
    m, n = 20, 72
    qx, sx = w8a8.quantize_rows(torch.randn(m, k).half(), engine="fallback")
    w8 = w8a8.quantize_weight_int8(torch.randn(n, k))
    tiles = -(-m // w8a8.BLOCK_M) * -(-n // w8a8.BLOCK_N)
    args = [m, n, k, qx, w8.data, sx, w8.scales, torch.randn(n).half(),
            torch.zeros(m, n).half(), torch.zeros(m, n, dtype=torch.int32),
            torch.zeros(tiles, dtype=torch.int32)]
    simulate_and_interpret(w8a8.MatmulW8A8(has_bias=True, split_k=split_k), args, [8, 10])
