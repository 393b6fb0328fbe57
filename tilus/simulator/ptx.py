"""PTX instruction semantics in numpy, written from the PTX ISA (one definition for all of Tilus).

Every function here is pure: registers in, registers out, vectorised over the threads of a block
(arrays whose first axis is the thread index ``t``; lane = t % 32, warp = t // 32). The simulator
(``tilus.simulator.machine``) feeds them from the evaluated TIR; ``tilus.backend.lowbit_cast`` uses
``lop3``/``prmt`` to evaluate its cast programs. No TVM, no memory model here.

References (PTX ISA 8.x):
- lop3.b32 (9.7.8.6): d = LUT applied bitwise to (a, b, c), with ta = 0xF0, tb = 0xCC, tc = 0xAA.
- prmt.b32 default mode (9.7.8.7): the 8 source bytes are {b, a} (a = bytes 0..3, b = 4..7);
  selector nibble i of c picks byte c[4i+2:4i] of the source for result byte i; nibble bit 3 set
  replicates that byte's sign bit (msb) over the result byte.
- shfl.sync (9.7.9.9): lane selection with c = (segmask << 8) | clamp, modes up/down/bfly/idx.
- ldmatrix (9.7.9.26): m8n8 b16 matrices; lane 8*j + r gives the address of row r of matrix j; the
  thread t receives, in destination register j, row t // 4, columns 2*(t % 4) + {0, 1} of matrix j
  (with .trans: row 2*(t % 4) + {0, 1}, column t // 4, i.e. the transposed matrix).
- fma.rn.{f16,bf16,f32}[x2] (9.7.4.5, 9.7.3.6): a*b + c computed exactly, rounded once to nearest
  even (``fma_rn``: round to odd in float64, then round to the type).
- mma.sync.aligned.m16n8k{8,16,32,64} (9.7.16.5.x; k8 f16/bf16/tf32, k16 f16/bf16, k32 s8/u8/e4m3,
  k64 s4): groupID = lane >> 2,
  threadID_in_group = lane % 4 (see ``mma_fragment``).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

WARP = 32


# ------------------------------------------------------------------ floating point

def fma_rn(a, b, c, npdt) -> np.ndarray:
    """fma.rn of float16/bfloat16/float32 operands: the exact a*b + c rounded once to ``npdt``.

    a*b is exact in float64 (<= 48 significand bits); s = a*b + c rounded to odd in float64 (from
    the TwoSum error) keeps the sticky bit, so the final rounding to <= 24 bits is correct; a
    float32 step rounded to odd as well keeps it correct for bfloat16."""
    p = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    s = p + c
    bp = s - c
    e = (p - (s - bp)) + (c - bp)
    s = _round_to_odd(s, e)
    if np.dtype(npdt) == np.float32 or np.dtype(npdt) == np.float16:
        return s.astype(npdt)
    with np.errstate(over="ignore", invalid="ignore"):
        f = s.astype(np.float32)
    return _round_to_odd(f, s - f.astype(np.float64)).astype(npdt)


def _round_to_odd(s: np.ndarray, err: np.ndarray) -> np.ndarray:
    """s (the value rounded to nearest) moved to the odd neighbour when ``err`` (exact - s) is
    not 0: truncation toward zero with a sticky last bit."""
    s = np.array(s)
    width = np.uint64 if s.dtype == np.float64 else np.uint32
    inexact = (np.asarray(err) != 0) & np.isfinite(s)
    toward_zero = inexact & (np.signbit(err) != np.signbit(s))
    bits = s.view(width) - toward_zero.astype(width)
    return (bits | inexact.astype(width)).view(s.dtype)


# ------------------------------------------------------------------ integer / bit instructions

def lop3(a, b, c, lut: int):
    """PTX lop3.b32: for every bit, result = LUT[(a << 2) | (b << 1) | c] (ta=0xF0, tb=0xCC, tc=0xAA)."""
    a, b, c = (np.asarray(v).astype(np.uint32) for v in (a, b, c))
    out = np.zeros(np.broadcast(a, b, c).shape, dtype=np.uint32)
    lut = int(lut) & 0xFF
    for idx in range(8):
        if (lut >> idx) & 1:
            ta = a if idx & 4 else ~a
            tb = b if idx & 2 else ~b
            tc = c if idx & 1 else ~c
            out |= ta & tb & tc
    return out


# prmt's other modes (PTX ISA 9.7.8.7, "prmt" mode table): c[1:0] = s picks result byte i =
# source byte sel(i, s); written here as default-mode selectors (no sign replication in these modes)
def _mode_selectors(sel):
    return tuple(sum(sel(i, s) << (4 * i) for i in range(4)) for s in range(4))


PRMT_MODES = {
    "f4e": _mode_selectors(lambda i, s: (s + i) % 8),       # forward 4 extract: 3210 4321 5432 6543
    "b4e": _mode_selectors(lambda i, s: (s - i) % 8),       # backward 4 extract: 5670 6701 7012 0123
    "rc8": _mode_selectors(lambda i, s: s),                 # replicate 8: 0000 1111 2222 3333
    "ecl": _mode_selectors(lambda i, s: max(i, s)),         # edge clamp left: 3210 3211 3222 3333
    "ecr": _mode_selectors(lambda i, s: min(i, s)),         # edge clamp right: 0000 1110 2210 3210
    "rc16": _mode_selectors(lambda i, s: 2 * (s % 2) + i % 2),  # replicate 16: 1010 3232 1010 3232
}


def prmt(a, b, c, mode: str | None = None):
    """PTX prmt.b32: default mode (``mode`` None or ""): result byte i = byte (c >> 4i) & 7 of the
    8-byte value {b, a} (a = bytes 0..3); when bit 3 of that selector nibble is set the byte's
    sign bit (bit 7) is replicated over all 8 bits. With ``mode`` (f4e, b4e, rc8, ecl, ecr, rc16)
    c[1:0] picks one of the mode's four fixed byte selections."""
    if mode:
        table = np.array(PRMT_MODES[mode], dtype=np.uint64)
        c = table[np.asarray(c).astype(np.uint64) & np.uint64(3)]
    a, b, c = (np.asarray(v).astype(np.uint64) & np.uint64(0xFFFFFFFF) for v in (a, b, c))
    src = (b << np.uint64(32)) | a
    out = np.zeros(np.broadcast(a, b, c).shape, dtype=np.uint64)
    for i in range(4):
        sel = (c >> np.uint64(4 * i)) & np.uint64(0xF)
        byte = (src >> ((sel & np.uint64(7)) * np.uint64(8))) & np.uint64(0xFF)
        sign = np.where((byte >> np.uint64(7)) & np.uint64(1), np.uint64(0xFF), np.uint64(0))
        byte = np.where(sel & np.uint64(8), sign, byte)
        out |= byte << np.uint64(8 * i)
    return out.astype(np.uint32)


# ------------------------------------------------------------------ warp shuffles

SHFL_MODES = ("up", "down", "bfly", "idx")


def shfl_c(mode: str, width: int = WARP) -> int:
    """The ``c`` operand CUDA's __shfl_*_sync(mask, v, b, width) passes to shfl.sync."""
    seg = (WARP - int(width)) << 8
    return seg if mode == "up" else seg | 0x1F


def shfl_source_lane(mode: str, lane, b, c):
    """PTX shfl.sync lane selection: (source lane j, pval). When pval is false d = own value."""
    lane = np.asarray(lane, dtype=np.int64) & 31
    bval = np.asarray(b, dtype=np.int64) & 31
    c = np.asarray(c, dtype=np.int64)
    cval = c & 31
    segmask = (c >> 8) & 31
    max_lane = (lane & segmask) | (cval & ~segmask & 31)
    min_lane = lane & segmask
    if mode == "up":
        j = lane - bval
        pval = j >= max_lane
    elif mode == "down":
        j = lane + bval
        pval = j <= max_lane
    elif mode == "bfly":
        j = lane ^ bval
        pval = j <= max_lane
    elif mode == "idx":
        j = min_lane | (bval & ~segmask & 31)
        pval = j <= max_lane
    else:
        raise ValueError(f"unknown shfl mode {mode!r}")
    j = np.where(pval, j, lane)
    return j, pval


def shfl(mode: str, values, b, c):
    """shfl.sync over whole warps: ``values`` [T, ...] (T a multiple of 32) -> (d, source thread)."""
    values = np.asarray(values)
    t = np.arange(values.shape[0])
    j, _ = shfl_source_lane(mode, t % WARP, np.broadcast_to(b, t.shape), np.broadcast_to(c, t.shape))
    src = (t // WARP) * WARP + j
    return values[src], src


# ------------------------------------------------------------------ ldmatrix

def ldmatrix_sources(num: int, trans: bool, nthreads: int):
    """For ldmatrix.sync.aligned.m8n8.x{num}{.trans}.shared.b16: for every thread t, destination
    register j and half h (h = 0: low 16 bits), the (thread whose address gives the row, byte offset
    added to that address). Returns (src_thread [T, num, 2], byte_offset [T, num, 2])."""
    if num not in (1, 2, 4):
        raise ValueError(f"ldmatrix .x{num} is not a PTX shape")
    t = np.arange(nthreads)[:, None, None]
    lane = t % WARP
    base = t - lane
    j = np.arange(num)[None, :, None]
    h = np.arange(2)[None, None, :]
    if not trans:
        row = lane // 4                      # row of matrix j this thread receives
        src = base + 8 * j + row
        off = 4 * (lane % 4) + 2 * h         # columns 2*(t%4) + h, 2 bytes each
    else:
        row = 2 * (lane % 4) + h             # element (row, col t//4) of the stored matrix
        src = base + 8 * j + row
        off = 2 * (lane // 4) + 0 * h
    src, off = np.broadcast_arrays(src, off)
    return src.copy(), off.copy()


# ------------------------------------------------------------------ mma.sync

_ELEM_BITS = {"f16": 16, "bf16": 16, "s8": 8, "u8": 8, "e4m3": 8, "s4": 4, "f32": 32, "s32": 32, "tf32": 32}
_NP = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "s8": np.int8, "u8": np.uint8,
       "e4m3": ml_dtypes.float8_e4m3fn,
       "f32": np.float32, "s32": np.int32}
MMA_SHAPES = {"m16n8k8": (16, 8, 8), "m16n8k16": (16, 8, 16), "m16n8k32": (16, 8, 32),
              "m16n8k64": (16, 8, 64)}


def mma_fragment(which: str, shape: str, ty: str):
    """(row, col) of every (lane, register, element-in-register) of an mma.m16n8kK fragment.

    Per the PTX ISA fragment tables (groupID g = lane >> 2, threadID_in_group t = lane % 4,
    e = 32 / bits elements per 32-bit register, r = register, s = element within it):
      A (M x K, .row):  row = g + 8 * (r % 2),        col = t * e + s + (K / 2) * (r // 2)
      B (K x N, .col):  row = t * e + s + (K / 2) * r, col = g
      C/D (M x N):      element i = r * e + s (c0..c3): row = g + 8 * (i // 2), col = 2 * t + i % 2
    Returns (rows, cols) int arrays of shape [32, nregs, e].
    """
    m, n, k = MMA_SHAPES[shape]
    bits = _ELEM_BITS[ty]
    e = 32 // bits if which in "ab" else (2 if bits == 16 else 1)
    nelem = {"a": m * k, "b": k * n, "c": m * n}[which] // WARP
    nregs = nelem // e
    lane = np.arange(WARP)[:, None, None]
    g, t = lane >> 2, lane % 4
    r = np.arange(nregs)[None, :, None]
    s = np.arange(e)[None, None, :]
    if which == "a":
        rows, cols = g + 8 * (r % 2), t * e + s + (k // 2) * (r // 2)
    elif which == "b":
        rows, cols = t * e + s + (k // 2) * r, g
    elif which == "c":
        i = r * e + s
        rows, cols = g + 8 * (i // 2), 2 * t + i % 2
    else:
        raise ValueError(which)
    rows, cols = np.broadcast_arrays(rows, cols)
    return rows.copy(), cols.copy()


def mma_num_regs(which: str, shape: str, ty: str) -> int:
    return mma_fragment(which, shape, ty)[0].shape[1]


def _unpack(regs: np.ndarray, ty: str) -> np.ndarray:
    """[T, nregs] 32-bit registers -> [T, nregs, e] elements of type ty."""
    regs = np.ascontiguousarray(regs)
    T, nregs = regs.shape
    if regs.dtype.itemsize != 4:
        raise ValueError(f"mma registers must be 32-bit, got {regs.dtype}")
    if ty == "s4":            # eight nibbles a register, element s in bits [4s, 4s + 4)
        nib = (regs.view(np.uint32)[:, :, None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF
        return (nib.astype(np.int64) ^ 8) - 8
    el = regs.view(_NP[ty])
    return el.reshape(T, nregs, -1)


def _gather(regs, which, shape, ty):
    """Registers of all threads -> per-warp matrices [W, rows, cols] as float64 / int64."""
    m, n, k = MMA_SHAPES[shape]
    dims = {"a": (m, k), "b": (k, n), "c": (m, n)}[which]
    if ty == "tf32":  # a 32-bit register whose low 13 mantissa bits the tensor core ignores
        bits = np.ascontiguousarray(regs).view(np.uint32) & np.uint32(0xFFFFE000)
        el = bits.view(np.float32)[:, :, None]
    elif ty in ("f32", "s32"):
        el = np.ascontiguousarray(regs).view(_NP[ty])[:, :, None]
    else:
        el = _unpack(regs, ty)
    T = el.shape[0]
    W = T // WARP
    rows, cols = mma_fragment(which, shape, ty)
    wide = np.int64 if ty in ("s8", "u8", "s4", "s32") else np.float64
    mat = np.zeros((W,) + dims, dtype=wide)
    el = el.reshape(W, WARP, *el.shape[1:]).astype(wide)
    mat[:, rows, cols] = el
    return mat


def mma(shape: str, dtype: str, atype: str, btype: str, ctype: str, a_regs, b_regs, c_regs):
    """mma.sync.aligned.{shape}.row.col.{dtype}.{atype}.{btype}.{ctype} for every warp of the block.

    a_regs [T, nA] and b_regs [T, nB] are 32-bit registers (any 4-byte numpy dtype, bits used);
    c_regs [T, nC] are the accumulator registers: float32 / int32 for f32 / s32, 32-bit words holding
    f16x2 for f16. Returns d [T, nD] (same representation as c). Floating products are summed in
    float64 and rounded once to the destination type (the hardware's internal order is unspecified);
    s32 accumulation wraps modulo 2^32 (no .satfinite).
    """
    if shape not in MMA_SHAPES:
        raise ValueError(f"mma shape {shape} is not modelled")
    T = np.asarray(a_regs).shape[0]
    if T % WARP:
        raise ValueError("mma.sync needs whole warps")
    A = _gather(np.asarray(a_regs), "a", shape, atype)
    B = _gather(np.asarray(b_regs), "b", shape, btype)
    C = _gather(np.asarray(c_regs), "c", shape, ctype)
    D = np.einsum("wmk,wkn->wmn", A, B) + C
    rows, cols = mma_fragment("c", shape, dtype)
    out = D[:, rows, cols].reshape(T, rows.shape[1], rows.shape[2])
    if dtype == "s32":
        return ((out.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32).reshape(T, -1)
    if dtype == "f32":
        return out.astype(np.float32).reshape(T, -1)
    if dtype == "f16":
        return np.ascontiguousarray(out.astype(np.float16)).view(np.uint32).reshape(T, -1)
    raise ValueError(f"mma destination type {dtype} is not modelled")
