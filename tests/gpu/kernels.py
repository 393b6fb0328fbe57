"""The kernels the GPU tests and benchmarks launch, with their inputs: one list, so that
``tilus bundle --arch sm_90 --out DIR tests/gpu/kernels.py`` prebuilds exactly what a GPU machine
without TVM needs to run ``tests/gpu`` and ``benchmarks/launch_overhead.py`` from the cache.

Each case: name -> (kernel factory, inputs(size, device) -> argument list, indices of the outputs,
exact?). Sizes do not divide the tiles.
"""
from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LOWBIT = ("uint3", "int4", "uint6", "float6_e3m2", "float4_e2m1")


def example(name):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return __import__(name)


def vector_add():
    return example("vector_add").VecAdd(256)


def softmax():
    return example("softmax").Softmax(16, 128)


def matmul_fp16():
    return example("matmul_fp16").MatmulFp16()


def matmul_splitk():
    return example("matmul_splitk").MatmulSplitK()


def matmul_lowbit(wtype):
    return example("matmul_lowbit").MatmulLowBit(wtype)


def _vector_add_inputs(torch, device, n=1000):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    return [n, a.to(device), b.to(device), torch.empty(n, device=device)], [3]


def _softmax_inputs(torch, device, m=37, n=100):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(m, n, generator=g) * 3
    return [m, n, x.to(device), torch.empty(m, n, device=device)], [3]


def _matmul_fp16_inputs(torch, device, m=37, n=45, k=51):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(m, k, generator=g).half()
    b = torch.randn(k, n, generator=g).half()
    return [m, n, k, a.to(device), b.to(device),
            torch.empty(m, n, dtype=torch.float16, device=device)], [5]


def _matmul_splitk_inputs(torch, device, m=33, n=40, k=75):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(m, k, generator=g).half()
    b = torch.randn(k, n, generator=g).half()
    kernel = matmul_splitk()
    tiles = -(-m // kernel.block_m) * -(-n // kernel.block_n)
    return [m, n, k, a.to(device), b.to(device), torch.empty(m, n, device=device),
            torch.zeros(tiles, dtype=torch.int32, device=device)], [5, 6]


def _lowbit_inputs(wtype):
    def make(torch, device, m=19, n=48, k=70):
        a, w, scales, _ = example("matmul_lowbit").make_inputs(wtype, m, n, k, 32)
        return [m, n, k, a.to(device), w.to(device), scales.to(device),
                torch.empty(m, n, dtype=torch.float16, device=device)], [6]
    return make


# name -> (factory, inputs, exact)
CASES = {
    "vector_add": (vector_add, _vector_add_inputs, True),
    "softmax": (softmax, _softmax_inputs, False),
    "matmul_fp16": (matmul_fp16, _matmul_fp16_inputs, False),
    "matmul_splitk": (matmul_splitk, _matmul_splitk_inputs, False),
    **{f"matmul_lowbit_{t}": ((lambda t=t: matmul_lowbit(t)), _lowbit_inputs(t), False)
       for t in LOWBIT},
}


# tilus.ops.matmul on CUDA: (weight type, M) at N, K, group that do not divide the tiles' grid
OPS_CASES = [("uint4", 1), ("int4", 5), ("uint3", 16), ("float4_e2m1", 33), ("float8_e4m3", 1),
             ("uint8", 1), ("uint2", 16)]
OPS_N, OPS_K, OPS_GROUP, OPS_SMS = 1000, 1536, 128, 132


def ops_weight(wtype):
    """The (deterministic) quantized weight of an OPS_CASES case, on the CPU."""
    import torch

    from tilus.ops import quantize

    g = torch.Generator().manual_seed(len(wtype))
    return quantize(torch.randn(OPS_N, OPS_K, generator=g) * 0.05, wtype, group_size=OPS_GROUP)


def ops_kernels():
    """The QuantMatmul kernels tilus.ops.matmul launches for OPS_CASES on a 132-SM GPU."""
    from tilus.ops.matmul import _meta, default_schedule, kernel_for

    out = []
    for wtype, m in OPS_CASES:
        qw = ops_weight(wtype)
        meta = _meta(qw.dtype, qw.group_size, qw.k, qw.zero_point, qw.offsets is not None,
                     qw.scales.dtype, qw.exponent)
        sched = default_schedule(m, OPS_N, OPS_K, OPS_GROUP, "compiled", OPS_SMS)
        out.append(kernel_for(meta, "float16", False, sched))
    return out


def bundle_specs():
    """For `tilus bundle`: every kernel above (their compile-time values live in __init__) and
    the decode/prefill kernels of tilus.ops.matmul for OPS_CASES."""
    return [factory() for factory, _, _ in CASES.values()] + ops_kernels()
