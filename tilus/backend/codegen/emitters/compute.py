"""Computing instructions: cast, assign, unary/binary elementwise, where, reduce.

Every operand is read "as the output's layout sees it" (tilus.backend.codegen.gather): free when
the layouts line up (the usual case after layout inference), through shared memory otherwise.
Values are computed in float32/int32 (scalar.load) and rounded/wrapped back (scalar.store), which
is the interpreter's per-operation rounding.
"""
from __future__ import annotations

from tilus import dtypes
from tilus.backend.codegen import scalar
from tilus.backend.codegen.arith import common_binary
from tilus.backend.codegen.dtypes_map import compute, storage
from tilus.backend.codegen.gather import elementwise_values
from tilus.backend.codegen.lower import Lowerer
from tilus.ir.layout.conversion import (reduce_shuffle_plan, reduce_source, static_slots)
from tilus.backend.codegen.registry import emitter
from tilus.backend.codegen.ptx import ptx
from tilus.backend.tvm_shim import dt, ir, structural_equal, tirx
from tilus.errors import CompilationError
from tilus.ir import expr as E
from tilus.ir import inst as I
from tilus.ir.types import Tensor


def operand_values(lw: Lowerer, x, out: Tensor, dtype) -> list:
    """Stored values of operand x (tensor or scalar expression, converted to ``dtype``) for every
    slot of the output's layout."""
    layout = lw.reg(out).layout
    n = layout.local_size
    if isinstance(x, Tensor):
        return elementwise_values(lw, x, layout, tuple(out.shape))
    e = E.as_expr(x)
    v = scalar.convert(e.dtype, dtype, lw.expr(e)) if e.dtype is not dtype else lw.expr(e)
    return [v] * n


def write(lw: Lowerer, out: Tensor, values) -> None:
    st = lw.reg(out)
    for s, v in enumerate(values):
        lw.store(st.buf, v, [s])


def _materialize_if_aliased(lw: Lowerer, out: Tensor, values, operands) -> list:
    """When an operand is the output itself and values read other slots, copy them first."""
    if not any(isinstance(x, Tensor) and x.name == out.name for x in operands):
        return values
    buf = lw.alloc_local(len(values), dt(lw.reg(out).buf), lw.fresh(out.name + "_tmp"))
    for s, v in enumerate(values):
        lw.store(buf, v, [s])
    return [buf[s] for s in range(len(values))]


@emitter(I.CastInst)
def cast(lw: Lowerer, inst: I.CastInst) -> None:
    from tilus.backend.codegen.emitters.lowbit import try_packed_cast

    if try_packed_cast(lw, inst):
        return
    vals = operand_values(lw, inst.x, inst.output, inst.x.dtype)
    src, dst = inst.x.dtype, inst.output.dtype
    write(lw, inst.output, [scalar.convert(src, dst, v, inst.exponent) for v in vals])


@emitter(I.AssignInst)
def assign(lw: Lowerer, inst: I.AssignInst) -> None:
    vals = operand_values(lw, inst.x, inst.output, inst.x.dtype)
    vals = _materialize_if_aliased(lw, inst.output, vals, [inst.x])
    write(lw, inst.output, vals)


def unary_value(op: str, dtype, v):
    """Compute-domain ``op(v)``."""
    is_float = dtype.is_float
    if op == "neg":
        return -v if is_float else (tirx.const(0, dt(v)) - v if dt(v) != "bool" else v)
    if op == "abs":
        return tirx.abs(v) if dt(v) != "bool" else v
    if op == "exp":
        return tirx.exp(v)
    if op == "log":
        return tirx.log(v)
    if op == "sqrt":
        return tirx.sqrt(v)
    if op == "rsqrt":
        return tirx.const(1.0, dt(v)) / tirx.sqrt(v)
    if op == "not":
        return tirx.Not(v if dt(v) == "bool" else v != tirx.const(0, dt(v)))
    if op == "bitnot":
        return tirx.Not(v) if dt(v) == "bool" else tirx.bitwise_xor(v, _all_ones(dt(v)))
    raise CompilationError(f"unknown unary operation {op}")


@emitter(I.UnaryInst)
def unary(lw: Lowerer, inst: I.UnaryInst) -> None:
    dtype = inst.x.dtype
    vals = operand_values(lw, inst.x, inst.output, dtype)
    out = [scalar.store(inst.output.dtype, _fit(inst.output.dtype,
                                                unary_value(inst.op, dtype, scalar.load(dtype, v))))
           for v in vals]
    write(lw, inst.output, out)


def _all_ones(d: str):
    bits = int("".join(ch for ch in d if ch.isdigit()))
    return tirx.const(-1 if d.startswith("int") else (1 << bits) - 1, d)


def _fit(dtype, v):
    c = compute(dtype)
    if dt(v) == c:
        return v
    if c == "bool":
        return v != tirx.const(0, dt(v))
    return tirx.Cast(c, v)


def binary_value(op: str, dtype, a, b):
    """Compute-domain ``a op b`` (a, b of compute(dtype))."""
    if dtype.is_bool:
        table = {"bitand": tirx.And, "bitor": tirx.Or, "maximum": tirx.Or, "minimum": tirx.And,
                 "and": tirx.And, "or": tirx.Or}
        if op in table:
            return table[op](a, b)
        if op in ("bitxor", "ne"):
            return a != b
        if op == "eq":
            return a == b
        a, b = tirx.Cast("int32", a), tirx.Cast("int32", b)
        return binary_value(op, dtypes.int32, a, b) != tirx.const(0, "int32") \
            if op not in ("lt", "le", "gt", "ge") else binary_value(op, dtypes.int32, a, b)
    is_float = dtype.is_float
    if op == "mod":
        return tirx.fmod(a, b) if is_float else tirx.truncmod(a, b)
    if op == "maximum":
        return tirx.max(a, b)
    if op == "minimum":
        return tirx.min(a, b)
    if op in ("and", "or"):
        z = tirx.const(0, dt(a))
        return (tirx.And if op == "and" else tirx.Or)(a != z, b != z)
    out = common_binary(op, a, b, is_float)
    if out is not None:
        return out
    raise CompilationError(f"unknown binary operation {op}")


@emitter(I.BinaryInst)
def binary(lw: Lowerer, inst: I.BinaryInst) -> None:
    dtype = next(x.dtype for x in (inst.a, inst.b) if isinstance(x, Tensor))
    av = operand_values(lw, inst.a, inst.output, dtype)
    bv = operand_values(lw, inst.b, inst.output, dtype)
    out_dtype = inst.output.dtype
    if inst.op in _HALF2_OPS and out_dtype.name in _LANES and \
            _paired(lw, inst, [av, bv], _half2_binary(lw, inst.op, _LANES[out_dtype.name])):
        return
    vals = [scalar.store(out_dtype, _fit(out_dtype, binary_value(inst.op, dtype, scalar.load(dtype, a),
                                                                   scalar.load(dtype, b))))
            for a, b in zip(av, bv)]
    vals = _materialize_if_aliased(lw, inst.output, vals, [inst.a, inst.b])
    write(lw, inst.output, vals)


# ---- half2 arithmetic: add/sub/mul/fma of float16/bfloat16 tiles two slots at a time ----------
# One IEEE operation on two halves rounds like the interpreter's float32-then-round (float32 has
# 2p+2 bits for p = 11 and 8), so HADD2/HMUL2 compute exactly the IR's values; fma is fma.rn.
_LANES = {"float16": "float16x2", "bfloat16": "bfloat16x2"}
_PTX_FMA = {"float16": "fma.rn.f16x2", "bfloat16": "fma.rn.bf16x2"}
_HALF2_OPS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}


def _pair_word(lw: Lowerer, v0, v1):
    """A uint32 holding the halves (v0, v1): one register when they are the aligned slot pair
    (2j, 2j + 1) of one local buffer, a broadcast when they are the same value; else None."""
    if structural_equal(v0, v1):
        return tirx.reinterpret("uint32", tirx.Broadcast(v0, 2))
    loads = [v for v in (v0, v1) if isinstance(v, ir.TensorLoad) and len(v.indices) == 1
             and isinstance(v.indices[0], tirx.IntImm)]
    if len(loads) != 2 or not loads[0].source.same_as(loads[1].source):
        return None
    i0, i1 = int(loads[0].indices[0]), int(loads[1].indices[0])
    buf = loads[0].source                       # the local buffer (a TensorLoad's source)
    if i0 % 2 or i1 != i0 + 1 or str(buf.scope()) != "local":
        return None
    return lw.alias_local(buf, "uint32")[i0 // 2]


def _paired(lw: Lowerer, inst, operand_vals: list, emit_pair) -> bool:
    """``emit_pair(out_words, i, operand words)`` for each slot pair of the output; False (nothing
    emitted) when the tile is not float16/bfloat16, an operand is the output, or some pair's
    operands are not register pairs or broadcasts."""
    out = inst.output
    n = lw.reg(out).layout.local_size
    if out.dtype.name not in _LANES or n % 2 or any(
            isinstance(x, Tensor) and x.name == out.name for x in inst.operands()):
        return False
    pairs = []
    for i in range(0, n, 2):
        words = [_pair_word(lw, vals[i], vals[i + 1]) for vals in operand_vals]
        if any(w is None for w in words):
            return False
        pairs.append(words)
    out_words = lw.alias_local(lw.reg(out).buf, "uint32")
    for i, words in enumerate(pairs):
        emit_pair(out_words, i, words)
    return True


def _half2_binary(lw: Lowerer, op: str, lanes: str):
    def emit_pair(out_words, i, words):
        a, b = (tirx.reinterpret(lanes, w) for w in words)
        lw.store(out_words, tirx.reinterpret("uint32", _HALF2_OPS[op](a, b)), [i])
    return emit_pair


@emitter(I.FmaInst)
def fma(lw: Lowerer, inst: I.FmaInst) -> None:
    """``a * b + c`` rounded once: fma.rn.{f16,bf16}x2 on slot pairs, else ``__hfma`` / ``fmaf``
    per slot."""
    dtype = inst.output.dtype
    vals = [operand_values(lw, x, inst.output, dtype) for x in (inst.a, inst.b, inst.c)]
    if dtype.name in _PTX_FMA:
        op = ptx(_PTX_FMA[dtype.name])
        if _paired(lw, inst, vals, lambda out, i, w: lw.emit(op(out[i], *w))):
            return
    fn = "fmaf" if dtype.name == "float32" else "__hfma"
    out = [tirx.call_pure_extern(storage(dtype), fn, a, b, c) for a, b, c in zip(*vals)]
    out = _materialize_if_aliased(lw, inst.output, out, [inst.a, inst.b, inst.c])
    write(lw, inst.output, out)


@emitter(I.WhereInst)
def where(lw: Lowerer, inst: I.WhereInst) -> None:
    dtype = inst.output.dtype
    cv = operand_values(lw, inst.cond, inst.output, dtypes.bool)
    av = operand_values(lw, inst.a, inst.output, dtype)
    bv = operand_values(lw, inst.b, inst.output, dtype)
    vals = [tirx.Select(c if dt(c) == "bool" else c != tirx.const(0, dt(c)), _st(a, dtype), _st(b, dtype))
            for c, a, b in zip(cv, av, bv)]
    vals = _materialize_if_aliased(lw, inst.output, vals, [inst.cond, inst.a, inst.b])
    write(lw, inst.output, vals)


def _st(v, dtype):
    s = storage(dtype)
    return v if dt(v) == s else tirx.Cast(s, v)


# ---------------------------------------------------------------------------------- reduce
@emitter(I.ReduceInst)
def reduce(lw: Lowerer, inst: I.ReduceInst) -> None:
    """Each output slot folds the ``n`` elements of its row along ``dim``, in index order: in
    registers when every thread holds its rows whole, else with a warp's XOR butterfly
    (``reduce_shuffle_plan``). InsertConversions converts an input that needs more (rows spread
    over warps) first."""
    x = inst.x
    dim, n = inst.dim, x.shape[inst.dim]
    out_layout = lw.reg(inst.output).layout
    dtype = x.dtype
    L = out_layout.local_size
    src3 = reduce_source(out_layout, dim, inst.keepdim)

    def combine(acc, v):
        if inst.op == "sum":
            return tirx.Or(acc, v) if dtype.is_bool else acc + v
        if inst.op == "max":
            return tirx.Or(acc, v) if dtype.is_bool else tirx.max(acc, v)
        return tirx.And(acc, v) if dtype.is_bool else tirx.min(acc, v)

    cdt = compute(dtype)
    acc = lw.alloc_local(L, cdt, lw.fresh(inst.output.name + "_acc"))
    xs = lw.reg(x)
    slots = static_slots(xs.layout, x.shape, L * n, lw.threads,
                         lambda t, v: src3(t, v // n, v % n))
    if slots is not None:
        for s in range(L):
            lw.store(acc, scalar.load(dtype, xs.buf[slots[s * n]]), [s])
            for r in range(1, n):
                lw.store(acc, combine(acc[s], scalar.load(dtype, xs.buf[slots[s * n + r]])), [s])
    else:
        plan = reduce_shuffle_plan(xs.layout, out_layout, dim, inst.keepdim, lw.threads, dtype)
        if plan is None:
            raise CompilationError(f"{inst.display_name()} of %{x.name}: its rows are spread over "
                                   f"warps in {xs.layout}; layout inference converts such inputs "
                                   f"first (convert_layout)")
        parts, bits = plan
        for s in range(L):
            lw.store(acc, scalar.load(dtype, xs.buf[parts[s][0]]), [s])
            for slot in parts[s][1:]:
                lw.store(acc, combine(acc[s], scalar.load(dtype, xs.buf[slot])), [s])
            for b in bits:
                other = tirx.call_extern(cdt, "__shfl_xor_sync", tirx.const(0xFFFFFFFF, "uint32"), acc[s],
                                         tirx.const(1 << b, "int32"), tirx.const(32, "int32"))
                lw.store(acc, combine(acc[s], other), [s])
    out = [scalar.store(inst.output.dtype, _fit(inst.output.dtype, acc[s])) for s in range(L)]
    write(lw, inst.output, out)
