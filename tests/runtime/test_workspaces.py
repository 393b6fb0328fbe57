"""The launcher allocates a kernel's ``global_tensor`` workspaces (issue 13, item 1): one buffer per
workspace of the size its metadata expression gives, appended after the call's arguments, kept
per device and stream for the next launch (grown when a launch needs more), in the arguments'
framework; the metadata's workspace fields are validated like the rest."""
import json

import numpy as np
import pytest
import torch

from tilus.errors import ArgumentError, CacheCorruptionError
from tilus.runtime.kernel import LoadedKernel
from tilus.runtime.metadata import KernelMetadata, Param

WORKSPACES = [
    {"name": "sema", "type": "global[int32, (tiles,)]", "storage": "int32",
     "count": "cdiv(n, 4)", "requires_clean": True},
    {"name": "acc", "type": "global[bfloat16, (n, 2)]", "storage": "bfloat16",
     "count": "n * 2", "requires_clean": False},
]


def _meta(workspaces=WORKSPACES) -> KernelMetadata:
    return KernelMetadata(name="k", entry="k", target="cpu",
                          params=(Param("n", "scalar", "int32"), Param("x", "pointer", "float32")),
                          extra={"workspaces": workspaces})


def _recording():
    calls = []
    return LoadedKernel(_meta(), lambda *values: calls.append(values)), calls


@pytest.mark.parametrize("make", [lambda n: np.zeros(n, np.float32),
                                  lambda n: torch.zeros(n, dtype=torch.float32)])
def test_workspaces_follow_the_arguments(make):
    kernel, calls = _recording()
    x = make(7)
    kernel(7, x)
    (values,) = calls
    n, got_x, sema, acc = values
    assert n == 7 and got_x is x
    assert type(sema) is type(x) and len(sema) == 2 and len(acc) == 14     # cdiv(7, 4), 7 * 2
    assert str(sema.dtype).endswith("int32") and str(acc.dtype).endswith("bfloat16")
    assert not np.asarray(sema).any()


def test_buffers_are_kept_and_grown_per_size():
    kernel, calls = _recording()
    kernel(9, np.zeros(9, np.float32))
    kernel(5, np.zeros(5, np.float32))          # smaller: a view of the same buffer
    kernel(40, np.zeros(40, np.float32))        # larger: a new one
    (_, _, s9, a9), (_, _, s5, a5), (_, _, s40, a40) = calls
    assert (len(s9), len(s5), len(s40)) == (3, 2, 10)
    assert np.shares_memory(s9, s5) and np.shares_memory(a9, a5)
    assert not np.shares_memory(s9, s40) and not s40.any()


def test_a_negative_size_is_an_argument_error():
    calls = []
    kernel = LoadedKernel(_meta(WORKSPACES[1:]), lambda *values: calls.append(values))
    with pytest.raises(ArgumentError, match="workspace acc would have -6 elements"):
        kernel(-3, np.zeros(1, np.float32))
    assert calls == [] and kernel.launches == 0


@pytest.mark.parametrize("field, value, message", [
    ("count", "n * q", "names something other than the scalar parameters"),
    ("count", "__import__('os')", "not allowed"),
    ("storage", "float8", "expected one of"),
    ("requires_clean", 1, "expected true or false"),
    ("name", "x", "already a parameter's name"),
    ("name", "a b", "identifier"),
])
def test_malformed_workspace_metadata_is_damage(field, value, message):
    bad = [dict(WORKSPACES[0], **{field: value})]
    text = json.dumps(_meta(bad).to_json())
    with pytest.raises(CacheCorruptionError, match=message):
        KernelMetadata.loads(text)
    assert KernelMetadata.loads(json.dumps(_meta().to_json())) == _meta()


def test_split_k_workspaces_through_the_launcher_and_the_simulator():
    """The built split-K kernel's metadata drives the launcher; its function is the simulator
    running the lowered PrimFunc (the CPU stand-in for the GPU). Two launches, the second larger:
    both equal numpy, and the semaphores the launcher keeps stay all zeros."""
    pytest.importorskip("tvm")
    from tests.interpreter.test_global_tensor import SplitKWorkspace
    from tilus.backend.artifact import build_artifact
    from tilus.simulator import run_prim_func

    built = build_artifact(SplitKWorkspace(3), "sm_90")
    meta = built.artifact.metadata
    assert [w["name"] for w in meta.extra["workspaces"]] == ["sema", "partial"]
    assert [w["count"] for w in meta.extra["workspaces"]] == ["cdiv(m, 8) * cdiv(n, 8)", "m * n"]
    cpu = KernelMetadata(**{**meta.__dict__, "target": "cpu"})
    func = built.kernel.prim_func
    kernel = LoadedKernel(cpu, lambda *values: run_prim_func(func, values))
    rng = np.random.default_rng(3)
    for m, n, k in [(12, 10, 22), (17, 9, 30)]:
        a = torch.from_numpy(rng.standard_normal((m, k), np.float32))
        b = torch.from_numpy(rng.standard_normal((k, n), np.float32))
        c = torch.zeros(m, n)
        kernel(m, n, k, a, b, c)
        np.testing.assert_allclose(c.numpy(), (a @ b).numpy(), rtol=1e-5, atol=1e-5)
    sema = [buf for key, buf in kernel.workspaces._buffers.items() if key[0] == "sema"]
    assert len(sema) == 1 and len(sema[0]) == 3 * 2 and not sema[0].any()
