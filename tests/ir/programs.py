"""Hand-built programs for the text-form tests: a matmul-like kernel (the golden file) and a kernel
that uses every instruction (every text name of every instruction class)."""
from __future__ import annotations

from tilus import dtypes as D
from tilus.ir import inst as I
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BlockIdx, cdiv, const, eq, select
from tilus.ir.layout import local, replicate, spatial


def matmul_program():
    """C[m, n] = A[m, k] (float16) @ B[k, n] (uint4 codes, as float16), one 16x8 tile per block."""
    b = ProgramBuilder("matmul_f16_u4")
    m, n, k = b.param("m", D.int32), b.param("n", D.int32), b.param("k", D.int32)
    pa, pb, pc = b.param("a", ~D.float16), b.param("b", ~D.uint4), b.param("c", ~D.float16)
    b.blocks = (cdiv(m, 16), cdiv(n, 8))
    b.warps = 1
    b.consts = [("block_m", 16), ("block_n", 8), ("block_k", 16)]
    ga = b.global_view(pa, D.float16, [m, k], name="ga")
    gb = b.global_view(pb, D.uint4, [k, n], name="gb")
    gc = b.global_view(pc, D.float16, [m, n], name="gc")
    sa = b.shared_tensor(D.float16, [16, 16], name="sa")
    sb = b.shared_tensor(D.uint4, [16, 8], name="sb")
    acc = b.register_tensor(D.float32, [16, 8], init=0.0, name="acc")
    with b.for_range(0, cdiv(k, 16), name="kk", unroll=2) as kk:
        b.copy_async(ga, sa, [BlockIdx(0) * 16, kk * 16])
        b.copy_async(gb, sb, [kk * 16, BlockIdx(1) * 8])
        b.copy_async_commit_group()
        b.copy_async_wait_group(0)
        b.sync()
        xa = b.load_shared(sa, name="xa")
        xb = b.load_shared(sb, name="xb")
        xbf = b.cast(xb, D.float16, name="xbf")
        b.dot(xa, xbf, acc, out=acc)
        b.sync()
    out = b.cast(acc, D.float16, name="out")
    b.store_global(gc, out, [BlockIdx(0) * 16, BlockIdx(1) * 8])
    return b.finish()


def every_instruction_program():
    """One kernel that uses every instruction under every one of its text names."""
    b = ProgramBuilder("kitchen_sink")
    n = b.param("n", D.int32)
    scale = b.param("scale", D.float32)
    pa, pq = b.param("a", ~D.float16), b.param("q", ~D.uint4)
    psem, po = b.param("sem", ~D.int32), b.param("o", ~D.float32)
    b.blocks = (cdiv(n, 16), const(2), const(1))
    b.warps = 4
    b.consts = [("name", 'tab\t"quoted"\n'), ("dtype", D.float6_e3m2), ("tile", (16, 64)),
                ("flag", True), ("ratio", 0.25), ("unused", None), ("with space", -3)]
    ga = b.global_view(pa, D.float16, [n, 64])
    gq = b.global_view(pq, D.uint4, [n, 64], strides=[64, 1])
    gs = b.global_view(psem, D.int32, [n])
    go = b.global_view(po, D.float32, [n, 64])
    row = BlockIdx(0) * 16
    x = b.load_global(ga, [row, 0], [16, 64], other=-1.5)
    xq = b.load_global(gq, [row, 0], [64], dims=[1])
    s = b.shared_tensor(D.float16, [16, 64])
    b.copy_async(ga, s, [row, 0])
    b.copy_async_commit_group()
    b.copy_async_wait_group(1)
    b.sync()
    sl = b.slice_shared(s, [0, 0], [64], dims=[1])
    y = b.load_shared(sl)
    y2 = b.load_shared(s)
    b.store_shared(s, y2)
    b.free_shared(s)
    v = b.view(xq, D.uint8)
    vc = b.cast(v, D.int32)
    table = b.shared_tensor(D.float32, [256])
    b.store_shared(table, b.register_tensor(D.float32, [256], init=0.5))
    b.lookup(table, vc)
    b.free_shared(table)
    f = b.cast(x, D.float32)
    r = b.register_tensor(D.float32, [16, 64], init=scale)
    b.register_tensor(D.float32, [16, 64], init=lambda i, j: select(eq(i, j + n), scale, -0.5))
    b.assign(r, f)
    for op in I.UNARY_ELEMENTWISE:
        if op in ("not",):
            b.unary(op, b.binary("lt", f, 0.0))
        elif op in I.INTEGER_ONLY:
            b.unary(op, vc)
        else:
            b.unary(op, f)
    for op in I.BINARY_ELEMENTWISE:
        if op in ("and", "or"):
            c = b.binary("gt", f, 1.0)
            b.binary(op, c, c)
        elif op in I.INTEGER_ONLY:
            b.binary(op, vc, 3)
        else:
            b.binary(op, f, r)
            if op not in I.COMPARE_ELEMENTWISE:
                b.binary(op, 2.0, f, out=r)
    cond = b.binary("ge", f, scale)
    b.where(cond, f, 0.0)
    b.fma(f, 2.0, r)
    packed = b.register_tensor(D.uint8, [1, 64], init=0, layout=spatial(1, 64) * replicate(2))
    b.reinterpret(packed, D.uint4, [2, 64], local(2, 1) * spatial(1, 64) * replicate(2))
    moved = b.convert_layout(packed, local(1, 64) * replicate(128))
    xs = b.shared_tensor(D.uint8, [1, 64])
    b.emit(I.ConvertLayoutInst(b._out("moved_back", D.uint8, [1, 64], "register",
                                      spatial(1, 64) * replicate(2)), moved, xs))
    b.free_shared(xs)
    for op in I.REDUCE_OPS:
        b.reduce(op, f, 1, keepdim=(op == "sum"))
    h = b.register_tensor(D.float16, [16, 16], init=0.5)
    w = b.register_tensor(D.float16, [16, 8], init=const(1.0, D.float16))
    acc = b.register_tensor(D.float32, [16, 8], init=0)
    with b.for_range(0, 4, name="kk", unroll=True):
        b.dot(h, w, acc, out=acc)
    t = b.transpose(acc)
    u = b.unsqueeze(t, 0)
    b.squeeze(u, 0)
    b.repeat(y, [2])
    b.broadcast(y, [4, 64])
    first = b.load_scalar(gs, [BlockIdx(0) % n], name="first")
    b.store_global(go, r, [first, 0])
    b.lock_semaphore(gs, [BlockIdx(0)], 0)
    b.release_semaphore(gs, [BlockIdx(0)], BlockIdx(0) + 1)
    ws = b.global_tensor(D.int32, [2, 4], requires_clean=True)
    b.release_semaphore(ws, [1, BlockIdx(0)], 0)
    b.print_tensor(acc, "acc = \\ \u00e9")
    b.print_tensor(acc)
    b.store_global(go, r, [row, 0])
    return b.finish()
