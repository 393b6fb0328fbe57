"""``cast(x, dtype, exponent=e)``: x * 2^e rounded once. The packed low-bit casts fold the power of
two into their last constant (and, at ``free_exponent``, drop a float type's bias multiply); the
interpreter, the simulated kernel and an ml_dtypes reference agree."""
import ml_dtypes
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.backend import lowbit_cast as lc
from tilus.errors import DataTypeError, IRError, TilusError

_NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _reference(prog0, words, exponent, dst):
    """The exponent-0 program's values times 2^e, rounded once by ml_dtypes."""
    with np.errstate(all="ignore"):
        v = prog0.evaluate_values(words).astype(np.float64)
        return (v * 2.0 ** exponent).astype(_NP[dst]).astype(np.float64)


@pytest.mark.parametrize("name,dst", sorted(lc.all_cast_programs()))
def test_scaled_cast_programs_equal_the_rounded_product(name, dst):
    rng = np.random.default_rng(len(name))
    base = lc.cast_program(name, dst)
    for e in sorted({lc.free_exponent(name, dst), -3, -1, 1, 2}):
        try:
            prog = lc.cast_program(name, dst, e)
        except DataTypeError as err:          # a constant out of range: named, never wrong
            assert "not exact" in str(err) or "exponent must be" in str(err)
            continue
        assert prog.pair_stride == base.pair_stride
        assert [o[1] for o in prog.outputs] == [o[1] for o in base.outputs]
        words = rng.integers(0, 2 ** 32, size=(256, prog.num_words), dtype=np.uint64)
        words = words.astype(np.uint32)
        with np.errstate(all="ignore"):
            got = prog.evaluate_values(words).astype(np.float64)
        assert np.array_equal(got, _reference(base, words, e, dst), equal_nan=True), e


@pytest.mark.parametrize("name", ["float4_e2m1", "float6_e3m2", "float8_e4m3", "float3_e1m1"])
def test_free_exponent_drops_the_float_multiply(name):
    base = lc.cast_program(name, "float16")
    free = lc.cast_program(name, "float16", lc.free_exponent(name, "float16"))
    assert "mul" in base.op_histogram() and "mul" not in free.op_histogram()
    assert free.op_count == base.op_count - len(base.outputs)
    t = dtypes.get(name)
    assert lc.free_exponent(name, "float16") == t.exponent_bias - 15


def test_integer_types_keep_one_affine_op_per_pair():
    for name in ("uint4", "int4", "uint3", "uint8", "int8"):
        assert lc.cast_program(name, "float16", -3).op_count == lc.cast_program(name).op_count


class ScaledCast(tilus.Script):
    """uint8 bytes -> view as a low-bit type -> cast(exponent=e) to a float type."""

    def __init__(self, wtype, out="float16", exponent=0):
        super().__init__()
        self.wtype = dtypes.get(wtype)
        self.out = dtypes.get(out)
        self.exponent = exponent

    def __call__(self, n: tilus.int32, w: ~tilus.uint8, y: ~tilus.float32):
        self.attrs.blocks = [tilus.cdiv(n, 32)]
        self.attrs.warps = 4
        nb = self.wtype.nbits
        gw = self.global_view(w, dtype=tilus.uint8, shape=[n, 16 * nb])
        gy = self.global_view(y, dtype=tilus.float32, shape=[n, 128])
        raw = self.load_global(gw, offsets=[self.blockIdx.x * 32, 0], shape=[32, 16 * nb])
        codes = self.view(raw, dtype=self.wtype, shape=[32, 128])
        h = self.cast(codes, dtype=self.out, exponent=self.exponent)
        self.store_global(gy, self.cast(h, dtype=tilus.float32), offsets=[self.blockIdx.x * 32, 0])


def _codes_reference(wtype, w, out, exponent):
    t = dtypes.get(wtype)
    codes = np.asarray(dtypes.unpack(w.reshape(-1), t, count=w.shape[0] * 128))
    v = t.decode(codes).astype(np.float64) * 2.0 ** exponent
    npt = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}[out]
    with np.errstate(all="ignore"):
        return torch.from_numpy(v.astype(npt).astype(np.float32)).reshape(w.shape[0], 128)


@pytest.mark.parametrize("wtype,out,exponent", [
    ("float4_e2m1", "float16", -14), ("float4_e2m1", "bfloat16", -126), ("uint4", "float16", -2),
    ("int3", "bfloat16", 3), ("float8_e4m3", "float16", -8), ("uint8", "float16", -1),
    ("float4_e2m1", "float16", 3), ("float6_e3m2", "float32", -5)])
def test_scaled_cast_kernel_interpreted_and_simulated(wtype, out, exponent):
    pytest.importorskip("tilus.simulator")
    from tilus.simulator import run_prim_func
    from tilus.simulator.machine import as_prim_func

    n = 40
    t = dtypes.get(wtype)
    w = torch.randint(0, 256, (n, 16 * t.nbits), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(exponent + 200))
    if t.name == "float8_e4m3":
        w[w & 0x7F == 0x7F] = 0                    # NaN codes: compared elsewhere
    ref = _codes_reference(wtype, w, out, exponent)
    y_int, y_sim = torch.zeros(n, 128), torch.zeros(n, 128)
    kernel = ScaledCast(wtype, out, exponent)
    tilus.interpret(kernel, n, w, y_int)
    run_prim_func(as_prim_func(kernel), [n, w.reshape(-1), y_sim.reshape(-1)])
    assert torch.equal(y_int, ref)
    assert torch.equal(y_sim, ref)


def test_cast_exponent_in_the_text_form_and_its_errors():
    from tilus.ir.parser import parse as parse_program

    kernel = ScaledCast("float4_e2m1", "float16", -14)
    text = str(kernel.program())
    assert "exponent=-14" in text
    assert str(parse_program(text)) == text
    assert "exponent=" not in str(ScaledCast("float4_e2m1", "float16", 0).program())
    with pytest.raises(IRError, match="exponent must be an int in"):
        parse_program(text.replace("exponent=-14", "exponent=-300"))
    with pytest.raises(TilusError, match="at most 16 bits"):
        ScaledCast("float4_e2m1", "int8", 2).program()
