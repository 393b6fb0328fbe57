"""The verifier: one test per rule, each showing the VerificationError and its message."""
from __future__ import annotations

import pytest

from tilus import dtypes as D
from tilus.errors import VerificationError
from tilus.ir import PointerType, Program, Tensor, TensorType, verify
from tilus.ir.expr import BlockIdx, Var, const
from tilus.ir.inst import (AllocateRegisterInst, AssignInst, BinaryInst, GlobalViewInst,
                           LoadGlobalInst, StoreGlobalInst)
from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt, WhileStmt,
                           seq)

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
          "the pointer a is ~float32 but the view is float16")


def test_sub_byte_views_take_a_sub_byte_pointer():
    verify(prog(GlobalViewInst(glob("h", D.uint4), pq, (const(1),))))
    bytes_ptr = Var("q8", PointerType(D.uint8))
    fails(prog(GlobalViewInst(glob("h", D.uint4), bytes_ptr, (const(1),)), params=(n, bytes_ptr)),
          "the pointer q8 is ~uint8 but the view is uint4", "takes ~uint4")


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
