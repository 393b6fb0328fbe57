"""Independent references for the interpreter tests: bit streams and low-bit values written here
from the definitions, not through tilus.dtypes."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from tilus import dtypes

LOWBIT = [t for t in dtypes.all_types() if t.nbits <= 8 and not t.is_bool]
SUBBYTE = [t for t in LOWBIT if t.nbits < 8]


def unpack_bits(buf: np.ndarray, k: int, count: int) -> np.ndarray:
    """Codes of the first ``count`` K-bit elements of a little-endian bit stream."""
    bits = np.unpackbits(np.asarray(buf, np.uint8), bitorder="little")[: count * k]
    return (bits.reshape(count, k).astype(np.int64) << np.arange(k)).sum(axis=1)


def pack_bits(codes: np.ndarray, k: int) -> np.ndarray:
    codes = np.asarray(codes, np.int64).reshape(-1)
    bits = ((codes[:, None] >> np.arange(k)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits, bitorder="little")


def code_value(dtype, codes: np.ndarray) -> np.ndarray:
    """The value of each code, from the format's definition (ml_dtypes for the OCP float8s)."""
    codes = np.asarray(codes, np.int64)
    k = dtype.nbits
    if dtype.kind == "uint":
        return codes.astype(np.float64)
    if dtype.kind == "int":
        return np.where(codes >= 1 << (k - 1), codes - (1 << k), codes).astype(np.float64)
    if dtype.name in ("float8_e4m3", "float8_e5m2", "float8_e8m0"):
        ml = {"float8_e4m3": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2,
              "float8_e8m0": ml_dtypes.float8_e8m0fnu}[dtype.name]
        return codes.astype(np.uint8).view(ml).astype(np.float64)
    e_bits, m_bits = dtype.exponent_bits, dtype.mantissa_bits
    bias = (1 << (e_bits - 1)) - 1
    s = (codes >> (k - 1)) & 1
    e = (codes >> m_bits) & ((1 << e_bits) - 1)
    m = codes & ((1 << m_bits) - 1)
    frac = m / float(1 << m_bits)
    mag = np.where(e == 0, 2.0 ** (1 - bias) * frac, 2.0 ** (e - bias) * (1 + frac))
    return np.where(s == 1, -mag, mag)
