"""dot: ``output = a @ b + c``.

- **mma.sync** (fast): f16/bf16 operands with a float32 accumulator (m16n8k16), int8/uint8 with
  int32 (m16n8k32), float8_e4m3 with float32 (m16n8k32, sm_89+: ``check_arch``), int4 with int32
  (m16n8k64, the codes packed eight to a register first), whose layouts are one of the mma tilings
  of tilus.ir.layout.mma (``mma_dot_layouts``, which layout inference picks from): one
  ``mma.sync.aligned`` per (m-tile, n-tile, k-tile) of each warp, operands taken straight from the
  register tiles (2 16-bit or 4 8-bit elements per 32-bit register through a uint32 view of the
  local buffer).
- **SIMT** (any layouts): every output slot accumulates its k products in the accumulator's
  compute type (float32 for floats, int32 for integers); the A row and B column a thread needs are
  read through tilus.backend.codegen.gather (free with the SIMT layouts layout inference picks).
"""
from __future__ import annotations

from tilus.backend.codegen import scalar
from tilus.backend.codegen.dtypes_map import compute
from tilus.backend.codegen.emitters.compute import operand_values, write
from tilus.backend.codegen.gather import slot_values
from tilus.backend.codegen.registry import emitter
from tilus.backend.codegen.lower import Lowerer
from tilus.backend.codegen.ptx import ptx
from tilus.backend.tvm_shim import tirx, dt
from tilus.errors import CompilationError
from tilus.ir import inst as I
from tilus.ir.functor import instructions
from tilus.ir.layout.mma import mma_dot_layouts


_MMA = {
    # (a/b dtype, c dtype) -> (k of the instruction, PTX name)
    ("float16", "float32"): (16, "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"),
    ("bfloat16", "float32"): (16, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"),
    ("int8", "int32"): (32, "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"),
    ("uint8", "int32"): (32, "mma.sync.aligned.m16n8k32.row.col.s32.u8.u8.s32"),
    # sm_89 and newer (check_arch refuses older targets); a register holds four e4m3 codes
    ("float8_e4m3", "float32"): (32, "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32"),
    # int4 tensor cores (sm_80 to sm_89); registers hold one int4 code per byte, packed below
    ("int4", "int32"): (64, "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32"),
}


def check_arch(program, arch: str) -> None:
    """CompilationError (before nvcc, in words) for a dot that would run e4m3 mma on an arch
    without it (sm_80/sm_86: e4m3 mma.sync exists from sm_89 on)."""
    if int(arch[3:5]) >= 89:
        return
    for inst in instructions(program):
        if not isinstance(inst, I.DotInst) or inst.a.dtype.name != "float8_e4m3":
            continue
        (m, k), n = inst.a.shape, inst.b.shape[1]
        tilings = mma_dot_layouts(m, n, k, inst.a.dtype, inst.c.dtype, program.num_threads)
        if (inst.a.layout, inst.b.layout, inst.c.layout) in tilings:
            raise CompilationError(f"{inst.output.name} = dot of float8_e4m3 tiles runs "
                                   f"mma.m16n8k32.e4m3, which needs sm_89 or newer (Ada, "
                                   f"Hopper), not {arch}: build for sm_89/sm_90, or cast the "
                                   f"tiles to float16 first")


def _nibbles(lw: Lowerer, buf, name: str):
    """A uint32 local buffer of the operand's codes packed eight to a register, as s4 mma reads
    them (code s in bits [4s, 4s + 4)): the register file keeps one code per byte, so each pair of
    words is squeezed: ``t = w & 0x0F0F0F0F; t |= t >> 4`` leaves codes 0|1 in byte 0 and 2|3 in
    byte 2, and bytes 0 and 2 of both words make the register."""
    words = lw.alias_local(buf, "uint32")
    n = int(words.shape[0]) // 2
    out = lw.alloc_local(n, "uint32", lw.fresh(name))

    def half(w):
        t = w & tirx.const(0x0F0F0F0F, "uint32")
        t = t | (t >> tirx.const(4, "uint32"))
        return (t & tirx.const(0xFF, "uint32")) | ((t >> tirx.const(8, "uint32"))
                                                  & tirx.const(0xFF00, "uint32"))

    for r in range(n):
        lw.store(out, half(words[2 * r]) | (half(words[2 * r + 1]) << tirx.const(16, "uint32")),
                 [r])
    return out


def _mma_config(lw: Lowerer, inst: I.DotInst):
    """(rm, rn, rk, ik, ptx name) when a, b, c (and the output) have an mma tiling layout."""
    a, b, c = inst.a, inst.b, inst.c
    entry = _MMA.get((a.dtype.name, c.dtype.name))
    if entry is None:
        return None
    ik, name = entry
    (m, k), n = a.shape, b.shape[1]
    la, lb, lc = lw.reg(a).layout, lw.reg(b).layout, lw.reg(c).layout
    if lw.reg(inst.output).layout != lc:
        return None
    a_slots, b_slots = 16 * ik // 32, 8 * ik // 32        # per thread per tile
    for al, bl, cl in lw.derived(mma_dot_layouts, m, n, k, a.dtype, c.dtype, lw.threads):
        if (al, bl, cl) != (la, lb, lc):
            continue
        rk = k // ik
        for rm in range(1, m // 16 + 1):
            for rn in range(1, n // 8 + 1):
                if rm * rn * 4 == lc.local_size and rm * rk * a_slots == la.local_size \
                        and rk * rn * b_slots == lb.local_size:
                    return rm, rn, rk, ik, name
    return None


def _emit_mma(lw: Lowerer, inst: I.DotInst, cfg) -> None:
    """One mma per (m-tile, n-tile, k-tile); slot groups of the tiling are
    (ti*rk+tk) for A, (tk*rn+tj) for B, (ti*rn+tj) for C (local(rm, rk) etc. outside the fragment)."""
    rm, rn, rk, ik, name = cfg
    a, b, c, out = lw.reg(inst.a), lw.reg(inst.b), lw.reg(inst.c), lw.reg(inst.output)
    if inst.output.name != inst.c.name:
        for s in range(c.layout.local_size):
            lw.store(out.buf, c.buf[s], [s])
    if inst.a.dtype.nbits == 4:
        aw, bw = _nibbles(lw, a.buf, "a_s4"), _nibbles(lw, b.buf, "b_s4")
    else:
        aw, bw = lw.alias_local(a.buf, "uint32"), lw.alias_local(b.buf, "uint32")
    op = ptx(name)
    d = out.buf if inst.c.dtype.is_float else lw.alias_local(out.buf, "uint32")   # s32 as .u32 registers
    for ti in range(rm):
        for tj in range(rn):
            cb = (ti * rn + tj) * 4
            for tk in range(rk):
                ab_ = (ti * rk + tk) * 4      # A: 4 registers per tile
                bb = (tk * rn + tj) * 2       # B: 2 registers per tile
                lw.emit(op(d[cb], d[cb + 1], d[cb + 2], d[cb + 3],
                           aw[ab_], aw[ab_ + 1], aw[ab_ + 2], aw[ab_ + 3], bw[bb], bw[bb + 1],
                           d[cb], d[cb + 1], d[cb + 2], d[cb + 3]))


@emitter(I.DotInst)
def dot(lw: Lowerer, inst: I.DotInst) -> None:
    cfg = _mma_config(lw, inst)
    if cfg is not None:
        _emit_mma(lw, inst, cfg)
        return
    a, b, c, out = inst.a, inst.b, inst.c, inst.output
    k = a.shape[1]
    layout = lw.reg(out).layout
    n_slots = layout.local_size
    cv = operand_values(lw, c, out, c.dtype)
    av = slot_values(lw, a, n_slots * k,
                     lambda t, v: (layout._coords(t, v // k)[0], v % k))
    bv = slot_values(lw, b, n_slots * k,
                     lambda t, v: (v % k, layout._coords(t, v // k)[1]))
    cdt = compute(c.dtype)
    acc = lw.alloc_local(n_slots, cdt, lw.fresh(out.name + "_acc"))

    def operand(dtype, v):
        x = scalar.load(dtype, v)
        return x if dt(x) == cdt else tirx.Cast(cdt, x)

    for s in range(n_slots):
        lw.store(acc, scalar.load(c.dtype, cv[s]), [s])
    for kk in range(k):
        for s in range(n_slots):
            lw.store(acc, acc[s] + operand(a.dtype, av[s * k + kk]) * operand(b.dtype, bv[s * k + kk]), [s])
    write(lw, out, [scalar.store(out.dtype, acc[s]) for s in range(n_slots)])
