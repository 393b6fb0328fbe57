"""tilus.ops' QuantMatmul (packed format 2), lowered and run by tilus.simulator against the
interpreter and against ``dequantize()`` + torch: the shared check of the
``test_quant_matmul_simulated_*.py`` files (split by weight type so that ``--dist loadfile``
spreads the cases, about 1.5-3 s each, over the workers; ``test_codegen_simulated.py`` checks
that together they hold every case once)."""
from __future__ import annotations

import importlib

import torch

import tilus
from tests.backend.simulated_kernel import SimulatedKernel

#: QuantMatmul's output argument (c), the one the simulated run is compared on
C_ARG = 9

SMALL = dict(block_m=16, block_n=128, block_k=32, stages=1, split_k=1, warps=4)
PIPELINED = [  # (type, schedule, M): k-tiles of one, two and four groups, split-k, 8 warps
    ("uint4", dict(block_m=16, block_n=128, block_k=128, stages=2, split_k=1, warps=4), 1),
    ("int4", dict(block_m=32, block_n=128, block_k=64, stages=3, split_k=1, warps=8), 33),
    ("float6_e3m2", dict(block_m=16, block_n=128, block_k=64, stages=2, split_k=2, warps=4), 5),
    ("uint3", dict(block_m=16, block_n=128, block_k=128, stages=4, split_k=1, warps=4), 16),
    ("float4_e2m1", dict(block_m=16, block_n=128, block_k=64, stages=3, split_k=1, warps=4), 1),
    # a k-tile of four groups of 64 over K = 192 (the fourth group's rows are masked), and two
    # groups with float scales folded by 2^14 (fold_scale)
    ("uint4", dict(block_m=16, block_n=128, block_k=256, stages=2, split_k=1, warps=4), 5),
    ("float4_e2m1", dict(block_m=16, block_n=128, block_k=128, stages=2, split_k=1, warps=4), 5),
]


def every_type(select) -> list:
    """(type, SMALL, 5) for every low-bit type ``select(t)`` accepts (a tilus DataType)."""
    return [(t.name, SMALL, 5) for t in tilus.dtypes.lowbit_types() if select(t)]


def case_id(wtype, sched, m) -> str:
    return f"{wtype}-k{sched['block_k']}s{sched['stages']}x{sched['split_k']}-m{m}"


def check_quant_matmul_simulated(wtype, sched, m, monkeypatch, scheme: str = "group",
                                 zero_mode: str = "float", row0: float = 1.0,
                                 negate_scale: bool = False,
                                 fold: "bool | None" = None) -> None:
    """tilus.ops.matmul(engine="interpreter") with kernel_for replaced by a wrapper that also
    lowers the kernel and simulates it on the same arguments (outputs compared with the
    interpreter's), then the result compared with dequantize() + torch. The pipelined schedules
    exercise cp.async into stage slices and ldmatrix from them, k-tiles spanning two groups,
    8 warps and split-k. N = 136 and K = 192 do not divide the tiles. ``zero_mode``: quantize's
    (asymmetric uint types: "int" stores integer zero points). Block-scaled schemes
    (``scheme="mx"``/``"nvfp4"``) are compared with ``dequantize(float32)`` + torch. ``row0``
    scales the weight's first row (block scales outside the fast path's range),
    ``negate_scale`` sets the sign bit of the first E4M3 scale code; ``fold``, when given, is
    whether ``matmul`` must pick the fast path (``fold_scale``) for these weights."""
    mm = importlib.import_module("tilus.ops.matmul")
    seen = []
    original = mm.kernel_for

    monkeypatch.setattr(mm, "kernel_for",
                        lambda *a, **kw: SimulatedKernel(original(*a, **kw), [C_ARG], seen))
    torch.manual_seed(0)
    if scheme == "group":
        qw = tilus.ops.quantize(torch.randn(136, 192), dtype=wtype, group_size=64,
                                zero_mode=zero_mode)
    else:
        w = torch.randn(136, 192)
        w[0] *= row0
        qw = tilus.ops.quantize(w, dtype=wtype, scheme=scheme)
        if negate_scale:
            qw.scales[0, 0] |= 0x80
    if fold is not None:
        assert mm.weight_meta(qw, torch.float16)["fold_scale"] == fold
    a = torch.randn(m, 192).half()
    out = tilus.ops.matmul(a, qw, engine="interpreter", schedule=sched)
    ref_w = qw.dequantize(torch.float16 if scheme == "group" else torch.float32)
    ref = (a.float() @ ref_w.float().t()).half()
    torch.testing.assert_close(out, ref, rtol=4e-3, atol=4e-3)
    assert seen == ["QuantMatmul"]
