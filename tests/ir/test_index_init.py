"""``register_tensor(init=lambda i, j: ...)``: the index variables an AllocateRegisterInst binds,
through the builder, the text form and the verifier."""
from __future__ import annotations

import pytest

from tilus import dtypes as D
from tilus.errors import IRError, TilusParseError, VerificationError
from tilus.ir import Program, Tensor, TensorType, parse, verify
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import Var, cast, const, eq, select
from tilus.ir.inst import AllocateRegisterInst
from tilus.ir.stmt import ForStmt, seq

i, j = Var("i", D.int32), Var("j", D.int32)
n = Var("n", D.int32)


def reg(name="x", dtype=D.float32, shape=(4, 8)):
    return Tensor(name, TensorType(dtype, shape, "register"))


def prog(*stmts, params=(n,)):
    return Program("k", tuple(params), (const(1),), 1, seq(list(stmts)))


def fails(p: Program, *fragments: str) -> str:
    with pytest.raises(VerificationError) as e:
        verify(p)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)
    return str(e.value)


def build(*inits, dtype=D.float32, shape=(4, 8)):
    b = ProgramBuilder("k")
    b.param("n", D.int32)
    for init in inits:
        b.register_tensor(dtype, shape, init=init)
    return b.finish()


def test_builder_binds_fresh_index_variables_and_the_text_round_trips():
    p = build(lambda i, j: i * 8 + j, lambda i, j: select(eq(i, j), 1.0, 0.0),
              lambda n, j: n + j, dtype=D.int32)
    text = str(p)
    assert "register_tensor(axes=[i, j], init=i * 8 + j)" in text
    assert "register_tensor(axes=[i_1, j_1], init=cast(select(i_1 == j_1, 1.0, 0.0), int32))" in text
    # a lambda parameter named like the kernel's parameter gets a name of its own
    assert "register_tensor(axes=[n_1, j_2], init=n_1 + j_2)" in text
    verify(p)
    q = parse(text)
    assert q == p and str(q) == text


def test_parser_reads_index_variables_scoped_to_the_instruction():
    text = ("kernel k(n: int32)\n    blocks [1] warps 1\n{\n"
            "    %x: register[float32, (4, 8)] = register_tensor(axes=[i, j], "
            "init=cast(select(j <= i + n, i * 8 + j, -1), float32))\n}\n")
    p = parse(text)
    (inst,) = p.body.stmts if hasattr(p.body, "stmts") else (p.body,)
    assert inst.axes == (i, j) and inst.init == cast(select(j <= i + n, i * 8 + j, -1), D.float32)
    assert str(p) == text
    with pytest.raises(TilusParseError, match="undefined variable 'i'"):
        parse(text.replace("init=cast(", "init=cast(i + ").replace("axes=[i, j], ", ""))
    with pytest.raises(TilusParseError, match="axes of register_tensor must be a list of names"):
        parse(text.replace("axes=[i, j]", "axes=[i, 2]"))


def test_verifier_errors_name_the_problem():
    fails(prog(AllocateRegisterInst(reg(), cast(i, D.float32), (i,))),
          "init over 1 index variable(s) for the rank-2 tile %x [4, 8]: give one per dimension")
    fails(prog(AllocateRegisterInst(reg(), None, (i, j))), "axes are given without an init")
    fails(prog(AllocateRegisterInst(reg(), const(0.0), (i, Var("j", D.int64)))),
          "must be an int32 Var")
    fails(prog(AllocateRegisterInst(reg(), const(0.0), (i, i))), "must be distinct")
    fails(prog(AllocateRegisterInst(reg(), reg("y"), (i, j))),  # type: ignore[arg-type]
          "init must be a scalar expression")
    # the index variables are the instruction's own: unseen outside, names unique in the program
    fails(prog(AllocateRegisterInst(reg(), cast(i + j, D.float32), (i, j)),
               AllocateRegisterInst(reg("y"), cast(i, D.float32))),
          "variable i used in init cast(i, float32) outside the scope that defines it")
    fails(prog(AllocateRegisterInst(reg(), cast(n, D.float32), (n, j))),
          "axes variable 'n' defined twice")
    fails(prog(ForStmt(i, const(0), const(2), const(1),
                       AllocateRegisterInst(reg(), cast(i, D.float32), (i, j)))),
          "axes variable 'i' defined twice")


def test_builder_errors_name_the_problem():
    with pytest.raises(IRError, match=r"init takes 1 parameter\(s\) \(i\) but the tile \[4, 8\] "
                                      r"has rank 2.*init=lambda i, j: ..."):
        build(lambda i: i)
    with pytest.raises(IRError, match=r"init takes 1 parameter\(s\) \(\*ij\)"):
        build(lambda *ij: ij[0])
    b = ProgramBuilder("k")
    x = b.register_tensor(D.float32, [4, 8], init=0.0)
    with pytest.raises(IRError, match=r"init must return a scalar expression of the indices "
                                      r"\(i, j\), got the register tensor %r"):
        b.register_tensor(D.float32, [4, 8], init=lambda i, j: x)
    with pytest.raises(IRError, match="got str 'zero'"):
        b.register_tensor(D.float32, [4, 8], init=lambda i, j: "zero")
