"""Sub-byte elements in memory: element e of a K-bit type occupies bits [e*K, (e+1)*K) of a
little-endian bit stream held in ``W``-bit words (W = 8: global byte buffers; W = 32: shared
word buffers).

Reads extract the code from one word, or two when the element straddles a word boundary (only when
W % K != 0). Writes use ``atomicAnd`` (clear the element's bits) then ``atomicOr`` (set them) on
32-bit words, so threads (and blocks) writing different elements of one word never lose each
other's bits; a global byte buffer is written through a uint32 alias of the same data, which
assumes its base pointer is 4-byte aligned (recorded in the kernel's assumptions).
"""
from __future__ import annotations

from tilus.backend.codegen.lower import Lowerer
from tilus.backend.tvm_shim import tirx, dt


def _u(x, d="uint32"):
    return x if dt(x) == d else tirx.Cast(d, x)


def _bit_offset(elem, k: int):
    e = _u(elem, "int64")
    return e * tirx.const(k, "int64")


def read_code(buf, w: int, elem, k: int):
    """The K-bit code (uint8) of element ``elem`` in ``buf`` (words of ``w`` bits)."""
    bit = _bit_offset(elem, k)
    i = _u(tirx.floordiv(bit, tirx.const(w, "int64")), "int32")
    sh = _u(tirx.floormod(bit, tirx.const(w, "int64")), "uint32")
    mask = tirx.const((1 << k) - 1, "uint32")
    lo = tirx.shift_right(_u(buf[i]), sh)
    if w % k == 0:
        return tirx.Cast("uint8", tirx.bitwise_and(lo, mask))
    straddles = sh + tirx.const(k, "uint32") > tirx.const(w, "uint32")
    hi = tirx.if_then_else(straddles,
                           tirx.shift_left(_u(buf[i + 1]), tirx.const(w, "uint32") - sh),
                           tirx.const(0, "uint32"))
    return tirx.Cast("uint8", tirx.bitwise_and(tirx.bitwise_or(lo, hi), mask))


def _atomic(op: str, buf, i, value):
    return tirx.call_extern("uint32", op, tirx.address_of(buf[i]), value)


def write_code(lw: Lowerer, words, elem, k: int, code) -> None:
    """Emit the atomic read-modify-write of element ``elem`` (K bits) in the uint32 ``words``."""
    from tilus.backend.tvm_shim import TB

    bit = _bit_offset(elem, k)
    i = _u(tirx.floordiv(bit, tirx.const(32, "int64")), "int32")
    sh = _u(tirx.floormod(bit, tirx.const(32, "int64")), "uint32")
    mask = tirx.const((1 << k) - 1, "uint32")
    c = tirx.bitwise_and(_u(code), mask)
    lw.emit(_atomic("atomicAnd", words, i, tirx.bitwise_xor(tirx.shift_left(mask, sh),
                                                           tirx.const(0xFFFFFFFF, "uint32"))))
    lw.emit(_atomic("atomicOr", words, i, tirx.shift_left(c, sh)))
    if 32 % k:
        rest = tirx.const(32, "uint32") - sh
        with TB.If(sh + tirx.const(k, "uint32") > tirx.const(32, "uint32")):
            with TB.Then():
                keep = tirx.bitwise_xor(tirx.shift_right(mask, rest), tirx.const(0xFFFFFFFF, "uint32"))
                lw.emit(_atomic("atomicAnd", words, i + 1, keep))
                lw.emit(_atomic("atomicOr", words, i + 1, tirx.shift_right(c, rest)))
