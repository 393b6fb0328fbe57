"""load_scalar: its text form (a let from a global tensor's element), the verifier's rules and the
parser's errors."""
from __future__ import annotations

import pytest

from tilus import dtypes as D
from tilus.errors import IRError, TilusParseError, VerificationError
from tilus.ir import PointerType, Program, Tensor, TensorType, parse, verify
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BlockIdx, Var, const
from tilus.ir.inst import GlobalViewInst, LoadScalarInst
from tilus.ir.stmt import ForStmt, LetStmt, seq

n = Var("n", D.int32)
pt = Var("t", PointerType(D.int32))
g = Tensor("g", TensorType(D.int32, (n, 4), "global"))
GV = GlobalViewInst(g, pt, (const(4), const(1)))
page = Var("page", D.int32)


def prog(*stmts) -> Program:
    return Program("k", (n, pt), (n,), 1, seq([GV, *stmts]))


def fails(p: Program, fragment: str) -> None:
    with pytest.raises(VerificationError, match=fragment):
        verify(p)


def table_program() -> Program:
    b = ProgramBuilder("table")
    n_ = b.param("n", D.int32)
    t = b.param("t", ~D.int32)
    gt = b.global_view(t, D.int32, [n_, 4])
    length = b.load_scalar(gt, [BlockIdx(0), 0], name="length")
    with b.for_range(0, length, name="i") as i:
        p = b.load_scalar(gt, [BlockIdx(0), i + 1], name="page")
        b.let("twice", p * 2)
    b.blocks = (n_,)
    return b.finish()


def test_text_form_is_a_let_from_an_element_and_round_trips():
    p = table_program()
    text = str(p)
    assert "let length: int32 = %g[blockIdx.x, 0]" in text
    assert "let page: int32 = %g[blockIdx.x, i + 1]" in text
    assert parse(text) == p and str(parse(text)) == text


def test_the_variable_is_visible_after_the_instruction_to_the_end_of_its_body():
    verify(prog(LoadScalarInst(page, g, (const(0), const(1))), LetStmt(Var("k", D.int32), page + 1)))
    fails(prog(LetStmt(Var("k", D.int32), page + 1), LoadScalarInst(page, g, (const(0), const(1)))),
          "variable page used in the value page \\+ 1 but never defined")
    i = Var("i", D.int32)
    inner = ForStmt(i, const(0), const(2), const(1), LoadScalarInst(page, g, (i, const(0))))
    fails(prog(inner, LetStmt(Var("k", D.int32), page)), "outside the scope that defines it")


def test_verifier_rules():
    fails(prog(LoadScalarInst(page, g, (page, const(0)))),
          "variable page used in offsets page but never defined")
    fails(prog(LoadScalarInst(page, g, (const(0), const(0))),
               LoadScalarInst(page, g, (const(1), const(0)))), "variable 'page' defined twice")
    fails(prog(LoadScalarInst(Var("f", D.float32), g, (const(0), const(0)))),
          "must be a Var of %g's dtype int32")
    fails(prog(LoadScalarInst(page, g, (const(0),))), "1 offsets for the rank-2 tensor %g")
    reg = Tensor("r", TensorType(D.int32, (4,), "register"))
    with pytest.raises(IRError, match="must be a global tensor"):
        LoadScalarInst(page, reg, (const(0),)).check()
    q = Tensor("q", TensorType(D.uint4, (n,), "global"))
    with pytest.raises(IRError, match="8, 16, 32 or 64 bits; %q is uint4"):
        LoadScalarInst(Var("c", D.uint4), q, (const(0),)).check()


def test_parse_errors():
    text = str(table_program())
    with pytest.raises(TilusParseError, match="declares a scalar: write it as a let"):
        parse(text.replace("let page: int32 = %g[blockIdx.x, i + 1]",
                           "load_scalar(%g, var=page, offsets=[blockIdx.x, i + 1])"))
    with pytest.raises(TilusParseError, match="page"):
        parse(text.replace("let page: int32 = %g[", "let page: float32 = %g["))
    with pytest.raises(TilusParseError, match="%h"):
        parse(text.replace("= %g[blockIdx.x, i + 1]", "= %h[blockIdx.x, i + 1]"))
