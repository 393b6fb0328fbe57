"""A helper for instruction tests: load inputs into register tiles, apply instructions, store."""
from __future__ import annotations

import numpy as np

import tilus
from tilus import dtypes
from tilus.ir.builder import ProgramBuilder

NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int8": np.int8,
      "uint8": np.uint8, "int16": np.int16, "bool": np.bool_, "float64": np.float64,
      "int64": np.int64, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64}


def run_tiles(fn, inputs: list[np.ndarray], in_dtypes: list[str] | None = None, scalars=()):
    """``fn(builder, *register_tiles, *scalar_params) -> tile`` on numpy inputs; returns the result
    tile as a numpy array (dtype of the result's numpy counterpart)."""
    b = ProgramBuilder("tiles")
    in_dtypes = in_dtypes or [str(a.dtype) if a.dtype != np.bool_ else "bool" for a in inputs]
    ptrs = [b.param(f"in{i}", ~dtypes.get(t)) for i, t in enumerate(in_dtypes)]
    svars = [b.param(f"s{i}", dtypes.get(t)) for i, (t, _) in enumerate(scalars)]
    out_ptr_index = len(b.params)
    tiles = [b.load_global(b.global_view(p, t, list(a.shape) or [1]), [0] * max(a.ndim, 1),
                           list(a.shape) or [1])
             for p, t, a in zip(ptrs, in_dtypes, inputs)]
    result = fn(b, *tiles, *svars)
    out_p = b.param("out", ~result.dtype)
    b.store_global(b.global_view(out_p, result.dtype, list(result.shape)), result,
                   [0] * len(result.shape))
    out = np.zeros(result.shape, NP[result.dtype.name])
    tilus.interpret(b.finish(), *[np.ascontiguousarray(a) for a in inputs],
                    *[v for _, v in scalars], out)
    return out
