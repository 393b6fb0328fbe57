"""Differential test of the CUDA printer's expression semantics against the CPU simulator.

``tilus.backend.cuda_printer`` must print TIR's semantics, not C's: narrow integer results wrap,
floordiv/floormod round toward -inf, float16/bfloat16 conversions round to nearest even,
``reinterpret`` copies bits, float constants keep inf/nan/-0.0. This test builds one PrimFunc
whose threads each store several hundred expressions of their inputs (a seeded random generator
of typed expression trees plus hand-picked edge cases), runs it in the simulator (the reference:
``tilus.simulator`` shares no code with the printer) and compiles the printed source as host C++
(g++ with a shim that turns the kernel into a function, CUDA's fp16/bf16 headers being host
callable) to run it on the CPU over the same grid, then compares every output bit for bit (NaNs
compared as NaNs, whatever their payload).

The generator tracks each value's interval to stay clear of behaviour that C leaves undefined and
TIR does not define either: signed 32/64-bit overflow of + - * (operands are narrowed through
int16 when it could happen), shifts by the width or more, division by zero and ``INT_MIN / -1``,
float -> int conversions of NaN, infinities or out-of-range values (only finite, bounded floats
are converted to integers; the input ``w`` holding inf/nan/-0.0 feeds float-only expressions).
Float ``min``/``max`` take one non-zero constant operand and no NaN (CUDA's fminf, std::min and
numpy disagree on NaN and on the sign of zero). ``reinterpret`` of a float to an integer takes
values that cannot be NaN (a NaN's payload after arithmetic or a conversion is the hardware's:
the GPU gives the canonical 0x7FFF, numpy keeps the payload). Signed left shifts that overflow are
kept: TIR, CUDA and GCC all define them as bit operations. The host program is built with UBSan
where available, so undefined behaviour in the printed C (or a generator slip) fails the test.
The same translation unit is also compiled for sm_80, to check its device spelling.

Scope: expression kernels only (no barriers, no PTX asm, no vectors), run on the host; the
printer's statements and intrinsics are covered by the SASS and simulated-kernel tests.
"""
from __future__ import annotations

import math
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from tilus.backend.cuda_printer import print_cuda
from tilus.backend.tvm_shim import TB, IRBuilder, tirx
from tilus.simulator import run_prim_func

GXX = "/usr/bin/g++"
CUDA_INCLUDE = Path("/usr/local/cuda/include")
THREADS = 128
BLOCKS = 4
ROWS = THREADS * BLOCKS
RANDOM_EXPRESSIONS = 600
SEED = 20261203
# undefined behaviour in the printed C is an error (signed left shifts excepted: CUDA, GCC and C++20 define them)
UBSAN = ["-fsanitize=undefined,float-cast-overflow", "-fno-sanitize=shift", "-fno-sanitize-recover=all"]

SIGNED = ("int8", "int16", "int32", "int64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")
INTS = SIGNED + UNSIGNED
FLOATS = ("float16", "bfloat16", "float32", "float64")
NP = {**{t: np.dtype(t) for t in INTS}, "float16": np.dtype(np.float16), "float32": np.dtype(np.float32),
      "float64": np.dtype(np.float64), "bfloat16": np.dtype(ml_dtypes.bfloat16), "bool": np.dtype(np.bool_)}
FLOAT_MAX = {"float16": 65504.0, "bfloat16": 3.3e38, "float32": 3.4e38, "float64": 1.7e308}
BITS_OF = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}

SHIM = r"""#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cmath>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(n)
#define __restrict__
struct tilus_dim3 { unsigned x, y, z; };
static tilus_dim3 threadIdx, blockIdx;
using std::min; using std::max; using std::floor;
inline float __uint_as_float(unsigned x) { float y; std::memcpy(&y, &x, 4); return y; }
inline double __longlong_as_double(long long x) { double y; std::memcpy(&y, &x, 8); return y; }
"""

MAIN = r"""
int main(int argc, char** argv) {
  std::FILE* f = std::fopen(argv[1], "rb");
  static unsigned char arena[%(size)d] __attribute__((aligned(16)));
  if (std::fread(arena, 1, %(size)d, f) != %(size)d) return 1;
  std::fclose(f);
  for (unsigned b = 0; b < %(blocks)d; ++b) {
    for (unsigned t = 0; t < %(threads)d; ++t) {
      blockIdx.x = b; threadIdx.x = t;
      %(name)s(%(args)s);
    }
  }
  f = std::fopen(argv[2], "wb");
  std::fwrite(arena, 1, %(size)d, f);
  std::fclose(f);
  return 0;
}
"""


def _int_range(t: str) -> tuple:
    info = np.iinfo(NP[t])
    return int(info.min), int(info.max)


@dataclass
class Node:
    """A generated expression, its dtype and what is known of its values: an integer interval
    (ints, bools) or a float interval with ``finite`` (no inf/nan possible)."""

    expr: object
    dtype: str
    lo: float
    hi: float
    finite: bool = True


def _clamp_int(t: str, lo: int, hi: int) -> tuple:
    """The interval of a wrapping integer result: exact if it fits the type, else the type's."""
    tlo, thi = _int_range(t)
    return (lo, hi) if tlo <= lo and hi <= thi else (tlo, thi)


def _ibound(n: Node) -> int:
    return max(abs(int(n.lo)), abs(int(n.hi)))


class ExprGen:
    """Random typed TIR expression trees over the loads of x, y (int32), z, w (float32) and the
    thread index, avoiding C's undefined behaviour (see the module doc)."""

    def __init__(self, rng: random.Random, x, y, z, w, tx) -> None:
        self.rng = rng
        self.x = Node(x, "int32", -2**31, 2**31 - 1)
        self.y = Node(y, "int32", -40000, 40000)
        self.z = Node(z, "float32", -70000.0, 70000.0)
        self.w = Node(w, "float32", -math.inf, math.inf, finite=False)
        self.tx = Node(tx, "int32", 0, THREADS - 1)

    # ------------------------------------------------------------------ leaves and casts
    def const(self, t: str) -> Node:
        r = self.rng
        if t == "bool":
            v = r.random() < 0.5
            return Node(tirx.IntImm("bool", int(v)), t, int(v), int(v))
        if t in INTS:
            lo, hi = _int_range(t)
            v = r.choice([lo, hi, 0, 1, -1, 3, 7, 100, 200, 255, -128, 1000, r.randint(lo, hi)])
            v = min(max(v, lo), hi)
            return Node(tirx.IntImm(t, v), t, v, v)
        v = r.choice([0.0, -0.0, 1.0, -1.5, 0.1, 1 / 3, 2.5, 65504.0, 65520.0, 1e-7, 3.0e38, -7.25,
                      math.inf, -math.inf, math.nan, r.uniform(-1000, 1000)])
        if math.isfinite(v) and abs(v) > FLOAT_MAX[t]:
            v = math.copysign(FLOAT_MAX[t], v)
        node_v = float(np.array(v).astype(NP[t]).astype(np.float64))
        finite = math.isfinite(node_v)
        return Node(tirx.FloatImm(t, v), t, node_v if finite else -math.inf, node_v if finite else math.inf,
                    finite)

    def cast(self, n: Node, t: str) -> Node:
        e = tirx.Cast(t, n.expr)
        if t == "bool":
            return Node(e, t, 0, 1)
        if t in INTS:
            if n.dtype in FLOATS:
                lo, hi = math.trunc(n.lo), math.trunc(n.hi)
                return Node(e, t, *_clamp_int(t, lo, hi))
            return Node(e, t, *_clamp_int(t, int(n.lo), int(n.hi)))
        lo, hi = float(n.lo) - abs(float(n.lo)) * 0.01, float(n.hi) + abs(float(n.hi)) * 0.01
        if n.finite and max(abs(lo), abs(hi)) < FLOAT_MAX[t]:
            return Node(e, t, lo, hi)
        return Node(e, t, -math.inf, math.inf, False)

    def to_int(self, n: Node, t: str) -> Node:
        """``n`` converted to the integer type ``t`` without undefined behaviour."""
        if n.dtype in FLOATS:
            lo, hi = _int_range(t)
            if not (n.finite and n.lo > lo - 1 and n.hi < hi + 1):
                n = self.leaf_int("int32")
        return self.cast(n, t)

    def leaf_int(self, t: str) -> Node:
        r = self.rng.random()
        if r < 0.1:
            return self.const(t)
        src = self.rng.choice([self.x, self.y, self.y, self.tx])
        return src if src.dtype == t else self.cast(src, t)

    def leaf_float(self, t: str) -> Node:
        r = self.rng.random()
        if r < 0.15:
            return self.const(t)
        if r < 0.3:
            return self.cast(self.rng.choice([self.x, self.y, self.tx]), t)
        src = self.z if r < 0.8 else self.w
        return src if t == "float32" else self.cast(src, t)

    # ------------------------------------------------------------------ trees
    def gen(self, t: str, depth: int) -> Node:
        if depth <= 0:
            if t == "bool":
                return self.compare(0)
            return self.leaf_int(t) if t in INTS else self.leaf_float(t)
        if t == "bool":
            return self.gen_bool(depth)
        return self.gen_int(t, depth) if t in INTS else self.gen_float(t, depth)

    def any_type(self) -> str:
        return self.rng.choice(INTS + FLOATS)

    def compare(self, depth: int) -> Node:
        t = self.any_type()
        a, b = self.gen(t, depth - 1), self.gen(t, depth - 1)
        op = self.rng.choice([tirx.EQ, tirx.NE, tirx.LT, tirx.LE, tirx.GT, tirx.GE])
        return Node(op(a.expr, b.expr), "bool", 0, 1)

    def gen_bool(self, depth: int) -> Node:
        k = self.rng.choice(["cmp", "cmp", "and", "or", "not", "cast"])
        if k == "cmp":
            return self.compare(depth)
        if k == "not":
            return Node(tirx.Not(self.gen("bool", depth - 1).expr), "bool", 0, 1)
        if k == "cast":
            t = self.any_type()
            return self.cast(self.gen(t, depth - 1), "bool")
        a, b = self.gen("bool", depth - 1), self.gen("bool", depth - 1)
        return Node((tirx.And if k == "and" else tirx.Or)(a.expr, b.expr), "bool", 0, 1)

    def choose(self, c: Node, a: Node, b: Node) -> Node:
        if self.rng.random() < 0.5:
            e = tirx.Select(c.expr, a.expr, b.expr)
        else:
            e = tirx.if_then_else(c.expr, a.expr, b.expr)
        return Node(e, a.dtype, min(a.lo, b.lo), max(a.hi, b.hi), a.finite and b.finite)

    def narrow(self, n: Node) -> Node:
        """``n`` wrapped through int16 (so that + - * of two such values cannot overflow int32)."""
        return self.cast(self.cast(n, "int16"), n.dtype)

    def divisor(self, t: str, a: Node, depth: int) -> Node:
        r = self.rng
        tlo, _ = _int_range(t)
        may_overflow = t in ("int32", "int64") and a.lo <= tlo
        if r.random() < 0.6:
            choices = [3, 8, 7, 2, 16, 5, 100, 1, 64, 12]
            if t in SIGNED:
                choices += [-4, -3, -8, -7] + ([] if may_overflow else [-1])
            v = r.choice(choices)
            return Node(tirx.IntImm(t, v), t, v, v)
        d = tirx.BitwiseAnd(self.gen(t, depth - 1).expr, tirx.IntImm(t, 63))
        return Node(tirx.BitwiseOr(d, tirx.IntImm(t, 1)), t, 1, 63)

    def gen_int(self, t: str, depth: int) -> Node:
        r = self.rng
        k = r.choice(["arith", "arith", "arith", "div", "div", "shift", "bit", "bit", "not", "minmax",
                      "select", "cast", "cast", "reinterpret"])
        bits = np.dtype(NP[t]).itemsize * 8
        if k == "arith":
            op = r.choice(["Add", "Sub", "Mul"])
            a, b = self.gen(t, depth - 1), self.gen(t, depth - 1)
            for _ in range(2):
                lo, hi = self.arith_range(op, a, b)
                if t not in ("int32", "int64") or _int_range(t)[0] <= lo and hi <= _int_range(t)[1]:
                    break
                a, b = self.narrow(a), self.narrow(b)
            return Node(getattr(tirx, op)(a.expr, b.expr), t, *_clamp_int(t, lo, hi))
        if k == "div":
            op = r.choice(["Div", "Mod", "FloorDiv", "FloorMod"])
            a = self.gen(t, depth - 1)
            d = self.divisor(t, a, depth)
            bound = _ibound(a)
            if op in ("Mod", "FloorMod"):
                m = _ibound(d) - 1
                lo, hi = (0, m) if t in UNSIGNED else (-m, m)
            else:
                lo, hi = (0, bound) if t in UNSIGNED else (-bound - 1, bound + 1)
            return Node(getattr(tirx, op)(a.expr, d.expr), t, *_clamp_int(t, lo, hi))
        if k == "shift":
            a = self.gen(t, depth - 1)
            if r.random() < 0.5:
                s = r.choice([0, 1, bits - 1, r.randint(0, bits - 1)])
                amount = Node(tirx.IntImm(t, s), t, s, s)
            else:
                amount = Node(tirx.BitwiseAnd(self.gen(t, depth - 1).expr, tirx.IntImm(t, bits - 1)), t, 0, bits - 1)
            if r.random() < 0.5:
                return Node(tirx.LShift(a.expr, amount.expr), t, *_int_range(t))
            lo, hi = (0, a.hi) if t in UNSIGNED else (min(a.lo, -1), max(a.hi, 0))
            return Node(tirx.RShift(a.expr, amount.expr), t, lo, hi)
        if k == "bit":
            op = r.choice(["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
            a, b = self.gen(t, depth - 1), self.gen(t, depth - 1)
            if a.lo >= 0 and b.lo >= 0:
                top = (1 << int(max(a.hi, b.hi)).bit_length()) - 1
                lo, hi = (0, min(a.hi, b.hi)) if op == "BitwiseAnd" else (0, top)
            else:
                lo, hi = _int_range(t)
            return Node(getattr(tirx, op)(a.expr, b.expr), t, lo, hi)
        if k == "not":
            a = self.gen(t, depth - 1)
            lo, hi = (-int(a.hi) - 1, -int(a.lo) - 1) if t in SIGNED else _int_range(t)
            return Node(tirx.BitwiseNot(a.expr), t, lo, hi)
        if k == "minmax":
            a, b = self.gen(t, depth - 1), self.gen(t, depth - 1)
            op = r.choice([tirx.Min, tirx.Max])
            return Node(op(a.expr, b.expr), t, min(a.lo, b.lo), max(a.hi, b.hi))
        if k == "select":
            return self.choose(self.gen("bool", depth - 1), self.gen(t, depth - 1), self.gen(t, depth - 1))
        if k == "reinterpret" and bits >= 16:
            src = {16: ["float16", "bfloat16"], 32: ["float32"], 64: ["float64"]}[bits]
            f = self.gen(r.choice(src), depth - 1)
            if f.finite:
                return Node(tirx.reinterpret(t, f.expr), t, *_int_range(t))
        return self.to_int(self.gen(self.any_type(), depth - 1), t)

    @staticmethod
    def arith_range(op: str, a: Node, b: Node) -> tuple:
        if op == "Add":
            return int(a.lo) + int(b.lo), int(a.hi) + int(b.hi)
        if op == "Sub":
            return int(a.lo) - int(b.hi), int(a.hi) - int(b.lo)
        products = [int(p) * int(q) for p in (a.lo, a.hi) for q in (b.lo, b.hi)]
        return min(products), max(products)

    def gen_float(self, t: str, depth: int) -> Node:
        r = self.rng
        k = r.choice(["arith", "arith", "arith", "div", "mod", "minmax", "floordiv", "select", "cast", "cast",
                      "reinterpret"])
        if k == "arith":
            op = r.choice(["Add", "Sub", "Mul"])
            a, b = self.gen(t, depth - 1), self.gen(t, depth - 1)
            if a.finite and b.finite:
                lo, hi = ExprGen.float_range(op, a, b)
                if max(abs(lo), abs(hi)) < FLOAT_MAX[t] / 1.02:
                    return Node(getattr(tirx, op)(a.expr, b.expr), t, lo * 1.02 - 1e-30, hi * 1.02 + 1e-30)
            return Node(getattr(tirx, op)(a.expr, b.expr), t, -math.inf, math.inf, False)
        if k in ("div", "floordiv"):
            a = self.gen(t, depth - 1)
            v = r.choice([3.0, -4.0, 0.5, 7.0, -0.75, 1e-3])
            c = Node(tirx.FloatImm(t, v), t, v, v)
            if k == "div" and r.random() < 0.5:
                c = self.gen(t, depth - 1)
            e = tirx.Div(a.expr, c.expr) if k == "div" else tirx.FloorDiv(a.expr, c.expr)
            if a.finite and c.finite and (c.lo > 0 or c.hi < 0):
                m = max(abs(a.lo), abs(a.hi)) / min(abs(c.lo), abs(c.hi)) * 1.02 + 1
                if m < FLOAT_MAX[t] / 2:
                    return Node(e, t, -m, m)
            return Node(e, t, -math.inf, math.inf, False)
        if k == "mod":
            a = self.gen(t, depth - 1)
            v = r.choice([3.0, -4.0, 0.75, 7.5])
            return Node(tirx.Mod(a.expr, tirx.FloatImm(t, v)), t, -abs(v), abs(v), a.finite)
        if k == "minmax":
            a = self.gen(t, depth - 1)
            if not a.finite:
                a = self.z if t == "float32" else self.cast(self.z, t)
            v = r.choice([1.0, -2.5, 100.0, 0.375])
            op = r.choice([tirx.Min, tirx.Max])
            return Node(op(a.expr, tirx.FloatImm(t, v)), t, min(a.lo, v), max(a.hi, v))
        if k == "select":
            return self.choose(self.gen("bool", depth - 1), self.gen(t, depth - 1), self.gen(t, depth - 1))
        if k == "reinterpret":
            it = r.choice({16: ["int16", "uint16"], 32: ["int32", "uint32"], 64: ["int64", "uint64"]}[BITS_OF[t]])
            return Node(tirx.reinterpret(t, self.gen(it, depth - 1).expr), t, -math.inf, math.inf, False)
        return self.cast(self.gen(self.any_type(), depth - 1), t)

    @staticmethod
    def float_range(op: str, a: Node, b: Node) -> tuple:
        if op == "Add":
            return a.lo + b.lo, a.hi + b.hi
        if op == "Sub":
            return a.lo - b.hi, a.hi - b.lo
        products = [p * q for p in (a.lo, a.hi) for q in (b.lo, b.hi)]
        return min(products), max(products)


def _edge_cases(g: ExprGen) -> list:
    """Hand-picked expressions: floor division of negatives, INT_MIN, wrapping, shifts by 31,
    float16/bfloat16 rounding, special float constants."""
    i32 = lambda v: tirx.IntImm("int32", v)  # noqa: E731
    c = lambda t, v: tirx.IntImm(t, v)  # noqa: E731
    f = lambda t, v: tirx.FloatImm(t, v)  # noqa: E731
    x, y, z, w, tx = g.x.expr, g.y.expr, g.z.expr, g.w.expr, g.tx.expr
    out = []
    for d in (3, 8, -4, 7, -3, 1, 2):
        for op in (tirx.FloorDiv, tirx.FloorMod, tirx.Div, tirx.Mod):
            out.append(op(y, i32(d)))
            if d != -1:
                out.append(op(x, i32(d)))
            for t in ("int8", "int16", "int64"):
                out.append(op(tirx.Cast(t, x), c(t, d)))
            out.append(op(i32(-7), i32(d)))
    for t in ("uint8", "uint16", "uint32", "uint64"):
        for d in (3, 8, 5):
            out.append(tirx.FloorDiv(tirx.Cast(t, x), c(t, d)))
            out.append(tirx.FloorMod(tirx.Cast(t, x), c(t, d)))
    out += [
        tirx.Add(c("uint8", 200), c("uint8", 100)), tirx.Add(tirx.Cast("uint8", x), c("uint8", 100)),
        tirx.Sub(c("uint8", 3), c("uint8", 5)), tirx.Mul(c("int8", 100), c("int8", 3)),
        tirx.Mul(tirx.Cast("int16", x), tirx.Cast("int16", y)),
        tirx.Mul(tirx.Cast("uint16", x), tirx.Cast("uint16", y)), tirx.Mul(tirx.Cast("uint16", x), c("uint16", 65535)),
        tirx.Sub(c("uint32", 0), tirx.Cast("uint32", y)), tirx.Add(c("uint64", 2**64 - 1), tirx.Cast("uint64", y)),
        tirx.Div(c("int8", -128), c("int8", -1)), tirx.FloorDiv(c("int8", -128), c("int8", -1)),
        tirx.Sub(c("int16", -32768), c("int16", 1)), tirx.BitwiseNot(tirx.Cast("uint8", x)),
        tirx.BitwiseNot(tirx.Cast("int8", x)), tirx.BitwiseNot(tirx.Cast("uint16", y)), tirx.BitwiseNot(x),
        tirx.LShift(x, i32(31)), tirx.RShift(x, i32(31)), tirx.LShift(c("uint32", 1), c("uint32", 31)),
        tirx.RShift(tirx.Cast("uint32", x), c("uint32", 31)), tirx.LShift(tirx.Cast("int8", x), c("int8", 7)),
        tirx.RShift(tirx.Cast("int8", x), c("int8", 7)), tirx.LShift(tirx.Cast("uint16", x), c("uint16", 15)),
        tirx.LShift(tirx.Cast("int64", x), c("int64", 63)), tirx.RShift(tirx.Cast("int64", x), c("int64", 63)),
        tirx.Min(x, y), tirx.Max(tirx.Cast("int8", x), tirx.Cast("int8", y)),
        tirx.Min(tirx.Cast("uint8", x), tirx.Cast("uint8", y)), tirx.Max(c("int32", -2**31), x),
        tirx.Select(tirx.LT(x, y), x, y), tirx.if_then_else(tirx.GE(tx, i32(64)), x, y),
        tirx.if_then_else(tirx.LT(tx, i32(1000)), x, y), tirx.Select(tirx.GE(tx, i32(0)), x, y),
        tirx.if_then_else(tirx.GE(x, i32(-2**31)), x, y), tirx.Select(tirx.EQ(x, i32(-2**31)), x, y),
        tirx.if_then_else(tirx.LE(i32(-2**31), tirx.Cast("int32", tirx.Cast("int8", y))), x, y),
        tirx.if_then_else(tirx.GE(tirx.Cast("int64", x), c("int64", -2**63)), x, y),
        tirx.Cast("int32", tirx.Cast("bfloat16", y)), tirx.Cast("int32", tirx.Cast("float32", y)),
        tirx.Cast("int64", tirx.Cast("float64", x)),
    ]
    floats = [
        tirx.Cast("float16", z), tirx.Cast("bfloat16", z), tirx.Cast("float16", w), tirx.Cast("bfloat16", w),
        tirx.Cast("float16", tirx.Cast("float64", z)), tirx.Cast("bfloat16", tirx.Cast("float64", w)),
        tirx.Cast("float16", x), tirx.Cast("bfloat16", x), tirx.Cast("float16", tirx.Cast("uint32", x)),
        tirx.Cast("bfloat16", tirx.Cast("int64", x)), tirx.Cast("bfloat16", tirx.Cast("float16", z)),
        tirx.Cast("float16", tirx.Cast("bfloat16", z)), tirx.Cast("float32", tirx.Cast("float16", w)),
        tirx.Cast("float64", tirx.Cast("bfloat16", w)), tirx.Cast("float32", tirx.Cast("float64", w)),
        f("float16", 0.1), f("float16", 65504.0), f("float16", -65504.0), f("float16", 1 + 2.0**-11),
        f("float16", 1 + 3 * 2.0**-11), f("float16", 2.0**-25), f("float16", 3 * 2.0**-25), f("float16", -0.0),
        f("float16", math.inf), f("float16", math.nan),
        f("bfloat16", 0.1), f("bfloat16", 1.0), f("bfloat16", -math.inf), f("bfloat16", 3.0e38), f("bfloat16", -0.0),
        f("float32", -0.0), f("float32", math.inf), f("float32", -math.inf), f("float32", math.nan),
        f("float32", 1e-45), f("float32", 0.1), f("float64", 0.1), f("float64", -0.0), f("float64", math.nan),
        f("float64", 5e-324), f("float64", -math.inf),
        tirx.Add(tirx.Cast("float16", z), f("float16", 1.0)),
        tirx.Mul(tirx.Cast("float16", z), tirx.Cast("float16", z)),
        tirx.Div(tirx.Cast("float16", z), f("float16", 3.0)), tirx.Sub(tirx.Cast("bfloat16", z), f("bfloat16", 0.1)),
        tirx.Mul(tirx.Cast("bfloat16", w), tirx.Cast("bfloat16", z)), tirx.Add(w, f("float32", -0.0)),
        tirx.Mul(w, f("float32", 0.0)), tirx.Div(f("float32", 1.0), w), tirx.Div(z, w),
        tirx.Min(tirx.Cast("float16", z), f("float16", 1.0)), tirx.Max(tirx.Cast("bfloat16", z), f("bfloat16", -2.5)),
        tirx.FloorDiv(z, f("float32", 3.0)), tirx.FloorDiv(tirx.Cast("float64", z), f("float64", -0.75)),
        tirx.Mod(z, f("float32", 3.0)), tirx.Mod(tirx.Cast("float16", z), f("float16", -0.75)),
        tirx.Mod(tirx.Cast("bfloat16", w), f("bfloat16", 7.5)), tirx.Mod(tirx.Cast("float64", w), f("float64", 0.1)),
        tirx.reinterpret("float32", x), tirx.reinterpret("float16", tirx.Cast("uint16", x)),
        tirx.reinterpret("bfloat16", tirx.Cast("int16", x)),
        tirx.reinterpret("float64", tirx.Mul(tirx.Cast("int64", x), tirx.Cast("int64", y))),
        tirx.reinterpret("uint32", w), tirx.reinterpret("int32", z),
        tirx.reinterpret("uint16", tirx.Cast("float16", z)),
        tirx.reinterpret("int16", tirx.Cast("bfloat16", z)), tirx.reinterpret("uint64", tirx.Cast("float64", z)),
        tirx.Cast("uint8", tirx.EQ(w, w)), tirx.Cast("uint8", tirx.NE(w, w)), tirx.Cast("uint8", tirx.LT(w, z)),
        tirx.Cast("uint8", tirx.Cast("bool", w)), tirx.Cast("uint8", tirx.Cast("bool", x)),
        tirx.Cast("uint8", tirx.Not(tirx.And(tirx.LT(x, y), tirx.Or(tirx.GT(tx, i32(5)), tirx.EQ(y, i32(0)))))),
        tirx.Cast("float32", tirx.Cast("bool", y)), tirx.Cast("float16", tirx.Cast("bool", w)),
        tirx.Cast("int8", tirx.Cast("float16", tirx.Cast("int8", x))),
        tirx.Cast("uint8", tirx.Cast("float32", tirx.Cast("uint8", x))),
    ]
    return out + floats


def _dtype_of(e) -> str:
    return str(e.ty.dtype)


def _construct(count_random: int, slots: dict):
    """The PrimFunc storing each expression (``slots``: outputs per dtype, none on the counting
    pass) and the expressions, generated from the same seed on every call."""
    rng = random.Random(SEED)
    with IRBuilder() as ib:
        with TB.prim_func():
            TB.func_name("exprs")
            ins = [TB.match_buffer(TB.arg(n, TB.handle()), (ROWS,), t)
                   for n, t in (("x", "int32"), ("y", "int32"), ("z", "float32"), ("w", "float32"))]
            outs = {t: TB.match_buffer(TB.arg("o_" + t, TB.handle()), (ROWS * n,), t)
                    for t, n in sorted(slots.items())}
            with TB.thread_binding(0, BLOCKS, thread="blockIdx.x") as bx:
                with TB.thread_binding(0, THREADS, thread="threadIdx.x") as tx:
                    i = bx * THREADS + tx
                    g = ExprGen(rng, *(b[i] for b in ins), tx)
                    exprs = _edge_cases(g)
                    edges = len(exprs)
                    while len(exprs) < edges + count_random:
                        t = rng.choice(INTS + FLOATS + ("bool",))
                        exprs.append(g.gen(t, rng.randint(1, 4)).expr)
                    exprs = [tirx.Cast("uint8", e) if _dtype_of(e) == "bool" else e for e in exprs]
                    used = dict.fromkeys(slots, 0)
                    for e in exprs:
                        if outs:
                            t = _dtype_of(e)
                            TB.buffer_store(outs[t], e, [used[t] * ROWS + i])
                            used[t] += 1
                    if not outs:
                        TB.evaluate(tirx.IntImm("int32", 0))
    return ib.get(), exprs


def _build(count_random: int):
    """The PrimFunc storing every expression, the expressions, their indices per output dtype
    and the output buffers' (dtype, slots) in parameter order after x, y, z, w."""
    _, exprs = _construct(count_random, {})
    by_type: dict = {}
    for j, e in enumerate(exprs):
        by_type.setdefault(_dtype_of(e), []).append(j)
    func, exprs = _construct(count_random, {t: len(js) for t, js in by_type.items()})
    layout = [(t, len(by_type[t])) for t in sorted(by_type)]
    return func, exprs, by_type, layout


def _inputs(rng: np.random.Generator) -> list:
    edge_x = np.array([-2**31, 2**31 - 1, 0, -1, 1, -7, 7, -8, 8, 127, 128, -128, -129, 255, 256, 32767, 32768,
                       -32768, 65535, 65536, 2**24 + 2**16 + 1, 2**24 + 3, -(2**24 + 2**16 + 1), 2**30,
                       -2**30, 2**31 - 2**7, 0x3F800000, 0x7F800001, 0x7C01, 0xFC00], dtype=np.int64)
    x = rng.integers(-2**31, 2**31, ROWS, dtype=np.int64)
    x[: ROWS // 4] = rng.integers(-300, 300, ROWS // 4)
    x[: len(edge_x)] = edge_x
    y = rng.integers(-40000, 40001, ROWS, dtype=np.int64)
    y[: ROWS // 3] = rng.integers(-20, 21, ROWS // 3)
    y[len(edge_x): len(edge_x) + 8] = [-40000, 40000, 0, -1, 1, 3, -3, 8]
    rng.shuffle(y)
    ties = [1 + 2.0**-11, 1 + 3 * 2.0**-11, 2048 + 1, 2048 + 3, 65519.0, 65520.0, 65504.0, 2.0**-25,
            3 * 2.0**-25, 2.0**-24, -0.0, 0.0, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 0.1, -2.5, -0.5, 69999.0, -70000.0,
            256 + 1, 2.0**-14 * 1.5]
    z = rng.uniform(-300, 300, ROWS).astype(np.float32)
    z[ROWS // 2:] = np.round(z[ROWS // 2:])
    z[: len(ties)] = ties
    w = rng.standard_normal(ROWS).astype(np.float32) * np.float32(10.0) ** rng.integers(-5, 20, ROWS).astype(np.float32)
    specials = [np.inf, -np.inf, np.nan, -0.0, 0.0, 1e30, -1e30, 65520.0, 3.4e38, 1e-40, -1e-45,
                1 + 2.0**-11, 1 + 2.0**-8 + 2.0**-20]
    w[: len(specials)] = specials
    rng.shuffle(w)
    return [x.astype(np.int32), y.astype(np.int32), z, w]


def _host_source(kernel, func, layout) -> tuple:
    """The translation unit to run on the host and the arena's offsets per parameter."""
    arrays = [("int32", ROWS), ("int32", ROWS), ("float32", ROWS), ("float32", ROWS)]
    arrays += [(t, n * ROWS) for t, n in layout]
    offsets, size = [], 0
    for t, n in arrays:
        offsets.append(size)
        size += (n * NP[t].itemsize + 15) // 16 * 16
    params = list(func.params)
    args = []
    for p in kernel.params:
        k = next(j for j, q in enumerate(params) if q.same_as(p.var))
        args.append(f"({p.ctype})(arena + {offsets[k]})")
    main = MAIN % {"size": size, "blocks": BLOCKS, "threads": THREADS, "name": kernel.name,
                   "args": ", ".join(args)}
    return SHIM + kernel.source + main, arrays, offsets, size


def _c_store(kernel, out_param, slot: int) -> str:
    """The printed store of one expression (output parameter ``out_param``, slot ``slot``)."""
    name = next(q.name for q in kernel.params if q.var.same_as(out_param))
    prefix = f"{name}[({slot * ROWS} + " if slot else f"{name}[(("
    return next((line.strip() for line in kernel.source.splitlines() if line.strip().startswith(prefix)), "?")


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: the same bits, or both NaN."""
    same = a.view(f"uint{a.dtype.itemsize * 8}") == b.view(f"uint{b.dtype.itemsize * 8}")
    if a.dtype.kind == "f" or a.dtype == NP["bfloat16"]:
        with np.errstate(invalid="ignore"):
            same |= np.isnan(a.astype(np.float64)) & np.isnan(b.astype(np.float64))
    return same


@pytest.fixture(scope="module")
def host_compiler():
    if not Path(GXX).exists() or shutil.which(GXX) is None:
        pytest.skip(f"{GXX} not installed")
    if not (CUDA_INCLUDE / "cuda_fp16.h").exists() or not (CUDA_INCLUDE / "cuda_bf16.h").exists():
        pytest.skip(f"CUDA headers (cuda_fp16.h, cuda_bf16.h) not found under {CUDA_INCLUDE}")
    probe = subprocess.run([GXX, *UBSAN, "-x", "c++", "-", "-o", "/dev/null"], input="int main() { return 0; }",
                           capture_output=True, text=True)
    return [GXX, *UBSAN] if probe.returncode == 0 else [GXX]


def test_printed_expressions_match_the_simulator(host_compiler, tmp_path):
    func, exprs, by_type, layout = _build(RANDOM_EXPRESSIONS)
    inputs = _inputs(np.random.default_rng(SEED))
    outs = [np.zeros(n * ROWS, NP[t]) for t, n in layout]
    run_prim_func(func, [a.copy() for a in inputs] + outs)

    kernel = print_cuda(func)
    source, arrays, offsets, size = _host_source(kernel, func, layout)
    (tmp_path / "exprs.cpp").write_text(source)
    proc = subprocess.run([*host_compiler, "-std=c++17", "-O1", f"-I{CUDA_INCLUDE}", "-w", "exprs.cpp", "-o", "exprs"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    arena = np.zeros(size, np.uint8)
    for (t, n), off, a in zip(arrays, offsets, inputs):
        arena[off: off + a.nbytes] = a.view(np.uint8)
    arena.tofile(tmp_path / "in.bin")
    run = subprocess.run([str(tmp_path / "exprs"), "in.bin", "out.bin"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, f"the printed code has undefined behaviour in C:\n{run.stderr[-4000:]}"
    result = np.fromfile(tmp_path / "out.bin", np.uint8)

    names = {q.name: "xyzw"[k] for q in kernel.params for k in range(4) if q.var.same_as(func.params[k])}
    failures = []
    for k, ((t, n), off, ref) in enumerate(zip(layout, offsets[4:], outs)):
        got = result[off: off + ref.nbytes].view(NP[t])
        ok = _same(got, ref).reshape(n, ROWS)
        for slot in np.flatnonzero(~ok.all(axis=1)):
            row = int(np.flatnonzero(~ok[slot])[0])
            failures.append(f"{_c_store(kernel, func.params[4 + k], slot)}\n    row {row} (x={inputs[0][row]}, "
                            f"y={inputs[1][row]}, z={inputs[2][row]!r}, w={inputs[3][row]!r}): printed "
                            f"{got[slot * ROWS + row]!r}, simulator {ref[slot * ROWS + row]!r}")
    assert sum(len(js) for js in by_type.values()) == len(exprs) >= RANDOM_EXPRESSIONS
    assert not failures, (f"{len(failures)} of {len(exprs)} expressions differ (inputs: {names}):\n"
                          + "\n".join(failures[:20]))


def test_printed_expressions_compile_for_the_gpu(need_nvcc):
    """The same translation unit is valid CUDA for the device (the host run above proves its
    values, this its device spelling: floorf, tilus_bitcast, the fp16/bf16 intrinsics)."""
    from tilus.backend import toolchain

    func, _, _, _ = _build(RANDOM_EXPRESSIONS)
    kernel = print_cuda(func)
    build = toolchain.compile_cuda(kernel.source, "sm_80")
    assert kernel.name in build.resources
