"""tilus.ops' QuantMatmul with block-scaled weights (MX: E8M0 scales per 32 k; NVFP4: E4M3 scales
per 16 k and a float32 scale per tensor) lowered and simulated against the interpreter and
dequantize() + torch (tests/backend/quant_matmul_sim.py; N = 136, K = 192 do not divide the
tiles; dequantize() equals the OCP MX / NVFP4 numpy reference of tests/ops/test_blockscale.py):
every MX element type and NVFP4, on both paths: the fast path (scales applied in float16, codes
staged in shared memory when pipelined) and, where a block scale leaves its range, the float32 partials (mx) or the
decode to float16 (nvfp4)."""
import pytest

from tests.backend.quant_matmul_sim import SMALL, case_id, check_quant_matmul_simulated

pytest.importorskip("tilus.simulator")

PIPE = dict(block_m=16, block_n=128, block_k=64, stages=2, split_k=2, warps=4)
WIDE = dict(block_m=32, block_n=128, block_k=64, stages=3, split_k=1, warps=8)   # 2 warp rows
CASES = [("mx", "float4_e2m1", SMALL, 5), ("mx", "float4_e2m1", PIPE, 1),
         ("mx", "float6_e3m2", WIDE, 33), ("mx", "float6_e2m3", SMALL, 3),
         ("mx", "float8_e4m3", SMALL, 3),
         ("mx", "int8", SMALL, 3), ("nvfp4", "float4_e2m1", SMALL, 5),
         ("nvfp4", "float4_e2m1", PIPE, 1)]
# mx: row 0 scaled by 2^-40 (E8M0 2^-42 leaves float16); nvfp4: a negative E4M3 scale code;
# mxfp8 e5m2 as it is (the E8M0 scales of a N(0, 1) weight, 2^-15 to 2^-13, times e5m2's
# smallest values leave float16: the float32 partials)
FALLBACK = [("mx", "float8_e5m2", SMALL, 3, 1.0),
            ("mx", "float4_e2m1", PIPE, 1, 2.0 ** -40), ("mx", "float4_e2m1", SMALL, 5, 2.0 ** -40),
            ("nvfp4", "float4_e2m1", PIPE, 1, None), ("nvfp4", "float4_e2m1", SMALL, 5, None)]


@pytest.mark.parametrize("scheme, wtype, sched, m", CASES,
                         ids=[f"{c[0]}-{case_id(*c[1:])}" for c in CASES])
def test_block_scaled_quant_matmul_simulated(scheme, wtype, sched, m, monkeypatch):
    check_quant_matmul_simulated(wtype, sched, m, monkeypatch, scheme=scheme, fold=True)


@pytest.mark.parametrize("scheme, wtype, sched, m, row0", FALLBACK,
                         ids=[f"{c[0]}-fallback-{case_id(*c[1:4])}" for c in FALLBACK])
def test_block_scaled_fallback_simulated(scheme, wtype, sched, m, row0, monkeypatch):
    check_quant_matmul_simulated(wtype, sched, m, monkeypatch, scheme=scheme, row0=row0 or 1.0,
                                 negate_scale=row0 is None, fold=False)
