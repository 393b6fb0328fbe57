"""Tensor-core fragments and ldmatrix maps as products of primitives, one warp (32 lanes) each.

Slot ``i`` of a fragment is element ``a_i`` / ``b_i`` / ``c_i`` of the PTX ISA's fragment tables
(registers hold consecutive elements, low to high). The sections cited are those of the PTX ISA
(release 8.x), chapter 9.7.14 "Warp Level Matrix Multiply-Accumulate Instructions".
"""
from __future__ import annotations

import math
from typing import Optional

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import LayoutError
from tilus.ir.layout.primitives import column_local, column_spatial, local, replicate, spatial
from tilus.ir.layout.register import RegisterLayout


def mma_m16n8k16_f16_a() -> RegisterLayout:
    """A (16x16, f16/bf16) of mma.m16n8k16, PTX ISA §9.7.14.5.8 "Matrix Fragments for
    mma.m16n8k16 with floating point type": row = groupID (+8 for a2,a3,a6,a7),
    col = threadID_in_group*2 + (i & 1) (+8 for a4..a7)."""
    return column_local(2, 2) * spatial(8, 4) * local(1, 2)


def mma_m16n8k16_f16_b() -> RegisterLayout:
    """B (16x8, f16/bf16) of mma.m16n8k16, PTX ISA §9.7.14.5.8: row = threadID_in_group*2 +
    (i & 1) (+8 for b2,b3), col = groupID."""
    return local(2, 1) * column_spatial(4, 8) * local(2, 1)


def mma_m16n8k16_f16_c() -> RegisterLayout:
    """C/D (16x8, f16/f32) of mma.m16n8k16, PTX ISA §9.7.14.5.8: row = groupID (+8 for c2,c3),
    col = threadID_in_group*2 + (i & 1)."""
    return local(2, 1) * spatial(8, 4) * local(1, 2)


def mma_m16n8k32_s8_a() -> RegisterLayout:
    """A (16x32, s8/u8) of mma.m16n8k32, PTX ISA §9.7.14.5.10 "Matrix Fragments for
    mma.m16n8k32": row = groupID (+8 for a4..a7, a12..a15), col = threadID_in_group*4 +
    (i & 3) (+16 for a8..a15)."""
    return column_local(2, 2) * spatial(8, 4) * local(1, 4)


def mma_m16n8k32_s8_b() -> RegisterLayout:
    """B (32x8, s8/u8) of mma.m16n8k32, PTX ISA §9.7.14.5.10: row = threadID_in_group*4 +
    (i & 3) (+16 for b4..b7), col = groupID."""
    return local(2, 1) * column_spatial(4, 8) * local(4, 1)


def mma_m16n8k32_s8_c() -> RegisterLayout:
    """C/D (16x8, s32) of mma.m16n8k32, PTX ISA §9.7.14.5.10: row = groupID (+8 for c2,c3),
    col = threadID_in_group*2 + (i & 1)."""
    return local(2, 1) * spatial(8, 4) * local(1, 2)


def mma_m16n8k64_s4_a() -> RegisterLayout:
    """A (16x64, s4/u4) of mma.m16n8k64, PTX ISA §9.7.14.5.11 "Matrix Fragments for
    mma.m16n8k64": row = groupID (+8 for a8..a15, a24..a31), col = threadID_in_group*8 +
    (i & 7) (+32 for a16..a31)."""
    return column_local(2, 2) * spatial(8, 4) * local(1, 8)


def mma_m16n8k64_s4_b() -> RegisterLayout:
    """B (64x8, s4/u4) of mma.m16n8k64, PTX ISA §9.7.14.5.11: row = threadID_in_group*8 +
    (i & 7) (+32 for b8..b15), col = groupID."""
    return local(2, 1) * column_spatial(4, 8) * local(8, 1)


def mma_m16n8k8_tf32_a() -> RegisterLayout:
    """A (16x8, tf32) of mma.m16n8k8, PTX ISA §9.7.14.5.7 "Matrix Fragments for mma.m16n8k8":
    row = groupID (+8 for a1,a3), col = threadID_in_group (+4 for a2,a3)."""
    return column_local(2, 2) * spatial(8, 4)


def mma_m16n8k8_tf32_b() -> RegisterLayout:
    """B (8x8, tf32) of mma.m16n8k8, PTX ISA §9.7.14.5.7: row = threadID_in_group (+4 for b1),
    col = groupID."""
    return local(2, 1) * column_spatial(4, 8)


def mma_m16n8k8_tf32_c() -> RegisterLayout:
    """C/D (16x8, f32) of mma.m16n8k8, PTX ISA §9.7.14.5.7: row = groupID (+8 for c2,c3),
    col = threadID_in_group*2 + (i & 1)."""
    return local(2, 1) * spatial(8, 4) * local(1, 2)


def mma_fragments(shape: str, ptx_type: str) -> tuple[RegisterLayout, RegisterLayout, RegisterLayout]:
    """(A, B, C) fragments of ``mma.sync.<shape>`` with PTX operand type ``ptx_type`` (f16, bf16, s8,
    u8, e4m3, s4, tf32), e.g. ``mma_fragments("m16n8k16", "f16")``."""
    table = {
        ("m16n8k16", "f16"): (mma_m16n8k16_f16_a, mma_m16n8k16_f16_b, mma_m16n8k16_f16_c),
        ("m16n8k16", "bf16"): (mma_m16n8k16_f16_a, mma_m16n8k16_f16_b, mma_m16n8k16_f16_c),
        ("m16n8k32", "s8"): (mma_m16n8k32_s8_a, mma_m16n8k32_s8_b, mma_m16n8k32_s8_c),
        ("m16n8k32", "u8"): (mma_m16n8k32_s8_a, mma_m16n8k32_s8_b, mma_m16n8k32_s8_c),
        # PTX ISA §9.7.14.5.10: .e4m3 at m16n8k32 has the 8-bit fragments of .s8 (f32 C/D)
        ("m16n8k32", "e4m3"): (mma_m16n8k32_s8_a, mma_m16n8k32_s8_b, mma_m16n8k32_s8_c),
        ("m16n8k64", "s4"): (mma_m16n8k64_s4_a, mma_m16n8k64_s4_b, mma_m16n8k32_s8_c),
        ("m16n8k8", "tf32"): (mma_m16n8k8_tf32_a, mma_m16n8k8_tf32_b, mma_m16n8k8_tf32_c),
    }
    if (shape, ptx_type) not in table:
        raise LayoutError(f"no mma fragments for {shape} on {ptx_type}; known: {sorted(table)}")
    return tuple(f() for f in table[(shape, ptx_type)])  # type: ignore[return-value]


def _check_num(num: int) -> None:
    if num not in (1, 2, 4):
        raise LayoutError(f"ldmatrix loads 1, 2 or 4 matrices (.x1/.x2/.x4), not {num}")


def ldmatrix_addresses(num: int) -> RegisterLayout:
    """Which lane supplies which row address of ldmatrix.m8n8.x{num}, over shape (num, 8) =
    (matrix, row): lane l gives row l % 8 of matrix l // 8 (lanes >= 8*num are unused). PTX ISA
    §9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix"; the same with .trans."""
    _check_num(num)
    return spatial(num, 8)


def ldmatrix_fragment(num: int, trans: bool = False) -> RegisterLayout:
    """What each lane receives from ldmatrix.m8n8.x{num}.b16, over shape (num, 8, 8) = (matrix,
    row, col) of the matrices as stored: register (slot pair) j holds matrix j, lane t gets
    (t // 4, 2*(t % 4) + {0, 1}), or with .trans the transposed (2*(t % 4) + {0, 1}, t // 4).
    PTX ISA §9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix"."""
    _check_num(num)
    if trans:
        return local(num, 1, 1) * column_spatial(1, 4, 8) * local(1, 2, 1)
    return local(num, 1, 1) * spatial(1, 8, 4) * local(1, 1, 2)


# ----- tilings of a whole dot by mma (layout inference picks one, the dot emitter reads it) -----
_MMA_CONFIGS = {
    # (operand dtype, accumulator dtype) -> (instruction shape, fragments key)
    "f16": ((16, 8, 16), ("m16n8k16", "f16")),
    "bf16": ((16, 8, 16), ("m16n8k16", "bf16")),
    "s8": ((16, 8, 32), ("m16n8k32", "s8")),
    "u8": ((16, 8, 32), ("m16n8k32", "u8")),
    "e4m3": ((16, 8, 32), ("m16n8k32", "e4m3")),      # sm_89 and newer
    "s4": ((16, 8, 64), ("m16n8k64", "s4")),          # int4 tensor cores: sm_80 to sm_89
}


def _mma_kind(ab: DataType, c: DataType) -> Optional[str]:
    if ab is dtypes.float16 and c in (dtypes.float32, dtypes.float16):
        return "f16"
    if ab is dtypes.bfloat16 and c is dtypes.float32:
        return "bf16"
    if ab in (dtypes.int8, dtypes.uint8) and c is dtypes.int32:
        return "s8" if ab is dtypes.int8 else "u8"
    if ab is dtypes.float8_e4m3 and c is dtypes.float32:
        return "e4m3"
    if ab is dtypes.int4 and c is dtypes.int32:
        return "s4"
    return None


def mma_dot_layouts(m: int, n: int, k: int, ab: DataType, c: DataType,
                    threads: int) -> list[tuple[RegisterLayout, RegisterLayout, RegisterLayout]]:
    """Every (A, B, C) mma tiling of an [m, k] x [k, n] + [m, n] dot for ``threads`` threads, the
    preferred first; empty when mma does not apply (dtypes, shapes, threads not whole warps).

    With the warp grid wm x wn (warp w = wi * wn + wj) and r replicas of it (r * wm * wn warps):
    C = replicate(r) * local(m/(16 wm), n/(8 wn)) * spatial(wm, wn) * C_frag,
    A = replicate(r) * local(m/(16 wm), k/K) * (spatial(wm, 1) * replicate(wn)) * A_frag,
    B = replicate(r) * local(k/K, n/(8 wn)) * (replicate(wm) * spatial(1, wn)) * B_frag.
    Preference: all warps used (r = 1), then the squarest warp tile, then more warps along m."""
    kind = _mma_kind(ab, c)
    if kind is None or threads % 32:
        return []
    (im, in_, ik), (shape, ptx) = _MMA_CONFIGS[kind]
    if m % im or n % in_ or k % ik:
        return []
    fa, fb, fc = mma_fragments(shape, ptx)
    warps = threads // 32
    options = []
    for r in range(1, warps + 1):
        if warps % r:
            continue
        for wm in range(1, warps // r + 1):
            if (warps // r) % wm:
                continue
            wn = warps // r // wm
            if m % (im * wm) or n % (in_ * wn):
                continue
            tile_m, tile_n = m // wm, n // wn
            options.append(((r, abs(math.log2(tile_m / tile_n)), -wm), (r, wm, wn)))
    out = []
    for _, (r, wm, wn) in sorted(options):
        rm, rn, rk = m // (im * wm), n // (in_ * wn), k // ik
        rep = replicate(r)
        cl = rep * local(rm, rn) * spatial(wm, wn) * fc
        al = rep * local(rm, rk) * (spatial(wm, 1) * replicate(wn)) * fa
        bl = rep * local(rk, rn) * (replicate(wm) * spatial(1, wn)) * fb
        out.append((al, bl, cl))
    return out
