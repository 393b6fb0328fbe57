"""Argument binding: counts, dtypes, devices, contiguity, buffer sizes -> ArgumentError naming the
parameter; the accepted buffer kinds for every pointee."""
import ml_dtypes
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.errors import ArgumentError
from tilus.ir.builder import ProgramBuilder


def copy_program(dtype, n_expr=True):
    b = ProgramBuilder("copy")
    n = b.param("n", dtypes.int32)
    src, dst = b.param("src", ~dtype), b.param("dst", ~dtype)
    x = b.load_global(b.global_view(src, dtype, [n]), [0], [16])
    b.store_global(b.global_view(dst, dtype, [n]), x, [0])
    return b.finish()


def test_wrong_count():
    with pytest.raises(ArgumentError, match=r"takes 3 arguments \(n: int32, src: ~float32, dst: ~float32\), got 2"):
        tilus.interpret(copy_program(dtypes.float32), 4, np.zeros(4, np.float32))


def test_wrong_dtype_names_parameter():
    with pytest.raises(ArgumentError, match="parameter 'dst'.*float64"):
        tilus.interpret(copy_program(dtypes.float32), 4, np.zeros(4, np.float32), np.zeros(4))
    with pytest.raises(ArgumentError, match="parameter 'src'.*torch.int32"):
        tilus.interpret(copy_program(dtypes.float32), 4, torch.zeros(4, dtype=torch.int32),
                        np.zeros(4, np.float32))


def test_cuda_tensor_is_refused():
    t = torch.zeros(4, device="meta")          # any non-CPU device
    with pytest.raises(ArgumentError, match="parameter 'src'.*CPU"):
        tilus.interpret(copy_program(dtypes.float32), 4, t, np.zeros(4, np.float32))
    if torch.cuda.is_available():
        with pytest.raises(ArgumentError, match="parameter 'src'.*cuda"):
            tilus.interpret(copy_program(dtypes.float32), 4, torch.zeros(4, device="cuda"),
                            np.zeros(4, np.float32))


def test_too_short_buffer_names_parameter():
    with pytest.raises(ArgumentError, match="parameter 'dst' is too short.*needs 40 bytes.*has 12"):
        tilus.interpret(copy_program(dtypes.float32), 10, np.zeros(10, np.float32),
                        np.zeros(3, np.float32))
    # sub-byte: 10 uint3 elements need ceil(30 / 8) = 4 bytes
    tilus.interpret(copy_program(dtypes.uint3), 10, np.zeros(4, np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(ArgumentError, match="parameter 'src' is too short.*needs 4 bytes.*has 3"):
        tilus.interpret(copy_program(dtypes.uint3), 10, np.zeros(3, np.uint8), np.zeros(4, np.uint8))


def test_non_contiguous_refused():
    a = np.zeros((4, 4), np.float32)[:, ::2]
    with pytest.raises(ArgumentError, match="parameter 'src'.*contiguous"):
        tilus.interpret(copy_program(dtypes.float32), 4, a, np.zeros(8, np.float32))
    t = torch.zeros(4, 4).t()
    with pytest.raises(ArgumentError, match="parameter 'src'.*contiguous"):
        tilus.interpret(copy_program(dtypes.float32), 4, t, np.zeros(8, np.float32))


def test_scalar_checks():
    p = copy_program(dtypes.float32)
    z = np.zeros(4, np.float32)
    with pytest.raises(ArgumentError, match="parameter 'n'.*range"):
        tilus.interpret(p, 2**31, z, z)
    with pytest.raises(ArgumentError, match="parameter 'n'.*integer"):
        tilus.interpret(p, 2.5, z, z)
    with pytest.raises(ArgumentError, match="parameter 'n'.*number"):
        tilus.interpret(p, "4", z, z)
    with pytest.raises(ArgumentError, match="parameter 'src'"):
        tilus.interpret(p, 4, 1.0, z)
    tilus.interpret(p, np.int64(4), z, z)      # numpy scalars are fine


@pytest.mark.parametrize("name,make", [
    ("bfloat16", lambda: torch.arange(16, dtype=torch.bfloat16)),
    ("bfloat16", lambda: np.arange(16).astype(ml_dtypes.bfloat16)),
    ("float8_e4m3", lambda: torch.arange(16).to(torch.float8_e4m3fn)),
    ("float8_e5m2", lambda: torch.arange(16).to(torch.float8_e5m2)),
    ("float8_e4m3", lambda: np.arange(16).astype(ml_dtypes.float8_e4m3fn)),
    ("float8_e4m3", lambda: np.arange(16, dtype=np.uint8)),
    ("float16", lambda: torch.arange(16, dtype=torch.float16)),
    ("int8", lambda: np.arange(16, dtype=np.int8)),
    ("int32", lambda: torch.arange(16, dtype=torch.int32)),
    ("uint4", lambda: np.arange(8, dtype=np.uint8)),
    ("float6_e3m2", lambda: torch.arange(12, dtype=torch.uint8)),
    ("bool", lambda: np.arange(16) % 3 == 0),
])
def test_accepted_buffers_copy_bits_exactly(name, make):
    src = make()
    dst = torch.zeros_like(src) if isinstance(src, torch.Tensor) else np.zeros_like(src)
    tilus.interpret(copy_program(dtypes.get(name)), 16, src, dst)
    as_bytes = (lambda t: t.view(torch.uint8).numpy()) if isinstance(src, torch.Tensor) \
        else (lambda a: a.view(np.uint8))
    np.testing.assert_array_equal(as_bytes(dst), as_bytes(src))


def test_sub_byte_pointer_refuses_other_dtypes():
    with pytest.raises(ArgumentError, match="parameter 'src'.*packed uint4 bit stream"):
        tilus.interpret(copy_program(dtypes.uint4), 16, np.zeros(8, np.int8), np.zeros(8, np.uint8))


def test_read_only_array_written_is_an_error():
    z = np.zeros(16, np.float32)
    z.flags.writeable = False
    from tilus.errors import InterpreterError
    with pytest.raises(InterpreterError, match="'dst'.*read-only"):
        tilus.interpret(copy_program(dtypes.float32), 16, np.ones(16, np.float32), z)


def test_script_like_objects_are_accepted():
    class Kernel:
        def program(self):
            return copy_program(dtypes.float32)
    src, dst = np.arange(16, dtype=np.float32), np.zeros(16, np.float32)
    tilus.interpret(Kernel(), 16, src, dst)
    np.testing.assert_array_equal(dst, src)
    with pytest.raises(TypeError, match="Program"):
        tilus.interpret(object(), 1)


def test_instantiate_splits_compile_time_arguments():
    class Kernel:
        def instantiate(self, n, src, dst, block):
            assert block == 16
            return copy_program(dtypes.float32), [n, src, dst]
    src, dst = np.arange(16, dtype=np.float32), np.zeros(16, np.float32)
    tilus.interpret(Kernel(), 16, src, dst, 16)
    np.testing.assert_array_equal(dst, src)
