"""view across every 1-8-bit type and cast to/from low-bit types, against independent references."""
import ml_dtypes
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.errors import InterpreterError
from tilus.ir.builder import ProgramBuilder

from tests.interpreter.oracles import LOWBIT, code_value, pack_bits, unpack_bits


def bytes_to_values_program(dtype, nbytes):
    """uint8 bytes -> view as dtype -> cast to float32 -> out; and view back -> uint8 -> back."""
    b = ProgramBuilder("view")
    src = b.param("src", ~dtypes.uint8)
    out = b.param("out", ~dtypes.float32)
    back = b.param("back", ~dtypes.uint8)
    x = b.load_global(b.global_view(src, dtypes.uint8, [2, nbytes]), [0, 0], [2, nbytes])
    v = b.view(x, dtype)                                  # [2, nbytes * 8 / K]
    count = nbytes * 8 // dtype.nbits
    b.store_global(b.global_view(out, dtypes.float32, [2, count]), b.cast(v, dtypes.float32), [0, 0])
    w = b.view(v, dtypes.uint8)
    b.store_global(b.global_view(back, dtypes.uint8, [2, nbytes]), w, [0, 0])
    return b.finish()


@pytest.mark.parametrize("dtype", LOWBIT, ids=lambda t: t.name)
def test_view_bytes_as_every_lowbit_type(dtype):
    k = dtype.nbits
    nbytes = 3 * k                                        # a whole number of elements per row
    rng = np.random.default_rng(100 + k)
    raw = rng.integers(0, 256, size=(2, nbytes), dtype=np.uint8)
    if dtype.name == "float8_e5m2":                       # NaN payloads are not kept in registers
        raw[(raw & 0x7F) > 0x7C] = 0x3C
    count = nbytes * 8 // k
    out = np.zeros((2, count), np.float32)
    back = np.zeros((2, nbytes), np.uint8)
    tilus.interpret(bytes_to_values_program(dtype, nbytes), raw, out, back)
    want = np.stack([code_value(dtype, unpack_bits(raw[r], k, count)) for r in range(2)])
    np.testing.assert_array_equal(out, want.astype(np.float32))
    # float zeros keep their sign
    np.testing.assert_array_equal(np.signbit(out), np.signbit(want))
    np.testing.assert_array_equal(back, raw)              # viewing back is exact


@pytest.mark.parametrize("src_name,dst_name,np_src,np_dst", [
    ("float16", "uint16", np.float16, np.uint16),
    ("float16", "int16", np.float16, np.int16),
    ("float32", "int32", np.float32, np.int32),
    ("uint8", "float16", np.uint8, np.float16),
    ("uint8", "bfloat16", np.uint8, ml_dtypes.bfloat16),
    ("int32", "float16", np.int32, np.float16),
    ("uint8", "float32", np.uint8, np.float32),
])
def test_view_wide_types_like_numpy(src_name, dst_name, np_src, np_dst):
    src_t, dst_t = dtypes.get(src_name), dtypes.get(dst_name)
    n = 16
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, size=n * src_t.nbits // 8, dtype=np.uint8)
    a = raw.view(np_src)
    want = a.view(np_dst)
    if dst_t.is_float:                                    # NaN payloads are not kept in registers
        keep = np.isfinite(want.astype(np.float32))
        want = np.ascontiguousarray(np.where(keep, want, np.zeros_like(want)))
        a = want.view(np.uint8).view(np_src)
    b = ProgramBuilder("vw")
    s = b.param("s", ~src_t)
    d = b.param("d", ~dst_t)
    x = b.load_global(b.global_view(s, src_t, [a.size]), [0], [a.size])
    b.store_global(b.global_view(d, dst_t, [want.size]), b.view(x, dst_t), [0])
    out = np.zeros(want.size, want.dtype)
    tilus.interpret(b.finish(), np.ascontiguousarray(a), out)
    np.testing.assert_array_equal(out.view(np.uint8), np.ascontiguousarray(want).view(np.uint8))


def test_view_changes_shape_across_rows():
    b = ProgramBuilder("reshape_view")
    s, d = b.param("s", ~dtypes.uint8), b.param("d", ~dtypes.uint4)
    x = b.load_global(b.global_view(s, dtypes.uint8, [2, 3]), [0, 0], [2, 3])
    v = b.view(x, dtypes.uint4, shape=[3, 4])
    b.store_global(b.global_view(d, dtypes.uint4, [3, 4]), v, [0, 0])
    raw = np.array([[0x21, 0x43, 0x65], [0x87, 0xA9, 0xCB]], np.uint8)
    out = np.zeros(6, np.uint8)
    tilus.interpret(b.finish(), raw, out)
    np.testing.assert_array_equal(unpack_bits(out, 4, 12), np.arange(1, 13))


def cast_program(src_t, dst_t, n):
    b = ProgramBuilder("cast")
    s, d = b.param("s", ~src_t), b.param("d", ~dst_t)
    x = b.load_global(b.global_view(s, src_t, [n]), [0], [n])
    b.store_global(b.global_view(d, dst_t, [n]), b.cast(x, dst_t), [0])
    return b.finish()


def rne_to_set(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Round to the nearest of a finite value set, ties to the one with the even code; saturate."""
    out = np.empty_like(x)
    for i, v in enumerate(x):                             # a loop is fine for a test oracle
        d = np.abs(values - v)
        best = np.flatnonzero(d == d.min())
        if len(best) > 1:
            best = [c for c in best if c % 2 == 0] or best
        out[i] = values[best[0]]
    return out


@pytest.mark.parametrize("dtype", [t for t in LOWBIT if t.is_float], ids=lambda t: t.name)
def test_cast_float32_to_lowbit_float_rounds_to_nearest_even_and_saturates(dtype):
    k = dtype.nbits
    table = code_value(dtype, np.arange(1 << k))
    finite = table[np.isfinite(table)]
    top = finite.max()
    rng = np.random.default_rng(k * 10 + dtype.exponent_bits)
    with np.errstate(over="ignore"):     # float8_e8m0: 10 * 2^127 is inf in float32 (saturates)
        x = np.concatenate([rng.uniform(-1.5 * top, 1.5 * top, 200), finite,
                            (np.sort(np.unique(finite))[:-1] + np.sort(np.unique(finite))[1:]) / 2,
                            [0.0, -0.0, 10 * top, -10 * top]]).astype(np.float32)
    buf = np.zeros(-(-x.size * k // 8), np.uint8)
    tilus.interpret(cast_program(dtypes.float32, dtype, x.size), x, buf)
    got = code_value(dtype, unpack_bits(buf, k, x.size))
    want = rne_to_set(x.astype(np.float64), np.where(np.isfinite(table), table, 0.0))
    if dtype.unsigned:      # float8_e8m0: no zero; below 2^-127 and above 2^127 saturate
        want = rne_to_set(np.clip(x.astype(np.float64), 0, top),
                          np.where(np.isfinite(table), table, np.inf))
    if dtype.name in ("float8_e4m3", "float8_e5m2"):
        ml = ml_dtypes.float8_e4m3fn if dtype.name == "float8_e4m3" else ml_dtypes.float8_e5m2
        want = np.clip(x, -top, top).astype(ml).astype(np.float64)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [t for t in LOWBIT if t.is_integer], ids=lambda t: t.name)
def test_cast_float_to_lowbit_int_truncates_and_saturates(dtype):
    x = np.array([0.0, 0.9, -0.9, 1.5, -1.5, 2.7, -2.7, 3.99, 100.0, -100.0, np.nan, 7.0, -8.0],
                 np.float32)
    k = dtype.nbits
    buf = np.zeros(-(-x.size * k // 8), np.uint8)
    tilus.interpret(cast_program(dtypes.float32, dtype, x.size), x, buf if k < 8 else
                    buf.view(np.int8) if dtype.name == "int8" else buf)
    got = code_value(dtype, unpack_bits(buf, k, x.size))
    lo, hi = (-(1 << (k - 1)), (1 << (k - 1)) - 1) if dtype.is_signed else (0, (1 << k) - 1)
    want = np.clip(np.trunc(np.nan_to_num(x, nan=0.0)), lo, hi)
    np.testing.assert_array_equal(got, want)


def test_cast_int_to_int_wraps_like_c():
    x = np.array([0, 1, 7, 8, 15, 16, -1, -8, -9, 200, 255, 256, -129, 2**31 - 1], np.int32)
    for name, np_t in [("int8", np.int8), ("uint8", np.uint8), ("int16", np.int16)]:
        out = np.zeros(x.size, np_t)
        tilus.interpret(cast_program(dtypes.int32, dtypes.get(name), x.size), x, out)
        np.testing.assert_array_equal(out, x.astype(np_t))
    for name in ("int4", "uint4", "int3", "uint2"):
        t = dtypes.get(name)
        buf = np.zeros(-(-x.size * t.nbits // 8), np.uint8)
        tilus.interpret(cast_program(dtypes.int32, t, x.size), x, buf)
        np.testing.assert_array_equal(unpack_bits(buf, t.nbits, x.size),
                                      x.astype(np.int64) & ((1 << t.nbits) - 1))


def test_cast_lowbit_to_float16_and_to_int32():
    t = dtypes.float6_e3m2
    codes = np.arange(64)
    buf = pack_bits(codes, 6)
    out = torch.zeros(64, dtype=torch.float16)
    tilus.interpret(cast_program(t, dtypes.float16, 64), buf, out)
    np.testing.assert_array_equal(out.numpy(), code_value(t, codes).astype(np.float16))
    out32 = np.zeros(64, np.int32)
    tilus.interpret(cast_program(t, dtypes.int32, 64), buf, out32)
    np.testing.assert_array_equal(out32, np.trunc(code_value(t, codes)).astype(np.int32))


def test_cast_to_float16_and_bfloat16_rounds_like_torch():
    x = torch.randn(1000) * 1000
    x[:3] = torch.tensor([1e6, -1e6, 65519.0])           # overflow -> inf, like IEEE
    for tt, t in [(torch.float16, dtypes.float16), (torch.bfloat16, dtypes.bfloat16)]:
        out = torch.zeros(1000, dtype=tt)
        tilus.interpret(cast_program(dtypes.float32, t, 1000), x, out)
        assert torch.equal(out, x.to(tt))


def test_cast_nan_to_finite_only_type_is_an_error():
    x = np.array([1.0, np.nan], np.float32)
    with pytest.raises(InterpreterError, match="float4_e2m1"):
        tilus.interpret(cast_program(dtypes.float32, dtypes.float4_e2m1, 2), x, np.zeros(1, np.uint8))
