"""Bugs planted in the mma fixture's PrimFunc (with TIR mutators) are caught."""
import numpy as np
import pytest

from tilus.backend import testing
from tilus.backend.tvm_shim import tirx
from tilus.simulator import OutOfBoundsError, RaceError, run_prim_func

from tests.simulator.test_fixtures import mma_inputs, mma_reference
from tests.simulator.tir_mutate import drop_calls, map_call_args, map_if_conditions


def run(func):
    a, b = mma_inputs()
    c = np.zeros(128, np.float32)
    run_prim_func(func, [a, b, c])
    return c.reshape(16, 8), mma_reference(a, b)


def test_unmutated_kernel_is_clean():
    got, ref = run(testing.mma_m16n8k16_f16())
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_dropped_barrier_is_a_race():
    func = drop_calls(testing.mma_m16n8k16_f16(), "tirx.tvm_storage_sync")
    assert "tvm_storage_sync" not in func.script()
    with pytest.raises(RaceError) as ei:
        run(func)
    msg = str(ei.value)
    assert "ldmatrix" in msg and "A_s" in msg and "thread" in msg


def test_dropped_wait_reads_in_flight_copy():
    func = drop_calls(testing.mma_m16n8k16_f16(), "tirx.ptx.cp_async_wait_all")
    with pytest.raises(RaceError, match="cp.async destination before"):
        run(func)


def test_off_by_one_guard_is_out_of_bounds():
    # `if tx < 16` (which threads copy B) becomes `if tx < 17`: thread 16 copies past B / B_s
    func = map_if_conditions(testing.mma_m16n8k16_f16(),
                             lambda c: tirx.LT(c.a, tirx.IntImm("int32", int(c.b.value) + 1)))
    assert "tx < 17" in func.script()
    with pytest.raises(OutOfBoundsError) as ei:
        run(func)
    assert ei.value.threads == [16] and ei.value.address is not None


def test_swapped_mma_operands_give_a_wrong_result():
    def swap(args):
        args[5], args[6] = args[6], args[5]          # a_reg[1] <-> a_reg[2]
        return args
    func = map_call_args(testing.mma_m16n8k16_f16(), "tirx.ptx.mma", swap)
    got, ref = run(func)
    assert not np.allclose(got, ref, rtol=1e-3, atol=1e-3)
    # and it is exactly the product with A's row blocks and column blocks exchanged
    a, b = mma_inputs()
    A = a.reshape(16, 16).astype(np.float32)
    A2 = A.copy()
    A2[8:, :8], A2[:8, 8:] = A[:8, 8:], A[8:, :8]
    np.testing.assert_allclose(got, A2 @ b.reshape(8, 16).astype(np.float32).T, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ the codegen's own kernels

def lowered_matmul():
    from tests.examples.test_examples import load
    from tilus.simulator.machine import as_prim_func

    return as_prim_func(load("matmul_fp16").MatmulFp16())


def matmul_args(m=40, n=40, k=40):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    return [m, n, k, a, b, np.zeros((m, n), np.float16)]


def test_codegen_matmul_without_barriers_races():
    func = lowered_matmul()
    args = matmul_args()
    run_prim_func(func, args)
    np.testing.assert_allclose(args[5].astype(np.float32),
                               args[3].astype(np.float32) @ args[4].astype(np.float32), rtol=2e-2, atol=2e-2)
    with pytest.raises(RaceError):
        run_prim_func(drop_calls(func, "tirx.tvm_storage_sync"), matmul_args())


def test_codegen_matmul_swapped_mma_operands_are_wrong():
    def swap(args):
        args[4], args[7] = args[7], args[4]          # a0 <-> a3
        return args
    args = matmul_args()
    run_prim_func(map_call_args(lowered_matmul(), "tirx.ptx.mma", swap), args)
    assert not np.allclose(args[5].astype(np.float32), args[3].astype(np.float32) @ args[4].astype(np.float32),
                           rtol=2e-2, atol=2e-2)
