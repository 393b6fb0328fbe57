"""Elementwise, where, reduce, dot and shape instructions against numpy/torch."""
import numpy as np
import pytest
import torch

from tilus import dtypes
from tilus.errors import InterpreterError

from tests.interpreter.tiles import run_tiles

rng = np.random.default_rng(0)
MAX = "maximum"
MIN = "minimum"


@pytest.mark.parametrize("op,ref", [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                                    ("div", np.divide), (MAX, np.maximum), (MIN, np.minimum),
                                    ("mod", np.fmod)])
def test_float32_binary_with_broadcasting(op, ref):
    a = rng.standard_normal((4, 1, 8)).astype(np.float32)
    b = rng.standard_normal((3, 1)).astype(np.float32) + 3
    got = run_tiles(lambda bl, x, y: bl.binary(op, x, y), [a, b])
    np.testing.assert_array_equal(got, ref(a, b))


def test_float16_arithmetic_rounds_per_operation_like_torch():
    a = torch.randn(64, dtype=torch.float16) * 100
    b = torch.randn(64, dtype=torch.float16)
    for op, ref in [("add", torch.add), ("mul", torch.mul), ("div", torch.div), ("sub", torch.sub)]:
        got = run_tiles(lambda bl, x, y: bl.binary(op, x, y), [a.numpy(), b.numpy()])
        np.testing.assert_array_equal(got, ref(a, b).numpy())
    # (a * b) + a rounds twice: not the fused result
    got = run_tiles(lambda bl, x, y: bl.binary("add", bl.binary("mul", x, y), x), [a.numpy(), b.numpy()])
    np.testing.assert_array_equal(got, (a * b + a).numpy())


def test_scalar_operands_are_evaluated_in_the_scalar_environment():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    got = run_tiles(lambda bl, x, s: bl.binary("mul", bl.binary("add", x, s * 2), 3), [a],
                    scalars=[("int32", 5)])
    np.testing.assert_array_equal(got, (a + 10) * 3)
    got = run_tiles(lambda bl, x, s: bl.binary("sub", s, x), [a], scalars=[("int32", 100)])
    np.testing.assert_array_equal(got, 100 - a)
    f = np.linspace(-1, 1, 8, dtype=np.float16)
    got = run_tiles(lambda bl, x: bl.binary("add", x, 0.1), [f])
    np.testing.assert_array_equal(got, (torch.from_numpy(f) + 0.1).numpy())


def test_integer_arithmetic_wraps_divides_toward_zero_c_remainder():
    a = np.array([7, -7, 7, -7, 2**31 - 1, -2**31, 5, 0], np.int32)
    b = np.array([2, 2, -2, -2, 1, -1, 3, 9], np.int32)
    t = lambda op: run_tiles(lambda bl, x, y: bl.binary(op, x, y), [a, b])
    np.testing.assert_array_equal(t("add"), (a.astype(np.int64) + b).astype(np.int32))
    np.testing.assert_array_equal(t("mul"), (a.astype(np.int64) * b).astype(np.int32))
    np.testing.assert_array_equal(t("sub"), (a.astype(np.int64) - b).astype(np.int32))
    want_div = np.trunc(a.astype(np.float64) / b).astype(np.int64).astype(np.int32)
    np.testing.assert_array_equal(t("div"), want_div)
    np.testing.assert_array_equal(t("mod"), np.fmod(a, b))
    with pytest.raises(InterpreterError, match="by zero"):
        run_tiles(lambda bl, x, y: bl.binary("div", x, y), [a, np.zeros(8, np.int32)])


def test_int8_wraps_and_bit_operations():
    a = np.array([100, -100, 127, -128, 5, -1, 64, 3], np.int8)
    b = np.array([100, -100, 1, -1, 2, 3, 1, 9], np.int8)
    t = lambda op: run_tiles(lambda bl, x, y: bl.binary(op, x, y), [a, b])
    np.testing.assert_array_equal(t("add"), a + b)            # numpy int8 wraps too
    np.testing.assert_array_equal(t("mul"), a * b)
    np.testing.assert_array_equal(t("bitand"), a & b)
    np.testing.assert_array_equal(t("bitor"), a | b)
    np.testing.assert_array_equal(t("bitxor"), a ^ b)
    sh = np.array([1, 2, 7, 8, 0, 3, 9, 1], np.int8)
    got = run_tiles(lambda bl, x, y: bl.binary("shl", x, y), [a, sh])
    want = [(int(x) << int(s)) if s < 8 else 0 for x, s in zip(a, sh)]
    np.testing.assert_array_equal(got, np.array(want, np.int64).astype(np.int8))
    got = run_tiles(lambda bl, x, y: bl.binary("shr", x, y), [a, sh])
    want = [int(x) >> min(int(s), 63) for x, s in zip(a, sh)]
    np.testing.assert_array_equal(got, np.array(want, np.int8))
    got = run_tiles(lambda bl, x: bl.unary("bitnot", x), [a])
    np.testing.assert_array_equal(got, ~a)
    got = run_tiles(lambda bl, x: bl.unary("neg", x), [a])
    np.testing.assert_array_equal(got, -a)


def test_uint8_wraps():
    a = np.array([250, 3, 0, 128], np.uint8)
    b = np.array([10, 5, 1, 128], np.uint8)
    np.testing.assert_array_equal(run_tiles(lambda bl, x, y: bl.binary("add", x, y), [a, b]), a + b)
    np.testing.assert_array_equal(run_tiles(lambda bl, x, y: bl.binary("sub", x, y), [a, b]), a - b)


def test_lowbit_register_arithmetic_wraps_and_saturates():
    # int4 tiles from packed bytes: 7 + 1 wraps to -8; float4_e2m1: 6 + 6 saturates to 6
    def fn(bl, raw):
        v = bl.view(raw, dtypes.int4)
        s = bl.binary("add", v, 1)
        return bl.cast(s, dtypes.int32)
    raw = np.array([0x07 | (0xF << 4), 0x3 | (0x8 << 4)], np.uint8)    # int4 [7, -1, 3, -8]
    np.testing.assert_array_equal(run_tiles(fn, [raw]), [-8, 0, 4, -7])

    def fn2(bl, raw):
        v = bl.view(raw, dtypes.float4_e2m1)
        return bl.cast(bl.binary("add", v, v), dtypes.float32)
    raw = np.array([0x7 | (0x3 << 4), 0x1 | (0x9 << 4)], np.uint8)    # [6, 1.5, 0.5, -0.5]
    np.testing.assert_array_equal(run_tiles(fn2, [raw]), [6.0, 3.0, 1.0, -1.0])


@pytest.mark.parametrize("op", ["lt", "le", "gt", "ge", "eq", "ne"])
def test_comparisons_give_bool(op):
    a = rng.integers(-3, 3, (5, 6)).astype(np.int32)
    b = rng.integers(-3, 3, (1, 6)).astype(np.int32)
    got = run_tiles(lambda bl, x, y: bl.binary(op, x, y), [a, b])
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, getattr(np, {"lt": "less", "le": "less_equal",
                                                     "gt": "greater", "ge": "greater_equal",
                                                     "eq": "equal", "ne": "not_equal"}[op])(a, b))


def test_logical_ops_and_not():
    a = rng.integers(0, 2, 16).astype(bool)
    b = rng.integers(0, 2, 16).astype(bool)
    np.testing.assert_array_equal(run_tiles(lambda bl, x, y: bl.binary("and", x, y), [a, b]), a & b)
    np.testing.assert_array_equal(run_tiles(lambda bl, x, y: bl.binary("or", x, y), [a, b]), a | b)
    np.testing.assert_array_equal(run_tiles(lambda bl, x: bl.unary("not", x), [a]), ~a)


@pytest.mark.parametrize("op,ref", [("exp", np.exp), ("log", np.log), ("sqrt", np.sqrt),
                                    ("rsqrt", lambda v: 1 / np.sqrt(v)), ("abs", np.abs),
                                    ("neg", np.negative)])
def test_float_unary(op, ref):
    a = rng.uniform(0.1, 4, 32).astype(np.float32)
    np.testing.assert_allclose(run_tiles(lambda bl, x: bl.unary(op, x), [a]), ref(a), rtol=1e-6)
    h = a.astype(np.float16)
    np.testing.assert_array_equal(run_tiles(lambda bl, x: bl.unary(op, x), [h]),
                                  ref(h.astype(np.float32)).astype(np.float16))


def test_where_with_tiles_and_scalars():
    c = rng.integers(0, 2, (4, 5)).astype(bool)
    a = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((1, 5)).astype(np.float32)
    np.testing.assert_array_equal(run_tiles(lambda bl, k, x, y: bl.where(k, x, y), [c, a, b]),
                                  np.where(c, a, b))
    np.testing.assert_array_equal(run_tiles(lambda bl, k, x: bl.where(k, x, -2.5), [c, a]),
                                  np.where(c, a, np.float32(-2.5)))
    np.testing.assert_array_equal(
        run_tiles(lambda bl, x: bl.where(bl.binary("gt", x, 0.0), x, 0.0), [a]), np.maximum(a, 0))


@pytest.mark.parametrize("op", ["sum", "max", "min"])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, True), (2, False)])
def test_reduce(op, dim, keepdim):
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    got = run_tiles(lambda bl, x: bl.reduce(op, x, dim, keepdim), [a])
    want = getattr(np, op)(a, axis=dim, keepdims=keepdim)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    i = rng.integers(-100, 100, (3, 4, 5)).astype(np.int32)
    np.testing.assert_array_equal(run_tiles(lambda bl, x: bl.reduce(op, x, dim, keepdim), [i]),
                                  getattr(np, op)(i, axis=dim, keepdims=keepdim))


def test_reduce_float16_sum_accumulates_in_float32():
    a = np.full(4096, 1.0, np.float16)                 # fp16 accumulation would stop at 2048
    np.testing.assert_array_equal(run_tiles(lambda bl, x: bl.reduce("sum", x, 0), [a]), 4096)


def test_dot_float16_accumulates_in_float32():
    a = torch.randn(16, 32, dtype=torch.float16)
    b = torch.randn(32, 8, dtype=torch.float16)
    c = torch.randn(16, 8)
    got = run_tiles(lambda bl, x, y, z: bl.dot(x, y, z), [a.numpy(), b.numpy(), c.numpy()])
    want = a.double() @ b.double() + c.double()
    np.testing.assert_allclose(got, want.float().numpy(), rtol=1e-6, atol=1e-6)


def test_dot_int8_to_int32_exact():
    a = rng.integers(-128, 128, (8, 64)).astype(np.int8)
    b = rng.integers(-128, 128, (64, 4)).astype(np.int8)
    c = rng.integers(-1000, 1000, (8, 4)).astype(np.int32)
    got = run_tiles(lambda bl, x, y, z: bl.dot(x, y, z), [a, b, c])
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64) + c)


def test_dot_in_place_accumulator():
    a = rng.standard_normal((4, 4)).astype(np.float32)

    def fn(bl, x):
        acc = bl.register_tensor(dtypes.float32, [4, 4], init=0.0)
        bl.dot(x, x, acc, out=acc)
        bl.dot(x, x, acc, out=acc)
        return acc
    np.testing.assert_allclose(run_tiles(fn, [a]), 2 * (a.astype(np.float64) @ a), rtol=1e-6)


def test_shape_instructions():
    a = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_tiles(lambda bl, x: bl.transpose(x), [a]), a.T)
    np.testing.assert_array_equal(run_tiles(lambda bl, x: bl.repeat(x, [2, 3]), [a]), np.tile(a, (2, 3)))
    np.testing.assert_array_equal(run_tiles(lambda bl, x: bl.unsqueeze(x, 1), [a]), a[:, None, :])
    np.testing.assert_array_equal(
        run_tiles(lambda bl, x: bl.squeeze(bl.unsqueeze(x, 0), 0), [a]), a)
    r = rng.standard_normal((1, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_tiles(lambda bl, x: bl.broadcast(x, [2, 3, 4]), [r]),
                                  np.broadcast_to(r, (2, 3, 4)))


def test_assign_and_register_init():
    a = rng.standard_normal((2, 3)).astype(np.float32)

    def fn(bl, x):
        r = bl.register_tensor(dtypes.float32, [2, 3], init=1.5)
        y = bl.binary("add", x, r)
        bl.assign(r, y)                  # r = x + 1.5
        return bl.binary("mul", r, 2.0)
    np.testing.assert_array_equal(run_tiles(fn, [a]), (a + np.float32(1.5)) * np.float32(2))


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32", "uint64"])
def test_shifts_by_the_width_or_more_give_zero_or_the_sign_fill(dtype):
    """Run-time shift counts of 32/64-bit tiles at and past the width (and negative ones, which
    are huge unsigned counts): shl gives 0, shr the sign fill, as PTX's clamped shifts do."""
    bits = np.dtype(dtype).itemsize * 8
    signed = dtype.startswith("int")
    a = np.array([5, -7 if signed else 7, 1, 3, 12, -1 if signed else 9], dtype)
    sh = np.array([bits - 1, bits, bits + 8, 2 * bits - 1, 63, -1 if signed else 70], dtype)
    in_dtypes = [dtype, dtype]
    got_l = run_tiles(lambda bl, x, y: bl.binary("shl", x, y), [a, sh], in_dtypes)
    got_r = run_tiles(lambda bl, x, y: bl.binary("shr", x, y), [a, sh], in_dtypes)
    for x, s, l, r in zip(a.tolist(), sh.tolist(), got_l.tolist(), got_r.tolist()):
        if 0 <= s < bits:
            wrapped = (x << s) & ((1 << bits) - 1)
            if signed and wrapped >= 1 << (bits - 1):
                wrapped -= 1 << bits
            assert l == wrapped and r == x >> s
        else:
            assert l == 0 and r == (-1 if x < 0 else 0), (x, s, l, r)
