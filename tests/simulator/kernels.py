"""A small tensor-core matmul in tirx (the shape of what the codegen emits): 4 warps per block,
cp.async tiles (zero-filled past M/N with src-size 0), ldmatrix.x4, mma.m16n8k16, a K loop with
barriers. C[M, N] (f32) = A[M, K] (f16, row-major) @ B[N, K]^T (f16)."""
from tilus.backend.tvm_shim import T


def matmul_f16(M: int, N: int, K: int, barrier_after_mma: bool = True):
    BM, BN, BK = 32, 32, 16
    assert K % BK == 0

    @T.prim_func
    def matmul(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (M * K,), "float16", align=16)
        B = T.match_buffer(b, (N * K,), "float16", align=16)
        C = T.match_buffer(c, (M * N,), "float32", align=16)
        for by in T.thread_binding((M + BM - 1) // BM, thread="blockIdx.y"):
            for bx in T.thread_binding((N + BN - 1) // BN, thread="blockIdx.x"):
                for tx in T.thread_binding(128, thread="threadIdx.x"):
                    A_s = T.alloc_buffer((BM * BK,), "float16", scope="shared")
                    B_s = T.alloc_buffer((BN * BK,), "float16", scope="shared")
                    a_reg = T.alloc_buffer((4,), "uint32", scope="local")
                    b_reg = T.alloc_buffer((4,), "uint32", scope="local")
                    acc = T.alloc_buffer((8,), "float32", scope="local")
                    for i in range(8):
                        acc[i] = T.float32(0)
                    for ko in range(K // BK):
                        # 64 16-byte chunks per tile: threads 0-63 load A, 64-127 load B
                        if tx < 64:
                            T.ptx["cp.async.cg.shared.global"](
                                A_s.ptr_to([(tx // 2) * BK + (tx % 2) * 8]),
                                A.ptr_to([T.min(by * BM + tx // 2, M - 1) * K + ko * BK + (tx % 2) * 8]),
                                16, T.Select(by * BM + tx // 2 < M, T.uint32(16), T.uint32(0)))
                        else:
                            T.ptx["cp.async.cg.shared.global"](
                                B_s.ptr_to([((tx - 64) // 2) * BK + (tx % 2) * 8]),
                                B.ptr_to([T.min(bx * BN + (tx - 64) // 2, N - 1) * K + ko * BK + (tx % 2) * 8]),
                                16, T.Select(bx * BN + (tx - 64) // 2 < N, T.uint32(16), T.uint32(0)))
                        T.ptx["cp.async.commit_group"]()
                        T.ptx["cp.async.wait_group"](0)
                        T.tvm_storage_sync("shared")
                        T.ptx["ldmatrix.sync.aligned.m8n8.x4.shared.b16"](
                            a_reg[0], a_reg[1], a_reg[2], a_reg[3],
                            A_s.ptr_to([((tx // 32) // 2 * 16 + tx % 16) * BK + 8 * ((tx % 32) // 16)]))
                        T.ptx["ldmatrix.sync.aligned.m8n8.x4.shared.b16"](
                            b_reg[0], b_reg[1], b_reg[2], b_reg[3],
                            B_s.ptr_to([((tx // 32) % 2 * 16 + tx % 8 + 8 * ((tx % 32) // 16)) * BK
                                        + 8 * ((tx % 32) // 8 % 2)]))
                        for j in range(2):
                            T.ptx["mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"](
                                acc[j * 4], acc[j * 4 + 1], acc[j * 4 + 2], acc[j * 4 + 3],
                                a_reg[0], a_reg[1], a_reg[2], a_reg[3], b_reg[j * 2], b_reg[j * 2 + 1],
                                acc[j * 4], acc[j * 4 + 1], acc[j * 4 + 2], acc[j * 4 + 3])
                        if barrier_after_mma:
                            T.tvm_storage_sync("shared")
                    for j in range(2):
                        for i in range(4):
                            if by * BM + (tx // 32) // 2 * 16 + (tx % 32) // 4 + 8 * (i // 2) < M and \
                                    bx * BN + (tx // 32) % 2 * 16 + j * 8 + 2 * (tx % 4) + i % 2 < N:
                                C[(by * BM + (tx // 32) // 2 * 16 + (tx % 32) // 4 + 8 * (i // 2)) * N
                                  + bx * BN + (tx // 32) % 2 * 16 + j * 8 + 2 * (tx % 4) + i % 2] = acc[j * 4 + i]

    return matmul
