"""The per-instruction kernels of test_codegen_insts, lowered and run by tilus.simulator (the CPU
simulator of tirx PrimFuncs), compared with tilus.interpret. Skipped where the simulator is not
in the tree. tilus.ops' QuantMatmul, simulated the same way, is in the
test_quant_matmul_simulated_*.py files (split so that the workers share them)."""
import re

import pytest
import torch

import tilus
from tilus import dtypes

from tests.backend import test_codegen_insts as K

pytest.importorskip("tilus.simulator")


def _check(kernel, args, outputs, exact=True, program=None, **kw):
    from tilus.backend.codegen import lower_program
    from tilus.simulator import run_prim_func
    from tilus.simulator.machine import as_prim_func

    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    func = lower_program(program).prim_func if program is not None else as_prim_func(kernel)
    run_prim_func(func, [a.reshape(-1) if isinstance(a, torch.Tensor) else a for a in args], **kw)
    tilus.interpret(program if program is not None else kernel, *ref)
    for i in outputs:
        x, y = args[i], ref[i]
        if x.is_floating_point() and not exact:
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, equal_nan=True)
        elif x.is_floating_point():
            assert torch.equal(x.nan_to_num(7.5), y.nan_to_num(7.5))
        else:
            assert torch.equal(x, y)


def test_elementwise():
    n = 70
    x = torch.randn(n, 16).half()
    _check(K.Elementwise(), [n, x, torch.zeros(n, 16).half(), torch.zeros(n, 16, dtype=torch.int32)], [2, 3])


def test_lookup():
    n = 21
    table = torch.randn(64)
    index = torch.randint(0, 32, (n, 32), dtype=torch.int32)
    args = [n, table, index, torch.zeros(n, 32)]
    _check(K.Lookup(), args, [3])
    shift = (torch.arange(32) % 2) * 32
    assert torch.equal(args[3], table[(index + shift).long()] + 1.0)


def test_reduce():
    m = 13
    _check(K.Reduce(), [m, torch.randn(m, 100), torch.zeros(m, 3)], [2], exact=False)


def test_reduce_over_warps():
    from tilus.ir.layout.conversion import reduce_cost

    kernel = K.ReduceOverWarps()
    program = tilus.transforms.PassManager(tilus.transforms.default_passes()).run(kernel.program())
    reduces = [i for i in tilus.ir.functor.instructions(program) if isinstance(i, tilus.ir.inst.ReduceInst)]
    assert [reduce_cost(r.x.layout, r.output.layout, 1, True, r.x.dtype) for r in reduces] == ["shuffle"] * 2
    _check(kernel, [torch.randn(4, 256), torch.zeros(4, 2)], [1], exact=False, program=program)


def test_shapes():
    _check(K.Shapes(), [torch.randn(16, 8), torch.zeros(64, 64)], [1], exact=False)


def test_shared_copy_async_slices():
    n = 40
    _check(K.SharedMem(), [n, torch.randn(n, n).half(), torch.zeros(n, n).half()], [2])


def test_copy_async_misaligned_chunks():
    """n = 37: rows start off 16-byte alignment and the tile's columns run past n, so copy_async
    takes its cold path (cp.async with src-size for an aligned chunk, element by element for a
    misaligned one): y is x with its columns 32.. doubled. The cold path is one loop over the
    thread's chunks that stays a loop, so the printed CUDA holds one chunk's element copies."""
    from tilus.backend.build_program import as_program, prepare
    from tilus.backend.codegen import lower_program
    from tilus.backend.cuda_printer import print_cuda

    n = 37
    x = torch.randn(n, n).half()
    args = [n, x, torch.zeros(n, n).half()]
    program = prepare(as_program(K.SharedMem()), "sm_90")
    _check(None, args, [2], program=program)
    expect = x.clone()
    expect[:, 32:] *= 2
    assert torch.equal(args[2], expect)
    source = print_cuda(lower_program(program).prim_func).source
    # 32 x 64 halves in chunks of 8 over 128 threads: 2 chunks per thread, in one rolled loop
    assert re.findall(r"#pragma unroll 1\n\s*for \(int \w+ = 0; \w+ < (\d+);", source) == ["2"]
    assert source.count("? x_ptr[") == 8           # the misaligned chunk's 8 element copies, once


@pytest.mark.parametrize("wtype", ["int4", "uint3", "float6_e3m2", "float8_e4m3", "float8_e8m0"])
def test_lowbit_view_cast(wtype):
    t, n = dtypes.get(wtype), 16
    w = torch.randint(0, 256, (n, 8 * t.nbits), dtype=torch.uint8)
    _check(K.LowBit(wtype), [n, w, torch.zeros(1, dtype=torch.uint8), torch.zeros(n, 64)], [1, 3])


def test_subbyte_global_and_shared():
    n = 40
    nbytes = (n * 20 * 3 + 7) // 8
    w = torch.randint(0, 256, (nbytes,), dtype=torch.uint8)
    y = torch.randint(0, 256, (nbytes + 4,), dtype=torch.uint8)
    # the atomic read-modify-writes read the other elements' bits of a word before their owners
    # write them (benign: every element of the word is written)
    _check(K.SubByteMemory(), [n, w, y], [2], uninit="ignore")


def test_register_tensor_init_from_indices():
    n = 12                                   # two blocks, the second partly out of bounds
    x = torch.randn(n, 8)
    args = [n, -1, x, torch.zeros(n, 8), torch.zeros(n, 8, dtype=torch.int32)]
    _check(K.IndexInit(), args, [3, 4])
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(8), indexing="ij")
    i = rows % 8
    expect = x + torch.where(cols <= i - 1, 0.0, -100.0) + 0.5 * (i == cols)
    expect = torch.where((i + cols) % 3 != 0, expect, 9.0)
    assert torch.equal(args[3], expect) and torch.equal(args[4], rows * 8 + cols)


def test_dot_simt():
    _check(K.DotSimt(), [torch.randn(8, 4), torch.randn(4, 8), torch.zeros(8, 8)], [2], exact=False)


def test_dot_int8_mma():
    a = torch.randint(-128, 127, (32, 32), dtype=torch.int8)
    b = torch.randint(-128, 127, (32, 32), dtype=torch.int8)
    _check(K.DotInt8(), [a, b, torch.zeros(32, 32, dtype=torch.int32)], [2])


def test_dot_bf16_mma():
    m = 70
    a, b = torch.randn(m, 32).bfloat16(), torch.randn(32, 64).bfloat16()
    _check(K.DotBf16(), [m, a, b, torch.zeros(m, 64)], [3], exact=False)


def test_dot_transposed_b_through_ldmatrix():
    m = 70
    a, b = torch.randn(m, 32).half(), torch.randn(48, 32).half()
    _check(K.DotTransposedB(), [m, a, b, torch.zeros(m, 48)], [3], exact=False)


def _prepared_with_conversion(kernel, cost):
    """The kernel after the passes, checked to hold exactly one convert_layout, of ``cost``."""
    from tilus.backend.build_program import prepare
    from tilus.ir import inst as I
    from tilus.ir.functor import instructions

    program = prepare(kernel.program())
    costs = [i.cost for i in instructions(program) if isinstance(i, I.ConvertLayoutInst)]
    assert costs == [cost], program
    return program


def test_relayout_through_shared_memory():
    program = _prepared_with_conversion(K.Relayout(), "shared")
    _check(None, [torch.randn(32, 32), torch.zeros(32, 32)], [1], program=program)


def test_view_converted_on_both_sides():
    from tilus.backend.build_program import prepare
    from tilus.ir import inst as I
    from tilus.ir.functor import instructions

    program = prepare(K.ViewNeitherSide().program())
    assert len([i for i in instructions(program) if isinstance(i, I.ConvertLayoutInst)]) == 2
    x = torch.randint(0, 256, (8, 12), dtype=torch.uint8)
    _check(None, [x, torch.zeros(8, 32, dtype=torch.int32)], [1], program=program)


def test_conversion_that_is_free():
    """A user's convert_layout that only reorders slots: register copies."""
    program = _prepared_with_conversion(K.FreeConversion(), "free")
    _check(None, [torch.randn(16, 32), torch.zeros(16, 32)], [1], program=program)


def test_control_flow():
    n = 37
    _check(K.Control(), [n, torch.zeros(n, dtype=torch.int32)], [1])


def test_scalar_loads_gather_rows_through_a_table():
    table = torch.tensor([[3, 1, 7, 0], [5, 2, 2, 6], [4, 0, 0, 0]], dtype=torch.int32)
    lens = torch.tensor([2, 4, 0], dtype=torch.int32)
    x = torch.randn(8, 40).half()
    out = torch.full((3, 4, 40), -1.0).half()
    _check(K.ScalarLoads(), [3, table, lens, x, out], [4])
    assert torch.equal(out[1, 2], x[2]) and torch.equal(out[0, :2], x[[3, 1]])
    assert (out[2] == -1).all() and (out[0, 2:] == -1).all()


@pytest.mark.parametrize("dtype", ["int8", "uint16", "int64", "float16", "bfloat16", "float32"])
def test_scalar_loads_of_every_byte_type(dtype):
    """load_scalar of each 8-64-bit type, used as a scalar operand: out = x * src[2, 1]."""
    from tilus.backend.build_program import prepare
    from tilus.ir.builder import ProgramBuilder
    from tilus.ir.expr import const

    t = dtypes.get(dtype)
    b = ProgramBuilder("scalar_" + dtype)
    src, x, out = b.param("src", ~t), b.param("x", ~t), b.param("out", ~t)
    gs, gx, go = (b.global_view(p, t, shape) for p, shape in ((src, [3, 2]), (x, [40]), (out, [40])))
    v = b.load_scalar(gs, [2, 1])
    b.store_global(go, b.binary("mul", b.load_global(gx, [0], [64]), v), [0])
    b.blocks = (const(1),)
    b.warps = 1
    tt = getattr(torch, dtype)
    values = torch.tensor([[1, -2], [3, 4], [-5, 3]]).to(tt) if dtype != "uint16" else \
        torch.tensor([[1, 2], [3, 4], [5, 3]], dtype=tt)
    xs = torch.arange(40).to(tt) if dtype != "int8" else torch.arange(-20, 20, dtype=tt)
    _check(None, [values, xs, torch.zeros(40, dtype=tt)], [2], program=prepare(b.finish()))


def test_free_shared_reuse():
    _check(K.Reuse(), [torch.randn(32, 64)], [0])


@pytest.mark.parametrize("wtype", ["int4", "uint3", "float6_e3m2", "float8_e4m3", "uint1", "int2",
                                   "float4_e2m1", "uint6", "float6_e5m0", "float8_e5m2", "int8",
                                   "uint8"])
@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_lowbit_view_cast_to_half(wtype, half):
    """uint8 bytes viewed as a low-bit type and cast to float16/bfloat16, simulated = interpreted.
    Pairs with a packed cast program use it (lop3/prmt/half2); the others (float6_e5m0 ->
    float16: its values reach 2^16, past float16's range; int8/uint8 -> bfloat16) have none:
    ``cast_program`` refuses them with the documented error, and the cast is element-wise."""
    from tilus.backend.lowbit_cast import cast_program, supported_targets
    from tilus.errors import DataTypeError

    t, n = dtypes.get(wtype), 70
    packed = half in supported_targets(t)
    if not packed:
        why = ("its exponent range exceeds float16" if t.is_float
               else "bfloat16 has 7 mantissa bits")
        with pytest.raises(DataTypeError, match=f"{wtype} has no exact packed cast to {half}: "
                                                f"{why}.*; use "):
            cast_program(t, half)
    g = torch.Generator().manual_seed(t.nbits)
    w = torch.randint(0, 256, (n, 16 * t.nbits), dtype=torch.uint8, generator=g)
    y = torch.zeros(n, 128, dtype=torch.int16)
    ref = y.clone()
    _check(K.LowBitHalf(wtype, half), [n, w, y], [], )
    tilus.interpret(K.LowBitHalf(wtype, half), n, w, ref)
    tdt = torch.float16 if half == "float16" else torch.bfloat16
    # NaN payloads are not kept (the interpreter re-encodes NaN canonically): compare values
    assert torch.equal(y.view(tdt).float().nan_to_num(7.5), ref.view(tdt).float().nan_to_num(7.5))
    # the interpreter's values are the type's decoded codes, rounded to the target
    codes = dtypes.unpack(w.reshape(-1).numpy(), t, n * 128)
    want = torch.from_numpy(t.decode(codes)).to(tdt).float()
    assert torch.equal(ref.view(tdt).float().reshape(-1).nan_to_num(7.5), want.nan_to_num(7.5))
    if wtype == "float6_e5m0" and half == "float16":      # +-2^16 overflow to +-inf
        assert bool(torch.isinf(y.view(tdt)).any())


def test_quant_matmul_cases_are_split_without_loss():
    """The test_quant_matmul_simulated_*.py files hold the pipelined cases and every low-bit type
    (the plain schedule), each exactly once."""
    from tests.backend import (test_quant_matmul_simulated_float as f,
                               test_quant_matmul_simulated_float78 as f78,
                               test_quant_matmul_simulated_int as i)
    from tests.backend.quant_matmul_sim import PIPELINED, SMALL

    ids = [f"{c[0]}-{sorted(c[1].items())}-{c[2]}" for mod in (i, f, f78) for c in mod.CASES]
    want = PIPELINED + [(t.name, SMALL, 5) for t in dtypes.lowbit_types()]
    assert sorted(ids) == sorted(f"{c[0]}-{sorted(c[1].items())}-{c[2]}" for c in want)
    assert len(ids) == len(set(ids)) == len(want)


def test_packed_cast_with_permuted_slots():
    w = torch.randint(0, 256, (32, 32), dtype=torch.uint8)
    _check(K.LowBitPermuted(), [w, torch.zeros(32, 64).half()], [1])


def test_warp_shuffle_transpose():
    program = _prepared_with_conversion(K.WarpTranspose(), "shuffle")
    _check(None, [torch.randn(8, 8).half(), torch.zeros(8, 8).half()], [1], program=program)


@pytest.mark.parametrize("mnk", [(70, 50, 88), (70, 56, 90), (64, 64, 40)])
def test_matmul_fp16_tails(mnk):
    """K = 88: aligned rows, the last k-tile partly past the end (cp.async src-size); K = 90:
    misaligned rows (element-wise copies)."""
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "examples"))
    import matmul_fp16

    m, n, k = mnk
    a, b = torch.randn(m, k).half(), torch.randn(k, n).half()
    _check(matmul_fp16.MatmulFp16(), [m, n, k, a, b, torch.zeros(m, n).half()], [5])
