"""The bit-sliced matmul kernel: ``QuantMatmul`` reading the top ``bits`` of stored 8-bit codes.

A :class:`tilus.ops.sliced.SlicedWeight` keeps each uint8 code ``q`` as three slices, each in
packed format 3 (``tilus.ops.packing``): ``q >> 6`` (uint2), ``(q >> 4) & 3`` (uint2) and
``q & 15`` (uint4), one after the other in each column tile's row of ``data``
(``[N_pad / 128, K_pad / 32 * 4096]`` bytes; slice i starts at ``K_pad / 32 * 512 * p_i``,
``p_i`` = 0, 2, 4 the bits above it). Serving at ``bits`` in {2, 4, 8} reads the first one, two
or three slices only (``bits / 8`` of the codes' bytes), and the unit's top-``bits`` code is

    q >> (8 - bits) = sum over the read slices of slice_i * 2^(shift_i)

which the kernel forms in the activation dtype as ``v = q_b * 2^-d``: each slice is viewed and
cast by the packed lop3/prmt casts with ``exponent=shift_i - d`` (the power of two folded into
the cast's last constant) and the casts are added (one HADD2 per two weights per extra slice).
``d = scale_shift(bits)`` (2 at 8 bits, else 0) keeps every cast's constants inside float16
(the top uint2 slice at 2^6 would need -65536) and every ``v`` exact (multiples of 2^-d up to
255 / 2^d: 8 significant bits, exact in float16 and bfloat16); the scale row is multiplied by
2^d once per group instead (exact; ``SlicedWeight.params`` checks that it stays finite). Scale
and offset of the served width then go through the same HFMA2 as every other asymmetric type:
``w = v * (S_b * 2^d) + B_b = q_b * S_b + B_b`` rounded once.
Everything else (pipelining, split-k, masks, the epilogue) is ``QuantMatmul``'s.
"""
from __future__ import annotations

import tilus
from tilus import dtypes
from tilus.errors import TilusError
from tilus.ir.layout.packed import UNIT_K, UNIT_N, pair_stride, unit_bytes_layout, \
    weight_stream_layout
from tilus.ops.kernels import QuantMatmul

#: The stored slices, top first: their widths in bits (they add up to STORED_BITS).
SLICE_WIDTHS = (2, 2, 4)
STORED_BITS = 8
#: The widths a sliced weight is served at: a whole number of leading slices.
SERVE_BITS = (2, 4, 8)
#: Bytes of one [32, 128] unit per bit of code width.
UNIT_BYTES_PER_BIT = UNIT_K * UNIT_N // 8


def scale_shift(bits: int) -> int:
    """d: the kernel computes with ``q_b * 2^-d`` and the scale ``S_b * 2^d`` (module doc)."""
    return max(0, bits - 6)


def slices_for(bits: int) -> tuple[int, ...]:
    """The widths of the leading slices that hold a code's top ``bits`` bits."""
    out, total = [], 0
    for w in SLICE_WIDTHS:
        if total >= bits:
            break
        out.append(w)
        total += w
    if total != bits:
        raise TilusError(f"a sliced weight is served at {', '.join(map(str, SERVE_BITS))} bits "
                         f"(whole slices of {SLICE_WIDTHS}), got {bits}")
    return tuple(out)


class SlicedMatmul(QuantMatmul):
    """C = A @ dequant_bits(W) (+ bias) for a bit-sliced uint8 weight served at ``bits`` (see the
    module docstring). Scales and offsets are ``[K / group_size, N]`` in the activation dtype;
    the schedule parameters are ``QuantMatmul``'s."""

    def __init__(self, bits: int, group_size: int, act: str = "float16", has_bias: bool = False,
                 single_group: bool = False, block_m: int = 16, block_n: int = UNIT_N,
                 block_k: int = 32, split_k: int = 1, warps: int = 4, stages: int = 1):
        widths = slices_for(bits)
        super().__init__(f"uint{bits}", group_size, act=act, scale=act, zero_mode="tensor",
                         has_bias=has_bias, single_group=single_group, block_m=block_m,
                         block_n=block_n, block_k=block_k, split_k=split_k, warps=warps,
                         stages=stages)
        self.bits = bits
        self.slices = ",".join(map(str, widths))
        planes = []
        above = 0
        for w in widths:
            t = dtypes.get(f"uint{w}")
            stream = weight_stream_layout(pair_stride(t.name, self.act.name), self.warps_m)
            # (type, bits above it, power of two of its place in the served code, layouts)
            planes.append((t, above, bits - above - w - scale_shift(bits),
                           unit_bytes_layout(w, self.warps_m), stream))
            above += w
        self.planes = planes

    def folded(self, params):
        """The group rows with the scale times 2^scale_shift (exact: the caller checked)."""
        d = scale_shift(self.bits)
        return [(s * float(2 ** d), z) for s, z in params] if d else params

    def weight_view(self, w, tiles_n, k):
        """(the stored slices' global view, the units per column tile): every slice is read
        from its region of the column tile's row."""
        ku = tilus.cdiv(k, UNIT_K)
        gw = self.global_view(w, dtype=tilus.uint8,
                              shape=[tiles_n, ku * UNIT_BYTES_PER_BIT * STORED_BITS])
        return gw, ku

    def load_unit(self, gw, kt, u):
        g, ku = gw
        raws = []
        for t, above, _, _, _ in self.planes:
            ub = UNIT_BYTES_PER_BIT * t.nbits
            raw = self.load_global(g, offsets=[self.blockIdx.y, ku * UNIT_BYTES_PER_BIT * above
                                               + (kt * self.units + u) * ub], shape=[1, ub])
            raws.append(raw)
        return raws

    def issue_weights(self, gw, sw, slot, kt):
        g, ku = gw
        for t, above, _, _, _ in self.planes:
            run = self.units * UNIT_BYTES_PER_BIT * t.nbits
            self.copy_async(src=g, dst=self.slice_shared(
                sw, offsets=[slot, 0, self.units * UNIT_BYTES_PER_BIT * above], shape=[1, run]),
                offsets=[self.blockIdx.y, ku * UNIT_BYTES_PER_BIT * above + kt * run])

    def shared_unit(self, sw, slot, u):
        raws = []
        for t, above, _, _, _ in self.planes:
            ub = UNIT_BYTES_PER_BIT * t.nbits
            raw = self.load_shared(self.slice_shared(
                sw, offsets=[slot, 0, self.units * UNIT_BYTES_PER_BIT * above + u * ub],
                shape=[1, ub]))
            raws.append(raw)
        return raws

    def plane_values(self, i, raw):
        """Slice i's codes times 2^(shift_i - d) in the activation dtype (mma B layout;
        exact)."""
        t, _, shift, bytes_layout, stream = self.planes[i]
        self.annotate_layout(raw, bytes_layout)
        codes = self.view(raw, dtype=t, layout=stream)
        v = self.cast(codes, dtype=self.act, exponent=shift)
        self.annotate_layout(v, self.fragment)
        return v

    def unit_weights(self, raw, s, b):
        """The unit's served codes ``q_b * 2^-d`` (the slices' sum), then ``v * s + b``."""
        v = self.plane_values(0, raw[0])
        for i in range(1, len(self.planes)):
            v = v + self.plane_values(i, raw[i])
        return self.fma(v, s, b)
