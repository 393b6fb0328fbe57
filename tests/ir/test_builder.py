"""The instruction typing rules (Instruction.check) as the builder applies them."""
import pytest

from tilus import dtypes
from tilus.errors import IRError
from tilus.ir import inst as I
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BlockIdx, cdiv
from tilus.ir.functor import IRRewriter, instructions, walk
from tilus.ir.stmt import ForStmt, IfStmt
from tilus.ir.types import Tensor


def _builder():
    b = ProgramBuilder("k")
    n = b.param("n", dtypes.int32)
    p = b.param("p", ~dtypes.float16)
    w = b.param("w", ~dtypes.uint4)
    return b, n, p, w


def test_shapes_and_dtypes_are_inferred():
    b, n, p, w = _builder()
    g = b.global_view(p, dtypes.float16, [n, 64])
    assert g.scope == "global" and g.dtype is dtypes.float16
    x = b.load_global(g, [BlockIdx(0) * 16, 0], [16, 64])
    assert x.shape == (16, 64) and x.scope == "register"
    s = b.reduce("sum", x, dim=1, keepdim=True)
    assert s.shape == (16, 1)
    y = b.binary("sub", x, s)
    assert y.shape == (16, 64)
    c = b.binary("lt", y, 0.5)
    assert c.dtype is dtypes.bool
    v = b.view(b.load_global(b.global_view(w, dtypes.uint8, [n]), [0], [16]), dtypes.uint4)
    assert v.shape == (32,) and v.dtype is dtypes.uint4


def test_bad_operands_name_the_instruction():
    b, n, p, w = _builder()
    g = b.global_view(p, dtypes.float16, [n, 64])
    x = b.load_global(g, [0, 0], [16, 64])
    y = b.register_tensor(dtypes.float16, [16, 32], init=0.0)
    with pytest.raises(IRError, match="add: shapes .16, 64., .16, 32. do not broadcast"):
        b.binary("add", x, y)
    with pytest.raises(IRError, match="load_global: 1 offsets"):
        b.load_global(g, [0], [16])
    with pytest.raises(IRError, match="view: .* bits"):
        b.view(x, dtypes.float32, [3])
    acc = b.register_tensor(dtypes.float32, [16, 16], init=0.0)
    with pytest.raises(IRError, match="dot: shapes"):
        b.dot(x, x, acc)
    with pytest.raises(IRError, match="store_global: cannot move float32"):
        b.store_global(g, acc, [0, 0])
    with pytest.raises(IRError, match="exp: needs a float tile"):
        b.unary("exp", b.register_tensor(dtypes.int32, [4]))


def test_nested_bodies_and_rewriter():
    b, n, p, w = _builder()
    acc = b.register_tensor(dtypes.float32, [4], init=0.0)
    with b.for_range(0, cdiv(n, 4)) as i:
        with b.if_then(i < 2):
            b.binary("add", acc, 1.0, out=acc)
        with b.otherwise():
            b.binary("sub", acc, 1.0, out=acc)
    prog = b.finish()
    kinds = [type(s) for s in walk(prog)]
    assert ForStmt in kinds and IfStmt in kinds
    assert sum(isinstance(x, I.BinaryInst) for x in instructions(prog)) == 2

    class Rename(IRRewriter):
        def rewrite_tensor(self, t: Tensor) -> Tensor:
            return Tensor("renamed", t.type) if t.name == acc.name else t

    renamed = Rename()(prog)
    assert all(x.output.name == "renamed" for x in instructions(renamed) if x.HAS_OUTPUT)
    assert Rename()(prog) == renamed and renamed != prog


def test_every_instruction_class_has_a_text_name():
    names = [n for cls in I.instruction_classes() for n in cls.text_names()]
    assert len(names) == len(set(names)) and all(names)
