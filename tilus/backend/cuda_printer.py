"""CUDA C++ straight from the lowered ``tvm.tirx`` PrimFunc, without TVM's TIR pipeline.

TVM's own path (``tvm.compile``: LowerTIRx, three StmtSimplify, FlattenBuffer, CSE, ... then its
C printer) costs ~4.3 s of CPU on the decode matmul; this printer walks the PrimFunc that
``tilus.backend.codegen.lower_program`` emits -- the TIR subset listed in docs/codegen.md, which is
also exactly what the simulator runs -- and prints it in one pass (~0.4 s), simplifying only the
conditions and indices (the SASS is compared with TVM's in the tests).

What it prints, construct by construct:

* the kernel ``extern "C" __global__ void __launch_bounds__(threads) <symbol>_kernel(...)`` with
  TVM's parameter convention (``X_ptr`` for a buffer parameter, ``X_len`` for its extent, scalar
  parameters by name; pointers first, then scalars, each sorted by the TIR variable's name; only
  those the body and the grid use), so both launchers (TVM's host library, built from
  :func:`tilus.backend.launcher_stub.launcher_stub`, and the driver launcher, which reads this
  signature) pass the same arguments;
* thread bindings as ``(int)blockIdx.x`` / ``(int)threadIdx.x`` (no loops: the launch is exact),
  serial and unrolled ``For`` (``#pragma unroll``; a serial loop annotated
  ``pragma_unroll_explicit = n``: ``#pragma unroll n``, or ``#pragma unroll`` for n = 0), ``While``,
  ``IfThenElse``, ``Break`` / ``Continue``, ``Bind`` (a declaration; an assignment when the
  variable is bound again);
* buffers: local ``AllocBuffer`` as an aligned array, the ``shared.dyn`` pool as
  ``extern __shared__``, ``DeclBuffer`` views as typed pointers into their root at an element
  offset (a view over a view that has an offset is refused: TVM's ``buffer_data(X)`` leaves X's
  offset out, the simulator keeps it, so the lowering declares every view over its root);
* expressions with TIR's semantics, not C's: integer results narrower than 32 bits are wrapped
  back to their type (C promotes to int; a uint16 product is computed unsigned, as 65535 * 65535
  overflows int), ``floordiv`` / ``floormod`` by a power of two are an
  arithmetic shift / a mask (exact for negative operands too), other divisors go through a
  floor helper, float16 / bfloat16 conversions round to nearest even, ``reinterpret`` is a bit
  copy;
* a float16x2 / bfloat16x2 value reinterpreted to uint32 (the lowering's half2 arithmetic: its
  only use of these types) as a 32-bit word, never a half2 struct: ``reinterpret(lanes, w)`` is
  ``w``, ``Broadcast(v, 2)`` the bits of ``v`` twice, add / sub / mul a helper with the inline PTX
  of CUDA 13's ``__hadd2`` / ``__hsub2`` / ``__hmul2`` (per architecture, as the headers select
  it). The SASS is the struct operators' (tests/backend/test_cuda_printer.py; of the kernels
  compared, only the NVFP4 decode at sm_80 differs: cicc reloads one shared word its vector load
  already holds, one LDS more per loop iteration), cicc's time 1.68 -> 1.32 s on the uint4 decode
  matmul (the structs, their operators and bit casts are what costs it);
* the prelude: ``cuda_fp16.h`` / ``cuda_bf16.h`` (and their min/max helpers) only for a kernel
  that uses float16 / bfloat16 (an fp32 kernel's preprocessing and cicc ~0.16 s less), and the
  word helpers it uses;
* ``T.ptx`` instructions and ``T.cuda`` intrinsics through TVM's own table
  (:func:`tilus.backend.tvm_shim.intrinsic_codegen`): the same inline-asm helpers TVM prints.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from tilus.backend.tvm_shim import IndexSimplifier, dt, intrinsic_codegen, ir, tirx, with_deep_stack
from tilus.errors import CompilationError

_SCALAR_C = {
    "bool": "bool", "int8": "signed char", "uint8": "unsigned char", "int16": "short",
    "uint16": "unsigned short", "int32": "int", "uint32": "unsigned int", "int64": "long long",
    "uint64": "unsigned long long", "float16": "half", "bfloat16": "nv_bfloat16",
    "float32": "float", "float64": "double",
}
_VECTOR_C = {
    "uint32x2": "uint2", "uint32x4": "uint4", "int32x2": "int2", "int32x4": "int4",
    "float32x2": "float2", "float32x4": "float4", "float16x2": "half2",
    "bfloat16x2": "nv_bfloat162", "uint8x4": "uchar4", "int8x4": "char4",
}
_MAKE_VECTOR = {
    "uint2": "make_uint2", "uint4": "make_uint4", "int2": "make_int2", "int4": "make_int4",
    "float2": "make_float2", "float4": "make_float4", "half2": "make_half2",
    "nv_bfloat162": "make_bfloat162", "uchar4": "make_uchar4", "char4": "make_char4",
}
_BINARY = {
    "Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "Mod": "%", "BitwiseAnd": "&",
    "BitwiseOr": "|", "BitwiseXor": "^", "LShift": "<<", "RShift": ">>",
    "EQ": "==", "NE": "!=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">=",
}
_WRAPPING = {"Add", "Sub", "Mul", "Div", "Mod", "LShift", "FloorDiv", "FloorMod", "Min", "Max"}
_MATH32 = {"exp": "expf", "exp2": "exp2f", "log": "logf", "log2": "log2f", "sqrt": "sqrtf",
           "rsqrt": "rsqrtf", "fabs": "fabsf", "fmod": "fmodf", "floor": "floorf", "ceil": "ceilf",
           "nearbyint": "nearbyintf", "round": "roundf", "trunc": "truncf", "tanh": "tanhf",
           "sin": "sinf", "cos": "cosf", "erf": "erff", "pow": "powf"}
_MATH64 = {k: v[:-1] for k, v in _MATH32.items()}
_RESERVED = {
    "int", "float", "double", "char", "short", "long", "unsigned", "signed", "bool", "void",
    "half", "half2", "nv_bfloat16", "nv_bfloat162", "min", "max", "if", "else", "for", "while",
    "do", "break", "continue", "return", "switch", "case", "default", "const", "static", "auto",
    "register", "volatile", "struct", "union", "enum", "class", "template", "typename", "new",
    "delete", "this", "true", "false", "sizeof", "goto", "asm", "inline", "namespace", "using",
    "threadIdx", "blockIdx", "blockDim", "gridDim", "warpSize", "uint", "uchar", "ushort",
}

PRELUDE = r"""#ifdef __CUDACC_RTC__
#include <cuda/std/cstdint>
using cuda::std::uint8_t; using cuda::std::uint16_t; using cuda::std::uint32_t;
using cuda::std::uint64_t; using cuda::std::int8_t; using cuda::std::int16_t;
using cuda::std::int32_t; using cuda::std::int64_t;
#else
#include <cstdint>
#endif

// floor division and modulo of TIR (rounding toward -inf) for divisors that are not a power of two
template <typename T> __device__ __forceinline__ T tilus_floordiv(T a, T b) {
  T q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
template <typename T> __device__ __forceinline__ T tilus_floormod(T a, T b) {
  T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
// reinterpret: the same bits as another type of the same size (a union: nvcc reads the member
// it did not write as those bits, and cicc digests it faster than memcpy)
template <typename To, typename From> __device__ __forceinline__ To tilus_bitcast(From x) {
  static_assert(sizeof(To) == sizeof(From), "reinterpret between types of different sizes");
  union { From from; To to; } bits{x};
  return bits.to;
}
"""

# the float16 / bfloat16 headers and helpers, in the prelude only when the kernel uses the type
# (cuda_bf16.h alone costs cicc ~70 ms)
PRELUDE_FLOAT16 = r"""#include <cuda_fp16.h>
__device__ __forceinline__ half tilus_min(half a, half b) { return __hlt(a, b) ? a : b; }
__device__ __forceinline__ half tilus_max(half a, half b) { return __hgt(a, b) ? a : b; }
"""
PRELUDE_BFLOAT16 = r"""#include <cuda_bf16.h>
__device__ __forceinline__ nv_bfloat16 tilus_min(nv_bfloat16 a, nv_bfloat16 b) { return __hlt(a, b) ? a : b; }
__device__ __forceinline__ nv_bfloat16 tilus_max(nv_bfloat16 a, nv_bfloat16 b) { return __hgt(a, b) ? a : b; }
"""


def _word_op(name: str, ctype: str, op: str, asm: dict) -> str:
    """A helper computing ``op`` of two float16x2/bfloat16x2 values held in 32-bit words: the
    inline PTX CUDA 13's ``__hadd2`` / ``__hsub2`` / ``__hmul2`` emit (``asm``: minimum
    ``__CUDA_ARCH__`` -> PTX, newest first, as cuda_fp16.hpp / cuda_bf16.hpp select it), and on
    older architectures the header's operator on the structs itself."""
    lines = [f"__device__ __forceinline__ unsigned int {name}(unsigned int a, unsigned int b) {{",
             "  unsigned int d;"]
    for i, (arch, ptx) in enumerate(asm.items()):
        lines.append(f"#{'if' if i == 0 else 'elif'} __CUDA_ARCH__ >= {arch}")
        lines.append(f'  asm("{ptx}" : "=r"(d) : "r"(a), "r"(b));')
    lines += ["#else",
              f"  d = tilus_bitcast<unsigned int, {ctype}>(tilus_bitcast<{ctype}, unsigned int>(a) "
              f"{op} tilus_bitcast<{ctype}, unsigned int>(b));",
              "#endif", "  return d;", "}"]
    return "\n".join(lines) + "\n"


def _bf16_fma(constant: str, operands: str) -> str:
    return (r"{.reg .b32 c;\n"
            f"  mov.b32 c, {constant};\\n"
            f"  fma.rn.bf16x2 %0,{operands};}}\\n")


def _word_pair(name: str, ctype: str, bits: str) -> str:
    """A helper giving the word whose halves are both the bits of a float16 / bfloat16 value: a
    ushort2, which cicc builds like make_half2's struct (``mov.b32 {lo, hi}``; shifting and or-ing
    the bits instead compiles to other SASS: LOP3 + LEA for a PRMT)."""
    return (f"__device__ __forceinline__ unsigned int {name}({ctype} v) {{\n"
            f"  unsigned short bits = {bits}(v);\n"
            f"  return tilus_bitcast<unsigned int, ushort2>(make_ushort2(bits, bits));\n}}\n")


# float16x2 / bfloat16x2 arithmetic and broadcasts on 32-bit words (see _Printer.word): name ->
# source; each goes into the prelude when a kernel uses it
WORD_HELPERS = {
    "tilus_hadd2_u32": _word_op("tilus_hadd2_u32", "half2", "+", {530: r"{add.f16x2 %0,%1,%2;\n}"}),
    "tilus_hsub2_u32": _word_op("tilus_hsub2_u32", "half2", "-", {530: r"{sub.f16x2 %0,%1,%2;\n}"}),
    "tilus_hmul2_u32": _word_op("tilus_hmul2_u32", "half2", "*", {530: r"{mul.f16x2 %0,%1,%2;\n}"}),
    "tilus_badd2_u32": _word_op("tilus_badd2_u32", "nv_bfloat162", "+", {
        900: r"{ add.bf16x2 %0,%1,%2; }\n", 800: _bf16_fma("0x3f803f80U", "%1,c,%2")}),
    "tilus_bsub2_u32": _word_op("tilus_bsub2_u32", "nv_bfloat162", "-", {
        900: r"{ sub.bf16x2 %0,%1,%2; }\n", 800: _bf16_fma("0xbf80bf80U", "%2,c,%1")}),
    "tilus_bmul2_u32": _word_op("tilus_bmul2_u32", "nv_bfloat162", "*", {
        900: r"{ mul.bf16x2 %0,%1,%2; }\n", 800: _bf16_fma("0x80008000U", "%1,%2,c")}),
    "tilus_hpair_u32": _word_pair("tilus_hpair_u32", "half", "__half_as_ushort"),
    "tilus_bpair_u32": _word_pair("tilus_bpair_u32", "nv_bfloat16", "__bfloat16_as_ushort"),
}
_WORD_OPS = {("float16x2", "Add"): "tilus_hadd2_u32", ("float16x2", "Sub"): "tilus_hsub2_u32",
             ("float16x2", "Mul"): "tilus_hmul2_u32", ("bfloat16x2", "Add"): "tilus_badd2_u32",
             ("bfloat16x2", "Sub"): "tilus_bsub2_u32", ("bfloat16x2", "Mul"): "tilus_bmul2_u32",
             ("float16x2", "Broadcast"): "tilus_hpair_u32",
             ("bfloat16x2", "Broadcast"): "tilus_bpair_u32"}


def c_type(dtype: str) -> str:
    """The C type of a TIR dtype (scalars and the vector types Tilus' lowering uses)."""
    dtype = str(dtype)
    c = _SCALAR_C.get(dtype) or _VECTOR_C.get(dtype)
    if c is None:
        raise CompilationError(f"the CUDA printer has no C type for the TIR dtype {dtype}")
    return c


def _is_narrow_int(dtype: str) -> bool:
    return dtype in ("int8", "uint8", "int16", "uint16")


@dataclass
class DeviceParam:
    """One parameter of the printed kernel: its C declaration's type and name, and the TIR
    variable it stands for (the buffer variable of a ``X_ptr``, else the scalar)."""

    name: str
    ctype: str
    var: Any
    is_pointer: bool


@dataclass
class CudaKernel:
    """The printed translation unit, the kernel's name and its parameters in signature order."""

    source: str
    name: str
    params: list = field(default_factory=list)


@dataclass
class _Buffer:
    root: str               # C name of the storage (parameter pointer, local array, shared pool)
    root_ctype: str         # its element type
    dtype: str              # the view's TIR dtype
    offset: Optional[str]   # elements of ``dtype`` from the root's first element (C), or None
    scalar: bool = False    # a 0-d view (decl_scalar): accessed without an index
    param: Any = None       # the buffer parameter the root is, if any


class _Printer:
    def __init__(self, func) -> None:
        self.func = func
        self.names: dict = {}          # TIR Var -> C expression (a name, or blockIdx/threadIdx)
        self.taken: set = set(_RESERVED)
        self.buffers: dict = {}        # buffer Var -> _Buffer
        self.params: dict = {}         # C name -> DeviceParam (those the body uses)
        self.param_vars: dict = {}     # TIR Var -> (C name, ctype, is_pointer) of every possible parameter
        self.helpers: dict = {}        # helper name -> source
        self.lines: list = []
        self.indent = 1
        self.declared: list = [set()]  # Vars declared per C scope
        self.memo: dict = {}           # expression object -> printed text
        self.threads = 1
        self.rebound: set = set()      # Vars bound more than once (their bounds are not tracked)
        self.simplifier = IndexSimplifier()
        self._unsafe: dict = {}        # expression -> what unsimplifiable() found
        self.dtypes: set = set()       # TIR dtypes of the printed values, buffers and parameters

    # ------------------------------------------------------------------ names
    def fresh(self, hint: str) -> str:
        base = re.sub(r"\W", "_", hint) or "v"
        if base[0].isdigit():
            base = "v_" + base
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def var(self, v) -> str:
        name = self.names.get(v)
        if name is None:
            entry = self.param_vars.get(v)
            if entry is None:
                raise CompilationError(f"the CUDA printer met the variable {v.name} before its "
                                       f"definition")
            cname, ctype, is_pointer = entry
            self.params[cname] = DeviceParam(cname, ctype, v, is_pointer)
            self.dtypes.add(dt(v))
            name = self.names[v] = cname
        return name

    # ------------------------------------------------------------------ parameters
    def collect_params(self) -> None:
        """Every parameter the kernel could take: buffer parameters (``X_ptr``), the variables
        of their extents (``X_len``) and scalar parameters; the body's uses select them."""
        for p in self.func.params:
            if isinstance(p.ty, tirx.BufferType):
                cname = self.fresh(p.name + "_ptr")
                ctype = c_type(dt(p))
                self.param_vars[p] = (cname, ctype + "*", True)
                self.buffers[p] = _Buffer(cname, ctype, dt(p), None, param=p)
                for extent in p.shape:
                    if isinstance(extent, ir.Var) and extent not in self.param_vars:
                        self.param_vars[extent] = (self.fresh(extent.name), c_type(dt(extent)), False)
            else:
                self.param_vars[p] = (self.fresh(p.name), c_type(dt(p)), False)

    # ------------------------------------------------------------------ expressions
    def expr(self, e) -> str:
        """The C text of a TIR expression (memoized per node; constants by type and value, as
        TVM compares equal constants of different types equal)."""
        if isinstance(e, ir.Var):
            return self.var(e)
        if isinstance(e, tirx.IntImm):
            key: Any = (dt(e), int(e.value))
        elif isinstance(e, tirx.FloatImm):
            key = (dt(e), repr(float(e.value)))
        else:
            key = e
        try:
            hit = self.memo.get(key)
        except TypeError:
            return self._expr(e)
        if hit is None:
            hit = self.memo[key] = self._expr(e)
        return hit

    def _expr(self, e) -> str:
        kind = type(e).__name__
        if isinstance(getattr(e, "ty", None), ir.PrimType):
            self.dtypes.add(dt(e))
        if kind == "IntImm":
            return self.int_const(int(e.value), dt(e))
        if kind == "FloatImm":
            return self.float_const(float(e.value), dt(e))
        if kind == "StringImm":
            return '"' + e.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if kind == "Var":
            return self.var(e)
        if kind == "TensorLoad":
            return self.access(e.source, e.indices)
        if kind == "Cast":
            return self.cast(self.expr(e.value), dt(e.value), dt(e))
        if kind in ("And", "Or"):
            known = self.truth(e)
            if known is not None:
                return "true" if known else "false"
            return self.condition(e)
        if kind in _BINARY:
            return self.binary(kind, e)
        if kind in ("FloorDiv", "FloorMod"):
            return self.floor_op(kind, e)
        if kind in ("Min", "Max"):
            return self.min_max(kind, e)
        if kind == "Not":
            return f"(!{self.expr(e.a)})"
        if kind == "BitwiseNot":
            return self.wrap(f"(~{self.expr(e.a)})", dt(e))
        if kind == "Select":
            cond = self.simplify(e.condition)
            known = self.truth(cond)
            if known is not None:
                return self.expr(e.true_value if known else e.false_value)
            return f"({self.condition(cond)} ? {self.expr(e.true_value)} : {self.expr(e.false_value)})"
        if kind == "Broadcast":
            lanes = int(e.lanes)
            vec = c_type(dt(e))
            value = self.expr(e.value)
            return f"{_MAKE_VECTOR[vec]}({', '.join([value] * lanes)})"
        if kind == "Call":
            return self.call(e)
        raise CompilationError(f"the CUDA printer does not support the TIR expression {kind}: {e}")

    # ------------------------------------------------------------------ conditions
    def truth(self, e) -> Optional[bool]:
        """The value of a condition the simplifier decided (a constant, or ``&&`` / ``||`` with
        a decided side that decides it), or None."""
        kind = type(e).__name__
        if kind == "IntImm" and dt(e) == "bool":
            return bool(e.value)
        if kind == "And":
            a, b = self.truth(e.a), self.truth(e.b)
            if a is False or b is False:
                return False
            return True if a and b else None
        if kind == "Or":
            a, b = self.truth(e.a), self.truth(e.b)
            if a or b:
                return True
            return False if a is False and b is False else None
        return None

    def condition(self, e) -> str:
        """A condition's text without its decided parts."""
        kind = type(e).__name__
        if kind in ("And", "Or"):
            a, b = self.truth(e.a), self.truth(e.b)
            if kind == "And" and a is True:
                return self.condition(e.b)
            if kind == "And" and b is True:
                return self.condition(e.a)
            if kind == "Or" and a is False:
                return self.condition(e.b)
            if kind == "Or" and b is False:
                return self.condition(e.a)
            op = "&&" if kind == "And" else "||"
            return f"({self.condition(e.a)} {op} {self.condition(e.b)})"
        return self.expr(e)

    def simplify(self, e):
        """``e`` simplified with what is known of its variables (constants as they are, and
        what TVM's simplifier gets wrong as it is, see :func:`_unsimplifiable`)."""
        if isinstance(e, (tirx.IntImm, ir.Var)) or self.unsimplifiable(e):
            return e
        return self.simplifier.simplify(e)

    def unsimplifiable(self, e) -> bool:
        """Whether TVM's simplifier may get ``e`` wrong: a floating-point value occurs in it (it
        rewrites ``!(a < b)`` to ``a >= b``, wrong when a or b is NaN) or the constant INT32_MIN /
        INT64_MIN (its bound analysis takes them for -infinity: ``x >= -2147483648`` becomes
        false). Memoized per node."""
        ty = getattr(e, "ty", None)
        if not isinstance(ty, ir.PrimType):
            return False
        if str(ty.dtype).startswith(("float", "bfloat")):
            return True
        if isinstance(e, tirx.IntImm):
            return int(e.value) in (-2**31, -2**63)
        if isinstance(e, ir.Var):
            return False
        try:
            hit = self._unsafe.get(e)
        except TypeError:
            hit = None
        if hit is None:
            kids = [getattr(e, f, None) for f in ("a", "b", "value", "condition", "true_value",
                                                   "false_value")]
            if isinstance(e, ir.Call):
                kids += list(e.args)
            hit = self._unsafe[e] = any(self.unsimplifiable(k) for k in kids)
        return hit

    def min_max(self, kind: str, e) -> str:
        """CUDA's ``min``/``max`` (one IMNMX/FMNMX) for 32/64-bit types; 8/16-bit integers through
        int; float16/bfloat16 through the prelude's helpers."""
        out_t = dt(e)
        a, b = self.expr(e.a), self.expr(e.b)
        if out_t in ("float16", "bfloat16"):
            return f"{'tilus_min' if kind == 'Min' else 'tilus_max'}({a}, {b})"
        fn = "min" if kind == "Min" else "max"
        if _is_narrow_int(out_t):
            return self.wrap(f"{fn}((int){a}, (int){b})", out_t)
        return f"{fn}({a}, {b})"

    def int_const(self, v: int, dtype: str) -> str:
        if dtype == "bool":
            return "true" if v else "false"
        if dtype == "int32":
            return str(v) if v >= 0 else ("(-2147483647 - 1)" if v == -2**31 else f"({v})")
        if dtype == "uint32":
            return f"{v}u"
        if dtype == "int64":
            return f"{v}LL" if v >= 0 else ("(-9223372036854775807LL - 1)" if v == -2**63 else f"({v}LL)")
        if dtype == "uint64":
            return f"{v}ULL"
        if dtype in ("float16", "bfloat16", "float32", "float64"):
            return self.float_const(float(v), dtype)
        return f"(({c_type(dtype)}){v})"

    def float_const(self, v: float, dtype: str) -> str:
        if dtype == "float16":
            return f"__ushort_as_half((unsigned short){int(np.float16(v).view(np.uint16))}u)"
        if dtype == "bfloat16":
            bits = struct.unpack("<I", struct.pack("<f", v))[0] if math.isfinite(v) else None
            if bits is None or bits & 0xFFFF:
                return f"__float2bfloat16_rn({self.float_const(v, 'float32')})"
            return f"__ushort_as_bfloat16((unsigned short){bits >> 16}u)"
        if dtype == "float32":
            if not math.isfinite(v):
                return f"__uint_as_float({struct.unpack('<I', struct.pack('<f', v))[0]:#010x}u)"
            return f"{float(np.float32(v)).hex()}f"
        if dtype == "float64":
            if not math.isfinite(v):
                return f"__longlong_as_double({struct.unpack('<Q', struct.pack('<d', v))[0]:#018x}LL)"
            return v.hex()
        raise CompilationError(f"the CUDA printer has no float constant of type {dtype}")

    def wrap(self, text: str, dtype: str) -> str:
        """``text`` converted back to ``dtype`` when C's promotion to int would widen it."""
        return f"(({c_type(dtype)}){text})" if _is_narrow_int(dtype) else text

    def binary(self, kind: str, e) -> str:
        a, b = self.expr(e.a), self.expr(e.b)
        text = f"({a} {_BINARY[kind]} {b})"
        out_t = dt(e)
        if kind == "Mul" and out_t == "uint16":
            text = f"((unsigned int){a} * {b})"
        if kind == "Mod" and out_t == "float64":
            return f"fmod({a}, {b})"
        if kind == "Mod" and out_t in ("float16", "bfloat16", "float32"):
            fa, fb = self.cast(a, out_t, "float32"), self.cast(b, out_t, "float32")
            return self.cast(f"fmodf({fa}, {fb})", "float32", out_t)
        return self.wrap(text, out_t) if kind in _WRAPPING else text

    def floor_op(self, kind: str, e) -> str:
        out_t = dt(e)
        a = self.expr(e.a)
        divisor = e.b
        if out_t.startswith("uint"):
            return self.wrap(f"({a} {'/' if kind == 'FloorDiv' else '%'} {self.expr(divisor)})", out_t)
        if isinstance(divisor, tirx.IntImm) and int(divisor.value) > 0 \
                and int(divisor.value) & (int(divisor.value) - 1) == 0:
            c = int(divisor.value)
            if c == 1:
                return a if kind == "FloorDiv" else self.int_const(0, out_t)
            if kind == "FloorDiv":
                return self.wrap(f"({a} >> {c.bit_length() - 1})", out_t)
            return self.wrap(f"({a} & {self.int_const(c - 1, out_t)})", out_t)
        if out_t in ("float16", "bfloat16", "float32", "float64"):
            if kind == "FloorDiv" and out_t in ("float16", "bfloat16"):
                quotient = self.cast(f"({a} / {self.expr(divisor)})", out_t, "float32")
                return self.cast(f"floorf({quotient})", "float32", out_t)
            if kind == "FloorDiv":
                return f"floor({a} / {self.expr(divisor)})"
            raise CompilationError(f"floormod of {out_t} is not supported by the CUDA printer")
        fn = "tilus_floordiv" if kind == "FloorDiv" else "tilus_floormod"
        return self.wrap(f"{fn}<{c_type(out_t)}>({a}, {self.expr(divisor)})", out_t)

    def cast(self, text: str, src: str, dst: str) -> str:
        if src == dst:
            return text
        if dst == "float16":
            if src == "float64":
                return f"__double2half({text})"
            if src == "bfloat16":
                return f"__float2half_rn(__bfloat162float({text}))"
            return f"__float2half_rn((float){text})"
        if dst == "bfloat16":
            if src == "float64":
                return f"__double2bfloat16({text})"
            if src == "float16":
                return f"__float2bfloat16_rn(__half2float({text}))"
            if src in ("int32", "uint32", "int64", "uint64"):
                return f"__double2bfloat16((double){text})"
            return f"__float2bfloat16_rn((float){text})"
        if src == "float16":
            text = f"__half2float({text})"
        elif src == "bfloat16":
            text = f"__bfloat162float({text})"
        if dst == "float32" and src in ("float16", "bfloat16"):
            return text
        return f"(({c_type(dst)}){text})"

    # ------------------------------------------------------------------ buffers
    def buffer(self, buf) -> _Buffer:
        info = self.buffers.get(buf)
        if info is None:
            raise CompilationError(f"the CUDA printer met the buffer {buf.name} before its "
                                   f"declaration")
        if info.param is not None and info.param not in self.names:
            self.var(info.param)
        return info

    def pointer(self, info: _Buffer, name: str) -> str:
        """A C pointer to a root buffer's first element (``buffer_data`` of a view at an offset
        is ambiguous, see the module doc)."""
        if info.offset is not None:
            raise CompilationError(f"buffer_data({name}) of a view at an offset")
        return _typed_root(info)

    def access(self, buf, indices) -> str:
        info = self.buffer(buf)
        base = _typed_root(info)
        if info.scalar or len(indices) == 0:
            index = info.offset or "0"
        else:
            if len(indices) != 1:
                raise CompilationError(f"the CUDA printer expects flat buffers, {buf.name} has "
                                       f"{len(indices)} indices")
            index = self.expr(self.simplify(indices[0]))
            if info.offset is not None:
                index = f"({info.offset} + {index})"
        return f"{base}[{index}]"

    def declare_buffer(self, stmt) -> None:
        buf = stmt.buffer
        dtype = dt(buf)
        self.dtypes.add(dtype)
        scope = buf.scope() or "global"
        data = getattr(stmt, "data", None)
        if isinstance(stmt, tirx.AllocBuffer) or data is None:
            name = self.fresh(buf.name)
            if scope == "shared.dyn" or scope == "shared":
                self.emit(f"extern __shared__ __align__(16) {c_type(dtype)} {name}[];")
            elif scope == "local":
                n = 1
                for s in buf.shape:
                    if not isinstance(s, tirx.IntImm):
                        raise CompilationError(f"the local buffer {buf.name} has a run-time size")
                    n *= int(s.value)
                self.emit(f"alignas(16) {c_type(dtype)} {name}[{max(1, n)}];")
            else:
                raise CompilationError(f"the CUDA printer cannot allocate {buf.name} in scope {scope}")
            self.buffers[buf] = _Buffer(name, c_type(dtype), dtype, None, scalar=len(buf.shape) == 0)
            return
        if not (isinstance(data, ir.Call) and data.op.name.endswith(".buffer_data")):
            raise CompilationError(f"the CUDA printer expects a view over buffer_data(...), "
                                   f"{buf.name} is over {data}")
        parent = self.buffer(data.args[0])
        if parent.offset is not None:
            raise CompilationError(f"the view {buf.name} is declared over {data.args[0].name}, "
                                   f"which starts at an offset: TVM leaves that offset out and "
                                   f"the simulator keeps it; declare the view over the root")
        eo = buf.elem_offset
        offset = None
        if eo is not None and not (isinstance(eo, tirx.IntImm) and int(eo.value) == 0):
            offset = self.expr(eo)
        self.buffers[buf] = _Buffer(parent.root, parent.root_ctype, dtype, offset,
                                    scalar=len(buf.shape) == 0, param=parent.param)

    # ------------------------------------------------------------------ calls
    def call(self, e) -> str:
        name = e.op.name
        short = name.split(".", 1)[1] if name.startswith(("tirx.", "prim.")) else name
        args = list(e.args)
        if short == "reinterpret":
            if dt(e) == "uint32" and dt(args[0]) in ("float16x2", "bfloat16x2"):
                return self.word(args[0])
            return f"tilus_bitcast<{c_type(dt(e))}, {c_type(dt(args[0]))}>({self.expr(args[0])})"
        if short == "if_then_else":
            cond = self.simplify(args[0])
            known = self.truth(cond)
            if known is not None:
                return self.expr(args[1] if known else args[2])
            return f"({self.condition(cond)} ? {self.expr(args[1])} : {self.expr(args[2])})"
        if short == "address_of":
            target = args[0]
            if type(target).__name__ != "TensorLoad":
                raise CompilationError(f"address_of of {target}")
            return f"(&{self.access(target.source, target.indices)})"
        if short == "buffer_data":
            return self.pointer(self.buffer(args[0]), args[0].name)
        if short == "tvm_storage_sync":
            scope = args[0].value if args and isinstance(args[0], ir.StringImm) else "shared"
            if scope == "warp":
                return "__syncwarp()"
            if scope.startswith("shared"):
                return "__syncthreads()"
            raise CompilationError(f"tvm_storage_sync({scope!r}) is not supported")
        if short in ("call_extern", "call_pure_extern"):
            fn = args[0].value
            return f"{fn}({', '.join(self.expr(a) for a in args[1:])})"
        if short == "likely":
            return self.expr(args[0])
        if short in _MATH32:
            table = {"float32": _MATH32, "float64": _MATH64}.get(dt(e))
            if table is None:
                raise CompilationError(f"{short} of {dt(e)} is not supported by the CUDA printer")
            return f"{table[short]}({', '.join(self.expr(a) for a in args)})"
        codegen = intrinsic_codegen(name)
        if codegen is None:
            raise CompilationError(f"the CUDA printer does not know the intrinsic {name}")
        lowered, _tags = codegen(args)
        if not (isinstance(lowered, ir.Call) and lowered.op.name == "tirx.cuda.func_call"):
            return self.expr(lowered)
        largs = list(lowered.args)
        helper, source = largs[0].value, largs[-1].value
        if helper not in self.helpers:
            self.helpers[helper] = source
        return f"{helper}({', '.join(self.expr(a) for a in largs[1:-1])})"

    def word(self, x) -> str:
        """The 32-bit word of a float16x2 / bfloat16x2 value, computed without a half2 struct
        (structs and their bit casts cost cicc time, not SASS): ``reinterpret(lanes, w)`` is
        ``w``, ``Broadcast(v, 2)`` the bits of ``v`` in both halves, add/sub/mul the PTX CUDA's
        operators emit, on words (:data:`WORD_HELPERS`); any other value is bit-cast from its
        struct."""
        lanes = dt(x)
        self.dtypes.add(lanes)
        kind = type(x).__name__
        if kind == "Call" and x.op.name.endswith(".reinterpret") and dt(x.args[0]) == "uint32":
            return self.expr(x.args[0])
        if kind == "Broadcast" and int(x.lanes) == 2:
            return f"{self.word_helper(lanes, kind)}({self.expr(x.value)})"
        if kind in ("Add", "Sub", "Mul"):
            return f"{self.word_helper(lanes, kind)}({self.word(x.a)}, {self.word(x.b)})"
        return f"tilus_bitcast<unsigned int, {c_type(lanes)}>({self.expr(x)})"

    def word_helper(self, lanes: str, kind: str) -> str:
        """The name of the word helper for ``kind`` of ``lanes``, its source added to the
        kernel's helpers."""
        name = _WORD_OPS[(lanes, kind)]
        self.helpers.setdefault(name, WORD_HELPERS[name])
        return name

    # ------------------------------------------------------------------ statements
    def emit(self, line: str) -> None:
        self.lines.append("  " * self.indent + line)

    def block(self, stmt) -> None:
        self.indent += 1
        self.declared.append(set())
        self.stmt(stmt)
        self.declared.pop()
        self.indent -= 1

    def stmt(self, s) -> None:
        kind = type(s).__name__
        if kind == "SeqStmt":
            for x in s.seq:
                self.stmt(x)
        elif kind == "For":
            self.for_(s)
        elif kind == "IfThenElse":
            cond = self.simplify(s.condition)
            known = self.truth(cond)
            if known is not None:
                branch = s.then_case if known else s.else_case
                if branch is not None:
                    self.emit("{")
                    self.block(branch)
                    self.emit("}")
                return
            self.emit(f"if ({self.condition(cond)}) {{")
            self.block(s.then_case)
            if s.else_case is not None:
                self.emit("} else {")
                self.block(s.else_case)
            self.emit("}")
        elif kind == "While":
            self.emit(f"while ({self.expr(s.condition)}) {{")
            self.block(s.body)
            self.emit("}")
        elif kind == "Break":
            self.emit("break;")
        elif kind == "Continue":
            self.emit("continue;")
        elif kind == "Bind":
            self.bind(s.var, s.value)
        elif kind == "BufferStore":
            value = self.expr(s.value)
            self.emit(f"{self.access(s.buffer, s.indices)} = {value};")
        elif kind in ("AllocBuffer", "DeclBuffer"):
            self.declare_buffer(s)
        elif kind == "Evaluate":
            if isinstance(s.value, (tirx.IntImm,)):
                return
            self.emit(self.expr(s.value) + ";")
        elif kind == "AttrStmt":
            self.stmt(s.body)
        else:
            raise CompilationError(f"the CUDA printer does not support the TIR statement {kind}")

    def bind(self, var, value) -> None:
        text = self.expr(self.simplify(value) if dt(var) in ("int32", "int64") else value)
        for scope in reversed(self.declared):
            if var in scope:
                self.emit(f"{self.names[var]} = {text};")
                return
        name = self.names.get(var) or self.fresh(var.name)
        self.names[var] = name
        if var not in self.rebound and dt(var) in ("int32", "int64"):
            self.simplifier.bound(var, value)
        self.declared[-1].add(var)
        self.emit(f"{c_type(dt(var))} {name} = {text};")

    def for_(self, s) -> None:
        if s.kind == tirx.ForKind.THREAD_BINDING:
            tag = s.thread_binding.thread_tag
            if tag not in ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x"):
                raise CompilationError(f"the CUDA printer does not support the thread binding {tag}")
            self.names[s.loop_var] = f"((int){tag})"
            self.expr(s.extent)    # TVM's launcher passes the variables of the grid's extents
            self.simplifier.loop(s.loop_var, tirx.const(0, dt(s.loop_var)), s.extent)
            if tag == "threadIdx.x":
                self.threads = int(s.extent.value)
            self.stmt(s.body)
            return
        if s.kind not in (tirx.ForKind.SERIAL, tirx.ForKind.UNROLLED):
            raise CompilationError(f"the CUDA printer does not support {s.kind} loops")
        if s.step is not None and not (isinstance(s.step, tirx.IntImm) and int(s.step.value) == 1):
            raise CompilationError("the CUDA printer supports loops of step 1 only")
        ctype = c_type(dt(s.loop_var))
        lo = self.expr(s.min)
        extent = s.extent
        name = self.fresh(s.loop_var.name)
        self.names[s.loop_var] = name
        self.simplifier.loop(s.loop_var, s.min, extent)
        bound_text = self.expr(extent) if lo in ("0", "0LL") else f"{lo} + {self.expr(extent)}"
        if not isinstance(extent, tirx.IntImm):
            end = self.fresh(f"{name}_end")
            self.emit(f"const {ctype} {end} = {bound_text};")
            bound_text = end
        pragma = _unroll_pragma(s)
        if pragma:
            self.emit(pragma)
        self.emit(f"for ({ctype} {name} = {lo}; {name} < {bound_text}; ++{name}) {{")
        self.block(s.body)
        self.emit("}")

    # ------------------------------------------------------------------ the kernel
    def kernel(self, symbol: str) -> CudaKernel:
        self.collect_params()
        self.rebound = _rebound_vars(self.func.body)
        self.stmt(self.func.body)
        body = self.lines
        # TVM's order: pointers, then scalars, each by the TIR variable's name ("sema" < "sema_1")
        pointers = sorted((p for p in self.params.values() if p.is_pointer), key=lambda p: p.var.name)
        scalars = sorted((p for p in self.params.values() if not p.is_pointer),
                         key=lambda p: p.var.name)
        params = pointers + scalars
        decls = [f"{p.ctype} __restrict__ {p.name}" if p.is_pointer else f"{p.ctype} {p.name}"
                 for p in params]
        name = f"{symbol}_kernel"
        out = [PRELUDE, *self.float_preludes(), *self.helpers.values(), "",
               f'extern "C" __global__ void __launch_bounds__({self.threads}) '
               f"{name}({', '.join(decls)}) {{", *body, "}", ""]
        return CudaKernel("\n".join(out), name, params)

    def float_preludes(self) -> list:
        """The float16 / bfloat16 parts of the prelude the kernel needs: those of the types it
        prints, or that an intrinsic's helper names."""
        helpers = "".join(self.helpers.values())
        parts = []
        for prefix, words, prelude in (("float16", ("half", "__half"), PRELUDE_FLOAT16),
                                       ("bfloat16", ("nv_bfloat16", "__nv_bfloat16"), PRELUDE_BFLOAT16)):
            if any(t.startswith(prefix) for t in self.dtypes) or any(
                    re.search(rf"\b{w}", helpers) for w in words):
                parts.append(prelude)
        return parts


def _unroll_pragma(s) -> str:
    """The ``#pragma unroll`` line for the loop ``s`` ("" for none): a TIR unrolled loop and a
    serial loop annotated ``pragma_unroll_explicit = 0`` ask for full unrolling, one annotated
    ``pragma_unroll_explicit = n`` (n >= 1) for unrolling by n (``#pragma unroll 1``: the loop
    stays a loop, nvcc's heuristics do not unroll it)."""
    if s.kind == tirx.ForKind.UNROLLED:
        return "#pragma unroll"
    factor = s.annotations.get("pragma_unroll_explicit") if s.annotations else None
    if factor is None:
        return ""
    n = int(factor)
    return "#pragma unroll" if n == 0 else f"#pragma unroll {n}"


def _typed_root(info: _Buffer) -> str:
    """The view's root as a pointer to the view's element type."""
    ctype = c_type(info.dtype)
    return info.root if ctype == info.root_ctype else f"(({ctype}*){info.root})"


def _rebound_vars(body) -> set:
    """The variables bound by more than one ``Bind`` statement."""
    seen: set = set()
    twice: set = set()
    stack = [body]
    while stack:
        s = stack.pop()
        kind = type(s).__name__
        if kind == "SeqStmt":
            stack.extend(s.seq)
        elif kind in ("For", "While", "AttrStmt"):
            stack.append(s.body)
        elif kind == "IfThenElse":
            stack.append(s.then_case)
            if s.else_case is not None:
                stack.append(s.else_case)
        elif kind == "Bind":
            (twice if s.var in seen else seen).add(s.var)
    return twice


def print_cuda(func, symbol: Optional[str] = None) -> CudaKernel:
    """The CUDA translation unit of a lowered PrimFunc (``tilus.backend.codegen.lower_program``):
    one ``extern "C"`` kernel named ``<symbol>_kernel`` (default: the function's global symbol)."""
    if symbol is None:
        attrs = func.attrs
        symbol = str(attrs["global_symbol"]) if attrs is not None and "global_symbol" in attrs \
            else "kernel"
    return with_deep_stack(lambda: _Printer(func).kernel(symbol))
