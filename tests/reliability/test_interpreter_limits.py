"""The interpreter rejects what has no meaning instead of inventing a value or exhausting memory
(issue 14, items 4, 12 and 16): reads of shared memory nothing wrote, tensors larger than any
thread block holds, and scalar division by zero."""
import time

import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.errors import InterpreterError, UninitializedMemoryError
from tilus.interpreter.state import DEFAULT_MAX_ELEMENTS, MAX_ELEMENTS_ENV
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BlockIdx, eq


def _read_shared_program(write: str):
    """A [4, 8] float32 shared tensor, written as ``write`` says, then read whole into ``out``."""
    b = ProgramBuilder("shared_read")
    out = b.param("out", ~dtypes.float32)
    s = b.shared_tensor(dtypes.float32, [4, 8])
    if write == "half":
        top = b.slice_shared(s, [0, 0], [2, 8])
        b.store_shared(top, b.register_tensor(dtypes.float32, [2, 8], init=1.0))
    elif write == "two_halves":
        for row in (0, 2):
            part = b.slice_shared(s, [row, 0], [2, 8])
            b.store_shared(part, b.register_tensor(dtypes.float32, [2, 8], init=float(row)))
    elif write == "whole":
        b.store_shared(s, b.register_tensor(dtypes.float32, [4, 8], init=3.0))
    b.store_global(b.global_view(out, dtypes.float32, [4, 8]), b.load_shared(s), [0, 0])
    return b.finish()


# ---- item 4: shared memory nothing wrote ------------------------------------------------------
def test_reading_never_written_shared_memory_is_an_error():
    out = np.full(32, 7, np.float32)
    with pytest.raises(UninitializedMemoryError, match=r"read of shared tensor .* "
                       r"\(float32\[4, 8\]\) at index \[0, 0\].*32 of 32 elements"):
        tilus.interpret(_read_shared_program("none"), out)
    assert (out == 7).all()                       # nothing was stored
    assert issubclass(UninitializedMemoryError, InterpreterError)


def test_the_first_unwritten_index_is_named():
    with pytest.raises(UninitializedMemoryError, match=r"at index \[2, 0\].*16 of 32 elements"):
        tilus.interpret(_read_shared_program("half"), np.zeros(32, np.float32))


@pytest.mark.parametrize("write,want", [("whole", [3.0] * 32),
                                        ("two_halves", [0.0] * 16 + [2.0] * 16)])
def test_reading_what_was_written_works(write, want):
    out = np.full(32, 7, np.float32)
    tilus.interpret(_read_shared_program(write), out)
    np.testing.assert_array_equal(out, np.array(want, np.float32))


def test_copy_async_zero_fill_counts_as_written():
    b = ProgramBuilder("zero_fill")
    n = b.param("n", dtypes.int32)
    src, dst = b.param("src", ~dtypes.float16), b.param("dst", ~dtypes.float16)
    s = b.shared_tensor(dtypes.float16, [4, 8])
    b.copy_async(b.global_view(src, dtypes.float16, [n, 8]), s, [0, 0])   # rows >= n: zeros
    b.copy_async_commit_group()
    b.copy_async_wait_group(0)
    b.store_global(b.global_view(dst, dtypes.float16, [4, 8]), b.load_shared(s), [0, 0])
    a = torch.arange(16, dtype=torch.float16).reshape(2, 8)
    out = torch.full((4, 8), 5, dtype=torch.float16)
    tilus.interpret(b.finish(), 2, a, out)
    torch.testing.assert_close(out, torch.cat([a, torch.zeros(2, 8, dtype=torch.float16)]))


def test_a_transposed_slice_tracks_the_elements_it_wrote():
    b = ProgramBuilder("column")
    out = b.param("out", ~dtypes.int32)
    s = b.shared_tensor(dtypes.int32, [4, 3])
    col = b.slice_shared(s, [0, 1], [4], dims=[0])                       # s[:, 1]
    b.store_shared(col, b.register_tensor(dtypes.int32, [4], init=9))
    b.store_global(b.global_view(out, dtypes.int32, [4]), b.load_shared(col), [0])
    b.load_shared(s)                                           # s[0, 0] was never written
    res = np.zeros(4, np.int32)
    with pytest.raises(UninitializedMemoryError, match=r"at index \[0, 0\].*8 of 12"):
        tilus.interpret(b.finish(), res)
    np.testing.assert_array_equal(res, [9, 9, 9, 9])


def test_each_block_starts_with_unwritten_shared_memory():
    b = ProgramBuilder("per_block")
    b.blocks = (2,)
    out = b.param("out", ~dtypes.float32)
    s = b.shared_tensor(dtypes.float32, [8])
    with b.if_then(eq(BlockIdx(0), 0)):
        b.store_shared(s, b.register_tensor(dtypes.float32, [8], init=1.0))
    b.store_global(b.global_view(out, dtypes.float32, [2, 8]), b.load_shared(s), [BlockIdx(0), 0])
    with pytest.raises(UninitializedMemoryError, match=r"block \(1, 0, 0\)"):
        tilus.interpret(b.finish(), np.zeros(16, np.float32))


# ---- item 12: tensors larger than a thread block holds ---------------------------------------
def test_a_register_tile_of_2_to_the_31_elements_is_refused_before_allocation():
    b = ProgramBuilder("huge")
    b.register_tensor(dtypes.float32, [1 << 31])
    start = time.perf_counter()
    with pytest.raises(InterpreterError, match=r"register tensor .* \(float32\[2147483648\]\) has "
                                               r"2,147,483,648 elements, more than the interpreter's "
                                               r"limit of 16,777,216"):
        tilus.interpret(b.finish())
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("make", [
    lambda b, p: b.shared_tensor(dtypes.int8, [1 << 13, 1 << 12]),
    lambda b, p: b.repeat(b.register_tensor(dtypes.int32, [1024], init=1), [1 << 15]),
    lambda b, p: b.broadcast(b.register_tensor(dtypes.int32, [1, 8], init=1), [1 << 22, 8]),
    lambda b, p: b.load_global(b.global_view(p, dtypes.float32, [16]), [0], [1 << 25]),
], ids=["shared", "repeat", "broadcast", "load_global"])
def test_every_instruction_output_is_capped(make):
    b = ProgramBuilder("big")
    p = b.param("p", ~dtypes.float32)
    make(b, p)
    with pytest.raises(InterpreterError, match=f"limit of {DEFAULT_MAX_ELEMENTS:,} per tensor"):
        tilus.interpret(b.finish(), np.zeros(16, np.float32))


def test_the_limit_is_configurable(monkeypatch):
    def program(n):
        b = ProgramBuilder("sized")
        out = b.param("out", ~dtypes.int32)
        b.store_global(b.global_view(out, dtypes.int32, [n]),
                       b.register_tensor(dtypes.int32, [n], init=2), [0])
        return b.finish()

    monkeypatch.setenv(MAX_ELEMENTS_ENV, "64")
    out = np.zeros(65, np.int32)
    tilus.interpret(program(64), out[:64])
    assert (out[:64] == 2).all()
    with pytest.raises(InterpreterError, match=f"65 elements, more than the interpreter's limit of "
                                               f"64 per tensor .*{MAX_ELEMENTS_ENV}"):
        tilus.interpret(program(65), out)
    monkeypatch.setenv(MAX_ELEMENTS_ENV, "lots")
    with pytest.raises(InterpreterError, match=f"{MAX_ELEMENTS_ENV}='lots': must be a positive"):
        tilus.interpret(program(8), out[:8])


# ---- item 16: scalar division by zero -----------------------------------------------------------
def _store_scalar(b, out, value):
    b.store_global(b.global_view(out, dtypes.int32, [1]),
                   b.register_tensor(dtypes.int32, [1], init=value), [0])


@pytest.mark.parametrize("op", ["floordiv", "mod"])
def test_scalar_division_by_zero_names_the_expression(op):
    b = ProgramBuilder("div0")
    n = b.param("n", dtypes.int32)
    out = b.param("out", ~dtypes.int32)
    q = b.let("q", 5 // (n - n) if op == "floordiv" else 5 % (n - n))
    _store_scalar(b, out, q)
    sym = "//" if op == "floordiv" else "%"
    with pytest.raises(InterpreterError, match=rf"division by zero in the scalar expression "
                                               rf"5 {sym} \(n - n\) \(with n = 3\)"):
        tilus.interpret(b.finish(), 3, np.zeros(1, np.int32))


def test_division_by_zero_in_a_loop_bound_and_in_the_grid():
    b = ProgramBuilder("bounds")
    n = b.param("n", dtypes.int32)
    out = b.param("out", ~dtypes.int32)
    with b.for_range(0, 10 // n) as i:
        _store_scalar(b, out, i)
    with pytest.raises(InterpreterError, match=r"division by zero .*10 // n \(with n = 0\)"):
        tilus.interpret(b.finish(), 0, np.zeros(1, np.int32))
    g = ProgramBuilder("grid")
    m = g.param("m", dtypes.int32)
    g.blocks = (4 // m,)
    with pytest.raises(InterpreterError, match=r"division by zero .*4 // m \(with m = 0\)"):
        tilus.interpret(g.finish(), 0)


def test_nonzero_divisors_still_divide():
    b = ProgramBuilder("div")
    n = b.param("n", dtypes.int32)
    out = b.param("out", ~dtypes.int32)
    _store_scalar(b, out, 17 // n)
    res = np.zeros(1, np.int32)
    tilus.interpret(b.finish(), 5, res)
    assert res[0] == 3
