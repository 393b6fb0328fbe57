"""load_scalar in the interpreter (against numpy) and in the DSL: a block table walked with
per-block loop bounds, every element type it takes, the error for an element outside the tensor."""
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.errors import InterpreterError, TilusError
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BlockIdx, const


class TableSum(tilus.Script):
    """out[b] = sum over i < lens[b] of x[table[b, i]] (rows chosen through a table)."""

    def __call__(self, n: tilus.int32, table: ~tilus.int32, lens: ~tilus.int32,
                 x: ~tilus.float32, out: ~tilus.float32):
        self.attrs.blocks = n
        self.attrs.warps = 1
        gt = self.global_view(table, dtype=tilus.int32, shape=[n, 5])
        gl = self.global_view(lens, dtype=tilus.int32, shape=[n])
        gx = self.global_view(x, dtype=tilus.float32, shape=[9, 24])
        go = self.global_view(out, dtype=tilus.float32, shape=[n, 24])
        acc = self.register_tensor(dtype=tilus.float32, shape=[32], init=0.0)
        b = self.blockIdx.x
        for i in self.range(self.load_scalar(gl, offsets=[b])):
            row = self.load_scalar(gt, offsets=[b, i])
            acc = acc + self.load_global(gx, offsets=[row, 0], shape=[32])
        self.store_global(go, acc, offsets=[b, 0])


def test_a_table_walk_equals_numpy():
    rng = np.random.default_rng(0)
    table = rng.permutation(45).reshape(5, 9)[:, :5] % 9
    lens = np.array([5, 0, 3, 1, 2])
    x = rng.standard_normal((9, 24)).astype(np.float32)
    out = np.zeros((5, 24), np.float32)
    tilus.interpret(TableSum(), 5, table.astype(np.int32), lens.astype(np.int32), x, out)
    ref = np.stack([x[table[b, :lens[b]]].sum(0) for b in range(5)])
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int64", "float16", "bfloat16", "float32"])
def test_every_byte_type_reads_its_value(dtype):
    t = dtypes.get(dtype)
    b = ProgramBuilder("one")
    src, dst = b.param("src", ~t), b.param("dst", ~t)
    gs, gd = b.global_view(src, t, [3, 2]), b.global_view(dst, t, [1])
    v = b.load_scalar(gs, [2, BlockIdx(0)])
    b.store_global(gd, b.register_tensor(t, [1], init=v), [0])
    b.blocks = (const(1),)
    values = torch.tensor([[1, -2], [3, 4], [-5, 6]]).to(getattr(torch, dtype if dtype != "uint16" else "int32"))
    if dtype == "uint16":
        values = values.abs().to(torch.uint16)
    out = torch.zeros(1, dtype=values.dtype)
    tilus.interpret(b.finish(), values, out)
    assert out.item() == values[2, 0].item()


def test_an_element_outside_the_tensor_is_an_error():
    table = np.zeros((2, 5), np.int32)
    with pytest.raises(InterpreterError, match=r"load_scalar .*the index \[0, 5\] lies outside %gt"):
        tilus.interpret(TableSum(), 2, table, np.array([6, 0], np.int32),
                        np.zeros((9, 24), np.float32), np.zeros((2, 24), np.float32))


def test_dsl_errors_name_the_line():
    class BadRank(tilus.Script):
        def __call__(self, t: ~tilus.int32):
            self.attrs.blocks = 1
            self.attrs.warps = 1
            g = self.global_view(t, dtype=tilus.int32, shape=[4, 4])
            self.load_scalar(g, offsets=[0])

    with pytest.raises(TilusError, match="load_scalar: 1 offsets for the rank-2 tensor"):
        BadRank().program()
