"""Float codes in torch ops on the tensor's device: the dtype codec's rounding (nearest, ties to
the even code, saturating) for the quantizers of ``tilus.ops.quantize`` and
``tilus.ops.blockscale``."""
from __future__ import annotations

import numpy as np
import torch

from tilus.dtypes import DataType

_GRIDS: dict = {}


def _float_grid(t: DataType, device) -> tuple:
    """(positive finite values ascending, their codes, midpoints) of a float type, on device."""
    key = (t.name, str(device))
    if key not in _GRIDS:
        sign = 1 << (t.nbits - 1)
        codes = np.arange(sign, dtype=np.uint8)                 # sign bit clear
        vals = t.decode(codes).astype(np.float64)
        keep = np.isfinite(vals)
        vals, codes = vals[keep], codes[keep]
        order = np.argsort(vals, kind="stable")
        vals, codes = vals[order], codes[order]
        mids = (vals[:-1] + vals[1:]) / 2                       # exact in float32 (<= 8 bits)
        _GRIDS[key] = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in
                            (vals.astype(np.float32), codes.astype(np.int64),
                             mids.astype(np.float32)))
    return _GRIDS[key]


def encode_float(x: torch.Tensor, t: DataType) -> torch.Tensor:
    """``t.encode`` for a float type in torch ops on x's device (round to nearest, ties to the even
    code, saturating; the sign kept, -0.0 included): uint8 codes like x's shape. x is finite."""
    vals, codes, mids = _float_grid(t, x.device)
    mag = x.abs().contiguous()
    if mag.dtype != torch.float64:          # float64 stays: no double rounding (exact mids)
        mag = mag.float()
    mids = mids.to(mag.dtype)
    idx = torch.bucketize(mag, mids)                            # mids[idx-1] < mag <= mids[idx]
    tie = (idx < mids.numel()) & (mag == mids[idx.clamp(max=mids.numel() - 1)])
    idx = torch.where(tie & (codes[idx] % 2 == 1), idx + 1, idx)
    out = codes[idx] | torch.where(torch.signbit(x), 1 << (t.nbits - 1), 0)
    return out.to(torch.uint8)
