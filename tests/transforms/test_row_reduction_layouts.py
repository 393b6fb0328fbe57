"""Row reductions: the tiles that combine with a row statistic keep each row spread over the lanes
that reduced it (no thread holds a whole row), and a tile whose inferred layout is likely to spill
is logged as a warning."""
import logging

import numpy as np

import tilus
from tilus import float16, float32
from tilus.ir.functor import instructions
from tilus.ir.layout import local, replicate
from tilus.transforms import LayoutInference


class RowSoftmax(tilus.Script):
    def __init__(self, rows, cols, warps):
        super().__init__()
        self.rows, self.cols, self.warps = rows, cols, warps

    def __call__(self, x_ptr: ~float16, y_ptr: ~float16):
        self.attrs.warps = self.warps
        gx = self.global_view(x_ptr, dtype=float16, shape=[self.rows, self.cols])
        gy = self.global_view(y_ptr, dtype=float16, shape=[self.rows, self.cols])
        x = self.load_global(gx, offsets=[0, 0], shape=[self.rows, self.cols]).to(float32)
        m = self.max(x, dim=1, keepdim=True)
        e = self.exp(self.load_global(gx, offsets=[0, 0], shape=[self.rows, self.cols])
                     .to(float32) - m)
        s = self.sum(e, dim=1, keepdim=True)
        self.store_global(gy, (e / s).to(float16), offsets=[0, 0])


def _layouts(program):
    return {inst.output.name: inst.output.layout for inst in instructions(program)
            if getattr(inst, "output", None) is not None and inst.output.scope == "register"}


def test_tiles_after_a_row_statistic_stay_spread_over_lanes():
    for rows, cols, warps in ((1, 128, 4), (8, 128, 4), (4, 512, 8)):
        inferred = LayoutInference().run(RowSoftmax(rows, cols, warps).program())
        per_thread = rows * cols // (warps * 32)  # one 16-byte vector may exceed it
        for name, layout in _layouts(inferred).items():
            assert layout.local_size <= max(per_thread, 8), (rows, cols, name, str(layout))
        x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float16)
        y = np.zeros_like(x)
        tilus.interpret(inferred, x, y)
        xf = x.astype(np.float32)
        ref = np.exp(xf - xf.max(1, keepdims=True))
        np.testing.assert_allclose(y, ref / ref.sum(1, keepdims=True), rtol=2e-3, atol=1e-4)


class Replicated(tilus.Script):
    """A whole row in every thread (annotated), and an exp of it that inherits that layout."""

    def __call__(self, x_ptr: ~float32):
        self.attrs.warps = 1
        g = self.global_view(x_ptr, dtype=float32, shape=[1, 192])
        t = self.load_global(g, offsets=[0, 0], shape=[1, 192])
        self.annotate_layout(t, local(1, 192) * replicate(32))
        self.store_global(g, self.exp(t), offsets=[0, 0])


class Even(tilus.Script):
    """A tile that needs 128 registers a thread however it is spread: no warning."""

    def __call__(self, x_ptr: ~float32):
        self.attrs.warps = 1
        g = self.global_view(x_ptr, dtype=float32, shape=[4096])
        self.store_global(g, self.load_global(g, offsets=[0], shape=[4096]) * 2.0, offsets=[0])


def test_a_tile_likely_to_spill_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING, logger="tilus"):
        inference = LayoutInference()
        inference.run(Replicated().program())
    assert [name for name, _, _ in inference.heavy_tiles] == ["exp"]
    assert "%exp holds 192 of a thread's 255 registers" in caplog.text
    for quiet_kernel in (RowSoftmax(8, 128, 4), Even()):
        quiet = LayoutInference()
        quiet.run(quiet_kernel.program())
        assert quiet.heavy_tiles == []
