"""dot: ``output = a @ b + c``.

- **mma.sync** (fast): f16/bf16 operands with a float32 accumulator whose layouts are one of the
  mma tilings of tilus.transforms (``mma_dot_layouts``): one ``mma.sync.aligned.m16n8k16.row.col``
  per (m-tile, n-tile, k-tile) of each warp, operands taken straight from the register tiles
  (pairs of 16-bit elements as 32-bit registers through a uint32 alias of the local buffer).
- **SIMT** (any layouts): every output slot accumulates its k products in the accumulator's
  compute type (float32 for floats, int32 for integers); the A row and B column a thread needs are
  read through tilus.backend.codegen.gather (free with the SIMT layouts layout inference picks).
"""
from __future__ import annotations

from tilus import dtypes
from tilus.backend.codegen import scalar
from tilus.backend.codegen.dtypes_map import compute
from tilus.backend.codegen.emitters.compute import operand_values, write
from tilus.backend.codegen.gather import slot_values
from tilus.backend.codegen.registry import emitter
from tilus.backend.tvm_shim import T, TB, tirx, dt
from tilus.ir import inst as I


def _mma_config(lw, inst: I.DotInst):
    from tilus.transforms.layout_inference import mma_dot_layouts

    a, b, c = inst.a, inst.b, inst.c
    if a.dtype not in (dtypes.float16, dtypes.bfloat16) or c.dtype is not dtypes.float32:
        return None
    (m, k), n = a.shape, b.shape[1]
    la, lb, lc = lw.reg(a).layout, lw.reg(b).layout, lw.reg(c).layout
    if lw.reg(inst.output).layout != lc:
        return None
    for al, bl, cl in mma_dot_layouts(m, n, k, a.dtype, c.dtype, lw.threads):
        if (al, bl, cl) == (la, lb, lc):
            warps = lw.threads // 32
            # recover the warp grid from the C layout's tile counts
            for wm in range(1, warps + 1):
                if warps % wm:
                    continue
                for r in range(1, warps + 1):
                    if (warps // r) % wm or warps % r:
                        continue
                    wn = warps // r // wm
                    if wn < 1 or m % (16 * wm) or n % (8 * wn):
                        continue
                    rm, rn, rk = m // (16 * wm), n // (8 * wn), k // 16
                    if rm * rn * 4 == lc.local_size and rm * rk * 8 == la.local_size \
                            and rk * rn * 4 == lb.local_size:
                        return rm, rn, rk
    return None


def _words(lw, buf):
    return lw.alias_local(buf, "uint32")


def _emit_mma(lw, inst: I.DotInst, cfg) -> None:
    rm, rn, rk = cfg
    a, b, c, out = lw.reg(inst.a), lw.reg(inst.b), lw.reg(inst.c), lw.reg(inst.output)
    if out.buf.same_as(c.buf) is False and inst.output.name != inst.c.name:
        for s in range(c.layout.local_size):
            lw.store(out.buf, c.buf[s], [s])
    aw, bw = _words(lw, a.buf), _words(lw, b.buf)
    ab = "f16" if inst.a.dtype is dtypes.float16 else "bf16"
    op = T.ptx[f"mma.sync.aligned.m16n8k16.row.col.f32.{ab}.{ab}.f32"]
    d = out.buf
    for ti in range(rm):
        for tj in range(rn):
            cb = (ti * rn + tj) * 4
            for tk in range(rk):
                ab_ = (ti * rk + tk) * 4      # in 32-bit words
                bb = (tk * rn + tj) * 2
                lw.emit(op(d[cb], d[cb + 1], d[cb + 2], d[cb + 3],
                           aw[ab_], aw[ab_ + 1], aw[ab_ + 2], aw[ab_ + 3], bw[bb], bw[bb + 1],
                           d[cb], d[cb + 1], d[cb + 2], d[cb + 3]))


@emitter(I.DotInst)
def dot(lw, inst: I.DotInst) -> None:
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
