"""``tilus.ops.moe_matmul(x, experts, routing)``: a mixture-of-experts layer's grouped GEMM over
experts quantized to different types, in one kernel launch.

    experts = [tilus.ops.quantize(w, dtype=t, group_size=128) for w, t in zip(ws, types)]
    y = tilus.ops.moe_matmul(x, experts, (topk_ids, topk_weights))     # x [tokens, K]

``y[t] = sum_j topk_weights[t, j] * (x[t] @ experts[topk_ids[t, j]].dequantize(x.dtype).T)``,
each expert product accumulated in float32, the weighted sum in float32, rounded once to x's
dtype. CPU tensors run the DSL kernel (``tilus.ops.moe_kernels.MoEQuantMatmul``) in the
interpreter, CUDA tensors a cached build of it.

Host side, all torch ops on x's device (no wait for the GPU): the (token, k) pairs are sorted by
expert (stable ``argsort``), their activation rows gathered (``xs = x[token of pair]``), and each
expert's run of rows cut into tiles of ``block_m`` rows (tile table: expert, first row, end row);
the grid has ``ceil(P / block_m) + E`` tile rows, an upper bound of the tiles any routing needs,
the spare ones marked -1 so that nothing has to be read back to size the launch. The kernel
writes one float32 row per pair, already multiplied by its routing weight; the pairs are put back
in (token, k) order and summed over k here (fixed order: deterministic; the IR has no atomic add
to scatter-add into ``y``, and top_k rows per token are a small extra next to the weights at
decode sizes).

``MoEExperts.pack(experts)`` concatenates the experts' packed units, scales and offsets once (the
layout the kernel reads, see ``tilus.ops.moe_kernels``); ``moe_matmul`` accepts a packed
``MoEExperts`` (what ``tilus.nn.QuantMoE`` keeps) or a list, which it packs on each call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from tilus.errors import ArgumentError, DeviceMismatchError, QuantizationError
from tilus.ops.quantize import QuantizedWeight
from tilus.ops.validation import check_schedule

_ACT = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_SCALE = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
BLOCK_M = 16


def _variant(qw: QuantizedWeight) -> tuple:
    """What selects an expert's dequantization path: (type, zero mode, zero point, exponent)."""
    zero_mode = "tensor" if qw.offsets is not None else ("const" if qw.zero_point else "none")
    return (qw.dtype, zero_mode, float(qw.zero_point), int(qw.exponent))


@dataclass
class MoEExperts:
    """The experts' weights in the layout ``MoEQuantMatmul`` reads (see tilus.ops.moe_kernels):
    ``data`` uint8 ``[ceil(N/128), sum_e row_bytes_e]``, ``scales`` ``[sum_e groups, N]``,
    ``offsets`` ``[sum_e groups of experts with offsets, N]`` (a one-element dummy when none has
    them), ``table`` int64 ``[E, 4]`` (variant, byte offset in a row of ``data``, first scale row,
    first offset row), ``variants`` the distinct (type, zero mode, zero point, exponent)."""

    data: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor
    table: torch.Tensor
    variants: tuple
    dtypes: tuple
    n: int
    k: int
    group_size: int

    @property
    def num_experts(self) -> int:
        return len(self.dtypes)

    @property
    def device(self) -> torch.device:
        return self.data.device

    @staticmethod
    def pack(experts: Sequence[QuantizedWeight]) -> "MoEExperts":
        """Check the experts (same N, K, group size, scale dtype and device; group-scaled, no
        integer zero points) and concatenate them (one copy of every buffer)."""
        experts = list(experts)
        if not experts:
            raise ArgumentError("moe_matmul: experts is empty; give one tilus.ops.quantize result "
                                "per expert")
        for i, qw in enumerate(experts):
            if not isinstance(qw, QuantizedWeight):
                raise ArgumentError(f"moe_matmul: experts[{i}] must be a tilus.ops.QuantizedWeight "
                                    f"(from tilus.ops.quantize), got {type(qw).__name__}")
        first = experts[0]
        for i, qw in enumerate(experts):
            if tuple(qw.shape) != tuple(first.shape):
                raise ArgumentError(f"moe_matmul: experts[{i}] is [N, K] = {list(qw.shape)} but "
                                    f"experts[0] is {list(first.shape)}; every expert needs the "
                                    f"same N and K")
            if qw.group_size != first.group_size:
                raise ArgumentError(f"moe_matmul: experts[{i}] has group_size {qw.group_size}, "
                                    f"experts[0] {first.group_size}; quantize every expert with "
                                    f"the same group_size")
            if qw.block_scaled or (qw.offsets is not None and qw.offsets.dtype == torch.uint8):
                what = f"scheme={qw.scheme!r}" if qw.block_scaled else "zero_mode='int'"
                raise QuantizationError(f"moe_matmul: experts[{i}] is quantized with {what}, "
                                        f"which the MoE kernel does not read yet; use group-scaled "
                                        f"weights with float offsets (the default)")
            if qw.scales.dtype != first.scales.dtype:
                raise ArgumentError(f"moe_matmul: experts[{i}] has {qw.scales.dtype} scales, "
                                    f"experts[0] {first.scales.dtype}; use one scale dtype")
            if qw.device != first.device:
                raise DeviceMismatchError(f"moe_matmul: experts[{i}] is on {qw.device}, "
                                          f"experts[0] on {first.device}")
        variants: list[tuple] = []
        table, scale_rows, offset_rows = [], 0, 0
        byte = 0
        offsets = []
        for qw in experts:
            v = _variant(qw)
            if v not in variants:
                variants.append(v)
            table.append([variants.index(v), byte, scale_rows,
                          offset_rows if qw.offsets is not None else 0])
            byte += qw.data.shape[1]
            scale_rows += qw.scales.shape[0]
            if qw.offsets is not None:
                offsets.append(qw.offsets)
                offset_rows += qw.offsets.shape[0]
        dev = first.device
        data = torch.cat([qw.data for qw in experts], dim=1).contiguous()
        scales = torch.cat([qw.scales for qw in experts], dim=0).contiguous()
        offs = torch.cat(offsets, dim=0).contiguous() if offsets else \
            torch.zeros(1, first.scales.shape[1], dtype=first.scales.dtype, device=dev)
        return MoEExperts(data, scales, offs, torch.tensor(table, dtype=torch.int64, device=dev),
                          tuple(variants), tuple(qw.dtype for qw in experts), first.n, first.k,
                          first.group_size)


def _routing(routing: Any, tokens: int, num_experts: int, device) -> tuple:
    if not (isinstance(routing, (tuple, list)) and len(routing) == 2
            and all(isinstance(r, torch.Tensor) for r in routing)):
        raise ArgumentError("moe_matmul: routing must be (topk_ids, topk_weights), two tensors "
                            "[tokens, top_k]")
    ids, weights = routing
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ArgumentError(f"moe_matmul: routing's expert ids must be integers, got {ids.dtype} "
                            f"(routing is (topk_ids, topk_weights); torch.topk returns (values, "
                            f"indices))")
    if not weights.is_floating_point():
        raise ArgumentError(f"moe_matmul: routing weights must be floats, got {weights.dtype}")
    if ids.dim() != 2 or ids.shape[0] != tokens or tuple(weights.shape) != tuple(ids.shape):
        raise ArgumentError(f"moe_matmul: routing ids {list(ids.shape)} and weights "
                            f"{list(weights.shape)} must both be [tokens, top_k] with tokens = "
                            f"{tokens}")
    if ids.device != device or weights.device != device:
        raise DeviceMismatchError(f"moe_matmul: routing is on {ids.device}/{weights.device}, x on "
                                  f"{device}")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= num_experts:
            bad = lo if lo < 0 else hi
            raise ArgumentError(f"moe_matmul: routing names expert {bad}, but there are "
                                f"{num_experts} experts (ids 0..{num_experts - 1})")
    return ids, weights


def tile_table(ids: torch.Tensor, num_experts: int, block_m: int) -> tuple:
    """(order, tiles): ``order`` the (token, k) pair indices sorted by expert (stable); ``tiles``
    int32 ``[ceil(P / block_m) + E, 3]``: per tile (expert, first sorted row, end row of that
    expert), expert -1 for the spare rows. Torch ops on ids' device, nothing read back."""
    flat = ids.reshape(-1).long()
    pairs = flat.numel()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts)
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    per = (counts + block_m - 1) // block_m
    tile_ends = torch.cumsum(per, 0)
    t = torch.arange(-(-pairs // block_m) + num_experts, device=ids.device)
    expert = torch.searchsorted(tile_ends, t, right=True)
    valid = expert < num_experts
    e = expert.clamp(max=num_experts - 1)
    first = starts[e] + (t - (tile_ends[e] - per[e])) * block_m
    tiles = torch.stack([torch.where(valid, e, -1), first, ends[e]], dim=1).to(torch.int32)
    return order, tiles.contiguous()


_KERNELS: dict = {}
SCHEDULE_NAMES = ("block_k", "stages")


def block_k_fits(block_k: int, packed: MoEExperts) -> bool:
    """A k-step of ``block_k`` stays inside one scale group and inside each expert's own units
    (its packed row part holds ceil(K/32) units: a k-step past them would read the next expert's
    codes, which need not decode to finite values)."""
    units = -(-packed.k // 32)
    return block_k % 32 == 0 and units % (block_k // 32) == 0 \
        and (packed.group_size == packed.k or packed.group_size % block_k == 0)


def default_schedule(packed: MoEExperts, device: torch.device) -> dict:
    """CUDA: k-steps of up to 128 (four units, ``block_k_fits``) through a 3-stage copy_async
    pipeline; the interpreter: one unit per k-step, no pipeline."""
    if device.type != "cuda":
        return {"block_k": 32, "stages": 1}
    return {"block_k": next(c for c in (128, 64, 32) if block_k_fits(c, packed)), "stages": 3}


def kernel_for(packed: MoEExperts, act: str, schedule: dict):
    """The MoEQuantMatmul Script for these experts' variants, activations and schedule."""
    from tilus.ops.moe_kernels import MoEQuantMatmul

    scale = _SCALE[packed.scales.dtype]
    single = packed.group_size == packed.k
    key = (packed.variants, packed.group_size, act, scale, single,
           tuple(sorted(schedule.items())))
    kern = _KERNELS.get(key)
    if kern is None:
        kern = MoEQuantMatmul(packed.variants, packed.group_size, act, scale,
                              single_group=single, block_m=BLOCK_M, **schedule)
        _KERNELS[key] = kern
    return kern


def moe_matmul(x: torch.Tensor, experts: Any, routing: Any,
               bias: Optional[torch.Tensor] = None, *,
               schedule: Optional[dict] = None) -> torch.Tensor:
    """``y [tokens, N]``: each token's top_k expert products weighted by the routing weights (see
    the module docstring). ``experts``: a list of ``QuantizedWeight`` (one per expert, any mix of
    group-scaled types with the same N, K and group size) or a packed ``MoEExperts``;
    ``routing``: ``(topk_ids, topk_weights)``, both ``[tokens, top_k]``; ``bias``: ``[E, N]``,
    expert e's bias added to its product before the weighting (float32, before the rounding);
    ``schedule``: ``{"block_k": ..., "stages": ...}`` over ``default_schedule``'s."""
    if schedule is not None:
        schedule = check_schedule(schedule, SCHEDULE_NAMES, "moe_matmul")
    packed = experts if isinstance(experts, MoEExperts) else MoEExperts.pack(experts)
    if not isinstance(x, torch.Tensor) or x.dtype not in _ACT:
        raise ArgumentError(f"moe_matmul: x must be a float16 or bfloat16 tensor [tokens, K], got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 2 or x.shape[1] != packed.k:
        raise ArgumentError(f"moe_matmul: x has shape {list(x.shape)}; it must be [tokens, K] "
                            f"with K = {packed.k}, the experts' in_features")
    if x.device != packed.device:
        raise DeviceMismatchError(f"moe_matmul: x is on {x.device}, the experts on "
                                  f"{packed.device}")
    tokens = x.shape[0]
    ids, weights = _routing(routing, tokens, packed.num_experts, x.device)
    if bias is not None and (not isinstance(bias, torch.Tensor)
                             or tuple(bias.shape) != (packed.num_experts, packed.n)):
        raise ArgumentError(f"moe_matmul: bias must be a tensor [experts, N] = "
                            f"[{packed.num_experts}, {packed.n}], got "
                            f"{getattr(bias, 'shape', type(bias).__name__)}")
    top_k = ids.shape[1]
    pairs = tokens * top_k
    n = packed.n
    if pairs == 0 or n == 0:
        return x.new_zeros(tokens, n)
    order, tiles = tile_table(ids, packed.num_experts, BLOCK_M)
    xs = x[order // top_k].contiguous()
    rw = weights.reshape(-1)[order].float().contiguous()
    out = torch.empty(pairs, n, dtype=torch.float32, device=x.device)
    sched = {**default_schedule(packed, x.device), **(schedule or {})}
    if not block_k_fits(sched["block_k"], packed):
        raise ArgumentError(f"moe_matmul: schedule block_k={sched['block_k']} must be a multiple "
                            f"of 32 that divides the group size {packed.group_size} (or any, for "
                            f"one group over K) and the {-(-packed.k // 32)} units of 32 along "
                            f"K = {packed.k}")
    kern = kernel_for(packed, _ACT[x.dtype], sched)
    kern(n, packed.k, tiles.shape[0], packed.num_experts, packed.data.shape[1],
         packed.scales.shape[0], packed.offsets.shape[0], xs, packed.data, packed.scales,
         packed.offsets, packed.table, tiles, rw, out)
    per_pair = torch.empty_like(out)
    per_pair[order] = out
    if bias is not None:
        per_pair += weights.reshape(-1, 1).float() * bias.float()[ids.reshape(-1).long()]
    return per_pair.view(tokens, top_k, n).sum(1).to(x.dtype)


__all__ = ["moe_matmul", "MoEExperts", "tile_table", "default_schedule", "block_k_fits",
           "BLOCK_M"]
