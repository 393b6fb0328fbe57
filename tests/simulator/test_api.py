"""tilus.simulate / tilus.simulator.run_prim_func: dispatch, arguments, grid override, imports."""
import subprocess
import sys

import numpy as np
import pytest

import tilus
from tilus.backend import testing
from tilus.simulator import SimulationError, run_prim_func


def test_simulate_prim_func_and_compiled_like_objects():
    n = 600
    a, b = np.ones(n, np.float32), np.arange(n, dtype=np.float32)
    c = np.zeros(n, np.float32)
    tilus.simulate(testing.vector_add_f32x4(), a, b, c, n)
    np.testing.assert_array_equal(c, a + b)

    class Built:                       # what tilus.build returns: something with .prim_func
        prim_func = testing.vector_add_f32x4()

    c[:] = 0
    tilus.simulate(Built(), a, b, c, n)
    np.testing.assert_array_equal(c, a + b)


def test_grid_override_runs_fewer_blocks():
    n = 1024
    a, b, c = np.ones(n, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32)
    report = run_prim_func(testing.vector_add_f32x4(), [a, b, c, n], grid=1)
    assert report.blocks == 1 and (c[:512] == 2).all() and (c[512:] == 0).all()


def test_argument_errors():
    f = testing.vector_add_f32x4()
    with pytest.raises(SimulationError, match="4 arguments"):
        run_prim_func(f, [np.zeros(4, np.float32)])
    with pytest.raises(SimulationError, match="contiguous"):
        run_prim_func(f, [np.zeros(8, np.float32)[::2]] * 3 + [4])
    with pytest.raises(SimulationError, match="numpy array or torch"):
        run_prim_func(f, [[0.0] * 4] * 3 + [4])
    with pytest.raises(ValueError):
        run_prim_func(f, [np.zeros(4, np.float32)] * 3 + [4], uninit="maybe")


def test_importing_tilus_and_ptx_semantics_loads_no_tvm():
    code = ("import sys, tilus, tilus.simulator, tilus.simulator.ptx, tilus.backend.lowbit_cast; "
            "assert 'tvm' not in sys.modules, 'tvm imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
