"""load_scalar in the interpreter: a block reads a table entry and branches and indexes on it,
checked against numpy (entries -1 skip the block; an index outside the table reads 0)."""
from __future__ import annotations

import numpy as np
import torch

import tilus


class TableGather(tilus.Script):
    """Block b: e = table[b, 0]; if e >= 0, y[b] = x[e] * scale[b] (scale read as a float16
    scalar), else y[b] stays; table[b, 1] (int32, a column offset) shifts the loaded row."""

    def __call__(self, n: tilus.int32, rows: tilus.int32, table: ~tilus.int64,
                 scale: ~tilus.float16, x: ~tilus.float32, y: ~tilus.float32):
        self.attrs.blocks = rows
        self.attrs.warps = 1
        gt = self.global_view(table, dtype=tilus.int64, shape=[rows, 2])
        gs = self.global_view(scale, dtype=tilus.float16, shape=[rows])
        gx = self.global_view(x, dtype=tilus.float32, shape=[n, 40])
        gy = self.global_view(y, dtype=tilus.float32, shape=[rows, 32])
        e = self.load_scalar(gt, offsets=[self.blockIdx.x, 0])
        if e >= 0:
            shift = self.load_scalar(gt, offsets=[self.blockIdx.x, 1])
            s = self.load_scalar(gs, offsets=[self.blockIdx.x + 1])   # past the end: 0
            v = self.load_global(gx, offsets=[tilus.ir.expr.cast(e, tilus.int32),
                                              tilus.ir.expr.cast(shift, tilus.int32)],
                                 shape=[1, 32])
            self.store_global(gy, v * tilus.ir.expr.cast(s, tilus.float32),
                              offsets=[self.blockIdx.x, 0])


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, rows = 6, 5
    table = torch.tensor([[3, 0], [-1, 4], [0, 8], [5, 2], [7, 1]], dtype=torch.int64)
    scale = torch.tensor([0.5, 2.0, -1.5, 3.0, 0.25], dtype=torch.float16)
    x = torch.randn(n, 40, generator=g)
    y = torch.full((rows, 32), 9.0)
    return [n, rows, table, scale, x, y]


def reference(n, rows, table, scale, x, y):
    out = y.numpy().copy()
    xs = np.concatenate([x.numpy(), np.zeros((1, 40), np.float32)])
    for b in range(rows):
        e, shift = int(table[b, 0]), int(table[b, 1])
        if e < 0:
            continue
        s = float(scale[b + 1]) if b + 1 < rows else 0.0
        row = xs[e if e < n else n]
        out[b] = np.concatenate([row, np.zeros(32, np.float32)])[shift:shift + 32] * s
    return out


def test_table_gather_matches_numpy():
    args = inputs()
    expected = reference(*args)
    TableGather()(*args)
    np.testing.assert_array_equal(args[5].numpy(), expected)


def test_program_prints_the_scalar_loads():
    text = str(TableGather().program())
    assert "e: int64 = load_scalar(%gt, offsets=[blockIdx.x, 0])" in text
    assert "s: float16 = load_scalar(%gs, offsets=[blockIdx.x + 1])" in text
