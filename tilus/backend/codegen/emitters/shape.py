"""Rearranging instructions: view, transpose, squeeze, unsqueeze, repeat, broadcast.

Each reads its operand at the index the output's slot needs (tilus.backend.codegen.gather): free
when the layouts line up, through shared memory otherwise. ``view`` gathers the source codes that
cover each output element's bits and shifts them together (the shift is a compile-time constant
per slot when it is the same in every thread, as it is for bit-compatible layouts).
``reinterpret`` never moves data between threads: each output slot is cut from the thread's own
registers with constant shifts.
"""
from __future__ import annotations

import numpy as np

from tilus.backend.codegen.dtypes_map import is_native
from tilus.backend.codegen.gather import flat_index, slot_values, unravel
from tilus.backend.codegen.lower import THREAD, Lowerer
from tilus.backend.codegen.registry import emitter
from tilus.backend.codegen.emitters.compute import write
from tilus.backend.tvm_shim import tirx, dt
from tilus.errors import CompilationError
from tilus.ir import expr as E
from tilus.ir import inst as I


def _rearrange(lw: Lowerer, inst, fn_of_out_index) -> None:
    layout = lw.reg(inst.output).layout
    vals = slot_values(lw, inst.x, layout.local_size, lambda t, v: fn_of_out_index(layout._coords(t, v)))
    if inst.x.name == inst.output.name:
        raise CompilationError(f"{inst.display_name()} cannot write its own operand")
    write(lw, inst.output, vals)


@emitter(I.TransposeInst)
def transpose(lw: Lowerer, inst) -> None:
    _rearrange(lw, inst, lambda idx: (idx[1], idx[0]))


@emitter(I.SqueezeInst)
def squeeze(lw: Lowerer, inst) -> None:
    _rearrange(lw, inst, lambda idx: tuple(idx[:inst.dim]) + (0,) + tuple(idx[inst.dim:]))


@emitter(I.UnsqueezeInst)
def unsqueeze(lw: Lowerer, inst) -> None:
    _rearrange(lw, inst, lambda idx: tuple(c for d, c in enumerate(idx) if d != inst.dim))


@emitter(I.RepeatInst)
def repeat(lw: Lowerer, inst) -> None:
    shape = inst.x.shape
    _rearrange(lw, inst, lambda idx: tuple(c % n if r > 1 else c
                                           for c, n, r in zip(idx, shape, inst.repeats)))


@emitter(I.BroadcastInst)
def broadcast(lw: Lowerer, inst) -> None:
    xs = inst.x.shape
    pad = len(inst.output.shape) - len(xs)
    _rearrange(lw, inst, lambda idx: tuple(0 if n == 1 else idx[d + pad] for d, n in enumerate(xs)))


# ---------------------------------------------------------------------------------- view
def _code(dtype, v):
    """The K-bit code of a stored element as uint64."""
    if not is_native(dtype):
        return tirx.Cast("uint64", v)
    if dtype.is_bool:
        return tirx.Cast("uint64", v)
    if dtype.is_float or dtype.is_signed:
        bits = dtype.nbits
        u = tirx.reinterpret(f"uint{bits}", v) if dt(v) != f"uint{bits}" else v
        return tirx.Cast("uint64", u)
    return tirx.Cast("uint64", v)


def _from_code(dtype, code):
    """Stored element of ``dtype`` from its code (uint64 holding K bits)."""
    if not is_native(dtype):
        return tirx.Cast("uint8", code)
    if dtype.is_bool:
        return code != tirx.const(0, "uint64")
    u = tirx.Cast(f"uint{dtype.nbits}", code)
    if dtype.is_float or dtype.is_signed:
        return tirx.reinterpret(dtype.name, u)
    return u


def _min(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.minimum(a, b)
    if isinstance(a, E.Expr) or isinstance(b, E.Expr):
        return E.minimum(a, b)
    return min(a, b)


@emitter(I.ViewInst)
def view(lw: Lowerer, inst: I.ViewInst) -> None:
    x, out = inst.x, inst.output
    ks, ko = x.dtype.nbits, out.dtype.nbits
    layout = lw.reg(out).layout
    L = layout.local_size
    o = np.arange(out.type.size, dtype=np.int64)
    count = int(((o * ko + ko - 1) // ks - (o * ko) // ks).max()) + 1
    if count * ks > 64:
        raise CompilationError(f"view of {x.dtype} as {out.dtype}: an element spans more than 64 bits")

    def out_flat(t, s):
        return flat_index(layout._coords(t, s), out.shape)

    def fn(t, v):   # the c-th element of x under output slot s (repeating its last one)
        s, c = v // count, v % count
        f = out_flat(t, s)
        j = _min(f * ko // ks + c, (f * ko + ko - 1) // ks)
        return unravel(j, x.shape)

    vals = slot_values(lw, x, L * count, fn)
    # the bit shift of each slot: a constant when it is the same in every thread
    t = np.arange(lw.threads)[:, None]
    s = np.arange(L)[None, :]
    shifts = np.broadcast_to(np.asarray(out_flat(t, s)) * ko % ks, (lw.threads, L))
    static = bool((shifts == shifts[0:1]).all())
    mask = tirx.const((1 << ko) - 1 if ko < 64 else (1 << 64) - 1, "uint64")
    result = []
    for slot in range(L):
        acc = None
        for c in range(count):
            part = _code(x.dtype, vals[slot * count + c])
            if c:
                part = tirx.shift_left(part, tirx.const(c * ks, "uint64"))
            acc = part if acc is None else tirx.bitwise_or(acc, part)
        if static:
            sh = tirx.const(int(shifts[0, slot]), "uint64")
        else:
            sh = tirx.Cast("uint64", lw.expr(E.as_expr(out_flat(THREAD, slot) * ko % ks)))
        code = tirx.bitwise_and(tirx.shift_right(acc, sh), mask)
        result.append(_from_code(out.dtype, code))
    write(lw, out, result)


@emitter(I.ReinterpretInst)
def reinterpret(lw: Lowerer, inst: I.ReinterpretInst) -> None:
    x, out = inst.x, inst.output
    ks, ko = x.dtype.nbits, out.dtype.nbits
    src = lw.reg(x)
    if src.layout != x.layout:
        raise CompilationError(f"reinterpret of {x}: its registers have the layout {src.layout}, "
                               f"the instruction was written for {x.layout}")
    mask = tirx.const((1 << ko) - 1 if ko < 64 else (1 << 64) - 1, "uint64")
    result = []
    for slot in range(lw.reg(out).layout.local_size):
        lo = slot * ko
        acc = None
        for i in range(lo // ks, (lo + ko - 1) // ks + 1):
            part = _code(x.dtype, src.buf[i])
            shift = i * ks - lo
            if shift > 0:
                part = tirx.shift_left(part, tirx.const(shift, "uint64"))
            elif shift < 0:
                part = tirx.shift_right(part, tirx.const(-shift, "uint64"))
            acc = part if acc is None else tirx.bitwise_or(acc, part)
        result.append(_from_code(out.dtype, tirx.bitwise_and(acc, mask)))
    write(lw, out, result)
