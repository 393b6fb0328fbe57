"""ldmatrix for ``load_shared`` into mma.m16n8k16 fragments (16-bit types).

Checked at compile time with numpy, for every thread:
- A fragments (``mma_m16n8k16_f16_a``): each group of 8 slots holds a 16x16 tile whose origin is
  the same for all lanes of a warp -> one ``ldmatrix.x4`` per group (lane l gives the address of
  row (l % 8) + 8 * ((l // 8) % 2), column 8 * (l // 16) of the tile).
- B fragments (``mma_m16n8k16_f16_b``): each group of 4 slots holds a 16x8 (k x n) tile ->
  one ``ldmatrix.x2.trans`` (lane l gives the address of row l % 16 of the tile).
- transposed B fragments (a tile ``x`` [n, k] whose ``transpose(x)`` is a B operand, e.g. K in
  ``Q K^T``): each group of 4 slots holds an 8x16 (n x k) tile -> one ``ldmatrix.x2`` (lane l
  gives the address of row l % 8, column 8 * ((l // 8) % 2) of the tile).
- every 8-element row segment the instructions read is contiguous and 16-byte aligned in shared
  memory (strided or swizzled layouts both qualify).
Otherwise load_shared takes the per-element path.
"""
from __future__ import annotations

import numpy as np

from tilus import dtypes
from tilus.backend.codegen.gather import index_exprs, slot_index
from tilus.backend.codegen.lower import Lowerer, SharedStorage
from tilus.ir import expr as E
from tilus.ir.layout import mma_m16n8k16_f16_a, mma_m16n8k16_f16_b



class _Transposed:
    """A fragment read the other way round: ``index(lane, slot)`` is the transpose's."""

    def __init__(self, frag):
        self.frag = frag

    def index(self, lane: int, slot: int) -> tuple[int, int]:
        row, col = self.frag.index(lane, slot)
        return col, row

    def _coords(self, lane, slot) -> list:
        """``index`` over arrays of lanes and slots (``RegisterLayout._coords``'s form)."""
        row, col = self.frag._coords(lane, slot)
        return [col, row]


def _b_transposed():
    return _Transposed(mma_m16n8k16_f16_b())


_FRAGS = {"a": (mma_m16n8k16_f16_a, 8), "b": (mma_m16n8k16_f16_b, 4), "bt": (_b_transposed, 4)}


def _origins(layout, kind):
    """[threads, groups, 2] tile origins when every group matches the fragment, else None."""
    frag_fn, per = _FRAGS[kind]
    frag = frag_fn()
    threads, slots = layout.num_threads, layout.local_size
    if layout.rank != 2 or slots % per or threads % 32:
        return None
    t = np.arange(threads)[:, None]
    s = np.arange(slots)[None, :]
    rows, cols = (np.broadcast_to(np.asarray(c), (threads, slots)) for c in layout._coords(t, s))
    lane = np.arange(threads)[:, None] % 32
    fr, fc = (np.broadcast_to(np.asarray(c, dtype=np.int64), (threads, per))
              for c in frag._coords(lane, np.arange(per)[None, :]))
    groups = slots // per
    r = rows.reshape(threads, groups, per)
    c = cols.reshape(threads, groups, per)
    orow = r - fr[:, None, :]
    ocol = c - fc[:, None, :]
    if not ((orow == orow[:, :, :1]).all() and (ocol == ocol[:, :, :1]).all()):
        return None
    orow, ocol = orow[:, :, 0], ocol[:, :, 0]
    w = orow.reshape(threads // 32, 32, groups)
    wc = ocol.reshape(threads // 32, 32, groups)
    if not ((w == w[:, :1]).all() and (wc == wc[:, :1]).all()):
        return None
    return orow, ocol


def _rows_contiguous(st: SharedStorage, shape) -> bool:
    """Whether every row of the tile is made of 8-element runs, contiguous and 16-byte aligned."""
    if shape[1] % 8:
        return False
    return st.aligned_runs(tuple(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")), 8)


def try_ldmatrix(lw: Lowerer, st, out) -> bool:
    from tilus.backend.codegen.lower import THREAD
    from tilus.backend.codegen.ptx import ptx

    if st.dtype not in (dtypes.float16, dtypes.bfloat16) or out.dtype is not st.dtype:
        return False
    layout = out.layout
    kind = None
    for k in ("a", "b", "bt"):
        if _origins(layout, k) is not None:
            kind = k
            break
    if kind is None or not _rows_contiguous(st, tuple(layout.shape)):
        return False
    frag = _FRAGS[kind][0]()
    per = _FRAGS[kind][1]
    lane = THREAD % 32
    words = lw.alias_local(out.buf, "uint32")
    for q in range(layout.local_size // per):
        r0, c0 = slot_index(lw, layout, q * per)
        fr0, fc0 = index_exprs(frag.frag if kind == "bt" else frag, lane, 0)
        if kind == "bt":
            fr0, fc0 = fc0, fr0
        orow, ocol = r0 - fr0, c0 - fc0
        if kind == "a":
            row = orow + (lane % 8) + ((lane // 8) % 2) * 8
            col = ocol + (lane // 16) * 8
            off = lw.expr(E.as_expr(st.offset((row, col))))
            lw.emit(ptx("ldmatrix.sync.aligned.m8n8.x4.shared.b16")(
                words[q * 4], words[q * 4 + 1], words[q * 4 + 2], words[q * 4 + 3], st.buf.ptr_to([off])))
        elif kind == "bt":
            row = orow + (lane % 8)
            col = ocol + ((lane // 8) % 2) * 8
            off = lw.expr(E.as_expr(st.offset((row, col))))
            lw.emit(ptx("ldmatrix.sync.aligned.m8n8.x2.shared.b16")(
                words[q * 2], words[q * 2 + 1], st.buf.ptr_to([off])))
        else:
            row = orow + (lane % 16)
            off = lw.expr(E.as_expr(st.offset((row, ocol))))
            lw.emit(ptx("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16")(
                words[q * 2], words[q * 2 + 1], st.buf.ptr_to([off])))
    return True
