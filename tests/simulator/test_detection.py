"""Errors the simulator reports while running: out of bounds, races, uninitialised reads,
barriers in divergent code; each names the statement, thread(s) and address."""
import warnings

import numpy as np
import pytest

from tilus.backend.tvm_shim import T
from tilus.simulator import (
    DivergentBarrierError, MisalignedAccessError, OutOfBoundsError, RaceError, UninitializedReadError,
    UninitializedReadWarning,
    run_prim_func,
)


def arrays(n=32):
    return np.arange(n, dtype=np.float32), np.zeros(n, np.float32)


# ------------------------------------------------------------------ out of bounds

def test_oob_global_read():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            B[tx] = A[tx + 1]

    with pytest.raises(OutOfBoundsError) as ei:
        run_prim_func(k, arrays())
    e = ei.value
    assert e.threads == [31] and e.buffer == "A" and "A[tx + 1]" in str(e) and "index 32" in str(e)


def test_oob_global_write_past_the_allocation():
    @T.prim_func
    def k(a: T.handle, b: T.handle, n: T.int32):
        A = T.match_buffer(a, (n,), "float32")
        B = T.match_buffer(b, (n,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            B[tx * 2] = A[tx]

    a, b = arrays()
    with pytest.raises(OutOfBoundsError) as ei:
        run_prim_func(k, [a, b, 32])
    assert ei.value.threads == list(range(16, 32))
    assert b[:16].tolist() == [0.0] * 16   # nothing stored by the failing statement


def test_oob_shared():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((32,), "float32", scope="shared")
            S[tx + 1] = A[tx]

    with pytest.raises(OutOfBoundsError) as ei:
        run_prim_func(k, arrays())
    assert ei.value.threads == [31] and ei.value.buffer == "S"


def test_masked_off_threads_do_not_fault():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            if tx < 31:
                B[tx] = A[tx + 1]
            if tx >= 16:
                B[tx] = T.if_then_else(tx < 31, A[tx + 1], T.float32(-1))  # lazy, like C's ?:

    a, b = arrays()
    run_prim_func(k, [a, b])
    assert b[0] == 1 and b[30] == 31 and b[31] == -1


# ------------------------------------------------------------------ races

def race_kernel(with_barrier: bool):
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((32,), "float32", scope="shared")
            S[tx] = A[tx]
            if with_barrier:
                T.tvm_storage_sync("shared")
            B[tx] = S[(tx + 1) % 32]

    return k


def test_read_after_write_race():
    with pytest.raises(RaceError) as ei:
        run_prim_func(race_kernel(False), arrays())
    assert "written by thread 1" in str(ei.value) and ei.value.threads[0] == 0 and ei.value.buffer == "S"


def test_barrier_removes_the_race():
    a, b = arrays()
    run_prim_func(race_kernel(True), [a, b])
    np.testing.assert_array_equal(b, np.roll(a, -1))


def test_write_after_read_race():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((32,), "float32", scope="shared")
            S[tx] = A[tx]
            T.tvm_storage_sync("shared")
            B[tx] = S[(tx + 1) % 32]
            S[tx] = T.float32(0)          # missing second barrier: thread 31 read S[0]

    with pytest.raises(RaceError, match="read by thread"):
        run_prim_func(k, arrays())


def test_same_thread_rewrites_are_not_races():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((32,), "float32", scope="shared")
            S[tx] = A[tx]
            S[tx] = S[tx] * T.float32(2)
            B[tx] = S[tx]

    a, b = arrays()
    run_prim_func(k, [a, b])
    np.testing.assert_array_equal(b, 2 * a)


def test_two_threads_write_one_word():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((32,), "float32", scope="shared")
            S[tx // 2] = A[tx]

    with pytest.raises(RaceError, match="write different values to the same shared byte"):
        run_prim_func(k, arrays())


def atomic_bits_kernel(plain_first: bool):
    """Every thread sets its own bit of one shared word with atomicOr (after a plain zeroing by
    thread 0, with or without a barrier in between)."""
    @T.prim_func
    def k(b: T.handle):
        B = T.match_buffer(b, (1,), "uint32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((1,), "uint32", scope="shared")
            if tx == 0:
                S[0] = T.uint32(0)
            if not plain_first:
                T.tvm_storage_sync("shared")
            T.evaluate(T.call_extern("uint32", "atomicOr", T.address_of(S[0]),
                                     T.shift_left(T.uint32(1), T.Cast("uint32", tx))))
            T.tvm_storage_sync("shared")
            if tx == 0:
                B[0] = S[0]
    return k


def test_atomics_of_several_threads_on_one_shared_word_do_not_race():
    b = np.zeros(1, np.uint32)
    run_prim_func(atomic_bits_kernel(False), [b])
    assert b[0] == 0xFFFFFFFF


def test_an_atomic_after_a_plain_write_of_another_thread_races():
    with pytest.raises(RaceError, match="written by thread 0"):
        run_prim_func(atomic_bits_kernel(True), [np.zeros(1, np.uint32)])


def test_races_flag_off():
    a, b = arrays()
    run_prim_func(race_kernel(False), [a, b], races=False)   # the sequential order reads the new values
    np.testing.assert_array_equal(b, np.roll(a, -1))


# ------------------------------------------------------------------ uninitialised reads

def uninit_kernel():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            r = T.alloc_buffer((2,), "float32", scope="local")
            r[0] = A[tx]
            if tx == 7:
                B[tx] = r[1]
            else:
                B[tx] = r[0]

    return k


def test_uninitialised_local_read():
    with pytest.raises(UninitializedReadError) as ei:
        run_prim_func(uninit_kernel(), arrays())
    assert ei.value.threads == [7] and ei.value.buffer == "r" and ei.value.address == 4


def test_uninitialised_read_as_warning():
    a, b = arrays()
    with pytest.warns(UninitializedReadWarning):
        report = run_prim_func(uninit_kernel(), [a, b], uninit="warn")
    assert len(report.warnings) == 1 and b[8] == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_prim_func(uninit_kernel(), [a, b], uninit="ignore")


def test_uninitialised_shared_read():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((64,), "float32", scope="shared")
            S[tx] = A[tx]
            T.tvm_storage_sync("shared")
            B[tx] = S[tx + 16]

    with pytest.raises(UninitializedReadError) as ei:
        run_prim_func(k, arrays())
    assert ei.value.threads == list(range(16, 32)) and ei.value.address == 128


# ------------------------------------------------------------------ divergent barriers

def test_barrier_in_divergent_branch():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            if tx < 16:
                T.tvm_storage_sync("shared")
            B[tx] = A[tx]

    with pytest.raises(DivergentBarrierError) as ei:
        run_prim_func(k, arrays())
    assert ei.value.threads == list(range(16, 32)) and "16 of 32" in str(ei.value)


def test_barrier_in_loop_with_divergent_trip_count():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            for i in range(tx // 8 + 1):
                T.tvm_storage_sync("shared")
            B[tx] = A[tx]

    with pytest.raises(DivergentBarrierError):
        run_prim_func(k, arrays())


def test_barrier_in_uniform_branch_and_loop_is_fine():
    @T.prim_func
    def k(a: T.handle, b: T.handle, n: T.int32):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            if n > 0:
                for i in range(n):
                    T.tvm_storage_sync("shared")
            B[tx] = A[tx]

    a, b = arrays()
    run_prim_func(k, [a, b, 3])
    np.testing.assert_array_equal(a, b)


def test_partial_warp_mma_is_reported():
    @T.prim_func
    def k(c: T.handle):
        C = T.match_buffer(c, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            a = T.alloc_buffer((4,), "uint32", scope="local")
            b = T.alloc_buffer((2,), "uint32", scope="local")
            d = T.alloc_buffer((4,), "float32", scope="local")
            for i in range(4):
                a[i] = T.uint32(0)
                d[i] = T.float32(0)
            for i in range(2):
                b[i] = T.uint32(0)
            if tx < 31:
                T.ptx["mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"](
                    d[0], d[1], d[2], d[3], a[0], a[1], a[2], a[3], b[0], b[1], d[0], d[1], d[2], d[3])
            C[tx] = d[0]

    with pytest.raises(DivergentBarrierError, match="part of warp 0") as ei:
        run_prim_func(k, [np.zeros(32, np.float32)])
    assert ei.value.threads == [31]


def test_global_store_of_different_values_to_one_address_in_one_statement():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32")
        B = T.match_buffer(b, (32,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            B[tx % 16] = A[tx]                    # threads t and t + 16 store different values
            B[16 + tx % 16] = A[tx % 16]          # identical values: benign

    with pytest.raises(RaceError, match="threads 0 and 16 write different values to the same global byte") as ei:
        run_prim_func(k, arrays())
    assert ei.value.buffer == "B" and 0 <= ei.value.address < 4


def syncwarp_kernel(sync: bool, partner_xor: int):
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (64,), "float32")
        B = T.match_buffer(b, (64,), "float32")
        for tx in T.thread_binding(64, thread="threadIdx.x"):
            S = T.alloc_buffer((64,), "float32", scope="shared")
            S[tx] = A[tx]
            if sync:
                T.evaluate(T.call_extern("void", "__syncwarp"))
            B[tx] = S[T.bitwise_xor(tx, partner_xor)]

    return k


def test_syncwarp_orders_shared_memory_within_a_warp():
    a, b = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    run_prim_func(syncwarp_kernel(True, 1), [a, b])
    np.testing.assert_array_equal(b, a[np.arange(64) ^ 1])
    with pytest.raises(RaceError):
        run_prim_func(syncwarp_kernel(False, 1), [a, b])       # no __syncwarp
    with pytest.raises(RaceError, match="written by thread 32"):
        run_prim_func(syncwarp_kernel(True, 32), [a, b])       # other warp: needs __syncthreads


def test_cp_async_landing_after_a_barrier_still_races_with_reads_before_it():
    """A cp.async may land any time between its issue and its wait: issued before a barrier over
    data another thread read before that barrier, it races even though the wait comes after."""
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (32,), "float32", align=16)
        B = T.match_buffer(b, (32,), "float32", align=16)
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            S = T.alloc_buffer((32,), "float32", scope="shared")
            S[tx] = T.float32(0)
            T.tvm_storage_sync("shared")
            B[tx] = S[(tx + 1) % 32]
            T.ptx["cp.async.ca.shared.global"](S.ptr_to([tx]), A.ptr_to([tx]), 4)
            T.ptx["cp.async.commit_group"]()
            T.tvm_storage_sync("shared")
            T.ptx["cp.async.wait_group"](0)

    with pytest.raises(RaceError, match="read by thread"):
        run_prim_func(k, [np.ones(32, np.float32), np.zeros(32, np.float32)])


# ------------------------------------------------------------------ misaligned accesses

def test_misaligned_vector_load():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (132,), "float32")
        B = T.match_buffer(b, (128,), "float32")
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            B[T.Ramp(tx * 4, 1, 4)] = A[T.Ramp(tx * 4 + 1, 1, 4)]   # a float4 at 4 mod 16 bytes

    with pytest.raises(MisalignedAccessError) as ei:
        run_prim_func(k, [np.zeros(132, np.float32), np.zeros(128, np.float32)])
    assert ei.value.address == 4 and ei.value.threads[0] == 0 and "16 byte" in str(ei.value)


def test_word_view_of_halves_is_aligned():
    @T.prim_func
    def k(a: T.handle, b: T.handle):
        A = T.match_buffer(a, (64,), "uint16")
        B = T.match_buffer(b, (32,), "uint32")
        for tx in T.thread_binding(8, thread="threadIdx.x"):
            S = T.alloc_buffer((64,), "uint16", scope="shared")
            S32 = T.decl_buffer((31,), "uint32", data=S.data, elem_offset=0)
            S[tx] = A[tx]
            T.tvm_storage_sync("shared")
            B[tx] = S32[tx]

    run_prim_func(k, [np.zeros(64, np.uint16), np.zeros(32, np.uint32)], uninit="ignore")


def test_planted_misaligned_ldmatrix_row():
    from tilus.backend import testing
    from tests.simulator.tir_mutate import map_call_args
    from tilus.backend.tvm_shim import ir, tirx

    def shift(args):   # ldmatrix.x4's address operand: A_s[i] -> A_s[i + 4] (8 bytes off)
        cvta = args[4]
        addr = cvta.args[0]
        load = addr.args[0]
        moved = tirx.BufferLoad(load.source, [tirx.Add(load.indices[0], tirx.IntImm("int32", 4))])
        new_addr = ir.Call(addr.op, [moved], addr.attrs, addr.ty_args, addr.span, ret_ty=addr.ty)
        args[4] = ir.Call(cvta.op, [new_addr], cvta.attrs, cvta.ty_args, cvta.span, ret_ty=cvta.ty)
        return args

    func = map_call_args(testing.mma_m16n8k16_f16(), "tirx.ptx.ldmatrix",
                         lambda a: shift(a) if len([x for x in a if not isinstance(x, ir.StringImm)]) == 5 else a)
    a, b = np.ones(256, np.float16), np.ones(128, np.float16)
    with pytest.raises(MisalignedAccessError, match="ldmatrix row address") as ei:
        run_prim_func(func, [a, b, np.zeros(128, np.float32)])
    assert ei.value.address == 8
