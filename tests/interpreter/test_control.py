"""Statements (for/if/while/break/continue/let/assign), semaphores and print_tensor."""
import numpy as np
import pytest

import tilus
from tilus import dtypes
from tilus.errors import InterpreterError
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BlockIdx, cast, eq
from tilus.ir.stmt import AssignStmt


def set_scalar(b, var, value):
    """Scalar assignment (emitted directly: builders differ in what ``assign`` takes)."""
    b.emit(AssignStmt(var, cast(value, var.dtype)))


def scalar_out_program(body):
    """``body(b) -> scalar Var``; the program stores that scalar into out[0]."""
    b = ProgramBuilder("scalars")
    n = b.param("n", dtypes.int32)
    out = b.param("out", ~dtypes.int32)
    v = body(b, n)
    r = b.register_tensor(dtypes.int32, [1], init=v)
    b.store_global(b.global_view(out, dtypes.int32, [1]), r, [0])
    return b.finish()


def run_scalar(p, n):
    out = np.zeros(1, np.int32)
    tilus.interpret(p, n, out)
    return int(out[0])


def test_for_let_assign():
    def body(b, n):
        acc = b.let("acc", 0)
        with b.for_range(0, n, 2) as i:
            set_scalar(b, acc, acc + i)
        return acc
    p = scalar_out_program(body)
    for n in (0, 1, 7, 10):
        assert run_scalar(p, n) == sum(range(0, n, 2))


def test_break_continue_and_if_else():
    def body(b, n):
        acc = b.let("acc", 0)
        with b.for_range(0, 100) as i:
            with b.if_then(eq(i % 3, 0)):
                b.continue_()
            with b.if_then(i >= n):
                b.break_()
            with b.if_then(eq(i % 2, 0)):
                set_scalar(b, acc, acc + i)
            with b.otherwise():
                set_scalar(b, acc, acc - 1)
        return acc

    def ref(n):
        acc = 0
        for i in range(100):
            if i % 3 == 0:
                continue
            if i >= n:
                break
            acc = acc + i if i % 2 == 0 else acc - 1
        return acc
    p = scalar_out_program(body)
    for n in (0, 5, 17, 200):
        assert run_scalar(p, n) == ref(n)


def test_while_with_nested_loops_break_inner_only():
    def body(b, n):
        k = b.let("k", 0)
        total = b.let("total", 0)
        with b.while_loop(k < n):
            with b.for_range(0, 10, name="j") as j:
                with b.if_then(j > k):
                    b.break_()
                set_scalar(b, total, total + 1)
            set_scalar(b, k, k + 1)
        return total
    p = scalar_out_program(body)
    assert run_scalar(p, 4) == sum(min(k + 1, 10) for k in range(4))


def test_loop_over_tiles_accumulates_registers():
    # sum of rows in chunks: a loop with tile loads and an in-place accumulator
    b = ProgramBuilder("rowsum")
    n = b.param("n", dtypes.int32)
    src, dst = b.param("src", ~dtypes.float32), b.param("dst", ~dtypes.float32)
    g = b.global_view(src, dtypes.float32, [4, n])
    acc = b.register_tensor(dtypes.float32, [4, 8], init=0.0)
    with b.for_range(0, (n + 7) // 8) as i:
        x = b.load_global(g, [0, i * 8], [4, 8])
        b.binary("add", acc, x, out=acc)
    s = b.reduce("sum", acc, 1)
    b.store_global(b.global_view(dst, dtypes.float32, [4]), s, [0])
    a = np.random.default_rng(1).standard_normal((4, 37)).astype(np.float32)
    out = np.zeros(4, np.float32)
    tilus.interpret(b.finish(), 37, a, out)
    np.testing.assert_allclose(out, a.sum(axis=1), rtol=1e-5)


def split_k_program(wait_for_previous: bool):
    """Block k adds its part of a dot product into out, in order: block k waits for sema == k,
    then releases k + 1 (a split-k reduction). With ``wait_for_previous=False`` block k waits for
    k + 1, which only a later block could give: a deadlock."""
    parts = 4
    b = ProgramBuilder("split_k")
    pa, pb = b.param("a", ~dtypes.float32), b.param("b", ~dtypes.float32)
    po, ps = b.param("out", ~dtypes.float32), b.param("sema", ~dtypes.int32)
    b.blocks = (parts,)
    k = BlockIdx(0)
    ga = b.global_view(pa, dtypes.float32, [1, 64])
    gb = b.global_view(pb, dtypes.float32, [64, 1])
    go = b.global_view(po, dtypes.float32, [1, 1])
    gs = b.global_view(ps, dtypes.int32, [1])
    x = b.load_global(ga, [0, k * 16], [1, 16])
    y = b.load_global(gb, [k * 16, 0], [16, 1])
    b.lock_semaphore(gs, [0], k if wait_for_previous else k + 1)
    acc = b.load_global(go, [0, 0], [1, 1])
    b.dot(x, y, acc, out=acc)
    b.store_global(go, acc, [0, 0])
    b.release_semaphore(gs, [0], k + 1)
    return b.finish()


def test_split_k_with_semaphores_in_block_order():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((1, 64)).astype(np.float32)
    bb = rng.standard_normal((64, 1)).astype(np.float32)
    out = np.zeros((1, 1), np.float32)
    sema = np.zeros(1, np.int32)
    tilus.interpret(split_k_program(True), a, bb, out, sema)
    np.testing.assert_allclose(out, a.astype(np.float64) @ bb, rtol=1e-5)
    assert sema[0] == 4


def test_semaphore_deadlock_is_reported():
    out, sema = np.zeros((1, 1), np.float32), np.zeros(1, np.int32)
    with pytest.raises(InterpreterError, match="deadlock") as info:
        tilus.interpret(split_k_program(False), np.zeros((1, 64), np.float32),
                        np.zeros((64, 1), np.float32), out, sema)
    assert "block (0, 0, 0)" in str(info.value)


def test_print_tensor(capsys):
    b = ProgramBuilder("pr")
    r = b.register_tensor(dtypes.int32, [2, 2], init=7)
    b.print_tensor(r, "hello")
    tilus.interpret(b.finish())
    out = capsys.readouterr().out
    assert "hello" in out and "[[7 7]" in out


def test_error_names_the_instruction_and_block():
    b = ProgramBuilder("err")
    b.blocks = (2,)
    s = b.shared_tensor(dtypes.int8, [4])
    b.slice_shared(s, [BlockIdx(0) * 3], [2])
    with pytest.raises(InterpreterError) as info:
        tilus.interpret(b.finish())
    assert "slice_shared" in str(info.value)
    assert any("block (1, 0, 0)" in note for note in info.value.__notes__)
