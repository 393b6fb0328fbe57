"""The evaluator's TIR semantics: C arithmetic, masks for divergent control flow, vectors,
reinterpretation, warp shuffles, atomics, cp.async groups, thread/block indexing."""
import numpy as np
import pytest

from tilus.backend.tvm_shim import T
from tilus.simulator import RaceError, SimulationError, UnsupportedError, run_prim_func


def test_int32_wraps_and_division_kinds():
    @T.prim_func
    def k(a: T.handle, b: T.handle, o: T.handle):
        A = T.match_buffer(a, (64,), "int32")
        B = T.match_buffer(b, (64,), "int32")
        O = T.match_buffer(o, (6, 64), "int32")
        for tx in T.thread_binding(64, thread="threadIdx.x"):
            O[0, tx] = A[tx] * B[tx]
            O[1, tx] = T.truncdiv(A[tx], B[tx])
            O[2, tx] = T.truncmod(A[tx], B[tx])
            O[3, tx] = A[tx] // B[tx]
            O[4, tx] = A[tx] % B[tx]
            O[5, tx] = (A[tx] >> 3) ^ (B[tx] << 29)

    rng = np.random.default_rng(0)
    a = rng.integers(-2**31, 2**31, 64, dtype=np.int64).astype(np.int32)
    a[:4] = [-7, 7, -7, 7]
    b = rng.integers(-9, 10, 64).astype(np.int32)
    b[b == 0] = 3
    b[:4] = [2, -2, -2, 2]
    o = np.zeros((6, 64), np.int32)
    run_prim_func(k, [a, b, o])
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    np.testing.assert_array_equal(o[0], (a64 * b64).astype(np.int32))           # wraps mod 2^32
    np.testing.assert_array_equal(o[1], np.trunc(a64 / b64).astype(np.int32))   # C division
    np.testing.assert_array_equal(o[2], np.fmod(a64, b64).astype(np.int32))
    np.testing.assert_array_equal(o[3], a64 // b64)
    np.testing.assert_array_equal(o[4], a64 % b64)
    assert o[1, :4].tolist() == [-3, -3, 3, 3] and o[3, :4].tolist() == [-4, -4, 3, 3]
    assert o[2, :4].tolist() == [-1, 1, -1, 1] and o[4, :4].tolist() == [1, -1, -1, 1]
    np.testing.assert_array_equal(o[5], (a >> 3) ^ (b.astype(np.uint32) << np.uint32(29)).astype(np.int32))


def test_division_by_zero_is_reported():
    @T.prim_func
    def k(a: T.handle):
        A = T.match_buffer(a, (32,), "int32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            A[tx] = T.truncdiv(100, tx - 5)

    with pytest.raises(SimulationError, match="division by zero") as ei:
        run_prim_func(k, [np.zeros(32, np.int32)])
    assert ei.value.threads == [5]


def test_casts_and_select():
    @T.prim_func
    def k(a: T.handle, o: T.handle, h: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        O = T.match_buffer(o, (32,), "int32")
        H = T.match_buffer(h, (32,), "float16")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            O[tx] = T.Select(A[tx] > T.float32(0), T.Cast("int32", A[tx]), T.min(T.Cast("int32", A[tx]), -100))
            H[tx] = T.Cast("float16", A[tx])

    a = (np.arange(32, dtype=np.float32) - 16) * 1.75 + 0.0001
    o, h = np.zeros(32, np.int32), np.zeros(32, np.float16)
    run_prim_func(k, [a, o, h])
    np.testing.assert_array_equal(o, np.where(a > 0, np.trunc(a), np.minimum(np.trunc(a), -100)).astype(np.int32))
    np.testing.assert_array_equal(h, a.astype(np.float16))


def test_divergent_if_else_and_loops():
    @T.prim_func
    def k(o: T.handle):
        O = T.match_buffer(o, (3, 64), "int32")
        for tx in T.thread_binding(64, thread="threadIdx.x"):
            acc = T.alloc_buffer((2,), "int32", scope="local")
            acc[0] = 0
            for i in range(tx % 7):
                if i % 2 == 0:
                    acc[0] = acc[0] + i
                else:
                    acc[0] = acc[0] - 1
            O[0, tx] = acc[0]
            acc[1] = 0
            while acc[1] * acc[1] < tx:
                acc[1] = acc[1] + 1
            O[1, tx] = acc[1]
            for i in range(100):
                if i * 3 > tx:
                    break
                O[2, tx] = i

    o = np.zeros((3, 64), np.int32)
    run_prim_func(k, [o])
    for t in range(64):
        exp = sum(i if i % 2 == 0 else -1 for i in range(t % 7))
        assert o[0, t] == exp
        assert o[1, t] == int(np.ceil(np.sqrt(t)))
        assert o[2, t] == t // 3


def test_vector_loads_and_vector_buffers():
    @T.prim_func
    def k(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (128,), "float32")
        B = T.match_buffer(b, (128,), "float32")
        C = T.match_buffer(c, (32,), "float32x4")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            B[T.Ramp(tx * 4, 1, 4)] = A[T.Ramp(tx * 4, 1, 4)] + T.Broadcast(T.float32(1), 4)
            C[tx] = A[T.Ramp(tx, 32, 4)]

    a = np.arange(128, dtype=np.float32)
    b, c = np.zeros(128, np.float32), np.zeros(128, np.float32)
    run_prim_func(k, [a, b, c])
    np.testing.assert_array_equal(b, a + 1)
    np.testing.assert_array_equal(c.reshape(32, 4), a.reshape(4, 32).T)


def test_reinterpret_and_byte_views():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        O = T.match_buffer(o, (32,), "uint32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            O[tx] = T.reinterpret("uint32", A[tx]) ^ T.uint32(0x80000000)

    a = np.linspace(-3, 3, 32).astype(np.float32)
    o = np.zeros(32, np.uint32)
    run_prim_func(k, [a, o])
    np.testing.assert_array_equal(o.view(np.float32), -a)
    # a caller's array of another dtype is the same bytes (a uint8 buffer for float32 data)
    raw = a.copy().view(np.uint8)
    o2 = np.zeros(32, np.uint32)
    run_prim_func(k, [raw, o2])
    np.testing.assert_array_equal(o2, o)


def test_two_dimensional_blocks_and_grid():
    @T.prim_func
    def k(o: T.handle):
        O = T.match_buffer(o, (3, 2, 4, 8), "int32")
        for by in T.thread_binding(3, thread="blockIdx.y"):
            for bx in T.thread_binding(2, thread="blockIdx.x"):
                for ty in T.thread_binding(4, thread="threadIdx.y"):
                    for tx in T.thread_binding(8, thread="threadIdx.x"):
                        O[by, bx, ty, tx] = by * 1000 + bx * 100 + ty * 10 + tx

    o = np.zeros((3, 2, 4, 8), np.int32)
    report = run_prim_func(k, [o])
    assert report.blocks == 6 and report.threads == 32
    by, bx, ty, tx = np.meshgrid(range(3), range(2), range(4), range(8), indexing="ij")
    np.testing.assert_array_equal(o, by * 1000 + bx * 100 + ty * 10 + tx)


def test_warp_shuffles():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (64,), "float32")
        O = T.match_buffer(o, (4, 64), "float32")
        for tx in T.thread_binding(64, thread="threadIdx.x"):
            O[0, tx] = T.tvm_warp_shuffle_xor(T.uint32(0xFFFFFFFF), A[tx], 1, 32, 32)
            O[1, tx] = T.tvm_warp_shuffle_down(T.uint32(0xFFFFFFFF), A[tx], 2, 32, 32)
            O[2, tx] = T.tvm_warp_shuffle_up(T.uint32(0xFFFFFFFF), A[tx], 1, 16, 32)
            O[3, tx] = T.tvm_warp_shuffle(T.uint32(0xFFFFFFFF), A[tx], 3, 8, 32)

    a = np.arange(64, dtype=np.float32)
    o = np.zeros((4, 64), np.float32)
    run_prim_func(k, [a, o])
    lane, base = np.arange(64) % 32, np.arange(64) - np.arange(64) % 32
    np.testing.assert_array_equal(o[0], base + (lane ^ 1))
    np.testing.assert_array_equal(o[1], base + np.where(lane + 2 <= 31, lane + 2, lane))
    np.testing.assert_array_equal(o[2], base + np.where(lane % 16 >= 1, lane - 1, lane))
    np.testing.assert_array_equal(o[3], base + (lane // 8) * 8 + 3)


def test_warp_reduction_by_butterfly():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        O = T.match_buffer(o, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            v = T.alloc_buffer((1,), "float32", scope="local")
            v[0] = A[tx]
            for i in range(5):
                v[0] = v[0] + T.tvm_warp_shuffle_xor(T.uint32(0xFFFFFFFF), v[0], 16 >> i, 32, 32)
            O[tx] = v[0]

    a = np.arange(32, dtype=np.float32)
    o = np.zeros(32, np.float32)
    run_prim_func(k, [a, o])
    assert (o == a.sum()).all()


def test_shuffle_from_inactive_lane_is_reported():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        O = T.match_buffer(o, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            if tx < 16:
                O[tx] = T.tvm_warp_shuffle_xor(T.uint32(0xFFFFFFFF), A[tx], 16, 32, 32)

    with pytest.raises(SimulationError, match="inactive"):
        run_prim_func(k, [np.zeros(32, np.float32), np.zeros(32, np.float32)])


def test_atomics_across_blocks():
    @T.prim_func
    def k(c: T.handle, o: T.handle):
        C = T.match_buffer(c, (2,), "int32")
        O = T.match_buffer(o, (4, 32), "int32")
        for bx in T.thread_binding(4, thread="blockIdx.x"):
            for tx in T.thread_binding(32, thread="threadIdx.x"):
                O[bx, tx] = T.cuda.atomic_add(T.address_of(C[0]), 1)
                T.evaluate(T.cuda.atomic_cas(T.address_of(C[1]), bx, bx + 1))

    c, o = np.zeros(2, np.int32), np.zeros((4, 32), np.int32)
    run_prim_func(k, [c, o])
    assert c[0] == 128 and sorted(o.ravel().tolist()) == list(range(128))
    assert c[1] == 4          # one CAS per block succeeds: 0->1, 1->2, 2->3, 3->4


def test_cp_async_zero_fill_and_groups():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (256,), "float32", align=16)
        O = T.match_buffer(o, (256,), "float32", align=16)
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((256,), "float32", scope="shared")
            T.ptx["cp.async.cg.shared.global"](S.ptr_to([tx * 4]), A.ptr_to([tx * 4]), 16, 4)
            T.ptx["cp.async.commit_group"]()
            T.ptx["cp.async.ca.shared.global"](S.ptr_to([128 + tx * 4]), A.ptr_to([128 + tx * 4]), 16)
            T.ptx["cp.async.commit_group"]()
            T.ptx["cp.async.wait_group"](1)            # the first group has landed
            O[tx * 4 + 1] = S[tx * 4 + 1]
            T.ptx["cp.async.wait_group"](0)
            T.tvm_storage_sync("shared")
            for i in range(8):
                O[tx * 8 + i] = S[tx * 8 + i]

    a = np.arange(256, dtype=np.float32) + 1
    o = np.zeros(256, np.float32)
    run_prim_func(k, [a, o])
    exp = a.copy()
    exp[:128].reshape(32, 4)[:, 1:] = 0                 # src-size 4 of 16: one float, then zeros
    np.testing.assert_array_equal(o, exp)


def test_reading_second_group_before_its_wait_is_a_race():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (256,), "float32", align=16)
        O = T.match_buffer(o, (256,), "float32", align=16)
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((256,), "float32", scope="shared")
            T.ptx["cp.async.cg.shared.global"](S.ptr_to([tx * 4]), A.ptr_to([tx * 4]), 16)
            T.ptx["cp.async.commit_group"]()
            T.ptx["cp.async.cg.shared.global"](S.ptr_to([128 + tx * 4]), A.ptr_to([128 + tx * 4]), 16)
            T.ptx["cp.async.commit_group"]()
            T.ptx["cp.async.wait_group"](1)
            O[tx] = S[128 + tx * 4]

    with pytest.raises(RaceError, match="before cp.async") as ei:
        run_prim_func(k, [np.zeros(256, np.float32), np.zeros(256, np.float32)])
    assert ei.value.address == 512


def test_ldmatrix_trans_in_a_kernel():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (256,), "float16", align=16)
        O = T.match_buffer(o, (128,), "uint32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((256,), "float16", scope="shared")
            r = T.alloc_buffer((4,), "uint32", scope="local")
            for i in range(8):
                S[tx * 8 + i] = A[tx * 8 + i]
            T.tvm_storage_sync("shared")
            T.ptx["ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"](r[0], r[1], r[2], r[3], S.ptr_to([tx * 8]))
            for j in range(4):
                O[tx * 4 + j] = r[j]

    a = np.arange(256).astype(np.float16)
    o = np.zeros(128, np.uint32)
    run_prim_func(k, [a, o])
    h = o.view(np.float16).reshape(32, 4, 2).astype(int)
    M = np.arange(256).reshape(4, 8, 8)            # matrix j, row r = lane 8j + r's 8 halves
    for t in range(32):
        for j in range(4):
            assert h[t, j].tolist() == [M[j, 2 * (t % 4), t // 4], M[j, 2 * (t % 4) + 1, t // 4]]


def test_unsupported_intrinsic_is_named():
    @T.prim_func
    def k(o: T.handle):
        O = T.match_buffer(o, (32,), "int64")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            O[tx] = T.cuda.clock64()

    with pytest.raises(UnsupportedError, match="clock64"):
        run_prim_func(k, [np.zeros(32, np.int64)])


def test_endless_spin_wait_is_reported():
    @T.prim_func
    def k(s: T.handle):
        S = T.match_buffer(s, (1,), "int32")
        for bx in T.thread_binding(2, thread="blockIdx.x"):
            for tx in T.thread_binding(32, thread="threadIdx.x"):
                if tx == 0:
                    while T.call_extern("int32", "atomicCAS", T.address_of(S[0]), 1 - bx, 1 - bx) != 1 - bx:
                        T.evaluate(T.call_extern("void", "__nanosleep", 100))

    with pytest.raises(SimulationError, match="spin-wait") as ei:
        run_prim_func(k, [np.zeros(1, np.int32)], max_while_iterations=50)
    assert ei.value.block == (0, 0, 0) and ei.value.threads == [0]
    run_prim_func(k, [np.ones(1, np.int32)], grid=1)   # block 0 waits for S == 1: already set


def test_extern_spellings_of_shuffles_and_atomics():
    @T.prim_func
    def k(a: T.handle, o: T.handle, s: T.handle):
        A = T.match_buffer(a, (32,), "int32")
        O = T.match_buffer(o, (2, 32), "int32")
        S = T.match_buffer(s, (2,), "int32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            O[0, tx] = T.call_extern("int32", "__shfl_xor_sync", T.uint32(0xFFFFFFFF), A[tx], 4, 32)
            O[1, tx] = T.call_extern("int32", "atomicExch", T.address_of(S[0]), tx)
            T.evaluate(T.call_extern("int32", "atomicOr", T.address_of(S[1]), T.shift_left(1, tx)))
            T.evaluate(T.call_extern("void", "__threadfence"))

    a = np.arange(32, dtype=np.int32) * 3
    o, s = np.zeros((2, 32), np.int32), np.zeros(2, np.int32)
    run_prim_func(k, [a, o, s])
    np.testing.assert_array_equal(o[0], a[np.arange(32) ^ 4])
    assert s[0] == 31 and o[1].tolist() == [0] + list(range(31))      # threads in order
    assert s[1] == -1                                                  # all 32 bits set


def test_decl_buffer_views_bytes_with_another_type():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (64,), "float16")
        O = T.match_buffer(o, (32,), "uint32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            A32 = T.decl_buffer((32,), "uint32", data=A.data)
            r = T.alloc_buffer((2,), "float16", scope="local")
            r32 = T.decl_buffer((1,), "uint32", data=r.data, scope="local")
            r[0] = A[2 * tx + 1]
            r[1] = A[2 * tx]
            O[tx] = A32[tx] ^ r32[0]

    a = np.arange(64).astype(np.float16)
    o = np.zeros(32, np.uint32)
    run_prim_func(k, [a, o])
    w = a.view(np.uint32)
    swapped = (w >> np.uint32(16)) | (w << np.uint32(16))
    np.testing.assert_array_equal(o, w ^ swapped)


def test_raw_handle_parameters_viewed_by_decl_buffer():
    @T.prim_func
    def k(a: T.handle("float32"), o: T.handle("float32"), n: T.int32):
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            A = T.decl_buffer((n,), "float32", data=a)
            O = T.decl_buffer((n,), "float32", data=o)
            if tx < n:
                O[tx] = A[tx] * T.float32(2)

    a, o = np.arange(20, dtype=np.float32), np.zeros(20, np.float32)
    run_prim_func(k, [a, o, 20])
    np.testing.assert_array_equal(o, 2 * a)


def test_ptx_shfl_sync_raw_form():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (32,), "uint32")
        O = T.match_buffer(o, (2, 32), "uint32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            r = T.alloc_buffer((2,), "uint32", scope="local")
            r[0] = A[tx]
            # c = 0x1f: whole warp; c = (32 - 8) << 8 | 0x1f: segments of 8 lanes
            T.ptx["shfl_sync.down.b32"](r[1], r[0], T.uint32(3), T.uint32(0x1F), T.uint32(0xFFFFFFFF))
            O[0, tx] = r[1]
            T.ptx["shfl_sync.idx.b32"](r[1], r[0], T.uint32(5), T.uint32(0x181F), T.uint32(0xFFFFFFFF))
            O[1, tx] = r[1]

    a = np.arange(32, dtype=np.uint32) + 100
    o = np.zeros((2, 32), np.uint32)
    run_prim_func(k, [a, o])
    lane = np.arange(32)
    np.testing.assert_array_equal(o[0], 100 + np.where(lane + 3 <= 31, lane + 3, lane))
    np.testing.assert_array_equal(o[1], 100 + (lane // 8) * 8 + 5)


def test_rebinding_a_variable_in_divergent_code_keeps_inactive_threads_values():
    from tilus.backend.tvm_shim import tirx

    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "int32")
        B = T.match_buffer(b, (32,), "int32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            B[tx] = A[tx]

    # build: v = A[tx]; if tx < 16: v = v * 2 (the same Var bound again); B[tx] = v
    loop = k.body
    store = loop.body
    v = tirx.Var("v", "int32")
    body = tirx.SeqStmt([
        tirx.Bind(v, store.value),
        tirx.IfThenElse(tirx.LT(loop.loop_var, tirx.IntImm("int32", 16)),
                        tirx.Bind(v, tirx.Mul(v, tirx.IntImm("int32", 2))), None),
        tirx.BufferStore(store.buffer, v, store.indices),
    ])
    func = k.with_body(tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, body, loop.thread_binding))
    a, b = np.arange(32, dtype=np.int32), np.zeros(32, np.int32)
    run_prim_func(func, [a, b])
    np.testing.assert_array_equal(b, np.where(a < 16, 2 * a, a))


def test_int8_mma_m16n8k32_in_a_kernel():
    @T.prim_func
    def k(a: T.handle, b: T.handle, c: T.handle):
        A = T.match_buffer(a, (128,), "uint32")      # A[16, 32] int8, row-major, as words
        B = T.match_buffer(b, (64,), "uint32")       # B[8, 32] int8 (n, k): the .col operand
        C = T.match_buffer(c, (128,), "int32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            ra = T.alloc_buffer((4,), "uint32", scope="local")
            rb = T.alloc_buffer((2,), "uint32", scope="local")
            d = T.alloc_buffer((4,), "uint32", scope="local")
            for r in range(4):
                ra[r] = A[(tx // 4 + 8 * (r % 2)) * 8 + tx % 4 + 4 * (r // 2)]
                d[r] = T.uint32(0)
            for r in range(2):
                rb[r] = B[(tx // 4) * 8 + tx % 4 + 4 * r]
            T.ptx["mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32"](
                d[0], d[1], d[2], d[3], ra[0], ra[1], ra[2], ra[3], rb[0], rb[1], d[0], d[1], d[2], d[3])
            for i in range(4):
                C[(tx // 4 + 8 * (i // 2)) * 8 + 2 * (tx % 4) + i % 2] = T.reinterpret("int32", d[i])

    rng = np.random.default_rng(9)
    A = rng.integers(-128, 128, (16, 32)).astype(np.int8)
    B = rng.integers(-128, 128, (8, 32)).astype(np.int8)
    c = np.zeros(128, np.int32)
    run_prim_func(k, [A.view(np.uint32).reshape(-1).copy(), B.view(np.uint32).reshape(-1).copy(), c])
    np.testing.assert_array_equal(c.reshape(16, 8), A.astype(np.int64) @ B.astype(np.int64).T)


def test_conversions_follow_c_and_ptx():
    @T.prim_func
    def k(a: T.handle, i: T.handle, u: T.handle, h: T.handle, bf: T.handle, w: T.handle):
        A = T.match_buffer(a, (8,), "float32")
        I = T.match_buffer(i, (8,), "int32")
        U = T.match_buffer(u, (8,), "uint8")
        H = T.match_buffer(h, (8,), "float16")
        BF = T.match_buffer(bf, (8,), "bfloat16")
        W = T.match_buffer(w, (8,), "int8")
        for tx in T.thread_binding(8, thread="threadIdx.x"):
            I[tx] = T.Cast("int32", A[tx])
            U[tx] = T.Cast("uint8", I[tx])
            H[tx] = T.Cast("float16", A[tx])
            BF[tx] = T.Cast("bfloat16", A[tx])
            W[tx] = T.Cast("int8", T.Cast("bfloat16", A[tx]))

    a = np.array([1.5, -2.7, 3e9, -3e9, np.nan, 65519.0, 1.0 + 2**-9, 257.9], np.float32)
    i, u, w = np.zeros(8, np.int32), np.zeros(8, np.uint8), np.zeros(8, np.int8)
    h = np.zeros(8, np.float16)
    import ml_dtypes
    bf = np.zeros(8, ml_dtypes.bfloat16)
    run_prim_func(k, [a, i, u, h, bf, w])
    assert i.tolist() == [1, -2, 2**31 - 1, -2**31, 0, 65519, 1, 257]          # truncate, saturate, NaN -> 0
    assert u.tolist() == [1, 254, 255, 0, 0, 239, 1, 1]                            # wrap mod 256
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(h, a.astype(np.float16))                     # RNE; 3e9 -> inf
    np.testing.assert_array_equal(bf.astype(np.float32), a.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert w.tolist()[:2] == [1, -2] and w[2] == 127 and w[3] == -128 and w[4] == 0


def test_prmt_mode_in_a_kernel():
    @T.prim_func
    def k(a: T.handle, o: T.handle):
        A = T.match_buffer(a, (2,), "uint32")
        O = T.match_buffer(o, (32,), "uint32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            r = T.alloc_buffer((1,), "uint32", scope="local")
            T.ptx["prmt.b32.f4e"](r[0], A[0], A[1], T.Cast("uint32", tx))
            O[tx] = r[0]

    o = np.zeros(32, np.uint32)
    run_prim_func(k, [np.array([0x33221100, 0x77665544], np.uint32), o])
    assert [hex(x) for x in o[:4]] == ["0x33221100", "0x44332211", "0x55443322", "0x66554433"]
    assert o[4] == o[0]


def test_bfloat16_division_and_signed_zero_constants():
    """bfloat16 / // % are float operations (ml_dtypes' dtype is not of numpy kind "f"), and the
    constants 0.0 and -0.0 stay apart (they compare equal as Python floats)."""
    import ml_dtypes

    from tilus.backend.tvm_shim import TB, IRBuilder, tirx

    bf16 = "bfloat16"
    with IRBuilder() as ib:
        with TB.prim_func():
            TB.func_name("k")
            A = TB.match_buffer(TB.arg("a", TB.handle()), (32,), "float32")
            B = TB.match_buffer(TB.arg("b", TB.handle()), (32,), "float32")
            Q = TB.match_buffer(TB.arg("q", TB.handle()), (3, 32), bf16)
            Z = TB.match_buffer(TB.arg("z", TB.handle()), (2, 32), "float32")
            with TB.thread_binding(0, 32, thread="threadIdx.x") as tx:
                a, b = tirx.Cast(bf16, A[tx]), tirx.Cast(bf16, B[tx])
                TB.buffer_store(Q, tirx.Div(a, b), [0, tx])
                TB.buffer_store(Q, tirx.FloorDiv(a, b), [1, tx])
                TB.buffer_store(Q, tirx.Mod(a, b), [2, tx])
                TB.buffer_store(Z, tirx.Add(A[tx], tirx.FloatImm("float32", -0.0)), [0, tx])
                TB.buffer_store(Z, tirx.Add(A[tx], tirx.FloatImm("float32", 0.0)), [1, tx])
    rng = np.random.default_rng(3)
    a = rng.uniform(-50, 50, 32).astype(np.float32)
    b = rng.uniform(-4, 4, 32).astype(np.float32)
    a[:3], b[:3] = [-0.0, 3.0, 1.0], [2.0, 0.0, 0.0]
    q = np.zeros((3, 32), ml_dtypes.bfloat16)
    z = np.zeros((2, 32), np.float32)
    run_prim_func(ib.get(), [a, b, q, z])
    ab, bb = a.astype(ml_dtypes.bfloat16), b.astype(ml_dtypes.bfloat16)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(q[0], ab / bb)
        np.testing.assert_array_equal(q[1], np.floor(ab / bb))
        np.testing.assert_array_equal(q[2], np.fmod(ab, bb))
    assert q[0, 1] == np.inf and np.isnan(q[2, 1])
    np.testing.assert_array_equal(np.signbit(z), np.signbit(np.stack([a + np.float32(-0.0), a + np.float32(0.0)])))
    assert np.signbit(z[0, 0]) and not np.signbit(z[1, 0])
