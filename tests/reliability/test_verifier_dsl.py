"""Issue 14, items 5, 12, 13 and 15 from the DSL: programs the verifier rejects are reported when the
kernel is defined, at the line of the user's script; programs it accepts are interpreted and built."""
from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

import tilus
from tilus.errors import ScriptError, ScriptVerificationError, VerificationError
from tilus.ir.layout import spatial

FILE = os.path.basename(__file__)


def line_of(cls, marker: str) -> int:
    """The absolute line of the first source line of ``cls`` that holds ``marker``."""
    lines, first = inspect.getsourcelines(cls)
    return first + next(i for i, line in enumerate(lines) if marker in line)


def rejected(cls, *fragments: str, verifier: bool = True) -> ScriptError:
    """``cls().program()`` fails at the line marked ``# HERE``, its message holding ``fragments``."""
    with pytest.raises(ScriptError) as info:
        cls().program()
    e = info.value
    assert e.filename.endswith(FILE) and e.lineno == line_of(cls, "# HERE"), str(e)
    assert isinstance(e, VerificationError) == verifier, repr(e)
    for fragment in fragments:
        assert fragment in str(e), str(e)
    return e


# ----- item 5: shared-memory lifetimes and static slices -------------------------------------------
class UseAfterFree(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        s = self.shared_tensor(dtype=tilus.float32, shape=[32])
        self.store_shared(s, self.register_tensor(dtype=tilus.float32, shape=[32], init=1.0))
        self.free_shared(s)
        y = self.load_shared(s)  # HERE


class SliceAfterFree(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        s = self.shared_tensor(dtype=tilus.float32, shape=[2, 32])
        row = self.slice_shared(s, offsets=[1, 0], shape=[32])
        self.free_shared(s)
        y = self.load_shared(row)  # HERE


class DoubleFree(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        s = self.shared_tensor(dtype=tilus.float32, shape=[32])
        self.free_shared(s)
        self.free_shared(s)  # HERE


class FreeInBranch(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        s = self.shared_tensor(dtype=tilus.float32, shape=[32])
        if n > 0:
            self.free_shared(s)  # HERE
        self.store_shared(s, self.register_tensor(dtype=tilus.float32, shape=[32], init=1.0))


class FreeInLoop(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        s = self.shared_tensor(dtype=tilus.float32, shape=[32])
        for i in self.range(n):
            self.free_shared(s)  # HERE


class FreeASlice(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        s = self.shared_tensor(dtype=tilus.float32, shape=[2, 32])
        row = self.slice_shared(s, offsets=[1, 0], shape=[32])
        self.free_shared(row)  # HERE


class SlicePastTheEnd(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        s = self.shared_tensor(dtype=tilus.float32, shape=[4, 32])
        t = self.slice_shared(s, offsets=[3, 16], shape=[2, 32])  # HERE
        self.store_shared(t, self.register_tensor(dtype=tilus.float32, shape=[2, 32], init=1.0))


class SliceAtANegativeOffset(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        s = self.shared_tensor(dtype=tilus.float32, shape=[4, 32])
        t = self.slice_shared(s, offsets=[-1, 0], shape=[32])  # HERE


class FreeAfterTheLoopThatUsesIt(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        self.attrs.blocks = 1
        s = self.shared_tensor(dtype=tilus.float32, shape=[2, 32])
        for i in self.range(n):
            row = self.slice_shared(s, offsets=[1, 0], shape=[32])
            self.store_shared(row, self.register_tensor(dtype=tilus.float32, shape=[32], init=2.0))
        if n > 5:
            t = self.shared_tensor(dtype=tilus.float32, shape=[8])
            self.free_shared(t)
        self.free_shared(s)


def test_use_after_free_is_rejected_at_the_use():
    rejected(UseAfterFree, "%s is used after free_shared(%s)")
    rejected(SliceAfterFree, "%row, which lives in %s, is used after free_shared(%s)")


def test_double_free_is_rejected():
    rejected(DoubleFree, "%s is freed twice")


def test_conditional_free_is_rejected():
    rejected(FreeInBranch, "inside a loop or branch that %s was not made in")
    rejected(FreeInLoop, "would run conditionally or more than once")


def test_only_whole_shared_tensors_are_freed():
    rejected(FreeASlice, "%row is a slice of %s (free %s instead)")


def test_static_slices_stay_inside_their_tensor():
    rejected(SlicePastTheEnd, "reaches past its end: dimension 0 spans 2 elements from offset 3, of 4",
             verifier=False)
    rejected(SliceAtANegativeOffset, "negative offset -1 in dimension 0", verifier=False)


def test_frees_in_the_body_that_made_the_tensor_are_accepted():
    FreeAfterTheLoopThatUsesIt().program()


# ----- item 12: register tiles a thread block can hold ----------------------------------------------
class HugeLoad(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        self.attrs.warps = 4
        g = self.global_view(a, dtype=tilus.float32, shape=[n])
        x = self.load_global(g, offsets=[0], shape=[1 << 20])  # HERE


class HugeLowBitTile(tilus.Script):
    def __call__(self):
        x = self.register_tensor(dtype=tilus.uint4, shape=[256, 128], init=0)  # HERE


class LargestFloat16Tile(tilus.Script):
    def __call__(self):
        self.attrs.warps = 2
        x = self.register_tensor(dtype=tilus.float16, shape=[510, 64], init=0.0)


def test_register_tiles_beyond_a_thread_blocks_registers_are_rejected():
    rejected(HugeLoad, "%x (float32[1048576], 1048576 elements) needs 8192 32-bit registers per thread",
             "128 threads", "at most 255", "with 4 warps a float32 tile holds at most 32640 elements")
    # low-bit elements take a byte each in registers: 1024 a thread is 256 words
    rejected(HugeLowBitTile, "needs 256 32-bit registers", "1024 elements of 8 bits",
             "with 1 warps a uint4 tile holds at most 32640 elements")
    LargestFloat16Tile().program()  # 32640 halves over 64 threads: 255 registers each


# ----- item 13: one judge -----------------------------------------------------------------------------
class Float32AsFloat16(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float16, shape=[n])  # HERE


class Float32AsInt4(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.int4, shape=[n])  # HERE


class Uint3AsFloat16(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.uint3):
        g = self.global_view(a, dtype=tilus.float16, shape=[n])  # HERE


class BytesAsFloat16(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.uint8, out: ~tilus.float16):
        self.attrs.warps = 1
        g = self.global_view(a, dtype=tilus.float16, shape=[n])
        x = self.load_global(g, offsets=[0], shape=[32])
        self.store_global(self.global_view(out, dtype=tilus.float16, shape=[n]), x * 2.0, offsets=[0])


class StoreFloat6ThroughBytes(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32, out: ~tilus.uint8):
        self.attrs.warps = 1
        x = self.load_global(self.global_view(a, dtype=tilus.float32, shape=[n]), offsets=[0],
                             shape=[32])
        g = self.global_view(out, dtype=tilus.float6_e3m2, shape=[n])
        self.store_global(g, self.cast(x, dtype=tilus.float6_e3m2), offsets=[0])


class FloatStep(tilus.Script):
    def __call__(self, n: tilus.int32):
        for i in self.range(0, n, 0.5):  # HERE
            pass


class ZeroStep(tilus.Script):
    def __call__(self, n: tilus.int32):
        for i in self.range(0, n, 0):  # HERE
            pass


class ZeroStepAtRunTime(tilus.Script):
    def __call__(self, n: tilus.int32):
        for i in self.range(0, n, n - n):  # HERE
            pass


class GridTooLarge(tilus.Script):
    def __call__(self, n: tilus.int32):
        self.attrs.blocks = 1 << 33  # HERE


class GridTooTall(tilus.Script):
    def __call__(self, n: tilus.int32):
        self.attrs.blocks = [1, 70000]  # HERE


class ConstantOverflow(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[n])
        x = self.register_tensor(dtype=tilus.float32, shape=[32], init=1.0)
        self.store_global(g, x, offsets=[n * (1 << 63)])  # HERE


class IndexOutOfInt32(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[n])
        x = self.register_tensor(dtype=tilus.float32, shape=[32], init=1.0)
        self.store_global(g, x, offsets=[n + (1 << 40)])  # HERE


class FoldedOverflow(tilus.Script):
    def __call__(self, n: tilus.int32):
        k = self.cast(2**31 - 1, tilus.int32) + 1  # HERE


class StaticZeroDivisor(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[n])
        x = self.register_tensor(dtype=tilus.float32, shape=[32], init=1.0)
        self.store_global(g, x, offsets=[5 // (n - n)])  # HERE


class TileModuloZero(tilus.Script):
    def __call__(self, n: tilus.int32):
        x = self.register_tensor(dtype=tilus.int32, shape=[32], init=7)
        y = x % (2 * n - n - n)  # HERE


class WrongThreadCount(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        self.attrs.warps = 4
        x = self.register_tensor(dtype=tilus.float32, shape=[32], init=1.0)
        self.annotate_layout(x, spatial(32))  # HERE


class NaNAsFloat4(tilus.Script):
    def __call__(self):
        x = self.register_tensor(dtype=tilus.float4_e2m1, shape=[32], init=float("nan"))  # HERE


@pytest.mark.parametrize("cls, fragment", [
    (Float32AsFloat16, "the pointer a is ~float32 but the view is float16"),
    (Float32AsInt4, "the pointer a is ~float32 but the view is int4"),
    (Uint3AsFloat16, "the pointer a is ~uint3 but the view is float16"),
])
def test_typed_pointers_keep_their_type(cls, fragment):
    rejected(cls, fragment, "only a raw byte pointer (~uint8) may be viewed as another type")


def test_raw_byte_pointers_are_viewed_as_any_type_in_the_interpreter():
    values = (np.arange(32) - 10).astype(np.float16)
    out = np.zeros(32, np.float16)
    tilus.interpret(BytesAsFloat16(), 32, values.view(np.uint8), out)
    np.testing.assert_array_equal(out, values * 2)
    packed = np.zeros(24, np.uint8)  # 32 six-bit codes
    tilus.interpret(StoreFloat6ThroughBytes(), 32, np.full(32, 1.5, np.float32), packed)
    codes = tilus.dtypes.unpack(packed, tilus.float6_e3m2, 32)
    np.testing.assert_array_equal(tilus.float6_e3m2.decode(codes), np.full(32, 1.5, np.float32))


@pytest.mark.parametrize("cls", [BytesAsFloat16, StoreFloat6ThroughBytes])
def test_raw_byte_pointers_are_viewed_as_any_type_by_the_backend(cls):
    from tilus.backend.build_program import prepare
    from tilus.backend.codegen import lower_program
    from tilus.backend.build import tir_to_cuda

    assert "__global__" in tir_to_cuda(lower_program(prepare(cls().program())).prim_func, "sm_90")


@pytest.mark.parametrize("cls, fragments, verifier", [
    (FloatStep, ["the loop step 0.5 must be an integer, it is float32"], True),
    (ZeroStep, ["the loop step 0 is always 0: the loop would never end"], True),
    (ZeroStepAtRunTime, ["the loop step n - n is always 0"], True),
    (GridTooLarge, ["the grid has 8589934592 blocks along x; CUDA launches 1 to 2147483647"], True),
    (GridTooTall, ["the grid has 70000 blocks along y; CUDA launches 1 to 65535"], True),
    (ConstantOverflow, ["the constant 9223372036854775808 does not fit int64"], False),
    (IndexOutOfInt32, ["the constant 1099511627776 in offsets n + int64(1099511627776) does not "
                       "fit int32"], True),
    (FoldedOverflow, ["2147483647 + 1 = 2147483648 overflows int32"], False),
    (StaticZeroDivisor, ["division by zero in offsets: the divisor n - n of 5 // (n - n) is "
                         "always 0"], True),
    (TileModuloZero, ["division by zero: the divisor 2 * n - n - n is always 0"], True),
    (WrongThreadCount, ["%x has the layout spatial(32), which uses 32 threads, but the kernel "
                        "has 128 (4 warps)"], True),
    (NaNAsFloat4, ["NaN in init has no code in float4_e2m1"], True),
])
def test_the_verifier_judges_at_the_users_line(cls, fragments, verifier):
    rejected(cls, *fragments, verifier=verifier)


def test_verification_errors_are_script_errors_and_verification_errors():
    e = rejected(GridTooLarge)
    assert isinstance(e, ScriptVerificationError)
    assert isinstance(e, tilus.errors.TilusError)


# ----- item 15: one depth limit ------------------------------------------------------------------------
def nested(x, depth: int):
    """``x`` under ``depth - 1`` operators (a plain Python helper, called by the kernel)."""
    for i in range(depth - 1):
        x = x + 1 if i % 2 else x ^ 3
    return x


class Deep(tilus.Script):
    def __init__(self, depth: int):
        super().__init__()
        self.depth = depth

    def __call__(self, n: tilus.int32):
        x = self.register_tensor(dtype=tilus.int32, shape=[32], init=nested(n, self.depth))  # HERE


def test_expressions_nest_at_most_max_depth_levels():
    from tilus.ir.verifier import MAX_DEPTH

    program = Deep(MAX_DEPTH).program()
    assert tilus.ir.parse(str(program)) == program
    with pytest.raises(ScriptVerificationError) as info:
        Deep(MAX_DEPTH + 1).program()
    assert f"{FILE}:{line_of(Deep, '# HERE')}:" in str(info.value)
    assert f"init nests {MAX_DEPTH + 1} levels deep" in str(info.value)
    assert f"programs nest at most {MAX_DEPTH} levels" in str(info.value)


def test_the_largest_tile_the_verifier_accepts_gets_a_layout_that_fits():
    from tilus.backend.build_program import prepare
    from tilus.ir.functor import instructions

    (x,) = [i.output for i in instructions(prepare(LargestFloat16Tile().program()))]
    assert x.layout.local_size == 510  # no replicated 16-byte runs: 255 registers a thread


class ShiftTooFar(tilus.Script):
    def __call__(self, n: tilus.int32):
        x = self.register_tensor(dtype=tilus.int32, shape=[32], init=7)
        y = x << 40  # HERE


def test_constant_shifts_beyond_the_width_are_rejected():
    rejected(ShiftTooFar, "the shift amount 40 in shl is outside 0..31")


def test_layout_inference_offers_no_dot_layout_beyond_the_registers():
    from tilus.ir.verifier import MAX_REGISTERS, register_bits
    from tilus.transforms.layout_inference import dot_candidates

    b = tilus.ir.ProgramBuilder("k")
    a = b.register_tensor(tilus.float16, [16, 16])
    c = b.register_tensor(tilus.float32, [16, 16])
    inst = tilus.ir.inst.DotInst(c, a, a, c)
    for layouts in dot_candidates(inst, 256):
        for layout, dtype in zip(layouts, (tilus.float16, tilus.float16, tilus.float32)):
            assert -(-layout.local_size * register_bits(dtype) // 32) <= MAX_REGISTERS
