"""global_tensor + item_ptr (issue 13, item 1): a split-K matmul whose blocks accumulate partial
sums in a kernel-owned fp32 workspace, serialised by semaphores in a requires_clean workspace,
against numpy; the text round trip; the clean-on-exit contract; the errors."""
import numpy as np
import pytest

import tilus
from tilus.errors import InterpreterError, TilusError
from tilus.ir.inst import AllocateGlobalInst
from tilus.ir.parser import parse


class SplitKWorkspace(tilus.Script):
    """C = A @ B: split z adds its partial product into ``partial`` (a requires_clean=False
    workspace, written first by split 0) in split order; the last split writes C and every split
    hands the tile's semaphore on, the last one resetting it to 0."""

    def __init__(self, split_k: int = 3, reset: bool = True):
        super().__init__()
        self.split_k, self.reset = split_k, reset

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: ~tilus.float32,
                 b: ~tilus.float32, c: ~tilus.float32):
        bm, bn, bk = 8, 8, 4
        tiles_m, tiles_n = tilus.cdiv(m, bm), tilus.cdiv(n, bn)
        self.attrs.blocks = [tiles_m, tiles_n, self.split_k]
        self.attrs.warps = 1
        ga = self.global_view(a, shape=[m, k])
        gb = self.global_view(b, shape=[k, n])
        gc = self.global_view(c, shape=[m, n])
        sema = self.global_tensor(tilus.int32, shape=[tiles_m, tiles_n], requires_clean=True)
        partial = self.global_tensor(dtype=tilus.float32, shape=[m, n], requires_clean=False)
        lock = sema[self.blockIdx.x, self.blockIdx.y].item_ptr()
        m0, n0, split = self.blockIdx.x * bm, self.blockIdx.y * bn, self.blockIdx.z
        per_split = tilus.cdiv(tilus.cdiv(k, bk), self.split_k)
        acc = self.register_tensor(dtype=tilus.float32, shape=[bm, bn], init=0.0)
        for kt in self.range(split * per_split, min(split * per_split + per_split, tilus.cdiv(k, bk))):
            ta = self.load_global(ga, offsets=[m0, kt * bk], shape=[bm, bk])
            tb = self.load_global(gb, offsets=[kt * bk, n0], shape=[bk, bn])
            self.dot(ta, tb, acc, out=acc)
        self.lock_semaphore(lock, value=split)
        if split > 0:
            acc += self.load_global(partial, offsets=[m0, n0], shape=[bm, bn])
        self.store_global(partial, acc, offsets=[m0, n0])
        if split == self.split_k - 1:
            self.store_global(gc, acc, offsets=[m0, n0])
        if self.reset:
            self.release_semaphore(sema.item_ptr(self.blockIdx.x, self.blockIdx.y),
                                   value=(split + 1) % self.split_k)
        else:
            self.release_semaphore(lock, value=split + 1)


def _operands(m: int = 12, n: int = 10, k: int = 22):
    rng = np.random.default_rng(0)
    return rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)


@pytest.mark.parametrize("split_k", [1, 3])
def test_split_k_through_workspaces_matches_numpy(split_k):
    a, b = _operands()
    c = np.zeros((a.shape[0], b.shape[1]), np.float32)
    tilus.interpret(SplitKWorkspace(split_k), a.shape[0], b.shape[1], a.shape[1], a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


def test_workspace_left_dirty_is_an_error():
    a, b = _operands()
    c = np.zeros((a.shape[0], b.shape[1]), np.float32)
    with pytest.raises(InterpreterError, match="requires_clean=True.*reset it to zeros"):
        tilus.interpret(SplitKWorkspace(3, reset=False), a.shape[0], b.shape[1], a.shape[1], a, b, c)


def test_text_form_round_trips():
    program = SplitKWorkspace(2).program()
    allocs = [s for s in tilus.ir.functor.walk(program) if isinstance(s, AllocateGlobalInst)]
    assert [x.requires_clean for x in allocs] == [True, False]
    text = str(program)
    assert "global_tensor(requires_clean=true)" in text and "global_tensor(requires_clean=false)" in text
    again = parse(text)
    assert again == program and str(again) == text


def test_item_ptr_needs_one_index_per_dimension():
    class Bad(tilus.Script):
        def __call__(self, n: tilus.int32):
            self.attrs.blocks = [1]
            self.attrs.warps = 1
            s = self.global_tensor(tilus.int32, shape=[4, 4], requires_clean=True)
            self.lock_semaphore(s.item_ptr(0), value=0)

    with pytest.raises(TilusError, match="1 indices for the rank-2 tensor"):
        Bad().program()


def test_requires_clean_is_a_bool():
    class Bad(tilus.Script):
        def __call__(self, n: tilus.int32):
            self.attrs.blocks = [1]
            self.attrs.warps = 1
            self.global_tensor(tilus.int32, shape=[4], requires_clean=1)

    with pytest.raises(TilusError, match="requires_clean must be True or False"):
        Bad().program()


def test_builds_for_sm90_with_hidden_workspace_parameters(tmp_path):
    """tilus.build compiles it: each workspace is a trailing pointer parameter of the CUDA kernel
    (named apart from the kernel's own ``sema``), and the cache metadata records what the launcher
    allocates for them (tests/runtime/test_workspaces.py launches them)."""
    pytest.importorskip("tvm")
    from tilus.backend.artifact import build_artifact
    from tilus.runtime import KernelCache, KernelMetadata

    class Clash(tilus.Script):
        def __call__(self, n: tilus.int32, sema: ~tilus.int32):
            self.attrs.blocks = [2]
            self.attrs.warps = 1
            g = self.global_view(sema, shape=[n])
            sema = self.global_tensor(tilus.int32, shape=[2], requires_clean=True)
            self.lock_semaphore(sema.item_ptr(0), value=self.blockIdx.x)
            self.release_semaphore(sema[0].item_ptr(), value=(self.blockIdx.x + 1) % 2)
            self.store_global(g, self.register_tensor(dtype=tilus.int32, shape=[1], init=1),
                              offsets=[self.blockIdx.x])

    for kernel, hidden in [(SplitKWorkspace(2), ["float* __restrict__ partial_ptr",
                                                 "int* __restrict__ sema_ptr"]),
                           (Clash(), ["int* __restrict__ sema_ptr, int* __restrict__ sema_1_ptr"])]:
        built = tilus.build(kernel, "sm_90", cache=KernelCache(tmp_path))
        signature = next(ln for ln in built.cuda_source.splitlines() if "__global__" in ln)
        assert all(h in signature for h in hidden), signature
    meta = build_artifact(SplitKWorkspace(2), "sm_90").artifact.metadata
    assert meta.extra["workspaces"] == [
        {"name": "sema", "type": "global[int32, (tiles_m, tiles_n)]", "storage": "int32",
         "count": "cdiv(m, 8) * cdiv(n, 8)", "requires_clean": True},
        {"name": "partial", "type": "global[float32, (m, n)]", "storage": "float32",
         "count": "m * n", "requires_clean": False}]
    assert KernelMetadata.from_json(meta.to_json()) == meta
    clash = build_artifact(Clash(), "sm_90").artifact.metadata
    assert [w["name"] for w in clash.extra["workspaces"]] == ["sema_1"]
    assert {"name": "sema_1_ptr", "ctype": "void*", "role": "ptr", "param": "sema_1"} in \
        clash.extra["device_params"]


def test_verifier_names_a_workspace_outside_global_memory():
    from tilus.errors import IRError

    text = str(SplitKWorkspace(2).program()).replace(
        "%partial: global[float32, (m, n)] = global_tensor", "%partial: register[float32, (8, 8)] = global_tensor")
    assert text != str(SplitKWorkspace(2).program())
    with pytest.raises(IRError, match="global_tensor: the output %partial must be a global tensor"):
        parse(text)
