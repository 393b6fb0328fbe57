"""Issue 14, item 15: one depth limit. A program at the limit (MAX_DEPTH levels of expressions, or
of loop and branch bodies) survives printing, parsing, ==, hashing, the passes and the lowering;
one level more is rejected by the verifier and the parser alike."""
from __future__ import annotations

import pytest

from tilus import dtypes as D
from tilus.backend.build import tir_to_cuda
from tilus.backend.build_program import prepare
from tilus.backend.codegen import lower_program
from tilus.errors import TilusParseError, VerificationError
from tilus.ir import PointerType, Program, ProgramBuilder, parse, verify
from tilus.ir.expr import BinaryOp, Var, const
from tilus.ir.inst import SyncInst
from tilus.ir.stmt import ForStmt, IfStmt
from tilus.ir.verifier import MAX_DEPTH

n = Var("n", D.int32)


def deep_expression_program(levels: int) -> Program:
    b = ProgramBuilder("deep")
    b.param("n", D.int32)
    out = b.param("out", PointerType(D.int32))
    e = n
    for j in range(levels - 1):
        e = BinaryOp("add", e, const(1), D.int32) if j % 2 else BinaryOp("bitxor", e, n, D.int32)
    g = b.global_view(out, D.int32, [n])
    b.store_global(g, b.register_tensor(D.int32, [32], init=e), [0])
    return b.finish()


def deep_statement_program(levels: int) -> Program:
    body = SyncInst()
    for j in range(levels):
        body = ForStmt(Var(f"i{j}", D.int32), const(0), n, const(1), body) if j % 2 \
            else IfStmt(n > 0, body)
    return Program("deep", (n,), (n,), 1, body)


@pytest.mark.parametrize("program", [deep_expression_program(MAX_DEPTH),
                                     deep_statement_program(MAX_DEPTH - 1)],
                         ids=["expression", "statements"])
def test_programs_at_the_limit_survive_every_stage(program):
    verify(program)
    again = parse(str(program))
    assert again == program and hash(again) == hash(program)
    assert "__global__" in tir_to_cuda(lower_program(prepare(program)).prim_func, "sm_90")


@pytest.mark.parametrize("program", [deep_expression_program(MAX_DEPTH + 1),
                                     deep_statement_program(MAX_DEPTH)],
                         ids=["expression", "statements"])
def test_one_level_more_is_rejected_by_the_verifier_and_the_parser(program):
    with pytest.raises(VerificationError, match=f"nests {MAX_DEPTH + 1} levels deep"):
        verify(program)
    with pytest.raises(TilusParseError, match=f"nests more than {MAX_DEPTH} levels deep"):
        parse(str(program))
