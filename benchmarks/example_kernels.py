"""The examples' kernels as (name, Script instance) pairs: the common rows of the per-kernel
benchmarks (compile time, layout conversions), so that both measure the same kernels."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_kernels() -> Iterator[tuple]:
    """vector add, softmax, the fp16 and split-k matmuls, and the low-bit matmul per weight type."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import matmul_fp16
    import matmul_lowbit
    import matmul_splitk
    import softmax
    import vector_add

    yield "vector_add", vector_add.VecAdd(256)
    yield "softmax", softmax.Softmax(16, 128)
    yield "matmul_fp16", matmul_fp16.MatmulFp16()
    yield "matmul_splitk", matmul_splitk.MatmulSplitK()
    for wtype in matmul_lowbit.WEIGHT_TYPES:
        yield f"matmul_lowbit[{wtype}]", matmul_lowbit.MatmulLowBit(wtype)
