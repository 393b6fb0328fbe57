"""Compiled kernels on a real GPU (skipped where none is visible; see tests/conftest.py).

Every example kernel, launched on CUDA tensors, equals the CPU interpreter on the same inputs at sizes
that don't divide the tiles (bit-exact where the arithmetic is exact, fp16/fp32 tolerances
otherwise) and its case's torch reference (tests/gpu/kernels.py); a launch on a non-default torch
stream is ordered with the work on that stream; cupy
arrays work; a second process runs from the cache without compiling.

On a machine without TVM these run from a bundle: `tilus bundle --arch sm_90 --out DIR
tests/gpu/kernels.py`, then `DIR/run_on_gpu.sh`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.gpu.kernels import (CASES, assert_matches_reference, side_stream_behind_matmuls,
                               split_k_workspace, vector_add)

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]

TOLERANCE = {"softmax": (1e-5, 1e-5), "matmul_fp16": (2e-2, 1e-2), "matmul_splitk": (1e-3, 1e-3)}


@pytest.fixture(scope="module")
def torch():
    import torch

    return torch


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_equals_interpreter(torch, name):
    factory, inputs, exact, reference, tol = CASES[name]
    kernel = factory()
    cpu_args, outs = inputs(torch, "cpu")
    expected = reference(torch, cpu_args)
    gpu_args, _ = inputs(torch, "cuda")
    kernel(*gpu_args)                       # compiled (cached) launch
    kernel(*cpu_args)                       # the interpreter
    torch.cuda.synchronize()
    for i in outs:
        got, want = gpu_args[i].cpu(), cpu_args[i]
        assert_matches_reference(name, got, expected[i], tol)
        if exact or not got.is_floating_point():
            assert torch.equal(got, want), (name, i, (got != want).sum().item())
        else:
            atol, rtol = TOLERANCE.get(name, (3e-2, 1e-2))
            assert torch.allclose(got.float(), want.float(), atol=atol, rtol=rtol), \
                (name, i, (got.float() - want.float()).abs().max().item())


def _driver_kernel(kernel, example_tensor):
    """The same cache entry loaded with the driver launcher (TILUS_LAUNCHER=driver)."""
    from tilus import jit
    from tilus.runtime import LoadedKernel, cache_key, default_cache, key_versions

    arch = jit.device_arch(example_tensor)
    jit.compiled_kernel(kernel, arch=arch)           # cached (built or bundled)
    entry = default_cache().lookup(cache_key(str(kernel.program()), arch, key_versions()))
    return LoadedKernel.load(entry, launcher="driver")


@pytest.mark.parametrize("name", list(CASES))
def test_driver_launcher_equals_interpreter(torch, name):
    factory, inputs, exact, _, _ = CASES[name]
    kernel = factory()
    cpu_args, outs = inputs(torch, "cpu")
    gpu_args, _ = inputs(torch, "cuda")
    tensor = next(a for a in gpu_args if hasattr(a, "is_cuda"))
    _driver_kernel(kernel, tensor)(*gpu_args)
    kernel(*cpu_args)
    torch.cuda.synchronize()
    for i in outs:
        got, want = gpu_args[i].cpu(), cpu_args[i]
        if exact or not got.is_floating_point():
            assert torch.equal(got, want), (name, i)
        else:
            atol, rtol = TOLERANCE.get(name, (3e-2, 1e-2))
            assert torch.allclose(got.float(), want.float(), atol=atol, rtol=rtol), name


def test_driver_launcher_uses_the_current_stream(torch):
    n = 1 << 20
    a = torch.zeros(n, device="cuda")
    b = torch.ones(n, device="cuda")
    c = torch.zeros(n, device="cuda")
    k = _driver_kernel(vector_add(), a)
    big = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(8):
            big = big @ big
            big = big / big.norm()
        a.fill_(2.0)
        k(n, a, b, c)
        total = c.sum()
    s.synchronize()
    assert total.item() == 3.0 * n


def test_repeated_launches_reuse_the_loaded_kernel(torch):
    from tilus import jit

    kernel = vector_add()
    args, _ = CASES["vector_add"][1](torch, "cuda")
    kernel(*args)
    loaded = jit.compiled_kernel(kernel, arch=jit.device_arch(args[1]))
    before = loaded.launches
    for _ in range(10):
        kernel(*args)
    assert loaded.launches == before + 10


def test_global_tensor_workspaces_are_allocated_by_the_launcher(torch):
    """A kernel with global_tensor workspaces (split-K partial sums, semaphores) launched on CUDA
    tensors: the launcher allocates them on the device, keeps them for the next launch (grown
    for a larger one) and the semaphores stay zero; every result equals float64 A @ B."""
    from tilus import jit

    kernel = split_k_workspace()
    g = torch.Generator().manual_seed(4)
    for m, n, k in [(12, 10, 22), (12, 10, 22), (33, 17, 70)]:
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        c = torch.zeros(m, n, device="cuda")
        kernel(m, n, k, a.cuda(), b.cuda(), c)
        torch.cuda.synchronize()
        torch.testing.assert_close(c.cpu(), (a.double() @ b.double()).float(),
                                   rtol=1e-4, atol=1e-4)
    loaded = jit.compiled_kernel(kernel, arch=jit.device_arch(c))
    buffers = loaded.workspaces._buffers
    assert loaded.launches == 3 and len(buffers) == 2
    sema = next(buf for key, buf in buffers.items() if key[0] == "sema")
    assert sema.is_cuda and len(sema) == 5 * 3 and not sema.any().item()


def test_launch_on_a_non_default_stream_is_ordered(torch):
    kernel = vector_add()
    n = 1 << 20
    a = torch.zeros(n, device="cuda")
    b = torch.ones(n, device="cuda")
    c = torch.zeros(n, device="cuda")
    s = side_stream_behind_matmuls(torch)
    with torch.cuda.stream(s):
        a.fill_(2.0)                        # queued behind the matmuls
        kernel(n, a, b, c)                  # must run after the fill: c = 3 everywhere
        total = c.sum()
    s.synchronize()
    assert total.item() == 3.0 * n


def test_cupy_arrays(torch):
    cupy = pytest.importorskip("cupy")
    kernel = vector_add()
    n = 777
    a = cupy.arange(n, dtype=cupy.float32)
    b = cupy.full(n, 0.5, dtype=cupy.float32)
    c = cupy.zeros(n, dtype=cupy.float32)
    kernel(n, a, b, c)
    cupy.cuda.get_current_stream().synchronize()
    assert bool((c == a + b).all())


def test_argument_errors_before_launch(torch):
    from tilus.errors import ArgumentError

    kernel = vector_add()
    a = torch.zeros(100, device="cuda")
    with pytest.raises(ArgumentError, match="'b'"):
        kernel(100, a, torch.zeros(100, device="cuda", dtype=torch.float16), a)
    with pytest.raises(ArgumentError, match="aligned"):
        kernel(10, a[1:], a[1:], a[1:])
    with pytest.raises(ArgumentError, match="too small"):
        kernel(200, a, a, a)


def test_second_process_runs_from_the_cache(torch, tmp_path):
    kernel = vector_add()
    args, _ = CASES["vector_add"][1](torch, "cuda")
    kernel(*args)                            # in the cache now (built here or bundled)
    torch.cuda.synchronize()
    code = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(REPO)!r})
        from tests.gpu.kernels import (CASES, assert_matches_reference, side_stream_behind_matmuls,
                               vector_add)
        args, _ = CASES["vector_add"][1](torch, "cuda")
        vector_add()(*args)
        torch.cuda.synchronize()
        assert torch.equal(args[3].cpu(), args[1].cpu() + args[2].cpu())
        print("OK")
    """)
    env = dict(os.environ, TILUS_LOG="debug")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "OK" in proc.stdout and "cache hit" in log
    assert "cache miss" not in log and "built VecAdd" not in log
