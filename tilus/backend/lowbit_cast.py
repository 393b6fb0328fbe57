"""Packed low-bit -> half2 / bfloat162 conversions built from 32-bit word operations.

For a 1..8-bit type, a *cast program* turns the bit stream of N consecutive elements held in W
32-bit words (element i at stream bits [i*K, (i+1)*K), stream bit j = bit j%32 of word j//32) into
N/2 words, each holding two converted elements (lane 0 = bits 0..15, lane 1 = bits 16..31).
N = 32 / gcd(K, 32), W = N*K/32. ``program.outputs`` says which element indices land in which
output word and lane (the order is the cheap one, not necessarily 0,1 / 2,3 / ...; the layout
system or the weight packer accounts for it).

No per-element branches: the program is a straight line of

  shr/shl (by a constant), shf_r (funnel shift of two words), and/or/xor, iadd, lop3 (three
  inputs, 8-bit LUT), prmt (byte permute, default mode), and half2 / bfloat162 fma / mul / sub
  with constant operands.

How each kind of type is converted (``K`` bits, target fp16 has 10 mantissa bits, bf16 has 7):

- integers (``intK``/``uintK``): the exponent-bias magic number. The K-bit field is moved to lane
  bit q (any q with q + K <= mantissa bits), masked and OR-ed into the bits of 1024.0 (0x6400, fp16)
  or 128.0 (0x4300, bf16) with one ``lop3`` -- for signed types the field's sign bit is flipped in
  the same lop3 (XOR with magic ^ sign bit), which turns two's complement into offset binary --
  then one ``fma`` (or ``sub`` when q = 0) removes the magic and the offset and the 2^q scale:
  ``x * 2^-q - (magic * 2^-q + 2^(K-1) if signed)``. Exact: every step is exact in fp16/bf16.
  ``int8``/``uint8`` to fp16 use ``prmt`` with 0x64646464 to build both lanes at once.
  bf16 only holds 7 mantissa bits, so int8/uint8 -> bf16 is not provided (go through fp16 or fp32).
- finite floats ``floatK_eXmY`` and OCP ``float8_e4m3``/``float8_e5m2``: the exponent and mantissa
  bits go to the target's exponent/mantissa position (mantissa MSB under the target's mantissa MSB),
  the sign to bit 15, and one ``mul`` by 2^(bias_target - bias_source) fixes the exponent bias. This
  is exact for normals *and* subnormals (a source subnormal lands on a target subnormal with the
  same scale) as long as every value is in the target's range:
  fp16 (5 exponent bits, bias 15) holds every type with X <= 4, and float8_e5m2 is the top byte of
  an fp16 (no multiply, inf/NaN map to inf/NaN); finite-only types with X >= 5 have the all-ones
  exponent as normal numbers up to 2^16 or more, beyond fp16, so they convert to bf16 only.
  bf16 (8 exponent bits) holds every float type.
  OCP specials: float8_e4m3 (e4m3fn) has NaN at S.1111.111; its lanes get the top exponent bit
  (fp16) or the exponent (bf16) XOR-ed in where the code is NaN, from a per-byte flag computed
  once per word: ``((w & 0x7F7F7F7F) + 0x01010101)`` has bit 7 of a byte set exactly for NaN codes.
  float8_e5m2 -> bf16 does the same for the all-ones exponent (inf, NaN).

``cast_program(t, dst, exponent)`` multiplies every result by 2^exponent, exactly, rounded once:
the constants of the final fma/sub/mul absorb the power of two, and at ``free_exponent(t, dst)``
a float program has no multiply at all (its bias fix 2^(bias_target - bias_source) is left to the
caller, who folds it into a scale).

Half arithmetic in the evaluator is IEEE round-to-nearest-even on the exact result (the GPU's
``fma.rn.f16x2``/``mul.rn``), done in float64 and rounded once to the 16-bit format (numbers with
at most 11+11 significand bits are exact in float64). bf16 ``mul``/``sub`` map to ``fma.rn.bf16x2``
on sm_80 (``mul.rn.bf16x2`` needs sm_90): ``a*b + (-0.0)``.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import DataTypeError
from tilus.ir.inst import MAX_CAST_EXPONENT

MASK32 = 0xFFFFFFFF
TARGETS = ("float16", "bfloat16")

# ----------------------------------------------------------------------------------------------
# The instruction set and its evaluator
# ----------------------------------------------------------------------------------------------

INT_OPS = ("shl", "shr", "shf_r", "and", "or", "xor", "iadd", "lop3", "prmt")
HALF_OPS = ("fma", "mul", "sub")


@dataclass(frozen=True)
class Reg:
    """A 32-bit register of a cast program; inputs are registers 0..W-1."""

    index: int

    def __str__(self) -> str:
        return f"%r{self.index}"


def _fmt_operand(x) -> str:
    return str(x) if isinstance(x, Reg) else f"0x{x:08x}"


@dataclass(frozen=True)
class Op:
    """``dst = opcode(args...)``; integer immediates are uint32 bit patterns (for half ops: the
    bits of a half2/bfloat162 constant). ``lut`` is lop3's truth table, ``shift`` the shift amount
    of shl/shr/shf_r. ``ty`` is ``b32``, ``f16x2`` or ``bf16x2``."""

    opcode: str
    dst: Reg
    args: tuple
    ty: str = "b32"
    lut: int | None = None
    shift: int | None = None

    def __str__(self) -> str:
        ops = [_fmt_operand(a) for a in self.args]
        if self.shift is not None:
            ops.append(str(self.shift))
        if self.lut is not None:
            ops.append(f"0x{self.lut:02x}")
        name = {"shf_r": "shf.r.wrap"}.get(self.opcode, self.opcode)
        return f"{name}.{self.ty} {self.dst}, {', '.join(ops)};"


# lop3 / prmt from their PTX ISA definitions, written here independently of the simulator's
# (tilus.simulator.ptx checks the compiled kernels; a test compares the two on random words).
def lop3(a, b, c, lut: int) -> np.ndarray:
    """lop3.b32: bit i of the result is bit ``(a_i << 2) | (b_i << 1) | c_i`` of ``lut``."""
    a, b, c = (np.asarray(v).astype(np.uint64) & np.uint64(MASK32) for v in (a, b, c))
    out = np.zeros(np.broadcast(a, b, c).shape, dtype=np.uint64)
    table = np.array([(int(lut) >> i) & 1 for i in range(8)], dtype=np.uint64)
    for bit in range(32):
        s = np.uint64(bit)
        index = ((a >> s) & np.uint64(1)) * np.uint64(4) + ((b >> s) & np.uint64(1)) * np.uint64(2) \
            + ((c >> s) & np.uint64(1))
        out |= table[index.astype(np.int64)] << s
    return out.astype(np.uint32)


def prmt(a, b, c) -> np.ndarray:
    """prmt.b32, default mode: result byte i is byte ``c[4i+2:4i]`` of the bytes (a0..a3,
    b0..b3), or that byte's bit 7 copied to all eight bits when ``c[4i+3]`` is set."""
    a, b, c = (np.asarray(v).astype(np.uint64) & np.uint64(MASK32) for v in (a, b, c))
    shape = np.broadcast(a, b, c).shape
    source = np.stack([np.broadcast_to((w >> np.uint64(8 * j)) & np.uint64(0xFF), shape)
                       for w in (a, b) for j in range(4)])
    out = np.zeros(shape, dtype=np.uint64)
    for i in range(4):
        nibble = np.broadcast_to((c >> np.uint64(4 * i)) & np.uint64(0xF), shape).astype(np.int64)
        byte = np.take_along_axis(source, (nibble & 7)[None], axis=0)[0]
        replicated = np.where(byte >= 0x80, np.uint64(0xFF), np.uint64(0))
        out |= np.where(nibble >= 8, replicated, byte) << np.uint64(8 * i)
    return out.astype(np.uint32)


_FORMATS = {  # stored mantissa bits, minimum normal exponent, largest finite value
    "f16x2": (10, -14, 65504.0),
    "bf16x2": (7, -126, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)),
}


def _lanes_to_f64(bits: np.ndarray, ty: str) -> np.ndarray:
    bits = np.asarray(bits, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        if ty == "f16x2":
            return bits.view(np.float16).astype(np.float64)
        return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def _round_to_bits(x: np.ndarray, ty: str) -> np.ndarray:
    """Round float64 values once (nearest, ties to even) to fp16/bf16 and return the bit patterns."""
    mant, emin, fmax = _FORMATS[ty]
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        _, e = np.frexp(x)
        e = np.maximum(e - 1, emin)
        ulp = np.ldexp(1.0, e - mant)
        y = np.where(np.isfinite(x), np.rint(x / ulp) * ulp, x)
        y = np.where(np.abs(y) > fmax, np.copysign(np.inf, y), y)
    if ty == "f16x2":
        out = y.astype(np.float16).view(np.uint16)
        nan = 0x7FFF
    else:
        out = y.astype(np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
        nan = 0x7FFF
    return np.where(np.isnan(y), np.uint16(nan), out).astype(np.uint16)


def _half_op(opcode: str, ty: str, args: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(np.broadcast(*args).shape, dtype=np.uint32)
    for lane in (0, 1):
        vals = [_lanes_to_f64((a >> np.uint32(16 * lane)) & np.uint32(0xFFFF), ty) for a in args]
        with np.errstate(all="ignore"):
            if opcode == "fma":
                r = vals[0] * vals[1] + vals[2]
            elif opcode == "mul":
                r = vals[0] * vals[1]
            else:  # sub
                r = vals[0] - vals[1]
        out |= _round_to_bits(r, ty).astype(np.uint32) << np.uint32(16 * lane)
    return out


def run_op(op: Op, regs: dict[int, np.ndarray]) -> np.ndarray:
    args = [regs[a.index] if isinstance(a, Reg) else np.uint32(a) for a in op.args]
    args = [np.asarray(a, dtype=np.uint32) for a in args]
    code = op.opcode
    if code == "shl":
        return (args[0].astype(np.uint64) << np.uint64(op.shift)).astype(np.uint64) & np.uint64(MASK32)
    if code == "shr":
        return args[0] >> np.uint32(op.shift)
    if code == "shf_r":
        wide = (args[1].astype(np.uint64) << np.uint64(32)) | args[0].astype(np.uint64)
        return (wide >> np.uint64(op.shift)) & np.uint64(MASK32)
    if code == "and":
        return args[0] & args[1]
    if code == "or":
        return args[0] | args[1]
    if code == "xor":
        return args[0] ^ args[1]
    if code == "iadd":
        return ((args[0].astype(np.uint64) + args[1]) & np.uint64(MASK32))
    if code == "lop3":
        return lop3(args[0], args[1], args[2], op.lut)
    if code == "prmt":
        return prmt(args[0], args[1], args[2])
    if code in HALF_OPS:
        return _half_op(code, op.ty, args)
    raise ValueError(f"unknown opcode {code}")


# ----------------------------------------------------------------------------------------------
# Programs
# ----------------------------------------------------------------------------------------------

@dataclass
class CastProgram:
    """A straight-line conversion of W packed words into N/2 two-lane words."""

    src: DataType
    dst: str                       # "float16" or "bfloat16"
    num_words: int
    num_elements: int
    ops: list[Op] = field(default_factory=list)
    outputs: list[tuple[Reg, tuple[int, int]]] = field(default_factory=list)
    pair_stride: int = 1           # outputs pair block elements j and j + pair_stride
    byte_permute: bool = False     # the int8/uint8 prmt program (not the field-extraction one)

    @property
    def op_count(self) -> int:
        return len(self.ops)

    @property
    def ops_per_element(self) -> float:
        return self.op_count / self.num_elements

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for op in self.ops:
            hist[op.opcode] = hist.get(op.opcode, 0) + 1
        return hist

    def evaluate(self, words: np.ndarray) -> np.ndarray:
        """Run on a batch: ``words`` [..., W] uint32 -> [..., N] uint16 bits (element order)."""
        words = np.asarray(words, dtype=np.uint32)
        if words.shape[-1] != self.num_words:
            raise ValueError(f"{self.src.name} cast takes {self.num_words} words, got {words.shape[-1]}")
        regs = {i: words[..., i] for i in range(self.num_words)}
        for op in self.ops:
            regs[op.dst.index] = np.asarray(run_op(op, regs), dtype=np.uint64).astype(np.uint32)
        out = np.zeros(words.shape[:-1] + (self.num_elements,), dtype=np.uint16)
        for reg, (e0, e1) in self.outputs:
            v = regs[reg.index]
            out[..., e0] = (v & np.uint32(0xFFFF)).astype(np.uint16)
            out[..., e1] = (v >> np.uint32(16)).astype(np.uint16)
        return out

    def evaluate_values(self, words: np.ndarray) -> np.ndarray:
        """Like evaluate, as float32 values."""
        bits = self.evaluate(words)
        with np.errstate(invalid="ignore"):
            if self.dst == "float16":
                return bits.view(np.float16).astype(np.float32)
            return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)

    def __str__(self) -> str:
        head = (f"// {self.src.name} -> {self.dst}x2: {self.num_elements} elements in "
                f"{self.num_words} word(s) %r0..%r{self.num_words - 1}, {self.op_count} ops")
        body = [str(op) for op in self.ops]
        outs = [f"// {reg} = ({self.dst}[{e0}], {self.dst}[{e1}])" for reg, (e0, e1) in self.outputs]
        return "\n".join([head, *body, *outs])


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Req:
    """A field of stream ``source`` starting at stream bit ``start`` (``nbits`` wide) that must
    land at bit q of ``lane`` (q from ``qs``); it contributes ``mask_of(q)`` bits of the lane."""

    source: str
    lane: int
    start: int
    nbits: int
    qs: tuple
    fixed_mask: int | None = None   # lane mask independent of q (flag streams)

    def mask(self, q: int) -> int:
        if self.fixed_mask is not None:
            return self.fixed_mask
        return ((1 << self.nbits) - 1) << q


class _Builder:
    def __init__(self, src: DataType, dst: str, num_words: int, num_elements: int):
        self.prog = CastProgram(src, dst, num_words, num_elements)
        self.next_reg = num_words
        self.memo: dict[tuple, Reg] = {}
        self.sources: dict[str, list[Reg]] = {"w": [Reg(i) for i in range(num_words)]}
        self.source_factories: dict[str, object] = {}

    # -- emitting with common-subexpression memo ------------------------------------------------
    def emit(self, opcode, args, ty="b32", lut=None, shift=None, memo=True) -> Reg:
        key = (opcode, tuple(args), ty, lut, shift)
        if memo and key in self.memo:
            return self.memo[key]
        reg = Reg(self.next_reg)
        self.next_reg += 1
        self.prog.ops.append(Op(opcode, reg, tuple(args), ty, lut, shift))
        self.memo[key] = reg
        return reg

    def would_emit(self, opcode, args, ty="b32", lut=None, shift=None) -> int:
        return 0 if (opcode, tuple(args), ty, lut, shift) in self.memo else 1

    def source_words(self, name: str) -> list[Reg]:
        if name not in self.sources:
            self.sources[name] = self.source_factories[name](self)
        return self.sources[name]

    # -- windows ----------------------------------------------------------------------------------
    def plain_window(self, source: str, S: int, lo: int, hi: int, dry: bool):
        """A word whose bit b holds stream bit S + b for every needed stream bit in [lo, hi):
        a word itself, a shift of one word or a funnel shift of two. Returns (cost, reg)."""
        j, s = S // 32, S % 32
        first, last = lo // 32, (hi - 1) // 32
        if last > first + 1 or first < max(j, 0) or last > j + 1 or last >= self.prog.num_words:
            return None
        if first == last == j:
            spec = None if s == 0 else ("shr", (first,), s)
        elif first == last:            # the needed bits are all in word j + 1
            spec = ("shl", (first,), 32 - s)
        else:
            spec = ("shf_r", (j, j + 1), s)
        pending = source not in self.sources
        if dry:
            cost = self._source_cost(source) if pending else 0
            if spec is not None:
                if pending:
                    cost += 1
                else:
                    words = self.sources[source]
                    cost += self.would_emit(spec[0], [words[i] for i in spec[1]], shift=spec[2])
            return cost, None
        words = self.source_words(source)
        if spec is None:
            return 0, words[first]
        return 0, self.emit(spec[0], [words[i] for i in spec[1]], shift=spec[2])

    def prmt_window(self, source: str, S0: int, S1: int, reqs, dry: bool):
        """prmt gathering stream bytes [c0, c0+1] into lane 0 and [c1, c1+1] into lane 1, then a
        shift by t (|t| < 8), so lane L's bit b holds stream bit S_L + b."""
        if (S0 - S1) % 8:
            return None
        best = None
        for t in ((S0 % 8), (S0 % 8) - 8):
            c = [(S0 - t) // 8, (S1 - t) // 8]
            ok = True
            for r, q in reqs:
                p = r.start - 8 * c[r.lane]
                if p < 0 or p + r.nbits > 16:
                    ok = False
            if not ok:
                continue
            n_bytes = self.prog.num_words * 4
            bytes_ = [c[0], c[0] + 1, c[1], c[1] + 1]
            words_needed = sorted({b // 4 for b in bytes_ if 0 <= b < n_bytes})
            if len(words_needed) > 2:
                continue
            if len(words_needed) == 1:
                words_needed = words_needed * 2
            sel = 0
            for i, b in enumerate(bytes_):
                if 0 <= b < n_bytes:
                    nib = (b % 4) if b // 4 == words_needed[0] else 4 + (b % 4)
                else:
                    nib = 0
                sel |= nib << (4 * i)
            pending = source not in self.sources
            cost = self._source_cost(source) if pending else 0
            if dry:
                if pending:
                    cost += 1 + (t != 0)
                else:
                    words = self.sources[source]
                    a, b = words[words_needed[0]], words[words_needed[1]]
                    cost += self.would_emit("prmt", [a, b, sel])
                    if t:
                        key_reg = self.memo.get(("prmt", (a, b, sel), "b32", None, None))
                        if key_reg is None:
                            cost += 1
                        else:
                            cost += self.would_emit("shr" if t > 0 else "shl", [key_reg],
                                                    shift=abs(t))
                cand = (cost, None)
            else:
                words = self.source_words(source)
                a, b = words[words_needed[0]], words[words_needed[1]]
                reg = self.emit("prmt", [a, b, sel])
                if t > 0:
                    reg = self.emit("shr", [reg], shift=t)
                elif t < 0:
                    reg = self.emit("shl", [reg], shift=-t)
                cand = (cost, reg)
            if best is None or cand[0] < best[0]:
                best = cand
                if not dry:
                    return best
        return best

    def _source_cost(self, name: str) -> int:
        return getattr(self.source_factories[name], "cost", 0) if name in self.source_factories else 0

    def group_window(self, group, qs, dry: bool):
        """Cheapest window for reqs ``group`` placed at ``qs``: (cost, reg, kind) or None."""
        source = group[0].source
        S = {}
        for r, q in zip(group, qs):
            s_lane = r.start - q - 16 * 0
            if S.setdefault(r.lane, s_lane) != s_lane:
                return None
        cands = []
        # a plain (shifted / funnel-shifted) window: lane 1 sits 16 stream bits after lane 0
        if not (0 in S and 1 in S and S[1] != S[0] + 16):
            base = S[0] if 0 in S else S[1] - 16
            lo = min(r.start for r in group)
            hi = max(r.start + r.nbits for r in group)
            plain = self.plain_window(source, base, lo, hi, dry=True)
            if plain is not None:
                cands.append((plain[0], "plain", base, lo, hi))
        if 0 in S and 1 in S:
            pw = self.prmt_window(source, S[0], S[1], list(zip(group, qs)), dry=True)
            if pw is not None:
                cands.append((pw[0] + 0.5, "prmt"))  # prefer plain windows on ties
        if not cands:
            return None
        best = min(cands, key=lambda c: c[0])
        if dry:
            return best[0], None, best[1]
        if best[1] == "plain":
            reg = self.plain_window(source, best[2], best[3], best[4], dry=False)[1]
        else:
            reg = self.prmt_window(source, S[0], S[1], list(zip(group, qs)), dry=False)[1]
        return best[0], reg, best[1]


def _set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _set_partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]
        yield [[first]] + part


def _plan_pair(b: _Builder, reqs: list[_Req]):
    """Choose windows for one output word: returns [(group, qs)] with the least new ops."""
    best = None
    for part in _set_partitions(list(reqs)):
        if any(len({r.source for r in g}) > 1 for g in part):
            continue
        total = 0.0
        plan = []
        for g in part:
            gbest = None
            for qs in itertools.product(*[r.qs for r in g]):
                w = b.group_window(g, qs, dry=True)
                if w is None:
                    continue
                key = (w[0], sum(qs))
                if gbest is None or key < gbest[0]:
                    gbest = (key, qs)
            if gbest is None:
                break
            total += gbest[0][0] + 1  # the window, then one lop3 to merge it
            plan.append((g, gbest[1]))
        else:
            if best is None or total < best[0]:
                best = (total, plan)
    if best is None:
        raise AssertionError("no window plan")  # pragma: no cover
    return best[1]


def _emit_merge(b: _Builder, plan, const_of) -> tuple[Reg, dict]:
    """Materialise the windows of ``plan`` and merge them: acc = C; acc ^= window & mask."""
    q_of = {}
    acc = None
    for g, qs in plan:
        _, reg, _ = b.group_window(g, qs, dry=False)
        mask = 0
        for r, q in zip(g, qs):
            mask |= r.mask(q) << (16 * r.lane)
            q_of[(r.source, r.lane, r.start)] = q
        if acc is None:
            q_of_now = dict(q_of)
            c = const_of(q_of_now, plan)
            if c == 0:
                acc = b.emit("and", [reg, mask], memo=False)
            else:
                acc = b.emit("lop3", [reg, mask, c], lut=0x6A, memo=False)
        else:
            acc = b.emit("lop3", [reg, mask, acc], lut=0x6A, memo=False)
    return acc, q_of


def _half_bits(values, dst: str) -> int:
    """Two lane constants -> the uint32 half2/bfloat162 bit pattern (DataTypeError when a constant
    is not exact in ``dst``: a program's power-of-two ``exponent`` can push one out of range)."""
    ty = "f16x2" if dst == "float16" else "bf16x2"
    out = 0
    for lane, v in enumerate(values):
        bits = int(_round_to_bits(np.array([v], dtype=np.float64), ty)[0])
        if float(_lanes_to_f64(np.array([bits], dtype=np.uint16), ty)[0]) != v:
            raise DataTypeError(f"constant {v} of the packed cast is not exact in {dst}")
        out |= bits << (16 * lane)
    return out


def _affine(b: "_Builder", acc: Reg, scale: list[float], bias: list[float], dst: str) -> Reg:
    """``acc * scale + bias`` per lane, rounded once: a ``sub`` when the scale is 1, else an fma."""
    ty = "f16x2" if dst == "float16" else "bf16x2"
    if scale == [1.0, 1.0]:
        return b.emit("sub", [acc, _half_bits([-x for x in bias], dst)], ty=ty, memo=False)
    return b.emit("fma", [acc, _half_bits(scale, dst), _half_bits(bias, dst)], ty=ty, memo=False)


def _mantissa_bits(dst: str) -> int:
    return 10 if dst == "float16" else 7


def _pairs(n: int, d: int) -> list[tuple[int, int]]:
    return [(base + i, base + d + i) for base in range(0, n, 2 * d) for i in range(d)]


def _block_shape(k: int) -> tuple[int, int]:
    n = 32 // math.gcd(k, 32)
    return n, n * k // 32


# --- integers ------------------------------------------------------------------------------------

def _int_program(t: DataType, dst: str, d: int, exponent: int = 0) -> CastProgram:
    k = t.nbits
    n, w = _block_shape(k)
    mant = _mantissa_bits(dst)
    magic_val = float(1 << mant)
    magic_bits = 0x6400 if dst == "float16" else 0x4300
    signed = t.kind == "int"
    b = _Builder(t, dst, w, n)
    b.prog.pair_stride = d
    qs = tuple(range(0, mant - k + 1))
    for e0, e1 in _pairs(n, d):
        reqs = [_Req("w", 0, e0 * k, k, qs), _Req("w", 1, e1 * k, k, qs)]
        plan = _plan_pair(b, reqs)

        def const_of(q_of, plan):
            c = 0
            for (src, lane, start), q in _all_q(plan).items():
                c |= (magic_bits ^ ((1 << (q + k - 1)) if signed else 0)) << (16 * lane)
            return c

        acc, _ = _emit_merge(b, plan, const_of)
        q = _all_q(plan)
        q0 = q[("w", 0, e0 * k)]
        q1 = q[("w", 1, e1 * k)]
        off = float(1 << (k - 1)) if signed else 0.0
        f = 2.0 ** exponent
        scale = [2.0 ** -q0 * f, 2.0 ** -q1 * f]
        bias = [-(magic_val * 2.0 ** -q0 + off) * f, -(magic_val * 2.0 ** -q1 + off) * f]
        b.prog.outputs.append((_affine(b, acc, scale, bias, dst), (e0, e1)))
    return b.prog


def _all_q(plan) -> dict:
    out = {}
    for g, qs in plan:
        for r, q in zip(g, qs):
            out[(r.source, r.lane, r.start)] = q
    return out


def _byte_int_fp16_program(t: DataType, exponent: int = 0) -> CastProgram:
    """int8/uint8 -> fp16: prmt each byte under 0x64 (1024 + code), then one sub (an fma when
    the result is scaled by 2^exponent)."""
    b = _Builder(t, "float16", 1, 4)
    b.prog.byte_permute = True
    signed = t.kind == "int"
    x = b.emit("xor", [Reg(0), 0x80808080]) if signed else Reg(0)
    f = 2.0 ** exponent
    bias = -(1024.0 + (128.0 if signed else 0.0)) * f
    for e0, e1, sel in ((0, 1, 0x4140), (2, 3, 0x4342)):
        h = b.emit("prmt", [x, 0x64646464, sel])
        b.prog.outputs.append((_affine(b, h, [f, f], [bias, bias], "float16"), (e0, e1)))
    return b.prog


# --- floats --------------------------------------------------------------------------------------

def _flag_source(field_mask: int, replicate: bool):
    """Derived per-word stream: bit 7 of each byte set where (byte & field_mask) == field_mask
    (field_mask is contiguous and ends at bit 6); with ``replicate`` the whole byte is 0xFF."""
    lsb = field_mask & -field_mask

    def make(b: _Builder) -> list[Reg]:
        regs = []
        for wreg in b.sources["w"]:
            f = b.emit("and", [wreg, field_mask * 0x01010101])
            f = b.emit("iadd", [f, lsb * 0x01010101])
            if replicate:
                f = b.emit("prmt", [f, 0, 0xBA98])
            regs.append(f)
        return regs

    make.cost = 2 + replicate  # per word, paid by the first user (approximate)
    return make


def _float_program(t: DataType, dst: str, d: int, exponent: int = 0) -> CastProgram:
    k, y = t.nbits, t.mantissa_bits
    n, w = _block_shape(k)
    mant = _mantissa_bits(dst)
    b = _Builder(t, dst, w, n)
    b.prog.pair_stride = d
    ty = "f16x2" if dst == "float16" else "bf16x2"
    special_xor = 0
    flag_field = 0
    if t.name == "float8_e4m3":           # e4m3fn: S.1111.111 is NaN
        flag_field = 0x7F
        special_xor = 0x4000 if dst == "float16" else 0x7800
    elif t.name == "float8_e5m2" and dst == "bfloat16":   # all-ones exponent: inf / NaN
        flag_field = 0x7C
        special_xor = 0x7000
    if special_xor:
        single = special_xor & (special_xor - 1) == 0
        b.source_factories["flag"] = _flag_source(flag_field, replicate=not single)
    bias_t = 15 if dst == "float16" else 127
    factor = 2.0 ** (bias_t - t.exponent_bias + exponent)
    for e0, e1 in _pairs(n, d):
        reqs = []
        for lane, e in ((0, e0), (1, e1)):
            a = e * k
            q_em = mant - y
            if q_em + k - 1 == 15:        # sign adjacent to exponent (e5m2 -> fp16): one field
                reqs.append(_Req("w", lane, a, k, (q_em,)))
            else:
                reqs.append(_Req("w", lane, a, k - 1, (q_em,)))
                reqs.append(_Req("w", lane, a + k - 1, 1, (15,)))
            if special_xor:
                if special_xor & (special_xor - 1) == 0:  # one bit: the flag bit itself
                    qb = special_xor.bit_length() - 1
                    reqs.append(_Req("flag", lane, a + 7, 1, (qb,)))
                else:                                     # several bits: the replicated byte
                    lo = special_xor.bit_length() - bin(special_xor).count("1")
                    qs = tuple(q for q in range(0, 9) if q <= lo and q + 8 >= special_xor.bit_length())
                    reqs.append(_Req("flag", lane, a, 8, qs, fixed_mask=special_xor))
        plan = _plan_pair(b, reqs)
        acc, _ = _emit_merge(b, plan, lambda q_of, plan: 0)
        if factor != 1.0:
            acc = b.emit("mul", [acc, _half_bits([factor, factor], dst)], ty=ty, memo=False)
        b.prog.outputs.append((acc, (e0, e1)))
    return b.prog


# --- entry points --------------------------------------------------------------------------------

def supported_targets(t: "DataType | str") -> tuple[str, ...]:
    """Which of float16 / bfloat16 a type converts to exactly with a packed cast program."""
    t = dtypes.get(t)
    if t.kind in ("int", "uint") and t.nbits <= 8:
        return ("float16", "bfloat16") if t.nbits <= 7 else ("float16",)
    if t.kind == "float" and t.nbits <= 8:
        if t.exponent_bits <= 4 or t.name == "float8_e5m2":
            return ("float16", "bfloat16")
        return ("bfloat16",)
    return ()


def _candidate_ds(n: int) -> list[int]:
    return [d for d in range(1, n // 2 + 1) if n % (2 * d) == 0]


@functools.lru_cache(maxsize=None)
def _cast_program_cached(name: str, dst: str, exponent: int = 0) -> CastProgram:
    t = dtypes.get(name)
    make = _int_program if t.kind in ("int", "uint") else _float_program
    if exponent:
        # The pairing is chosen at exponent 0 (it is part of the packed weight format); the
        # power of two only changes the constants of the final mul/fma/sub.
        base = _cast_program_cached(name, dst)
        if base.byte_permute:
            return _byte_int_fp16_program(t, exponent)
        return make(t, dst, base.pair_stride, exponent)
    n, _ = _block_shape(t.nbits)
    best = None
    for d in _candidate_ds(n):
        prog = make(t, dst, d)
        if best is None or prog.op_count < best.op_count:
            best = prog
    if t.kind in ("int", "uint") and t.nbits == 8 and dst == "float16":
        prmt_prog = _byte_int_fp16_program(t)
        if prmt_prog.op_count <= best.op_count:
            best = prmt_prog
    return best


def free_exponent(t: "DataType | str", dst: str = "float16") -> int:
    """The ``exponent`` at which the packed cast of a float type to ``dst`` needs no half
    multiply: its exponent-bias fix, ``2^(bias_dst - bias_t)``, is left to the caller (who can
    fold it into a scale). Integer types absorb any exponent in their fma: 0."""
    t = dtypes.get(t)
    if t.kind != "float":
        return 0
    return t.exponent_bias - dtypes.get(dst).exponent_bias


def cast_program(t: "DataType | str", dst: str = "float16", exponent: int = 0) -> CastProgram:
    """The packed conversion of low-bit type ``t`` to ``dst`` ("float16" or "bfloat16"), each
    result multiplied by 2^exponent (exactly, then rounded once to ``dst``). DataTypeError when
    there is none (or the power of two pushes one of its constants out of ``dst``'s range)."""
    t = dtypes.get(t)
    dst = {"f16": "float16", "half": "float16", "bf16": "bfloat16"}.get(dst, dst)
    if dst not in TARGETS:
        raise DataTypeError(f"packed casts produce float16 or bfloat16 pairs, not {dst!r}")
    targets = supported_targets(t)
    if not targets:
        raise DataTypeError(f"no packed cast for {t.name}: only 1..8-bit int, uint and float types")
    if dst not in targets:
        why = ("its exponent range exceeds float16 (5 exponent bits, bias 15)" if t.is_float
               else "bfloat16 has 7 mantissa bits, fewer than the 8 of the type")
        raise DataTypeError(f"{t.name} has no exact packed cast to {dst}: {why}; "
                            f"use {' or '.join(targets)}")
    if not isinstance(exponent, int) or not -MAX_CAST_EXPONENT <= exponent <= MAX_CAST_EXPONENT:
        raise DataTypeError(f"cast exponent must be an int in [-{MAX_CAST_EXPONENT}, "
                            f"{MAX_CAST_EXPONENT}], got {exponent!r}")
    return _cast_program_cached(t.name, dst, exponent)


def all_cast_programs() -> dict[tuple[str, str], CastProgram]:
    """Every (type, target) pair that has a packed cast."""
    out = {}
    for t in dtypes.lowbit_types():
        for dst in supported_targets(t):
            out[(t.name, dst)] = cast_program(t, dst)
    return out


# ----------------------------------------------------------------------------------------------
# A first emitter: CUDA C++ with inline PTX (the TIR emitter will follow the same table)
# ----------------------------------------------------------------------------------------------

_PTX_INT = {"shl": "shl.b32", "shr": "shr.u32", "shf_r": "shf.r.wrap.b32", "and": "and.b32",
            "or": "or.b32", "xor": "xor.b32", "iadd": "add.u32", "lop3": "lop3.b32",
            "prmt": "prmt.b32"}


def ptx_lines(prog: CastProgram) -> list[tuple[str, Reg, list, list]]:
    """(mnemonic, dst, sources, trailing literals) per op: sources are Reg or uint32 immediates
    (bound to registers), literals are shift amounts and lop3 LUTs. bf16 mul/sub become
    fma.rn.bf16x2 (mul/sub.bf16x2 need sm_90): a*c + (-0.0) and a*1 + (-c)."""
    out = []
    for op in prog.ops:
        tail = ([op.shift] if op.shift is not None else []) + ([op.lut] if op.lut is not None else [])
        if op.opcode in _PTX_INT:
            out.append((_PTX_INT[op.opcode], op.dst, list(op.args), tail))
        elif op.ty == "f16x2":
            out.append((f"{op.opcode}.rn.f16x2", op.dst, list(op.args), []))
        else:
            a, *consts = op.args
            if op.opcode == "fma":
                srcs = [a, *consts]
            elif op.opcode == "mul":
                srcs = [a, consts[0], 0x80008000]
            else:
                srcs = [a, 0x3F803F80, consts[0] ^ 0x80008000]
            out.append(("fma.rn.bf16x2", op.dst, srcs, []))
    return out


def to_cuda(prog: CastProgram, name: str | None = None) -> str:
    """A ``__device__`` function ``void name(const uint32_t (&in)[W], uint32_t (&out)[N/2])``;
    out[i] holds the elements ``prog.outputs[i][1]``. Plain (non-volatile) asm: nvcc may schedule
    and share the constants."""
    name = name or f"tilus_cast_{prog.src.name}_to_{prog.dst}"
    lines = [f"__device__ __forceinline__ void {name}(const uint32_t (&in)[{prog.num_words}], "
             f"uint32_t (&out)[{len(prog.outputs)}]) {{"]
    lines += [f"  uint32_t r{i} = in[{i}];" for i in range(prog.num_words)]
    for text, dst, srcs, tail in ptx_lines(prog):
        binds = [f'"r"(r{s.index})' if isinstance(s, Reg) else f'"r"({s}u)' for s in srcs]
        ops = ["%0"] + [f"%{i + 1}" for i in range(len(srcs))] + [str(t) for t in tail]
        lines.append(f"  uint32_t r{dst.index};")
        lines.append(f'  asm("{text} {", ".join(ops)};" : "=r"(r{dst.index}) : {", ".join(binds)});')
    lines += [f"  out[{i}] = r{reg.index};" for i, (reg, _) in enumerate(prog.outputs)]
    lines.append("}")
    return "\n".join(lines)
