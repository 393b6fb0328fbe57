"""NVIDIA Tilus names in the DSL, run by the interpreter against numpy: run-time ``range``,
``sa[stage]``, ``Tensor.to``/``.transpose()``, ``square``, ``dot(acc_dtype=)``, ``where`` with
scalar choices, ``add(out=)``, ``copy_async_wait_all``, ``static_assert``,
``register_tensor(init=lambda i, j: ...)`` and ``tilus.utils``."""
import numpy as np
import pytest

import tilus
from tilus import float16, float32, int32
from tilus.errors import NoDeviceError, ScriptError
from tilus.utils import benchmark_func, cdiv, gcd


class RowStats(tilus.Script):
    """Per row of x[rows, n]: sum of squares (a run-time range over n) and the row max where
    positive, else -1 (where with scalar choices)."""

    def __call__(self, n: int32, x_ptr: ~float16, out_ptr: ~float32):
        self.attrs.warps = 1
        gx = self.global_view(x_ptr, dtype=float16, shape=[4, n])
        go = self.global_view(out_ptr, dtype=float32, shape=[4, 2])
        acc = self.register_tensor(dtype=float32, shape=[4, 32], init=0.0)
        top = self.register_tensor(dtype=float32, shape=[4, 32], init=-1e9)
        for offset in range(0, n, 32):
            t = self.load_global(gx, offsets=[0, offset], shape=[4, 32]).to(float32)
            self.add(acc, self.square(t), out=acc)
            top = self.maximum(top, t)
        m = self.max(top, dim=1, keepdim=True)
        pos = self.where(m > 0.0, 1.0, -1.0)
        self.store_global(go, self.sum(acc, dim=1, keepdim=True), offsets=[0, 0])
        self.store_global(go, self.where(pos > 0.0, m, pos), offsets=[0, 1])

def test_runtime_range_to_square_add_out_and_scalar_where():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 96)).astype(np.float16)
    x[2] = -np.abs(x[2])
    out = np.zeros((4, 2), np.float32)
    program = RowStats().program()
    assert "for offset in range(0, n, 32)" in str(program).replace("%", "")
    RowStats()(96, x, out)
    xf = x.astype(np.float32)
    np.testing.assert_allclose(out[:, 0], (xf * xf).sum(1), rtol=1e-5)
    np.testing.assert_array_equal(out[:, 1], np.where(xf.max(1) > 0, xf.max(1), -1.0))


class Pipelined(tilus.Script):
    """c = a @ b.T through a 2-stage shared buffer indexed sa[stage], dot(acc_dtype=),
    .transpose() and copy_async_wait_all."""

    def __call__(self, k: int32, a_ptr: ~float16, b_ptr: ~float16, c_ptr: ~float32):
        self.attrs.warps = 1
        ga = self.global_view(a_ptr, dtype=float16, shape=[16, k])
        gb = self.global_view(b_ptr, dtype=float16, shape=[8, k])
        gc = self.global_view(c_ptr, dtype=float32, shape=[16, 8])
        sa = self.shared_tensor(dtype=float16, shape=[2, 16, 16])
        acc = self.register_tensor(dtype=float32, shape=[16, 8], init=0.0)
        stage: int32 = 0
        for offset in self.range(0, k, 16):
            self.copy_async(src=ga, dst=sa[stage], offsets=[0, offset])
            self.copy_async_wait_all()
            self.sync()
            b = self.load_global(gb, offsets=[0, offset], shape=[8, 16])
            acc = acc + self.dot(self.load_shared(sa[stage]), b.transpose(), acc_dtype=float32)
            stage = (stage + 1) % 2
            self.sync()
        self.free_shared(sa)
        self.store_global(gc, acc, offsets=[0, 0])


def test_shared_stage_indexing_dot_acc_dtype_transpose():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((16, 48)).astype(np.float16)
    b = rng.standard_normal((8, 48)).astype(np.float16)
    c = np.zeros((16, 8), np.float32)
    text = str(Pipelined().program())
    assert "slice_shared" in text and "copy_async_wait_group(0)" in text.replace("n=", "")
    Pipelined()(48, a, b, c)
    np.testing.assert_allclose(c, a.astype(np.float32) @ b.astype(np.float32).T, rtol=1e-4,
                               atol=1e-4)


def test_static_assert_and_bad_indexing_name_the_line():
    class Checked(tilus.Script):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def __call__(self, p: ~float32):
            self.static_assert(self.block % 32 == 0, "block must be a multiple of 32")
            self.attrs.warps = 1
            r = self.register_tensor(dtype=float32, shape=[self.block], init=0.0)
            r[0]

    with pytest.raises(ScriptError, match="block must be a multiple of 32"):
        Checked(48).program()
    with pytest.raises(ScriptError, match="leading indices of a shared tensor"):
        Checked(64).program()


def test_utils_and_tilus_type_names():
    assert tilus.f32 is tilus.float32 and tilus.f16 is tilus.float16
    assert tilus.bf16 is tilus.bfloat16 and tilus.boolean is tilus.dtypes.bool
    assert tilus.int4b is tilus.int4 and tilus.uint3b is tilus.uint3
    assert tilus.dtypes.get("int6b") is tilus.int6
    assert cdiv(10, 4) == 3 and gcd(12, 16) == 4
    with pytest.raises(TypeError):
        gcd(12.0, 16)
    with pytest.raises(NoDeviceError, match="CUDA device"):
        benchmark_func(lambda: None)


def test_tensor_methods_check_their_arguments_at_the_users_line():
    class BadTo(tilus.Script):
        def __call__(self, p: ~float32):
            self.attrs.warps = 1
            g = self.global_view(p, dtype=float32, shape=[32])
            self.load_global(g, offsets=[0], shape=[32]).to(float16, 3, 4)

    with pytest.raises(ScriptError, match=r"self.cast\(.*too many positional arguments"):
        BadTo().program()
    assert tilus.utils.cdiv(7, 2) == 4


class Masked(tilus.Script):
    """out = x + a causal mask (shifted by the run-time ``shift``) + the identity scaled by the
    compile-time ``diag``; idx = the global row-major index of each element."""

    def __init__(self, diag: float):
        super().__init__()
        self.diag = diag

    def __call__(self, shift: int32, x_ptr: ~float32, out_ptr: ~float32, idx_ptr: ~int32):
        self.attrs.warps = 1
        self.attrs.blocks = [2]
        gx = self.global_view(x_ptr, dtype=float32, shape=[16, 8])
        go = self.global_view(out_ptr, dtype=float32, shape=[16, 8])
        gi = self.global_view(idx_ptr, dtype=int32, shape=[16, 8])
        row = self.blockIdx.x * 8
        x = self.load_global(gx, offsets=[row, 0], shape=[8, 8])
        mask = self.register_tensor(dtype=float32, shape=[8, 8],
                                    init=lambda i, j: self.where(j <= i + shift, 0.0, -1e4))
        eye = self.register_tensor(dtype=float32, shape=[8, 8],
                                   init=lambda i, j: self.diag if i == j else 0.0)
        idx = self.register_tensor(dtype=int32, shape=[8, 8], init=lambda r, c: (row + r) * 8 + c)
        self.store_global(go, x + mask + eye, offsets=[row, 0])
        self.store_global(gi, idx, offsets=[row, 0])


def test_register_tensor_init_lambda_of_the_indices():
    x = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    out, idx = np.zeros((16, 8), np.float32), np.zeros((16, 8), np.int32)
    Masked(2.5)(-1, x, out, idx)
    rows, cols = np.indices((16, 8))
    i = rows % 8
    np.testing.assert_array_equal(out, x + np.where(cols <= i - 1, 0.0, -1e4).astype(np.float32)
                                  + np.where(i == cols, 2.5, 0.0).astype(np.float32))
    np.testing.assert_array_equal(idx, rows * 8 + cols)
    text = str(Masked(2.5).program())
    assert "register_tensor(axes=[i, j], init=select(j <= i + shift, 0.0, -10000.0))" in text
    assert "register_tensor(axes=[r, c], init=(row + r) * 8 + c)" in text


def test_register_tensor_init_lambda_mistakes_name_the_line():
    class Init(tilus.Script):
        def __init__(self, case):
            super().__init__()
            self.case = case

        def __call__(self, p: ~float32):
            self.attrs.warps = 1
            t = self.register_tensor(dtype=float32, shape=[4, 4], init=0.0)
            if self.case == "arity":
                self.register_tensor(dtype=float32, shape=[4, 4], init=lambda i: i)  # arity
            elif self.case == "tensor":
                self.register_tensor(dtype=float32, shape=[4, 4], init=lambda i, j: t)  # tensor
            else:
                self.register_tensor(dtype=float32, shape=[4, 4], init=lambda i, j=0: i)  # default

    for case, message in [("arity", r"init takes 1 parameter\(s\) \(i\) but the tile \[4, 4\] has "
                                    r"rank 2"),
                          ("tensor", r"init must return a scalar expression of the indices \(i, j\), "
                                     r"got the register tensor %t"),
                          ("default", "a lambda in a kernel takes plain positional parameters")]:
        with pytest.raises(ScriptError, match=message) as e:
            Init(case).program()
        assert f"# {case}" in str(e.value)   # the user's line
