"""Element reads and writes of global and shared tensors (native types directly, sub-byte types
as bit streams), shared by the memory emitters."""
from __future__ import annotations

from tilus.backend.codegen import bitstream
from tilus.backend.codegen.lower import Lowerer
from tilus.backend.tvm_shim import tirx, dt


def subbyte(dtype) -> bool:
    return dtype.nbits < 8


def in_bounds(lw: Lowerer, index, shape):
    """The IR condition 0 <= index[d] < shape[d] for every d (TIR, bool)."""
    cond = None
    for i, n in zip(index, shape):
        i, n = _e(i), _e(n)
        c = lw.lowered(("in_bounds", i, n), lambda: in_range(lw.expr(i), lw.expr(n)))
        cond = c if cond is None else tirx.And(cond, c)
    return cond if cond is not None else tirx.const(True, "bool")


def in_range(ii, nn):
    """The TIR condition 0 <= ii < nn (nn converted to ii's type)."""
    if dt(ii) != dt(nn):
        nn = tirx.Cast(dt(ii), nn)
    return tirx.And(ii >= tirx.const(0, dt(ii)), ii < nn)


def _e(x):
    from tilus.ir.expr import as_expr
    return as_expr(x)


def global_read(lw: Lowerer, g, index):
    off = lw.expr(_e(g.offset(index)))
    if subbyte(g.dtype):
        return bitstream.read_code(g.buf, 8, off, g.dtype.nbits)
    return g.buf[off]


def global_write(lw: Lowerer, g, index, value) -> None:
    off = lw.expr(_e(g.offset(index)))
    if subbyte(g.dtype):
        lw.assume("sub-byte global buffers written by the kernel are 4-byte aligned")
        bitstream.write_code(lw, g.words, off, g.dtype.nbits, value)
    else:
        lw.store(g.buf, value, [off])


def shared_read(lw: Lowerer, st, index):
    off = lw.expr(_e(st.offset(tuple(index))))
    if subbyte(st.dtype):
        return bitstream.read_code(st.buf, 32, off, st.dtype.nbits)
    return st.buf[off]


def shared_write(lw: Lowerer, st, index, value) -> None:
    off = lw.expr(_e(st.offset(tuple(index))))
    if subbyte(st.dtype):
        bitstream.write_code(lw, st.buf, off, st.dtype.nbits, value)
    else:
        lw.store(st.buf, value, [off])
