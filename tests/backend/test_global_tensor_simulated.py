"""The split-K kernel of tests/interpreter/test_global_tensor.py built for sm_90 and simulated:
its workspaces are the kernel's hidden trailing parameters (here zero-filled by the caller, as the
launcher will), the result equals the interpreter's and numpy's, and the semaphores end clean
(issue 13, item 1)."""
import numpy as np
import pytest

import tilus
from tests.interpreter.test_global_tensor import SplitKWorkspace, _operands

pytest.importorskip("tvm")


def test_simulated_split_k_workspaces_match_the_interpreter():
    from tilus.backend.build_program import build
    from tilus.simulator import run_prim_func

    a, b = _operands()
    (m, k), n = a.shape, b.shape[1]
    kernel = SplitKWorkspace(3)
    func = build(kernel.program(), "sm_90").prim_func
    assert [p.name for p in func.params][-2:] == ["sema", "partial"]
    sema, partial = np.zeros(2 * 2, np.int32), np.zeros(m * n, np.float32)
    c_sim, c_int = np.zeros((m, n), np.float32), np.zeros((m, n), np.float32)
    run_prim_func(func, (m, n, k, a, b, c_sim, sema, partial))
    tilus.interpret(kernel, m, n, k, a, b, c_int)
    np.testing.assert_allclose(c_sim, c_int, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c_sim, a @ b, rtol=1e-5, atol=1e-5)
    assert not sema.any()
