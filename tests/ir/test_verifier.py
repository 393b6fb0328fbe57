"""The verifier: one test per rule, each showing the VerificationError and its message."""
from __future__ import annotations

import pytest

from tilus import dtypes as D
from tilus.errors import IRError, VerificationError
from tilus.ir import PointerType, Program, Tensor, TensorType, verify
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BinaryOp, BlockIdx, Cast, Const, Var, cast, const
from tilus.ir.inst import (AllocateRegisterInst, AssignInst, BinaryInst, GlobalViewInst,
                           LoadGlobalInst, StoreGlobalInst)
from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt, WhileStmt,
                           seq)
from tilus.ir.verifier import GRID_LIMITS, MAX_DEPTH

n = Var("n", D.int32)
pa = Var("a", PointerType(D.float32))
pq = Var("q", PointerType(D.uint4))
i = Var("i", D.int32)
k = Var("k", D.int32)


def prog(*stmts, params=(n, pa, pq), blocks=(n,), warps=1, name="k"):
    return Program(name, tuple(params), tuple(blocks), warps, seq(list(stmts)))


def reg(name="x", dtype=D.float32, shape=(4,)):
    return Tensor(name, TensorType(dtype, shape, "register"))


def glob(name="g", dtype=D.float32):
    return Tensor(name, TensorType(dtype, (n,), "global"))


def loop(*body, var=i, start=const(0), stop=const(4)):
    return ForStmt(var, start, stop, const(1), seq(list(body)))


GV = GlobalViewInst(glob(), pa, (const(1),))
X = AllocateRegisterInst(reg(), const(0.0))
ADD = BinaryInst(reg("y"), reg(), const(1.0), "add")


def fails(p: Program, *fragments: str) -> str:
    with pytest.raises(VerificationError) as e:
        verify(p)
    message = str(e.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_valid_program_passes():
    verify(prog(GV, X, ADD, loop(LetStmt(k, i * 2), IfStmt(k > 2, BreakStmt())),
                StoreGlobalInst(glob(), reg("y"), (BlockIdx(0) * 4,))))


def test_instruction_check_failures_name_the_instruction():
    fails(prog(GV, AllocateRegisterInst(reg("x", D.int32), None),
               StoreGlobalInst(glob(), reg("x", D.int32), (const(0),))),
          "cannot move int32 tile %x", "in: store_global(%g, %x, offsets=[0])")


def test_tensor_used_before_definition():
    fails(prog(ADD, X), "%x is used before its definition", "in: %y: register[float32, (4,)] = add(%x, 1.0)")


def test_tensor_used_outside_its_scope():
    fails(prog(loop(X), ADD), "%x is used outside the loop or branch that defines it")
    fails(prog(IfStmt(n > 1, X), ADD), "outside the loop or branch")
    fails(prog(IfStmt(n > 1, X, X)), "tensor %x defined twice")  # names are unique per program


def test_tensor_defined_twice():
    fails(prog(X, AllocateRegisterInst(reg("x", D.int8), None)), "tensor %x defined twice")
    fails(prog(loop(X), X), "tensor %x defined twice")


def test_tensor_type_must_match_its_definition():
    fails(prog(X, BinaryInst(reg("y", shape=(8,)), reg("x", shape=(8,)), const(1.0), "add")),
          "tensor %x has type register[float32, (8,)] here but was defined as register[float32, (4,)]")


def test_assign_needs_an_existing_tensor():
    fails(prog(X, AssignInst(reg("z"), reg())), "assign writes into an existing tensor")


def test_scalar_defined_twice():
    fails(prog(LetStmt(k, const(0)), LetStmt(k, const(1))), "variable 'k' defined twice")
    fails(prog(loop(), loop()), "loop variable 'i' defined twice")
    fails(prog(loop(var=n)), "loop variable 'n' defined twice")
    fails(prog(params=(n, n)), "parameter 'n' defined twice")


def test_undefined_scalar():
    fails(prog(LetStmt(k, Var("z", D.int32) + 1)), "variable z used in the value z + 1 but never defined")


def test_scalar_used_outside_its_scope():
    fails(prog(loop(), LetStmt(k, i)), "variable i used in the value i outside the scope")
    fails(prog(IfStmt(n > 0, LetStmt(k, const(1))), AssignStmt(k, const(2))), "assignment to k, which is undefined")


def test_scalar_used_with_another_dtype():
    fails(prog(LetStmt(k, Var("n", D.int64) + 1)), "n is used as int64 but defined as int32")


def test_assignment_only_to_let_variables():
    fails(prog(AssignStmt(n, const(1))), "assignment to n, which is not declared by let")
    fails(prog(loop(AssignStmt(i, const(1)))), "assignment to i, which is not declared by let")
    verify(prog(LetStmt(k, const(0)), loop(AssignStmt(k, k + i))))


def test_let_and_assign_dtypes_agree():
    fails(prog(LetStmt(k, const(0, D.int64))), "k is int32 but its value is int64")


def test_break_and_continue_only_inside_loops():
    fails(prog(BreakStmt()), "break outside a loop")
    fails(prog(IfStmt(n > 0, ContinueStmt())), "continue outside a loop")
    verify(prog(WhileStmt(n > 0, IfStmt(n > 1, BreakStmt(), ContinueStmt()))))


@pytest.mark.parametrize("blocks, fragment", [
    ((), "blocks must be 1 to 3 expressions, got 0"),
    ((n, n, n, n), "got 4"),
    ((const(1.5),), "must be an integer expression"),
    ((BlockIdx(0) + 1,), "cannot use blockIdx"),
    ((k,), "uses k, which is not a scalar parameter"),
    ((4,), "must be an integer expression"),
])
def test_blocks(blocks, fragment):
    fails(prog(blocks=blocks), fragment, "the kernel's blocks")


@pytest.mark.parametrize("warps", [0, 33, -1, True, 2.0])
def test_warps(warps):
    fails(prog(warps=warps), "warps must be an integer from 1 to 32")


def test_pointer_params_are_only_global_view_ptrs():
    fails(prog(GV, LoadGlobalInst(reg(), glob(), (pa,))),
          "the pointer parameter a is used in offsets", "a pointer can only be the ptr of a global_view")
    fails(prog(LetStmt(Var("p", PointerType(D.float32)), pa)), "pointer parameter a")


def test_global_view_ptr_is_a_pointer_parameter_of_the_views_dtype():
    other = Var("b", PointerType(D.float32))
    fails(prog(GlobalViewInst(glob(), other, (const(1),))), "variable b used in ptr b but never defined")
    fails(prog(GlobalViewInst(glob(), n, (const(1),))), "global_view needs a pointer parameter as ptr, got n")
    fails(prog(GlobalViewInst(glob("h", D.float16), pa, (const(1),))),
          "the pointer a is ~float32 but the view is float16", "a typed pointer is viewed as its own type")


def test_only_raw_byte_pointers_are_reinterpreted():
    verify(prog(GlobalViewInst(glob("h", D.uint4), pq, (const(1),))))
    bytes_ptr = Var("q8", PointerType(D.uint8))
    for dtype in (D.uint4, D.float16, D.float6_e3m2, D.int32):
        verify(prog(GlobalViewInst(glob("h", dtype), bytes_ptr, (const(1),)), params=(n, bytes_ptr)))
    u3 = Var("q3", PointerType(D.uint3))
    fails(prog(GlobalViewInst(glob("h", D.float16), u3, (const(1),)), params=(n, u3)),
          "the pointer q3 is ~uint3 but the view is float16", "declare the parameter ~float16",
          "only a raw byte pointer (~uint8)")
    fails(prog(GlobalViewInst(glob("h", D.int4), pa, (const(1),))), "~float32 but the view is int4")


def test_conditions_are_bool():
    fails(prog(IfStmt(n, seq([]))), "the condition n must be bool, it is int32", "in: if (n) {")
    fails(prog(WhileStmt(n + 1, seq([]))), "the condition n + 1 must be bool")


def test_loop_bounds_are_integers():
    fails(prog(loop(start=const(0.5))), "the loop start 0.5 must be an integer", "in: for i in range(0.5, 4, 1) {")
    fails(prog(loop(var=Var("f", D.float32))), "the loop variable f must be an integer")


def test_names_are_identifiers_and_not_keywords():
    fails(prog(LetStmt(Var("for", D.int32), const(1))), "'for' is not an identifier or is a reserved word")
    fails(prog(name="my kernel"), "kernel name 'my kernel'")
    fails(prog(AllocateRegisterInst(reg("x y"), None)), "tensor name 'x y' is not an identifier")


def test_messages_show_writes_without_types():
    acc = reg("acc", D.float32, (4,))
    p = prog(AllocateRegisterInst(acc, None), BinaryInst(acc, acc, const(1.0), "lt"))
    fails(p, "output %acc has dtype float32, expected bool", "in: %acc = lt(%acc, 1.0)")


# ----- issue 14: lifetimes, registers, the grid, constants, divisions, layouts, depth ---------------
def shared_program(*after, inside=None):
    """A shared tensor %s (and its row %row), then ``after``; ``inside`` wraps the free in a body."""
    b = ProgramBuilder("k")
    n_ = b.param("n", D.int32)
    s = b.shared_tensor(D.float32, [2, 32], name="s")
    row = b.slice_shared(s, [const(1), const(0)], [32], name="row")
    for what in after:
        if what == "free" and inside == "if":
            with b.if_then(n_ > 0):
                b.free_shared(s)
        elif what == "free" and inside == "for":
            with b.for_range(0, n_):
                b.free_shared(s)
        elif what == "free":
            b.free_shared(s)
        elif what == "free_row":
            b.free_shared(row)
        elif what == "load":
            b.load_shared(s, name="x")
        elif what == "load_row":
            b.load_shared(row, name="y")
    return b.finish()


def test_shared_tensors_are_not_used_after_free():
    verify(shared_program("load", "load_row", "free"))
    fails(shared_program("free", "load"), "%s is used after free_shared(%s)", "in: %x:")
    fails(shared_program("free", "load_row"), "%row, which lives in %s, is used after free_shared(%s)")


def test_shared_tensors_are_freed_once_in_the_body_that_made_them():
    fails(shared_program("free", "free"), "%s is freed twice (first by free_shared(%s))")
    fails(shared_program("free", inside="if"), "free_shared(%s) is inside a loop or branch that %s "
                                               "was not made in")
    fails(shared_program("free", inside="for"), "would run conditionally or more than once")
    fails(shared_program("free_row"), "free_shared takes a tensor made by shared_tensor; %row is a "
                                      "slice of %s")


def test_static_slices_stay_inside_their_tensor():
    from tilus.ir.inst import SliceSharedInst

    s = Tensor("s", TensorType(D.float32, (4, 32), "shared"))
    out = Tensor("t", TensorType(D.float32, (2, 32), "shared"))
    with pytest.raises(IRError, match="reaches past its end: dimension 0 spans 2 elements from "
                                      "offset 3, of 4"):
        SliceSharedInst(out, s, (const(3), const(0))).check()
    with pytest.raises(IRError, match="dimension 1 spans 32 elements from offset 0 or more, of 16"):
        SliceSharedInst(out, Tensor("s", TensorType(D.float32, (4, 16), "shared")), (n, i)).check()
    SliceSharedInst(out, s, (const(2), const(0))).check()
    SliceSharedInst(out, s, (n, const(0))).check()  # run-time offsets: the interpreter checks them


def test_register_tiles_fit_a_thread_blocks_registers():
    big = AllocateRegisterInst(reg("big", D.float32, (1 << 20,)), None)
    fails(prog(big, warps=4), "%big (float32[1048576], 1048576 elements) needs 8192 32-bit registers "
                              "per thread", "with 4 warps a float32 tile holds at most 32640 elements")
    verify(prog(AllocateRegisterInst(reg("x", D.float32, (32640,)), None), warps=4))
    fails(prog(AllocateRegisterInst(reg("x", D.float32, (32641,)), None), warps=4), "needs 256")
    fails(prog(AllocateRegisterInst(reg("q", D.uint4, (32672,)), None)), "needs 256",
          "1021 elements of 8 bits")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_constant_grids_are_within_cudas_limits(axis):
    ok = [const(1)] * 3
    ok[axis] = const(GRID_LIMITS[axis], D.int64)
    verify(prog(blocks=tuple(ok)))
    for bad in (GRID_LIMITS[axis] + 1, 0):
        blocks = [const(1)] * 3
        blocks[axis] = const(bad, D.int64)
        fails(prog(blocks=tuple(blocks)), f"the grid has {bad} blocks along {'xyz'[axis]}")


def test_constants_fit_their_types():
    fails(prog(LetStmt(k, Const(2**31, D.int32))), "the constant 2147483648 in the value does not fit int32")
    fails(prog(LetStmt(Var("u", D.uint4), Const(16, D.uint4))), "the constant 16 in the value does not fit uint4")
    with pytest.raises(IRError, match="the constant 9223372036854775808 does not fit int64"):
        const(1 << 63)
    with pytest.raises(IRError, match="2147483647 \\+ 1 = 2147483648 overflows int32"):
        const(2**31 - 1) + 1
    assert repr(cast(const(300), D.uint8)) == "Cast(Const(300, int32), uint8)"  # wraps at run time


def test_indices_and_loop_bounds_are_int32_on_the_gpu():
    big = const(1 << 40, D.int64)
    fails(prog(GV, X, StoreGlobalInst(glob(), reg(), (n + big,))),
          "the constant 1099511627776 in offsets n + int64(1099511627776) does not fit int32")
    fails(prog(loop(start=big)), "the constant 1099511627776 in the loop start")
    verify(prog(LetStmt(Var("w", D.int64), big)))


def test_divisors_that_are_always_zero_are_rejected():
    zero = n - n
    fails(prog(LetStmt(k, BinaryOp("floordiv", const(5), zero, D.int32))),
          "division by zero in the value: the divisor n - n of 5 // (n - n) is always 0")
    fails(prog(LetStmt(k, BinaryOp("mod", n, (n + 3) * 2 - n - n - 6, D.int32))), "is always 0")
    fails(prog(LetStmt(k, BinaryOp("cdiv", n, -(n - n), D.int32))), "is always 0")
    verify(prog(LetStmt(k, BinaryOp("floordiv", const(5), n - 1, D.int32))))
    x = reg("x", D.int32, (4,))
    fails(prog(AllocateRegisterInst(x, const(1)), BinaryInst(reg("y", D.int32, (4,)), x, zero, "mod")),
          "division by zero: the divisor n - n is always 0")


def test_loop_steps_are_never_zero():
    fails(prog(ForStmt(i, const(0), n, const(0), seq([]))), "the loop step 0 is always 0")
    fails(prog(ForStmt(i, const(0), n, n - n, seq([]))), "the loop step n - n is always 0")
    verify(prog(ForStmt(i, const(10), const(0), const(-1), seq([]))))


def test_nan_has_no_code_in_finite_only_types():
    fails(prog(AllocateRegisterInst(reg("q", D.float4_e2m1), Cast(const(float("nan")), D.float4_e2m1))),
          "NaN in init has no code in float4_e2m1")
    verify(prog(AllocateRegisterInst(reg("q", D.float4_e2m1), Cast(const(float("inf")), D.float4_e2m1))))
    verify(prog(AllocateRegisterInst(reg("h", D.float16), Const(float("nan"), D.float16))))


def test_layouts_fit_the_tensor_and_the_block():
    from tilus.ir.layout import local, spatial

    x = Tensor("x", TensorType(D.float32, (32,), "register", spatial(32)))
    verify(prog(AllocateRegisterInst(x, None), warps=1))
    e = fails(prog(AllocateRegisterInst(x, None), warps=4),
              "%x has the layout spatial(32), which uses 32 threads, but the kernel has 128 (4 warps)")
    y = Tensor("y", TensorType(D.float32, (16,), "register", local(2) * spatial(32)))
    fails(prog(AllocateRegisterInst(y, None)), "%y has shape [16] but its layout")
    with pytest.raises(VerificationError) as info:
        verify(prog(AllocateRegisterInst(x, None), warps=4))
    assert info.value.layout_of == "x"


def deep(levels: int):
    e = n
    for j in range(levels - 1):
        e = BinaryOp("add", e, const(1), D.int32) if j % 2 else BinaryOp("bitxor", e, n, D.int32)
    return e


def test_programs_nest_at_most_max_depth_levels():
    verify(prog(LetStmt(k, deep(MAX_DEPTH))))
    fails(prog(LetStmt(k, deep(MAX_DEPTH + 1))), f"the value nests {MAX_DEPTH + 1} levels deep",
          f"programs nest at most {MAX_DEPTH} levels")
    # a loop or branch body is a level too
    fails(prog(loop(LetStmt(k, deep(MAX_DEPTH)))), f"nests {MAX_DEPTH + 1} levels deep")
    body = seq([])
    for _ in range(MAX_DEPTH):
        body = IfStmt(const(True), body)
    verify(prog(body))
    fails(prog(IfStmt(const(True), body)), f"the condition nests {MAX_DEPTH + 1} levels deep")


def test_constant_shift_amounts_are_below_the_computed_width():
    fails(prog(LetStmt(k, BinaryOp("shl", n, const(32), D.int32))),
          "the shift amount 32 in the value n << 32 is outside 0..31")
    fails(prog(LetStmt(k, BinaryOp("shr", n, const(-1), D.int32))), "shift amount -1")
    verify(prog(LetStmt(Var("w", D.int64), BinaryOp("shl", Var("w0", D.int64), const(40), D.int64)),
                params=(n, Var("w0", D.int64))))
    x = reg("x", D.int32, (4,))
    fails(prog(AllocateRegisterInst(x, const(1)), BinaryInst(reg("y", D.int32, (4,)), x, const(-373585), "shl")),
          "the shift amount -373585 in shl is outside 0..31")
