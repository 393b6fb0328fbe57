"""Hand-written tirx kernels that check the TVM -> CUDA -> SASS path (test fixtures).

They exercise what the lowering will emit: 128-bit vector loads, cp.async, ldmatrix and
mma.sync.m16n8k16. Built as factories so that importing this module parses no TVMScript.
"""
from __future__ import annotations

from tilus.backend.tvm_shim import T


def vector_add_f32x4(block: int = 512):
    """c = a + b over float32; each of block/4 threads moves one float4 (LDG.E.128)."""
    threads = block // 4

    @T.prim_func
    def vector_add(a: T.handle, b: T.handle, c: T.handle, n: T.int32):
        A = T.match_buffer(a, (n,), "float32", align=16)
        B = T.match_buffer(b, (n,), "float32", align=16)
        C = T.match_buffer(c, (n,), "float32", align=16)
        for bx in T.thread_binding((n + block - 1) // block, thread="blockIdx.x"):
            for tx in T.thread_binding(threads, thread="threadIdx.x"):
                if bx * block + tx * 4 < n:
                    for v in T.vectorized(4):
                        C[bx * block + tx * 4 + v] = A[bx * block + tx * 4 + v] + B[bx * block + tx * 4 + v]

    return vector_add


def mma_m16n8k16_f16():
    """One warp: C[16, 8] (f32) = A[16, 16] (f16, row-major) @ B[8, 16]^T (f16, "col").

    cp.async (16 B per thread) global -> shared, ldmatrix.x4 / .x2 into the A/B fragments,
    one mma.sync.m16n8k16.row.col.f32.f16.f16.f32, C fragment stored per the PTX ISA table
    (c0, c1: row lane/4, cols 2*(lane%4)+{0,1}; c2, c3: row + 8).
    """

    @T.prim_func
    def mma_m16n8k16(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (256,), "float16", align=16)
        B = T.match_buffer(b, (128,), "float16", align=16)
        C = T.match_buffer(c, (128,), "float32", align=16)
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            A_s = T.alloc_buffer((256,), "float16", scope="shared")
            B_s = T.alloc_buffer((128,), "float16", scope="shared")
            a_reg = T.alloc_buffer((4,), "uint32", scope="local")
            b_reg = T.alloc_buffer((2,), "uint32", scope="local")
            c_reg = T.alloc_buffer((4,), "float32", scope="local")
            T.ptx["cp.async.cg.shared.global"](A_s.ptr_to([tx * 8]), A.ptr_to([tx * 8]), 16)
            if tx < 16:
                T.ptx["cp.async.cg.shared.global"](B_s.ptr_to([tx * 8]), B.ptr_to([tx * 8]), 16)
            T.ptx["cp.async.commit_group"]()
            T.ptx["cp.async.wait_all"]()
            T.tvm_storage_sync("shared")
            # ldmatrix.x4: lanes 0-15 give rows 0-15 at k 0; lanes 16-31 rows 0-15 at k 8.
            T.ptx["ldmatrix.sync.aligned.m8n8.x4.shared.b16"](
                a_reg[0], a_reg[1], a_reg[2], a_reg[3], A_s.ptr_to([(tx % 16) * 16 + 8 * (tx // 16)]))
            # ldmatrix.x2: lanes 0-7 give n rows at k 0, lanes 8-15 at k 8.
            T.ptx["ldmatrix.sync.aligned.m8n8.x2.shared.b16"](
                b_reg[0], b_reg[1], B_s.ptr_to([(tx % 8) * 16 + 8 * ((tx // 8) % 2)]))
            for i in range(4):
                c_reg[i] = T.float32(0)
            T.ptx["mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"](
                c_reg[0], c_reg[1], c_reg[2], c_reg[3], a_reg[0], a_reg[1], a_reg[2], a_reg[3],
                b_reg[0], b_reg[1], c_reg[0], c_reg[1], c_reg[2], c_reg[3])
            for i in range(4):
                C[(tx // 4 + 8 * (i // 2)) * 8 + 2 * (tx % 4) + i % 2] = c_reg[i]

    return mma_m16n8k16


def lop3_prmt_probe():
    """lop3 and prmt through T.ptx (the instructions the low-bit casts are made of)."""

    @T.prim_func
    def lop3_prmt(a: T.handle, c: T.handle):
        A = T.match_buffer(a, (128,), "uint32")
        C = T.match_buffer(c, (256,), "uint32")
        for tx in T.thread_binding(128, thread="threadIdx.x"):
            r = T.alloc_buffer((3,), "uint32", scope="local")
            r[0] = A[tx]
            T.ptx["lop3.b32"](r[1], r[0], T.uint32(0x000F000F), T.uint32(0x64006400), 0x6A)
            T.ptx["prmt.b32"](r[2], r[0], T.uint32(0x64646464), T.uint32(0x4140))
            C[tx * 2] = r[1]
            C[tx * 2 + 1] = r[2]

    return lop3_prmt
