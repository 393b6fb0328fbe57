"""Independent oracles for the dtypes tests: written from the definitions, sharing no code with
tilus.dtypes (they only read a type's name, width and bit split)."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np

# the formats ml_dtypes has, by Tilus name
ML_DTYPES = {
    "float8_e4m3": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float6_e2m3": ml_dtypes.float6_e2m3fn,
    "float6_e3m2": ml_dtypes.float6_e3m2fn,
    "float4_e2m1": ml_dtypes.float4_e2m1fn,
}


def ml_dtypes_table(name: str) -> np.ndarray:
    """Every code's value according to ml_dtypes (uint8 codes viewed as the format)."""
    k = int(name[len("float"):name.index("_")])
    codes = np.arange(1 << k, dtype=np.uint8)
    return codes.view(ML_DTYPES[name]).astype(np.float32)


def formula_value(code: int, k: int, x: int, y: int) -> float:
    """(-1)^s * 2^(e-bias) * (1 + m/2^Y) for e > 0, (-1)^s * 2^(1-bias) * m/2^Y for e == 0;
    every code finite (the Tilus finite-only floats)."""
    s = (code >> (k - 1)) & 1
    e = (code >> y) & ((1 << x) - 1)
    m = code & ((1 << y) - 1)
    bias = 2 ** (x - 1) - 1
    if e > 0:
        mag = 2.0 ** (e - bias) * (1 + m / 2 ** y)
    else:
        mag = 2.0 ** (1 - bias) * (m / 2 ** y)
    return -mag if s else mag


def formula_table(k: int, x: int, y: int) -> np.ndarray:
    return np.array([formula_value(c, k, x, y) for c in range(1 << k)], dtype=np.float64)


def int_value(code: int, k: int, signed: bool) -> int:
    return code - (1 << k) if signed and code >= 1 << (k - 1) else code


def nearest_code(value: float, table: np.ndarray, k: int) -> int:
    """Brute force round-to-nearest-even with saturation: among the finite codes whose sign bit is the
    sign of ``value``, the one closest to it; on a tie the even code."""
    neg = math.copysign(1.0, value) < 0
    if math.isinf(value):                       # saturates: the largest magnitude of that sign
        value = math.copysign(float(np.nanmax(np.abs(table[np.isfinite(table)]))) * 4, value)
    best, best_d = None, None
    for c in range(1 << k):
        v = table[c]
        if not math.isfinite(v) or ((c >> (k - 1)) & 1) != neg:
            continue
        d = abs(abs(value) - abs(v))
        if best is None or d < best_d or (d == best_d and c % 2 == 0 and best % 2 == 1):
            best, best_d = c, d
    return best


def reference_pack(codes: list[int], k: int) -> bytes:
    """The bit stream built as one Python integer: element i at bits [i*K, (i+1)*K)."""
    stream = 0
    for i, c in enumerate(codes):
        assert 0 <= c < 1 << k
        stream |= c << (i * k)
    return stream.to_bytes((len(codes) * k + 7) // 8, "little")
