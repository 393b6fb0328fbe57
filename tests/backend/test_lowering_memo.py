"""The lowering's shortcuts leave its output as it was: the memoized expressions, bounds clauses
and layout queries (Lowerer.expr / lowered / derived), the shared buffer layouts and the PTX
call templates (tilus.backend.codegen.ptx) against a lowering with none of them (every value
rebuilt, every PTX call through TVM's own instruction table), and across programs (a template or
layout kept from one program does not change the next)."""
import pathlib
import sys

import pytest

from tilus.backend import tvm_shim
from tilus.backend.build_program import prepare
from tilus.backend.codegen import lower as lower_mod
from tilus.backend.codegen import lower_program
from tilus.backend.codegen.ptx import Instruction
from tilus.backend.tvm_shim import T, structural_equal, tirx
from tilus.ir.program import as_program

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _kernels() -> dict:
    """Kernels whose lowering uses the shortcuts: loops rebinding one variable name, bounds
    checks, a packed low-bit cast (lop3/prmt/fma templates), mma and cp.async (the decode
    QuantMatmul's emitters) and a LUT lookup (a variable bound per slot)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    from matmul_lowbit import MatmulLowBit
    from softmax import Softmax

    from tilus.ops.kernels import QuantMatmul
    from tilus.ops.lut import kernel_for

    return {"softmax": Softmax(16, 100), "lowbit_uint3": MatmulLowBit("uint3"),
            "quant_uint4": QuantMatmul("uint4", 128, block_m=16, block_n=128, block_k=64, stages=2),
            "lut_uint2": kernel_for(2, 128, "float16")}


class _Forgetful(dict):
    """A memo table that keeps nothing (every lookup misses)."""

    def __setitem__(self, key, value) -> None:
        pass


def _unmemoized(program):
    lowerer = lower_mod.Lowerer(program)
    lowerer._lowered = _Forgetful()
    lowerer._derived = _Forgetful()
    return lowerer.build()


@pytest.fixture(scope="module")
def programs():
    return {name: prepare(as_program(k), "sm_90") for name, k in _kernels().items()}


def test_memoized_lowering_equals_unmemoized(programs, monkeypatch):
    memoized = {name: lower_program(p).prim_func for name, p in programs.items()}
    from tilus.backend.codegen import emitters  # noqa: F401  (registers the emitters)

    monkeypatch.setattr(Instruction, "__call__", lambda self, *a, **kw: self.chain(*a, **kw))
    monkeypatch.setattr(lower_mod, "_int_shape_layout", tvm_shim.default_layout)
    for name, p in programs.items():
        plain = tvm_shim.with_deep_stack(_unmemoized, p).prim_func
        assert structural_equal(memoized[name], plain, map_free_vars=True), name
        assert memoized[name].script() == plain.script(), name


def test_lowering_is_independent_of_earlier_programs(programs):
    names = list(programs)
    first = {name: lower_program(programs[name]).prim_func.script() for name in names}
    for name in reversed(names):
        assert lower_program(programs[name]).prim_func.script() == first[name], name


def _regs(n: int, dtype: str):
    buf = tirx.decl_buffer((n,), dtype, scope="local")
    return [buf[i] for i in range(n)]


@pytest.mark.parametrize("text, operands", [
    ("fma.rn.f16x2", lambda r: (r[0], r[1], tirx.const(0x3C003C00, "uint32"), r[3])),
    ("lop3.b32", lambda r: (r[0], r[1], r[2], r[3], 0x96)),
    ("prmt.b32", lambda r: (r[4], r[5], tirx.const(0x5410, "uint32"), r[6])),
])
def test_ptx_template_calls_equal_tvm(text, operands):
    inst = Instruction(text)
    for regs in (_regs(8, "uint32"), _regs(8, "uint32"), _regs(8, "uint32")):
        ops = operands(regs)
        got = inst(*ops)
        want = T.ptx[text](*ops)
        assert structural_equal(got, want), text
    # one signature, and TVM's call was kept as its template (so the later calls used it)
    assert len(inst.templates) == 1 and None not in inst.templates.values()


def test_ptx_template_keys_immediates_by_value():
    inst = Instruction("lop3.b32")
    regs = _regs(4, "uint32")
    for lut in (0x96, 0xEA, 0x96):
        assert structural_equal(inst(*regs, lut), T.ptx["lop3.b32"](*regs, lut))
    assert len(inst.templates) == 2


def test_rebinding_a_variable_renews_its_expressions(programs):
    """Verified programs bind each scalar name once, but the Lowerer itself may rebind (block
    indices, per-slot lookup variables): an expression lowered before must not keep the old
    binding."""
    from tilus import dtypes
    from tilus.ir import expr as E

    lw = lower_mod.Lowerer(programs["softmax"])
    x = E.Var("x", dtypes.int32)
    e = x * 4 + 1
    for name in ("a", "b"):
        v = tirx.Var(name, "int32")
        lw.define(x, v)
        got = lw.expr(e)
        assert structural_equal(got, v * 4 + 1)
        assert lw.lowered(("clause", e), lambda: lw.expr(e) < 7).a.same_as(got)
