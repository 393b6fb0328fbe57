"""The register layouts of packed low-bit weights (format v2): what one thread's vector load holds.

A weight *unit* is a [32, 128] (k, n) tile of codes, the B operand of mma.m16n8k16 for 4 warps
side by side along n (``UNIT_K`` x ``UNIT_N``). :func:`weight_fragment_layout` is the mma tiling's
B layout of a unit (``local(2, 4) * spatial(1, 4) * B_frag``, warps along m replicating it):
each thread holds 32 codes, 4 per (k16, n8) fragment. :func:`weight_stream_layout` is the same
ownership in the order the thread's codes lie in its packed bit stream: slot ``p`` of thread
``t`` is the code at bits ``[p*B, (p+1)*B)`` of the thread's ``4*B`` bytes of the unit. The
order pairs the codes the way the packed casts (``tilus.backend.lowbit_cast``) emit their half2
outputs: the elements ``j`` and ``j + d`` of a cast block become one half2 register, and the
stream order puts the mma pair (k, k + 1) of one fragment there, so the cast writes whole mma
registers. ``d`` is :func:`pair_stride` of the type.

The packer (``tilus.ops.quantize``) and the kernel (``tilus.ops.kernels``) both take their
permutation from these layouts; docs/ops.md has the picture.
"""
from __future__ import annotations

import math

from tilus.errors import LayoutError
from tilus.ir.layout.mma import mma_m16n8k16_f16_b
from tilus.ir.layout.primitives import local, replicate, spatial
from tilus.ir.layout.register import RegisterLayout

UNIT_K = 32
UNIT_N = 128
UNIT_THREADS = 128
UNIT_SLOTS = UNIT_K * UNIT_N // UNIT_THREADS

# Part of the packed format (a stored weight keeps its order whatever the compiler does later):
# element j of a cast block shares a half2 output register with element j + d, as the cast
# programs of tilus.backend.lowbit_cast extract their fields (a test checks every entry against
# them, so the casts write whole mma registers). Keyed by (type name, target); absent: d = 1.
_PAIR_STRIDE = {
    ("float3_e1m1", "bfloat16"): 8, ("float3_e1m1", "float16"): 8, ("float3_e2m0", "bfloat16"): 8,
    ("float3_e2m0", "float16"): 8, ("float4_e1m2", "bfloat16"): 4, ("float4_e1m2", "float16"): 4,
    ("float4_e2m1", "bfloat16"): 4, ("float4_e2m1", "float16"): 4, ("float4_e3m0", "bfloat16"): 4,
    ("float4_e3m0", "float16"): 4, ("float5_e1m3", "bfloat16"): 16, ("float5_e1m3", "float16"): 4,
    ("float5_e2m2", "bfloat16"): 16, ("float5_e2m2", "float16"): 16, ("float5_e3m1", "bfloat16"): 16,
    ("float5_e3m1", "float16"): 16, ("float5_e4m0", "bfloat16"): 4, ("float5_e4m0", "float16"): 16,
    ("float6_e1m4", "bfloat16"): 4, ("float6_e1m4", "float16"): 2, ("float6_e2m3", "bfloat16"): 4,
    ("float6_e2m3", "float16"): 4, ("float6_e3m2", "bfloat16"): 4, ("float6_e3m2", "float16"): 4,
    ("float6_e4m1", "bfloat16"): 2, ("float6_e4m1", "float16"): 4, ("float6_e5m0", "bfloat16"): 4,
    ("float7_e1m5", "bfloat16"): 8, ("float7_e1m5", "float16"): 16, ("float7_e2m4", "bfloat16"): 8,
    ("float7_e2m4", "float16"): 8, ("float7_e3m3", "bfloat16"): 16, ("float7_e3m3", "float16"): 8,
    ("float7_e4m2", "bfloat16"): 16, ("float7_e4m2", "float16"): 16, ("float7_e5m1", "bfloat16"): 8,
    ("float7_e6m0", "bfloat16"): 8, ("float8_e1m6", "bfloat16"): 2, ("float8_e1m6", "float16"): 2,
    ("float8_e2m5", "bfloat16"): 2, ("float8_e2m5", "float16"): 2, ("float8_e3m4", "bfloat16"): 2,
    ("float8_e3m4", "float16"): 2, ("float8_e4m3", "bfloat16"): 2, ("float8_e4m3", "float16"): 2,
    ("float8_e5m2", "bfloat16"): 2, ("float8_e5m2", "float16"): 2, ("float8_e6m1", "bfloat16"): 2,
    ("float8_e7m0", "bfloat16"): 2, ("int1", "bfloat16"): 16, ("int1", "float16"): 16,
    ("int2", "bfloat16"): 8, ("int2", "float16"): 8, ("int3", "bfloat16"): 8,
    ("int3", "float16"): 8, ("int4", "bfloat16"): 4, ("int4", "float16"): 4,
    ("int5", "bfloat16"): 2, ("int5", "float16"): 4, ("int6", "bfloat16"): 4,
    ("int6", "float16"): 2, ("int7", "bfloat16"): 8, ("int7", "float16"): 2,
    ("uint1", "bfloat16"): 16, ("uint1", "float16"): 16, ("uint2", "bfloat16"): 8,
    ("uint2", "float16"): 8, ("uint3", "bfloat16"): 8, ("uint3", "float16"): 8,
    ("uint4", "bfloat16"): 4, ("uint4", "float16"): 4, ("uint5", "bfloat16"): 2,
    ("uint5", "float16"): 4, ("uint6", "bfloat16"): 4, ("uint6", "float16"): 2,
    ("uint7", "bfloat16"): 8, ("uint7", "float16"): 2,
}


def pair_stride(dtype: str, target: str = "float16") -> int:
    """d such that the packed cast of ``dtype`` to ``target`` pairs block elements j and j + d."""
    return _PAIR_STRIDE.get((dtype, target), 1)


def weight_fragment_layout(warps_m: int = 1) -> RegisterLayout:
    """The mma B layout of a [32, 128] unit for 4 * warps_m warps (warps along m replicate it)."""
    return local(UNIT_K // 16, UNIT_N // 32) * (replicate(warps_m) * spatial(1, 4)) \
        * mma_m16n8k16_f16_b()


def weight_stream_layout(d: int, warps_m: int = 1) -> RegisterLayout:
    """:func:`weight_fragment_layout` with its slots in packed-stream order for pair stride d:
    the innermost slot digit (k and k + 1 of an mma pair) moved above the lowest log2(d) digits."""
    return interleave_pairs(weight_fragment_layout(warps_m), d)


def interleave_pairs(layout: RegisterLayout, d: int) -> RegisterLayout:
    """``layout`` with the lowest slot digit (size 2) moved above the next log2(d) slot digits, so
    that slots s and s + d of the result are slots 2i and 2i + 1 of ``layout`` (d a power of 2)."""
    shift = int(math.log2(d)) if d >= 1 else -1
    if d < 1 or 2 ** shift != d:
        raise LayoutError(f"pair stride {d} is not a power of two")
    modes: list[tuple[int, int]] = []
    ids: dict[int, list[int]] = {}
    for i, (size, dim) in enumerate(zip(layout.mode_shape, layout.mode_dims)):
        if i in layout.local_modes:
            bits = int(math.log2(size))
            if 2 ** bits != size:
                raise LayoutError(f"{layout}: local mode of size {size} is not a power of two")
            ids[i] = list(range(len(modes), len(modes) + bits))
            modes += [(2, dim)] * bits
        else:
            ids[i] = [len(modes)]
            modes.append((size, dim))
    local_digits = [x for e in layout.local_modes for x in ids[e]]
    if not local_digits or shift > len(local_digits) - 1:
        raise LayoutError(f"{layout} has too few slot digits for pair stride {d}")
    lowest = local_digits.pop()
    local_digits.insert(len(local_digits) - shift, lowest)
    spatial_ids = [ids[e][0] if e >= 0 else e for e in layout.spatial_modes]
    return RegisterLayout(layout.shape, [s for s, _ in modes], spatial_ids, local_digits)


def unit_bytes_layout(nbits: int, warps_m: int = 1) -> RegisterLayout:
    """The [1, 512 * nbits] bytes of one unit as loaded: thread t holds bytes [4B*t, 4B*(t+1))."""
    return (replicate(warps_m) * spatial(1, UNIT_THREADS)) * local(1, UNIT_SLOTS * nbits // 8)
