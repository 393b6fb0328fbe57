"""Packed low-bit casts: ``cast`` of a low-bit tile to float16 or bfloat16 through the cast programs of
tilus.backend.lowbit_cast (lop3 / prmt / shifts + half2 ops on 32-bit words).

Applies when each thread holds whole N-element blocks of the row-major bit stream (N = the
program's elements per block; block b = elements [b*N, (b+1)*N)), in slots that are the same in
every thread (any slot order: output element e of a block goes to whichever slot holds it), or
when the codes were ``reinterpret``-ed from a uint8 tile: then block g is the thread's own words
[g*W, (g+1)*W) and the output may order the thread's elements differently from the codes (the
packed weights of format v2: the casts write whole mma registers).
The W input words of a group come
- straight from the registers of the uint8 tile the codes were ``view``-ed from, when that tile
  holds the group's 4W bytes in 4 consecutive, 4-aligned slots per word (view + cast fused: no
  unpacking at all; nvcc drops the view's unused per-element codes), or
- packed from the per-element codes (shifts and ors), otherwise.
The N/2 output words hold element pairs (e0 low, e1 high) as the program says; adjacent aligned
pairs are stored as one 32-bit word.
"""
from __future__ import annotations

import numpy as np

from tilus import dtypes
from tilus.backend.codegen.gather import flat_index, slot_values
from tilus.backend.codegen.lower import Lowerer
from tilus.ir.layout.conversion import same_index, static_slots
from tilus.backend.codegen.ptx import ptx
from tilus.backend.tvm_shim import tirx
from tilus.errors import DataTypeError
from tilus.ir import inst as I


def _program(src, dst, exponent: int = 0):
    from tilus.backend.lowbit_cast import cast_program, supported_targets

    if dst not in (dtypes.float16, dtypes.bfloat16) or dst.name not in supported_targets(src):
        return None
    try:
        return cast_program(src, dst.name, exponent)
    except DataTypeError:           # a constant out of dst's range: the scalar path rounds it
        return None


def _groups(layout, n: int):
    """Per block (in slot order of its first element): the slots of its elements 0..N-1, the same
    in every thread; None when a thread holds part of a block or threads differ."""
    table = layout.index_table()                     # [threads, slots] flat index
    if table.shape[1] % n:
        return None
    ref = None
    for row in table:
        order = {}
        groups = []
        for slot, flat in enumerate(row.tolist()):
            b, e = divmod(flat, n)
            if b not in order:
                order[b] = len(groups)
                groups.append([None] * n)
            groups[order[b]][e] = slot
        if any(x is None for g in groups for x in g):
            return None
        if ref is None:
            ref = groups
        elif groups != ref:
            return None
    return ref


def _words_from_view(lw: Lowerer, inst, prog, layout, groups):
    """uint32 words of each group read straight from the viewed uint8 tile, or None."""
    source = lw.view_source(inst.x)
    if source is None:
        return None
    raw = source
    rs = lw.reg(raw)
    k, w = prog.src.nbits, prog.num_words
    first = np.asarray([g[0] for g in groups])
    nbytes = 4 * w

    def fn(t, v):
        g, i = v // nbytes, v % nbytes
        slot = first[g] if isinstance(g, np.ndarray) else int(first[g])
        f0 = flat_index(layout._coords(t, slot), inst.output.shape)
        byte = f0 * k // 8 + i
        idx, rest = [], byte
        for size in reversed(raw.shape):
            idx.insert(0, rest % size)
            rest = rest // size
        return tuple(idx)
    slots = static_slots(rs.layout, raw.shape, len(groups) * nbytes, lw.threads, fn)
    if slots is None:
        return None
    s = np.asarray(slots).reshape(len(groups), w, 4)
    if not ((np.diff(s, axis=2) == 1).all() and (s[:, :, 0] % 4 == 0).all()):
        return None
    view = lw.alias_local(rs.buf, "uint32")
    return [[view[int(s[g, j, 0]) // 4] for j in range(w)] for g in range(len(groups))]


def _words_from_codes(lw: Lowerer, inst, prog, layout, groups):
    k, n, w = prog.src.nbits, prog.num_elements, prog.num_words
    codes = slot_values(lw, inst.x, layout.local_size, same_index(layout))
    out = []
    for slots in groups:
        words = []
        for j in range(w):
            acc = None
            for e in range(n):
                lo, hi = e * k, e * k + k
                if hi <= 32 * j or lo >= 32 * (j + 1):
                    continue
                c = tirx.Cast("uint32", codes[slots[e]])
                sh = lo - 32 * j
                part = tirx.shift_left(c, tirx.const(sh, "uint32")) if sh >= 0 \
                    else tirx.shift_right(c, tirx.const(-sh, "uint32"))
                acc = part if acc is None else tirx.bitwise_or(acc, part)
            words.append(acc if acc is not None else tirx.const(0, "uint32"))
        out.append(words)
    return out


def _run(lw: Lowerer, prog, words, regs):
    """Emit the program's ops on ``words`` into the local uint32 buffer ``regs``. A program's
    fma is ``fma.rn`` on whole words (its two constants stay 32-bit words: one register, no
    per-half rebuilding); mul and sub are float16x2/bfloat16x2 arithmetic with one constant."""
    from tilus.backend.lowbit_cast import Reg

    index = {}

    def val(a):
        if isinstance(a, Reg):
            return words[a.index] if a.index < prog.num_words else regs[index[a.index]]
        return tirx.const(int(a), "uint32")

    lanes = "float16x2" if prog.dst == "float16" else "bfloat16x2"

    def h2(x):
        return tirx.reinterpret(lanes, x)

    for op in prog.ops:
        slot = len(index)
        index[op.dst.index] = slot
        a = [val(x) for x in op.args]
        code = op.opcode
        if code == "lop3":
            lw.emit(ptx("lop3.b32")(regs[slot], a[0], a[1], a[2], op.lut))
            continue
        if code == "prmt":
            lw.emit(ptx("prmt.b32")(regs[slot], a[0], a[1], a[2]))
            continue
        if code == "fma":
            fma = "fma.rn.f16x2" if prog.dst == "float16" else "fma.rn.bf16x2"
            lw.emit(ptx(fma)(regs[slot], a[0], a[1], a[2]))
            continue
        if code == "shl":
            v = tirx.shift_left(a[0], tirx.const(op.shift, "uint32"))
        elif code == "shr":
            v = tirx.shift_right(a[0], tirx.const(op.shift, "uint32"))
        elif code == "shf_r":
            s = op.shift % 32
            v = a[0] if s == 0 else tirx.bitwise_or(tirx.shift_right(a[0], tirx.const(s, "uint32")),
                                                    tirx.shift_left(a[1], tirx.const(32 - s, "uint32")))
        elif code == "and":
            v = tirx.bitwise_and(a[0], a[1])
        elif code == "or":
            v = tirx.bitwise_or(a[0], a[1])
        elif code == "xor":
            v = tirx.bitwise_xor(a[0], a[1])
        elif code == "iadd":
            v = a[0] + a[1]
        elif code == "mul":
            v = tirx.reinterpret("uint32", h2(a[0]) * h2(a[1]))
        elif code == "sub":
            v = tirx.reinterpret("uint32", h2(a[0]) - h2(a[1]))
        else:
            return None
        lw.store(regs, v, [slot])
    return index


def slot_map(src, dst):
    """For each slot of layout ``src``, the slot of ``dst`` that holds the same element in the same
    thread, when that is the same in every thread; else None."""
    st, dt2 = src.index_table(), dst.index_table()
    if st.shape != dt2.shape:
        return None
    ref = None
    for a, b in zip(st.tolist(), dt2.tolist()):
        where = {f: i for i, f in enumerate(b)}
        m = [where.get(f) for f in a]
        if None in m or (ref is not None and m != ref):
            return None
        ref = m
    return ref


def _reinterpreted_groups(lw: Lowerer, inst, prog):
    """(words, output slots) per block when the codes were ``reinterpret``-ed from a uint8 tile:
    block g is the thread's words [g*W, (g+1)*W), its element e the codes' slot g*N + e."""
    source = lw.view_source(inst.x, reinterpreted=True)
    if source is None:
        return None
    codes = lw.reg(inst.x).layout
    smap = lw.derived(slot_map, codes, lw.reg(inst.output).layout)
    n, w = prog.num_elements, prog.num_words
    if smap is None or codes.local_size % n:
        return None
    words = lw.alias_local(lw.reg(source).buf, "uint32")
    blocks = range(codes.local_size // n)
    return ([[words[g * w + j] for j in range(w)] for g in blocks],
            [[smap[g * n + e] for e in range(n)] for g in blocks])


def try_packed_cast(lw: Lowerer, inst: I.CastInst) -> bool:
    prog = _program(inst.x.dtype, inst.output.dtype, inst.exponent)
    if prog is None:
        return False
    out = lw.reg(inst.output)
    layout = out.layout
    found = _reinterpreted_groups(lw, inst, prog)
    if found is not None:
        words, groups = found
        fused = True
    else:
        groups = lw.derived(_groups, layout, prog.num_elements) \
            if lw.reg(inst.x).layout == layout else None
        if groups is None:
            return False
        words = _words_from_view(lw, inst, prog, layout, groups)
        fused = words is not None
        if words is None:
            words = _words_from_codes(lw, inst, prog, layout, groups)
    if not _emit_blocks(lw, prog, words, groups, out):
        return False
    lw.fused_casts.append((inst.output.name, fused))
    return True


def _emit_blocks(lw: Lowerer, prog, words, groups, out) -> bool:
    """Run the program on each block's words; output element pairs in adjacent aligned slots are
    stored as one 32-bit word, others as two halves."""
    out_words = lw.alias_local(out.buf, "uint32")
    for g, group in enumerate(words):
        regs = lw.alloc_local(len(prog.ops), "uint32", lw.fresh("cvt"))
        index = _run(lw, prog, group, regs)
        if index is None:
            return False
        for reg, (e0, e1) in prog.outputs:
            v = regs[index[reg.index]] if reg.index >= prog.num_words else group[reg.index]
            s0, s1 = groups[g][e0], groups[g][e1]
            if s1 == s0 + 1 and s0 % 2 == 0:
                lw.store(out_words, v, [s0 // 2])
            else:
                half = prog.dst
                lo = tirx.reinterpret(half, tirx.Cast("uint16", tirx.bitwise_and(v, tirx.const(0xFFFF, "uint32"))))
                hi = tirx.reinterpret(half, tirx.Cast("uint16", tirx.shift_right(v, tirx.const(16, "uint32"))))
                lw.store(out.buf, lo, [s0])
                lw.store(out.buf, hi, [s1])
    return True
