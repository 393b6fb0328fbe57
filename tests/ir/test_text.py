"""The IR text form: printing, parsing, exact round trips, the golden file."""
from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tilus import dtypes as D
from tilus.ir import Program, ProgramBuilder, TensorType, parse
from tilus.ir import parser as parser_mod
from tilus.ir.expr import BinaryOp, BlockIdx, Cast, Select, UnaryOp, Var, cdiv, const, eq, ne
from tilus.ir.functor import instructions
from tilus.ir.inst import instruction_classes
from tilus.ir.printer import RESERVED, format_expr, format_tensor_type
from tilus.ir.stmt import ForStmt, IfStmt, LetStmt, SeqStmt

from .programs import every_instruction_program, matmul_program
from .strategies import programs

GOLDEN = pathlib.Path(__file__).parent / "golden"


def roundtrip(p: Program) -> str:
    text = str(p)
    q = parse(text)
    assert q == p, text
    assert str(q) == text
    return text


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs())
def test_random_programs_round_trip(p):
    roundtrip(p)


def test_every_instruction_round_trips_and_is_covered():
    hand_built = [matmul_program(), every_instruction_program()]
    covered = set()
    for p in hand_built:
        roundtrip(p)
        for inst in instructions(p):
            covered.add((type(inst), inst.display_name()))
    wanted = {(cls, name) for cls in instruction_classes() for name in cls.text_names()}
    missing = sorted(f"{cls.__name__}:{name}" for cls, name in wanted - covered)
    assert not missing, f"instructions without a text-form test: {missing}"


def test_golden_matmul():
    text = (GOLDEN / "matmul.tilus").read_text()
    assert str(matmul_program()) == text
    assert parse(text) == matmul_program()


def test_vec_add_text_form():
    b = ProgramBuilder("vec_add")
    n = b.param("n", D.int32)
    a, c = b.param("a", ~D.float32), b.param("c", ~D.float32)
    b.blocks = (cdiv(n, 128),)
    b.warps = 4
    b.consts = [("block", 128)]
    g = b.global_view(a, D.float32, [n])
    gc = b.global_view(c, D.float32, [n])
    x = b.load_global(g, [BlockIdx(0) * 128], [128])
    t = b.binary("add", x, x)
    with b.for_range(0, 4, unroll=2):
        b.binary("mul", t, 2.0, out=t)
    k = b.let("k", 0)
    with b.while_loop(k < 3):
        b.assign(k, k + 1)
        with b.if_then(k > 1):
            b.break_()
        with b.otherwise():
            b.continue_()
    b.store_global(gc, t, [BlockIdx(0) * 128])
    p = b.finish()
    assert roundtrip(p) == """\
kernel vec_add(n: int32, a: ~float32, c: ~float32)
    blocks [cdiv(n, 128)] warps 4 consts {block: 128}
{
    %g: global[float32, (n,)] = global_view(ptr=a, strides=[1])
    %g_1: global[float32, (n,)] = global_view(ptr=c, strides=[1])
    %x: register[float32, (128,)] = load_global(%g, offsets=[blockIdx.x * 128])
    %t: register[float32, (128,)] = add(%x, %x)
    for i in range(0, 4, 1) unroll 2 {
        %t = mul(%t, 2.0)
    }
    let k: int32 = 0
    while (k < 3) {
        k = k + 1
        if (k > 1) {
            break
        } else {
            continue
        }
    }
    store_global(%g_1, %t, offsets=[blockIdx.x * 128])
}
"""


def test_statement_and_type_str():
    assert str(TensorType(D.float32, (16, 8), "register")) == "register[float32, (16, 8)]"
    assert str(TensorType(D.uint4, (), "register")) == "register[uint4, ()]"
    m = Var("m", D.int32)
    assert format_tensor_type(TensorType(D.float16, (m, m * 2), "global")) == "global[float16, (m, m * 2)]"
    i = Var("i", D.int64)
    loop = ForStmt(i, const(0, D.int64), const(8, D.int64), const(1, D.int64), SeqStmt(()), False)
    assert str(loop) == "for i: int64 in range(int64(0), int64(8), int64(1)) unroll false {\n}"
    assert str(IfStmt(const(True), LetStmt(Var("k", D.int8), const(3, D.int8)))) == \
        "if (true) {\n    let k: int8 = int8(3)\n}"


@dataclass(frozen=True)
class DummyLayout:
    text: str

    def __str__(self) -> str:
        return self.text


@pytest.mark.parametrize("text", ["local(2, 1) * spatial(8, 4) * local(1, 2)",
                                  "swizzle(strided([8, 1]), (3, {a: 1}), \"x]\")", "row_major",
                                  "spatial(128)*local(2)", "f([8])", "g({1})", "local((2))"])
def test_layouts_round_trip_through_the_layout_parser(text):
    b = ProgramBuilder("lay")
    b.register_tensor(D.float32, [16, 8], init=0.0, layout=DummyLayout(text))
    b.shared_tensor(D.float16, [16, 8], layout=DummyLayout(text))
    p = b.finish()
    printed = str(p)
    assert f"register[float32, (16, 8), layout={text}]" in printed
    q = parse(printed, layout_parser=DummyLayout)
    assert q == p and str(q) == printed


def test_layout_without_a_layout_parser(monkeypatch):
    monkeypatch.setattr(parser_mod, "_default_layout_parser", lambda: None)
    b = ProgramBuilder("lay")
    b.register_tensor(D.float32, [4], layout=DummyLayout("local(4)"))
    with pytest.raises(parser_mod.TilusParseError, match="layout") as e:
        parse(str(b.finish()))
    assert e.value.line == 4


x = Var("x", D.int32)
y = Var("y", D.int32)
f = Var("f", D.float32)
c = Var("c", D.bool)
EXPRS = [
    (x + y) * 2, x + y * 2, x - (y - 1), x - -5, -5 * x, -x, UnaryOp("neg", UnaryOp("neg", x, D.int32), D.int32),
    ~(x & y) | x ^ y << 2 >> 1, eq(x < y, y < x), ne(x, 1), x // 3 % 2 - cdiv(x, 4),
    Select(c, f, const(-0.0), D.float32), Cast(x, D.uint4), const(2**40, D.int64), const(-7, D.int64),
    const(-math.inf), const(math.inf, D.float16), const(1e-05), const(1.5e300, D.float64),
    BinaryOp("add", const(1), const(2), D.int32), UnaryOp("not", BinaryOp("and", c, c, D.bool), D.bool),
    BinaryOp("or", c, BinaryOp("and", c, c, D.bool), D.bool), BlockIdx(2) * x, f / 2.0 + f,
    UnaryOp("neg", const(-3), D.int32), UnaryOp("bitnot", const(-3), D.int32),
    BinaryOp("max", x, BinaryOp("min", y, x, D.int32), D.int32), const(3, D.uint4), const(0.5, D.float4_e2m1),
    const(math.nan), const(math.nan, D.float16), f + const(math.nan), const(-0.0, D.bfloat16),
]


@pytest.mark.parametrize("e", EXPRS, ids=[format_expr(e) for e in EXPRS])
def test_expressions_round_trip_exactly(e):
    b = ProgramBuilder("k")
    for v in (x, y, f, c):
        b.param(v.name, v.dtype)
    b.emit(LetStmt(Var("e", e.dtype), e))
    p = b.finish()
    roundtrip(p)


def test_keywords_are_reserved():
    assert parser_mod.keywords() <= RESERVED


def test_comments_and_whitespace_are_accepted():
    text = str(matmul_program())
    noisy = "# a comment\n" + text.replace("{\n", "{   # opens\n").replace(", ", " ,  ")
    assert parse(noisy) == matmul_program()


@settings(max_examples=100, deadline=None)
@given(st.text(st.characters(exclude_categories=()), max_size=20))
def test_strings_round_trip_as_valid_utf8(message):
    b = ProgramBuilder("k")
    b.print_tensor(b.register_tensor(D.int8, [2]), message)
    p = b.finish()
    text = roundtrip(p)
    text.encode("utf-8")
    assert text.count("\n") == 6 and len(text.splitlines()) == 6  # one line per statement


def test_nan_constants_are_equal_and_hash_alike():
    a, b = const(math.nan), const(float("nan"))
    assert a == b and hash(a) == hash(b)
    assert const(0.0) != const(-0.0) and const(math.inf) != const(-math.inf)
    assert const(math.nan) != const(math.nan, D.float16)
