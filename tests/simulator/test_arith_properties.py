"""Property test: random int32 / uint32 expression trees evaluated by the simulator (all 64 threads
at once, one value per thread) equal a scalar Python model of C semantics (wrap-around, truncating
Div/Mod, floor FloorDiv/FloorMod, arithmetic right shift for signed)."""
import functools
import os

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from tilus.backend.tvm_shim import T, tirx
from tilus.simulator import run_prim_func

from tests.simulator.tir_mutate import rewrite

N = 64


@functools.lru_cache(maxsize=None)
def template(dtype):
    @T.prim_func
    def k(a: T.handle, b: T.handle, c: T.handle, o: T.handle):
        A = T.match_buffer(a, (N,), dtype)
        B = T.match_buffer(b, (N,), dtype)
        C = T.match_buffer(c, (N,), dtype)
        O = T.match_buffer(o, (N,), dtype)
        for tx in T.thread_binding(N, thread="threadIdx.x"):
            O[tx] = A[tx] + B[tx] + C[tx]

    return k


def wrap(x, dtype):
    x &= 0xFFFFFFFF
    return x - (1 << 32) if dtype == "int32" and x >= 1 << 31 else x


def c_div(a, b):
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


OPS = ["add", "sub", "mul", "div", "mod", "floordiv", "floormod", "and", "or", "xor", "shl", "shr",
       "min", "max", "select"]


def build(tree, leaves, dtype):
    """(tirx expression, python function of (a, b, c)) for a nested tuple tree."""
    if isinstance(tree, str):
        return leaves[tree], (lambda env, t=tree: env[t])
    if isinstance(tree, int):
        v = wrap(tree, dtype)
        return tirx.IntImm(dtype, v), (lambda env, v=v: v)
    op, l, r = tree
    le, lf = build(l, leaves, dtype)
    re, rf = build(r, leaves, dtype)
    w = lambda x: wrap(x, dtype)  # noqa: E731
    if op in ("div", "mod", "floordiv", "floormod"):
        # a non-zero divisor: r | 1 (C semantics for zero are an error, tested elsewhere)
        re = tirx.BitwiseOr(re, tirx.IntImm(dtype, 1))
        rf0 = rf
        rf = lambda env: w(rf0(env) | 1)  # noqa: E731
    if op in ("shl", "shr"):
        re = tirx.BitwiseAnd(re, tirx.IntImm(dtype, 31))
        rf1 = rf
        rf = lambda env: rf1(env) & 31  # noqa: E731
    table = {
        "add": (tirx.Add, lambda a, b: w(a + b)), "sub": (tirx.Sub, lambda a, b: w(a - b)),
        "mul": (tirx.Mul, lambda a, b: w(a * b)),
        "div": (tirx.Div, lambda a, b: w(c_div(a, b))),
        "mod": (tirx.Mod, lambda a, b: w(a - c_div(a, b) * b)),
        "floordiv": (tirx.FloorDiv, lambda a, b: w(a // b)), "floormod": (tirx.FloorMod, lambda a, b: w(a % b)),
        "and": (tirx.BitwiseAnd, lambda a, b: w(a & b)), "or": (tirx.BitwiseOr, lambda a, b: w(a | b)),
        "xor": (tirx.BitwiseXor, lambda a, b: w(a ^ b)),
        "shl": (tirx.LShift, lambda a, b: w(a << b)), "shr": (tirx.RShift, lambda a, b: w(a >> b)),
        "min": (tirx.Min, min), "max": (tirx.Max, max),
    }
    if op == "select":
        return (tirx.Select(tirx.LT(le, re), le, re), lambda env: lf(env) if lf(env) < rf(env) else rf(env))
    node, f = table[op]
    return node(le, re), (lambda env: f(lf(env), rf(env)))


def trees(depth):
    leaf = st.sampled_from(["a", "b", "c"]) | st.integers(-40, 40)
    if depth == 0:
        return leaf
    sub = trees(depth - 1)
    return leaf | st.tuples(st.sampled_from(OPS), sub, sub)


@settings(max_examples=int(os.environ.get('TILUS_SIM_EXAMPLES', 60)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.tuples(st.sampled_from(OPS), trees(2), trees(2)),
       dtype=st.sampled_from(["int32", "uint32"]), seed=st.integers(0, 2**31))
def test_random_integer_expressions(tree, dtype, seed):
    base = template(dtype)
    store = base.body.body                               # O[tx] = A[tx] + B[tx] + C[tx]
    loads = {"c": store.value.b, "b": store.value.a.b, "a": store.value.a.a}
    expr, model = build(tree, loads, dtype)
    if isinstance(tree, int):
        return
    func = base.with_body(rewrite(base.body, lambda s: tirx.BufferStore(s.buffer, expr, s.indices)
                                  if isinstance(s, tirx.BufferStore) else s))
    rng = np.random.default_rng(seed)
    npdt = np.int32 if dtype == "int32" else np.uint32
    info = np.iinfo(npdt)
    cols = []
    for _ in range(3):
        v = rng.integers(info.min, int(info.max) + 1, N, dtype=np.int64)
        v[: N // 2] = rng.integers(-50 if dtype == "int32" else 0, 50, N // 2)
        cols.append(v.astype(npdt))
    out = np.zeros(N, npdt)
    run_prim_func(func, cols + [out])
    expect = [model({"a": int(cols[0][t]), "b": int(cols[1][t]), "c": int(cols[2][t])}) for t in range(N)]
    np.testing.assert_array_equal(out.astype(np.int64), np.array(expect, np.int64))
