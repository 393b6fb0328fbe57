"""Autotuning the quantized matmul per shape bucket: the space is ``QuantMatmul``'s
``@tilus.autotune`` parameters, pruned by resource estimates and the shape; the choice is stored
under ``matmul_kernel_name(...)`` / ``matmul_bucket(m, n, k)`` / the device name, where
``tilus.ops.matmul`` looks it up on CUDA tensors.

Estimates (sm_80/sm_90, a ``stages``-deep cp.async pipeline):
shared memory = stages * (block_m * block_k * 2 + block_k * block_n * B / 8 bytes) must fit in
``SMEM_LIMIT``; accumulator registers per thread = block_m * block_n / (32 * warps) must stay
<= ``ACC_REGS_LIMIT`` (the rest of the 255 go to fragments and addresses).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import torch

from tilus.autotune import Autotuner, TuneResult, TuningDatabase
from tilus.ops.kernels import QuantMatmul
from tilus.ops.matmul import (_ACT, SMEM_LIMIT, bucket_m, kernel_config, matmul_bucket,
                              matmul_kernel_name, stage_bytes, weight_meta)
from tilus.ops.quantize import QuantizedWeight

ACC_REGS_LIMIT = 128


def prune_matmul(config: dict, fixed: dict, m: int, n: int, k: int, num_sms: int = 132) -> Any:
    """A reason to drop ``config`` for an [m, k] x [k, n] problem, or None to keep it."""
    bm, bn, bk = config["block_m"], config["block_n"], config["block_k"]
    split, warps = config["split_k"], config["warps"]
    nbits = QuantMatmul._nbits(fixed["wtype"])
    group = fixed["group_size"]
    if not fixed.get("single_group") and group % bk and bk % group:
        return f"block_k {bk} neither divides nor is a multiple of group_size {group}"
    if bk > max(32, -(-k // 32) * 32):
        return f"block_k {bk} > K = {k} (rounded up to 32)"
    if bm % (16 * (warps // 4)):
        return f"block_m {bm} is not a multiple of {16 * (warps // 4)} for {warps} warps"
    stages = config.get("stages", 1)
    staged = group if fixed.get("scheme", "group") != "group" and fixed.get("fold_scale") else 0
    smem = stages * stage_bytes(bm, bk, nbits, bn, staged if stages > 1 else 0)
    if smem > SMEM_LIMIT:
        return f"shared memory {smem} B > {SMEM_LIMIT} B"
    regs = bm * bn // (32 * warps)
    if regs > ACC_REGS_LIMIT:
        return f"{regs} accumulator registers per thread > {ACC_REGS_LIMIT}"
    if bm * bk // (32 * warps) > 128:
        return f"activation tile {bm}x{bk} needs too many registers per thread"
    mb = bucket_m(m)
    if bm > max(16, mb):
        return f"block_m {bm} > M bucket {mb}"
    if mb >= 256 and bm < 64:
        return f"block_m {bm} too small for M bucket {mb}"
    k_tiles = math.ceil(k / bk)
    if split > 1 and k_tiles < 2 * split:
        return f"split_k {split}: fewer than 2 k-tiles per split ({k_tiles} in all)"
    if stages > 1 and math.ceil(k_tiles / split) < stages:
        return f"stages {stages} > {math.ceil(k_tiles / split)} k-tiles per split"
    tiles = math.ceil(m / bm) * math.ceil(n / bn)
    if split > 1 and tiles >= num_sms:
        return f"split_k {split} with {tiles} output tiles >= {num_sms} SMs"
    return None


def matmul_tuner(m: int, qw: QuantizedWeight, act: torch.dtype = torch.float16, *,
                 timer: Optional[Callable] = None, jobs: Optional[int] = None,
                 database: Optional[TuningDatabase] = None, builder: Optional[Callable] = None,
                 progress: Optional[bool] = None, num_sms: int = 132) -> Autotuner:
    meta = weight_meta(qw, act)
    act_name = _ACT[act]
    fixed = kernel_config(meta, act_name, False)
    prune = functools.partial(prune_matmul, m=m, n=qw.n, k=qw.k, num_sms=num_sms)
    return Autotuner(QuantMatmul, fixed=fixed, prune=prune, builder=builder, timer=timer,
                     jobs=jobs, database=database, progress=progress,
                     name=matmul_kernel_name(meta, act_name))


def tune_matmul(m: int, qw: QuantizedWeight, act: torch.dtype = torch.float16, *,
                timer: Optional[Callable] = None, jobs: Optional[int] = None,
                database: Optional[TuningDatabase] = None, builder: Optional[Callable] = None,
                progress: Optional[bool] = None, force: bool = False) -> TuneResult:
    """Tunes ``tilus.ops.matmul`` for activations [m, K] x ``qw`` on ``qw``'s CUDA device (the
    compiled kernel) and records the best schedule for m's bucket."""
    dev = qw.device
    num_sms = torch.cuda.get_device_properties(dev).multi_processor_count \
        if dev.type == "cuda" else 132
    tuner = matmul_tuner(m, qw, act, timer=timer, jobs=jobs, database=database, builder=builder,
                         progress=progress, num_sms=num_sms)
    a = torch.randn(m, qw.k, device=dev).to(act)
    n = qw.n
    c = torch.empty(m, n, dtype=act, device=dev)
    ws = torch.empty(m, n, dtype=torch.float32, device=dev)
    sema = torch.zeros(math.ceil(m / 16) * math.ceil(n / 128), dtype=torch.int32, device=dev)
    offsets = qw.offsets if qw.offsets is not None else torch.zeros(1, dtype=qw.scales.dtype,
                                                                    device=dev)
    bias = torch.zeros(1, dtype=act, device=dev)

    def run(kernel):
        kernel(m, n, qw.k, a, qw.data, qw.scales, offsets, bias, c, ws, sema,
               float(qw.global_scale))

    return tuner.tune(matmul_bucket(m, n, qw.k), run, device=dev, force=force)
