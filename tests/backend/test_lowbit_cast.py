"""Every code of every 1..8-bit type through its packed cast program == the exact value."""

import ml_dtypes
import numpy as np
import pytest

from tilus import dtypes
from tilus.backend import lowbit_cast as lc
from tilus.errors import DataTypeError


# ---------------------------------------------------------------------------------------------
# independent reference: closed forms (ml_dtypes cross-checks them where it has the format)
# ---------------------------------------------------------------------------------------------

def reference(t, codes: np.ndarray) -> np.ndarray:
    codes = codes.astype(np.int64)
    k = t.nbits
    if t.kind == "uint":
        return codes.astype(np.float64)
    if t.kind == "int":
        return np.where(codes >= 1 << (k - 1), codes - (1 << k), codes).astype(np.float64)
    x, y, bias = t.exponent_bits, t.mantissa_bits, t.exponent_bias
    s = (codes >> (k - 1)) & 1
    e = (codes >> y) & ((1 << x) - 1)
    m = codes & ((1 << y) - 1)
    mag = np.where(e == 0, 2.0 ** (1 - bias) * m / 2.0 ** y, 2.0 ** (e - bias) * (1 + m / 2.0 ** y))
    if t.name == "float8_e4m3":
        mag = np.where((e == 15) & (m == 7), np.nan, mag)
    if t.name == "float8_e5m2":
        mag = np.where(e == 31, np.where(m == 0, np.inf, np.nan), mag)
    return np.where(s == 1, -mag, mag)


def pack_stream(codes: np.ndarray, k: int, num_words: int) -> np.ndarray:
    """codes [B, N] -> words [B, W]: element i at stream bits [i*k, (i+1)*k), little-endian."""
    b, n = codes.shape
    bits = ((codes[:, :, None].astype(np.uint64) >> np.arange(k, dtype=np.uint64)) & 1).reshape(b, n * k)
    bits = bits.reshape(b, num_words, 32)
    return (bits << np.arange(32, dtype=np.uint64)).sum(axis=2).astype(np.uint32)


def all_codes_batch(t, n: int) -> np.ndarray:
    """[2^K, N] codes in which every element slot takes every code."""
    size = 1 << t.nbits
    rows = np.arange(size)[:, None]
    return ((rows + 37 * np.arange(n)[None, :]) % size).astype(np.int64)


PAIRS = sorted(lc.all_cast_programs())


def test_every_lowbit_type_has_a_path():
    for t in dtypes.lowbit_types():
        assert lc.supported_targets(t), t.name
        # every float type converts exactly to bf16; fp16 exactly when the range fits
        if t.is_float:
            assert "bfloat16" in lc.supported_targets(t)
            assert ("float16" in lc.supported_targets(t)) == (t.exponent_bits <= 4 or t.name == "float8_e5m2")
    assert len(PAIRS) >= 2 * 16 - 1 + 30


@pytest.mark.parametrize("name,dst", PAIRS, ids=[f"{n}->{d}" for n, d in PAIRS])
def test_every_code(name, dst):
    t = dtypes.get(name)
    prog = lc.cast_program(t, dst)
    assert prog.num_elements * t.nbits == 32 * prog.num_words
    assert sorted(e for _, pair in prog.outputs for e in pair) == list(range(prog.num_elements))
    codes = all_codes_batch(t, prog.num_elements)
    with np.errstate(invalid="ignore"):
        got = prog.evaluate_values(pack_stream(codes, t.nbits, prog.num_words)).astype(np.float64)
    want = reference(t, codes)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    # signed zeros: -0 codes give -0
    assert np.array_equal(np.signbit(got[~nan]), np.signbit(want[~nan]))


@pytest.mark.parametrize("name", ["float8_e4m3", "float8_e5m2", "float6_e2m3", "float6_e3m2", "float4_e2m1"])
def test_reference_matches_ml_dtypes(name):
    t = dtypes.get(name)
    codes = np.arange(1 << t.nbits, dtype=np.uint8)
    ml = codes.view(getattr(ml_dtypes, t.ml_dtypes_name)).astype(np.float64)
    ref = reference(t, codes)
    np.testing.assert_array_equal(np.isnan(ml), np.isnan(ref))
    np.testing.assert_array_equal(ml[~np.isnan(ml)], ref[~np.isnan(ref)])


def test_subnormals_are_exact():
    # float8_e4m3 subnormals 2^-6 * m/8 and the smallest e1 / e3 values
    prog = lc.cast_program("float8_e4m3", "float16")
    words = np.array([[0x07060501]], dtype=np.uint32)   # codes 1, 5, 6, 7: all subnormal
    vals = prog.evaluate_values(words)[0]
    np.testing.assert_array_equal(vals, np.array([1, 5, 6, 7]) * 2.0 ** -9)


def test_no_fp16_path_for_wide_exponents():
    for name in ["float6_e5m0", "float7_e5m1", "float7_e6m0", "float8_e6m1", "float8_e7m0"]:
        with pytest.raises(DataTypeError, match="float16"):
            lc.cast_program(name, "float16")
        assert lc.cast_program(name, "bfloat16").op_count > 0
    with pytest.raises(DataTypeError, match="bfloat16"):
        lc.cast_program("uint8", "bfloat16")
    with pytest.raises(DataTypeError):
        lc.cast_program("float16", "float16")


def test_known_sequences_are_as_cheap_as_the_classics():
    # FasterTransformer's uint4/int4 -> half2: 1 shift, 4 lop3, 2 sub, 2 fma for 8 elements
    assert lc.cast_program("uint4").op_count == 9
    assert lc.cast_program("int4").op_count == 9
    # int8 -> fp16 with prmt: xor, 2 prmt, 2 sub for 4 elements
    assert lc.cast_program("int8").op_count == 5
    assert lc.cast_program("uint8").op_count == 4
    assert lc.cast_program("float8_e5m2").op_count <= 3
    # no branches / per-element ops: only the tiny instruction set
    for prog in lc.all_cast_programs().values():
        assert {op.opcode for op in prog.ops} <= set(lc.INT_OPS) | set(lc.HALF_OPS)


def test_program_text():
    text = str(lc.cast_program("uint4"))
    assert "lop3.b32" in text and "0x64006400" in text and "uint4 -> float16x2" in text


# ---------------------------------------------------------------------------------------------
# lop3 / prmt evaluators against the PTX ISA
# ---------------------------------------------------------------------------------------------

A, B, C = 0x12345678, 0x9ABCDEF0, 0x0F0F3355


@pytest.mark.parametrize("lut,fn", [
    (0xF0, lambda a, b, c: a), (0xCC, lambda a, b, c: b), (0xAA, lambda a, b, c: c),
    (0x96, lambda a, b, c: a ^ b ^ c), (0xE8, lambda a, b, c: (a & b) | (a & c) | (b & c)),
    (0x80, lambda a, b, c: a & b & c), (0xFE, lambda a, b, c: a | b | c),
    (0x6A, lambda a, b, c: (a & b) ^ c), (0xEA, lambda a, b, c: (a & b) | c),
    (0x00, lambda a, b, c: 0), (0xFF, lambda a, b, c: 0xFFFFFFFF),
])
def test_lop3(lut, fn):
    assert int(lc.lop3(A, B, C, lut)) == fn(A, B, C) & 0xFFFFFFFF
    # the LUT is "the function applied to ta=0xF0, tb=0xCC, tc=0xAA"
    assert int(lc.lop3(0xF0, 0xCC, 0xAA, lut)) & 0xFF == lut


def test_prmt():
    a, b = 0x33221100, 0x77665544
    assert int(lc.prmt(a, b, 0x3210)) == a
    assert int(lc.prmt(a, b, 0x7654)) == b
    assert int(lc.prmt(a, b, 0x5410)) == 0x55441100     # low halves of a and b
    assert int(lc.prmt(a, b, 0x7632)) == 0x77663322     # high halves
    assert int(lc.prmt(a, b, 0x0123)) == 0x00112233     # byte reverse
    assert int(lc.prmt(0x64646464 & 0, 0x64646464, 0x4140)) == 0x64006400
    # sign replication: selector bit 3 copies bit 7 of the chosen byte into the whole byte
    assert int(lc.prmt(0x00800070, 0, 0x8888)) == 0x00000000   # byte 0 = 0x70: msb 0
    assert int(lc.prmt(0x00800070, 0, 0xAAAA)) == 0xFFFFFFFF   # byte 2 = 0x80: msb 1
    assert int(lc.prmt(0x80000000, 0, 0xB210)) == 0xFF000000
    # only the low 16 bits of the selector count
    assert int(lc.prmt(a, b, 0xFFFF3210)) == a


def test_half_arithmetic_rounds_to_nearest_even():
    ev = lc._half_op
    one = np.uint32(0x3C003C00)
    # 1 + 2^-11 is a tie between 1 and 1+2^-10: rounds to even (1.0)
    tiny = np.uint32(0x10001000)  # 2^-11 in both lanes
    assert int(ev("fma", "f16x2", [one, one, tiny])) == 0x3C003C00
    # 65504 * 2 overflows to inf
    big = np.uint32(0x7BFF7BFF)
    two = np.uint32(0x40004000)
    assert int(ev("mul", "f16x2", [big, two])) == 0x7C007C00
    # subnormal results are kept (no flush to zero)
    sub = np.uint32(0x00010001)  # 2^-24
    assert int(ev("mul", "f16x2", [sub, one])) == 0x00010001
    # bf16: 1 * 2^127 exact
    b_one, b_big = np.uint32(0x3F803F80), np.uint32(0x7F007F00)
    assert int(ev("mul", "bf16x2", [b_one, b_big])) == 0x7F007F00


# ---------------------------------------------------------------------------------------------
# the inline-PTX emitter: every program assembles for sm_80 and sm_90 (compile only)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_program_assembles(need_nvcc, arch):
    from tilus.backend import toolchain

    src = ["#include <cstdint>"]
    for (name, dst), p in lc.all_cast_programs().items():
        fn = f"cast_{name}_{dst}"
        src.append(lc.to_cuda(p, fn))
        src.append(
            f'extern "C" __global__ void k_{name}_{dst}(const uint32_t* __restrict__ in, '
            f'uint32_t* __restrict__ out) {{\n'
            f'  uint32_t a[{p.num_words}], b[{len(p.outputs)}];\n'
            f'  int t = blockIdx.x * blockDim.x + threadIdx.x;\n'
            f'  for (int i = 0; i < {p.num_words}; ++i) a[i] = in[t * {p.num_words} + i];\n'
            f'  {fn}(a, b);\n'
            f'  for (int i = 0; i < {len(p.outputs)}; ++i) out[t * {len(p.outputs)} + i] = b[i];\n}}')
    build = toolchain.compile_cuda("\n".join(src), arch)
    for name, res in build.resources.items():
        assert not res.spills and res.stack_frame_bytes == 0, name
    assert len([n for n in build.resources if n.startswith("k_")]) == len(lc.all_cast_programs())
    assert "lop3.b32" in build.ptx and "fma.rn.bf16x2" in build.ptx and "prmt.b32" in build.ptx


def test_lop3_and_prmt_agree_with_the_simulators_independent_definitions():
    """lowbit_cast checks its programs with its own lop3/prmt; the simulator checks compiled
    kernels with another implementation of the same PTX definitions: they agree bit for bit."""
    from tilus.simulator import ptx

    rng = np.random.default_rng(7)
    a, b, c = (rng.integers(0, 2 ** 32, 4096, dtype=np.uint64).astype(np.uint32) for _ in range(3))
    for lut in (0x00, 0x6A, 0x96, 0xE8, 0xF8, 0xFF, int(rng.integers(0, 256))):
        assert np.array_equal(lc.lop3(a, b, c, lut), ptx.lop3(a, b, c, lut)), hex(lut)
    assert np.array_equal(lc.prmt(a, b, c), ptx.prmt(a, b, c))
    assert lc.lop3 is not ptx.lop3 and lc.prmt is not ptx.prmt
