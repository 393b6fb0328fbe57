"""Whole kernels: fp16 matmul through shared memory, low-bit weight matmul."""
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BlockIdx, cdiv

from tests.interpreter.oracles import code_value, pack_bits


def matmul_program(bm=32, bn=16, bk=32):
    b = ProgramBuilder("matmul")
    m, n, k = (b.param(x, dtypes.int32) for x in "mnk")
    pa, pb, pc = (b.param(x, ~dtypes.float16) for x in "abc")
    b.blocks = (cdiv(n, bn), cdiv(m, bm))
    b.warps = 4
    ga = b.global_view(pa, dtypes.float16, [m, k])
    gb = b.global_view(pb, dtypes.float16, [k, n])
    gc = b.global_view(pc, dtypes.float16, [m, n])
    row, col = BlockIdx(1) * bm, BlockIdx(0) * bn
    sa = b.shared_tensor(dtypes.float16, [bm, bk])
    sb = b.shared_tensor(dtypes.float16, [bk, bn])
    acc = b.register_tensor(dtypes.float32, [bm, bn], init=0.0)
    with b.for_range(0, cdiv(k, bk), name="kk") as kk:
        b.copy_async(ga, sa, [row, kk * bk])
        b.copy_async(gb, sb, [kk * bk, col])
        b.copy_async_commit_group()
        b.copy_async_wait_group(0)
        b.sync()
        b.dot(b.load_shared(sa), b.load_shared(sb), acc, out=acc)
        b.sync()
    b.free_shared(sa)
    b.free_shared(sb)
    b.store_global(gc, b.cast(acc, dtypes.float16), [row, col])
    return b.finish()


@pytest.mark.parametrize("m,n,k", [(64, 48, 96), (50, 40, 70), (1, 1, 1)])
def test_fp16_matmul_with_shared_tiles_equals_torch(m, n, k):
    torch.manual_seed(0)
    a = torch.randn(m, k, dtype=torch.float16)
    b = torch.randn(k, n, dtype=torch.float16)
    c = torch.full((m, n), float("nan"), dtype=torch.float16)
    tilus.interpret(matmul_program(), m, n, k, a, b, c)
    want = (a.float() @ b.float()).half()
    torch.testing.assert_close(c, want, atol=1e-2, rtol=1e-2)


def lowbit_matmul_program(wtype, mode, bm=16, bn=32, bk=32):
    """c[m, n] = a[m, k] @ ((w[k, n] - zero) * scale[n]), w packed K-bit codes, row-major."""
    b = ProgramBuilder("qmatmul")
    m, n, k = (b.param(x, dtypes.int32) for x in "mnk")
    pa = b.param("a", ~dtypes.float16)
    pw = b.param("w", ~dtypes.uint8 if mode == "view" else ~wtype)
    ps = b.param("scale", ~dtypes.float16)
    pc = b.param("c", ~dtypes.float16)
    b.blocks = (cdiv(n, bn), cdiv(m, bm))
    ga = b.global_view(pa, dtypes.float16, [m, k])
    gs = b.global_view(ps, dtypes.float16, [1, n])
    gc = b.global_view(pc, dtypes.float16, [m, n])
    row, col = BlockIdx(1) * bm, BlockIdx(0) * bn
    per_byte = 8 // wtype.nbits
    if mode == "view":
        gw = b.global_view(pw, dtypes.uint8, [k, n // per_byte])
    else:
        gw = b.global_view(pw, wtype, [k, n])
    scale = b.load_global(gs, [0, col], [1, bn])
    acc = b.register_tensor(dtypes.float32, [bm, bn], init=0.0)
    with b.for_range(0, cdiv(k, bk), name="kk") as kk:
        x = b.load_global(ga, [row, kk * bk], [bm, bk])
        if mode == "view":
            raw = b.load_global(gw, [kk * bk, col // per_byte], [bk, bn // per_byte])
            q = b.view(raw, wtype)                                  # [bk, bn]
        else:
            q = b.load_global(gw, [kk * bk, col], [bk, bn])
        w = b.cast(q, dtypes.float16)
        if wtype is dtypes.uint4:
            w = b.binary("sub", w, 8.0)
        w = b.binary("mul", w, scale)
        b.dot(x, w, acc, out=acc)
    b.store_global(gc, b.cast(acc, dtypes.float16), [row, col])
    return b.finish()


@pytest.mark.parametrize("wtype", [dtypes.uint4, dtypes.int4, dtypes.float4_e2m1],
                         ids=lambda t: t.name)
@pytest.mark.parametrize("mode", ["view", "global"])
def test_lowbit_weight_matmul_equals_numpy_dequantize(wtype, mode):
    m, n, k = 20, 64, 96
    rng = np.random.default_rng(5)
    a = rng.standard_normal((m, k)).astype(np.float16)
    codes = rng.integers(0, 16, size=(k, n))
    packed = pack_bits(codes, 4)                                    # row-major bit stream
    scale = (rng.uniform(0.5, 2, (1, n)) / 8).astype(np.float16)
    c = np.zeros((m, n), np.float16)
    tilus.interpret(lowbit_matmul_program(wtype, mode), m, n, k, a, packed, scale, c)
    # reference: dequantize exactly as the kernel does (fp16 per operation), then matmul
    w = code_value(wtype, codes).astype(np.float16)
    if wtype is dtypes.uint4:
        w = (w - np.float16(8)).astype(np.float16)
    w = (w * scale).astype(np.float16)
    want = (a.astype(np.float64) @ w.astype(np.float64)).astype(np.float16)
    np.testing.assert_allclose(c.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)
