"""load_scalar lowered to CUDA: the table-gather kernel of tests/interpreter/test_load_scalar.py
builds for sm_80 and sm_90 with no spills, and the simulator running its lowered PrimFunc equals
the interpreter (int64 and float16 scalar loads, a branch on one, an index past the table)."""
import numpy as np
import pytest

import tilus
from tests.interpreter.test_load_scalar import TableGather, inputs, reference

pytest.importorskip("tvm")


def test_simulated_table_gather_matches_the_interpreter():
    from tilus.backend.build_program import build
    from tilus.simulator import run_prim_func

    kernel = TableGather()
    func = build(kernel.program(), "sm_90").prim_func
    sim, ref = inputs(), inputs()
    run_prim_func(func, [a.reshape(-1) if hasattr(a, "reshape") else a for a in sim])
    tilus.interpret(kernel, *ref)
    np.testing.assert_array_equal(sim[5].numpy(), ref[5].numpy())
    np.testing.assert_array_equal(sim[5].numpy(), reference(*inputs()))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_builds_without_spills(arch):
    built = tilus.build(TableGather(), arch=arch)
    assert built.resources.spill_store_bytes == 0 and built.resources.spill_load_bytes == 0
    assert "int64_t e" in built.cuda_source
