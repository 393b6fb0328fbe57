"""``tilus.void_p``: a raw byte pointer that ``global_view`` reinterprets as any type; every engine
accepts exactly what the verifier accepts."""
import numpy as np
import pytest
import torch

import tilus
from tilus import float16, int32, void_p
from tilus.errors import ArgumentError, ScriptVerificationError
from tilus.runtime import KernelMetadata, Param, check_arguments


class Double(tilus.Script):
    def __call__(self, n: int32, x_ptr: void_p, y_ptr: void_p):
        self.attrs.blocks = tilus.cdiv(n, 64)
        self.attrs.warps = 2
        gx = self.global_view(x_ptr, dtype=float16, shape=[n])
        gy = self.global_view(y_ptr, dtype=float16, shape=[n])
        t = self.load_global(gx, offsets=[self.blockIdx.x * 64], shape=[64])
        self.store_global(gy, t * 2.0, offsets=[self.blockIdx.x * 64])


def test_void_p_is_the_raw_byte_pointer():
    assert void_p == ~tilus.uint8
    assert "x_ptr: ~uint8" in str(Double().program())


def test_interpreter_reads_any_buffer_through_void_p():
    x = torch.randn(100).half()
    y = torch.zeros(100, dtype=torch.float16)
    Double()(100, x, y)
    assert torch.equal(y, x * 2)
    xn, yn = x.numpy().copy(), np.zeros(100, np.float16)
    Double()(100, xn, yn)  # numpy buffers too, of a type other than uint8
    np.testing.assert_array_equal(yn, xn * np.float16(2))


def test_void_p_still_needs_a_contiguous_cpu_buffer():
    with pytest.raises(ArgumentError, match="non-contiguous"):
        Double()(50, torch.zeros(200, dtype=torch.float16)[::2], torch.zeros(50).half())


def test_a_typed_pointer_is_not_reinterpreted():
    class Bad(tilus.Script):
        def __call__(self, n: int32, x_ptr: ~tilus.float32):
            self.attrs.warps = 1
            g = self.global_view(x_ptr, dtype=float16, shape=[n])
            self.store_global(g, self.load_global(g, offsets=[0], shape=[32]), offsets=[0])

    with pytest.raises(ScriptVerificationError, match="only a raw byte pointer"):
        Bad().program()


def test_launch_checks_accept_any_dtype_for_a_raw_pointer():
    meta = KernelMetadata(name="k", entry="k", target="llvm",
                          params=(Param("x", "pointer", "uint8", min_bytes="n * 2", align=1),
                                  Param("n", "scalar", "int32")))
    check_arguments(meta, (torch.zeros(8, dtype=torch.float16), 8))
    check_arguments(meta, (np.zeros(4, np.float32), 8))
    with pytest.raises(ArgumentError):
        check_arguments(meta, (torch.zeros(7, dtype=torch.float16), 8))  # 14 < 16 bytes


def test_void_p_kernel_builds_and_simulates():
    pytest.importorskip("tvm")
    x = torch.randn(100).half()
    y = torch.zeros(100, dtype=torch.float16)
    program, args = Double().instantiate(100, x, y)
    tilus.simulate(program, *args, arch="sm_90")
    assert torch.equal(y, x * 2)
