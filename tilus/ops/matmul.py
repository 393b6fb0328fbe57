"""``tilus.ops.matmul(a, qweight, bias=None)``: activations times a quantized weight.

``a`` is ``[..., K]`` float16 or bfloat16 (any M, K, N); the result is ``[..., N]`` in a's dtype:
``a @ qweight.dequantize(a.dtype).T + bias``, accumulated in float32.

Engines (``engine=``):

* ``"auto"`` (default): through the ``torch.library`` custom op ``tilus::quant_matmul`` (so
  ``torch.compile(fullgraph=True)`` traces it as one node); its implementation dispatches on the
  device: **CUDA** tensors run the compiled Tilus kernel (``QuantMatmul`` built and launched by
  ``tilus.jit``; the schedule comes from the tuning database or the heuristic ``default_schedule``),
  **CPU** tensors run the fallback: dequantize (torch ops) + ``torch.matmul`` in float32.
* ``"interpreter"``: the real DSL kernel run by the Tilus CPU interpreter (slow: small sizes only;
  the tests use it to check the kernel against the reference).
* ``"fallback"``: the CPU reference path on any device.
* ``"compiled"``: the compiled kernel (CUDA tensors only).
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Optional, Union

import torch

from tilus import dtypes
from tilus.errors import ArgumentError, DeviceMismatchError, TilusError
from tilus.ops import blockscale
from tilus.ops.mixed import MixedQuantizedWeight
from tilus.ops.quantize import QuantizedWeight, dequantize_packed
from tilus.ops.validation import check_quant_operands, check_schedule

ENGINES = ("auto", "interpreter", "fallback", "compiled")
_ACT = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


# ---- schedules ----------------------------------------------------------------------------------
def _block_k_for(group_size: int, k: int, candidates=(512, 256, 128, 64, 32)) -> int:
    """The largest candidate (multiples of the packed unit's 32) whose k-tile lies in one group
    or spans whole groups (any for a single group); 512 only when K holds 8 such tiles (the
    per-tile costs halve per weight, and the pipeline still has tiles to overlap)."""
    candidates = [c for c in candidates if c <= max(256, k // 8)]
    if group_size == k:
        return next((c for c in candidates if c <= max(32, k)), candidates[-1])
    return next((c for c in candidates if group_size % c == 0 or c % group_size == 0), 32)


def bucket_m(m: int) -> int:
    """The M bucket of the tuning database: the next power of two (1, 2, 4, ..., 1024, 2048+)."""
    b = 1
    while b < m and b < 2048:
        b *= 2
    return b


def balanced_split(tiles: int, k_tiles: int, num_sms: int, max_split: int = 16) -> int:
    """The split-k that fills the SMs most evenly (blocks / (waves * SMs) highest, the smaller
    split on ties), keeping at least two k-tiles per split."""
    best, best_eff = 1, 0.0
    split = 1
    while split <= max_split and (split == 1 or k_tiles >= 2 * split):
        blocks = tiles * split
        eff = blocks / (math.ceil(blocks / num_sms) * num_sms)
        if eff > best_eff + 1e-9:
            best, best_eff = split, eff
        split *= 2
    return best


SMEM_LIMIT = 227 * 1024     # dynamic shared memory one block may use on sm_90 (sm_80: 163 KB)


def default_schedule(m: int, n: int, k: int, group_size: int, engine: str = "compiled",
                     num_sms: int = 132, nbits: int = 8, max_block_k: int = 512,
                     scale_block: int = 0, smem_limit: int = SMEM_LIMIT) -> dict:
    """A heuristic schedule: decode (M <= 16: block_m 16, block_k up to 512, split-k that fills
    the SMs evenly, a copy_async pipeline up to 4 deep) or large-M (block_m 64/128, one unit per
    k-tile, 3 stages). The decode stages of ``nbits``-bit weights, fp16 activations (and, with
    ``scale_block``, the block-scaled fast path's staged scale codes) fit in ``smem_limit``
    bytes (``SMEM_LIMIT``, sm_90's; ``compile_matmul`` passes its arch's). The interpreter gets
    one unit per k-tile and no pipeline. ``max_block_k``: ``block_k_limit``."""
    if engine == "interpreter":
        return {"block_m": 16, "block_n": 128, "block_k": 32, "split_k": 1, "warps": 4,
                "stages": 1}
    if m <= 16:
        bk = min(_block_k_for(group_size, k), max_block_k)
        k_tiles = math.ceil(k / bk)
        split = balanced_split(math.ceil(n / 128), k_tiles, num_sms)
        stages = max(1, min(4, math.ceil(k_tiles / split),
                            smem_limit // stage_bytes(16, bk, nbits, 128, scale_block)))
        return {"block_m": 16, "block_n": 128, "block_k": bk, "split_k": split, "warps": 4,
                "stages": stages}
    bm = 64 if m <= 128 else 128
    return {"block_m": bm, "block_n": 128, "block_k": 32, "split_k": 1,
            "warps": 8 if bm == 128 else 4, "stages": max(1, min(3, math.ceil(k / 32)))}


def block_k_limit(scheme: str, fold_scale: bool = False, nbits: int = 4) -> int:
    """The largest decode k-tile for a scheme: 256 for mx/nvfp4 without ``fold_scale`` (8 E8M0
    / 16 E4M3 scale rows held in registers one iteration ahead: 512 spills on sm_90), else 512
    (the fast path stages the scale codes in shared memory with the k-tile), but 256 for 8-bit
    block-scaled elements (two stages of 512 with their scale codes, 168 KB, exceed sm_80's
    163 KB)."""
    if scheme == "group" or (fold_scale and nbits < 8):
        return 512
    return 256


def stage_bytes(block_m: int, block_k: int, nbits: int, block_n: int = 128,
                scale_block: int = 0) -> int:
    """Shared memory of one pipeline stage: the fp16/bf16 activation tile, the packed weights
    and, for the block-scaled fast path (``scale_block``: its block size), the k-tile's uint8
    scale codes."""
    scales = block_k // scale_block * block_n if scale_block else 0
    return block_m * block_k * 2 + block_k * block_n * nbits // 8 + scales


def kernel_config(qw_meta: dict, act: str, has_bias: bool) -> dict:
    """QuantMatmul's compile-time parameters but the schedule, for a weight (its metadata),
    activations and bias (``kernel_for`` and the autotuner build from it)."""
    zero_mode = "tensor" if qw_meta["has_offsets"] else ("const" if qw_meta["zero_point"]
                                                         else "none")
    if qw_meta.get("int_zeros"):
        zero_mode = "int"
    return {"wtype": qw_meta["dtype"], "group_size": qw_meta["group_size"], "act": act,
            "scale": qw_meta["scale"], "zero_mode": zero_mode,
            "zero_point": qw_meta["zero_point"], "has_bias": has_bias,
            "single_group": qw_meta["group_size"] == qw_meta["k"],
            "exponent": qw_meta["exponent"], "fold_scale": qw_meta.get("fold_scale", False),
            "scheme": qw_meta.get("scheme", "group")}


def kernel_for(qw_meta: dict, act: str, has_bias: bool, schedule: dict):
    """The QuantMatmul Script for a weight (its metadata), activations, bias and schedule."""
    from tilus.ops.kernels import QuantMatmul

    key = (tuple(sorted(qw_meta.items())), act, has_bias, tuple(sorted(schedule.items())))
    kern = _KERNELS.get(key)
    if kern is None:
        kern = QuantMatmul(**kernel_config(qw_meta, act, has_bias), **schedule)
        _KERNELS[key] = kern
    return kern


_KERNELS: dict = {}


def _meta(dtype: str, group_size: int, k: int, zero_point: float,
          offsets: Optional[torch.Tensor], scale: torch.dtype, exponent: int = 0,
          fold_scale: bool = False, scheme: str = "group") -> dict:
    """The kernel metadata; ``int_zeros``: ``offsets`` are uint8 integer zero points; ``scale``:
    the activation dtype's name, or the scale type's for a block-scaled ``scheme``."""
    meta = {"dtype": dtype, "group_size": int(group_size), "k": int(k),
            "zero_point": float(zero_point), "has_offsets": offsets is not None,
            "int_zeros": offsets is not None and offsets.dtype == torch.uint8,
            "scale": _ACT[scale] if scheme == "group" else blockscale.scale_type(scheme).name,
            "exponent": int(exponent), "fold_scale": bool(fold_scale)}
    if scheme != "group":
        meta["scheme"] = scheme
    return meta


def weight_meta(qw: QuantizedWeight, act: torch.dtype) -> dict:
    """The kernel metadata of a quantized weight for activations of dtype ``act``."""
    return _meta(qw.dtype, qw.group_size, qw.k, qw.zero_point, qw.offsets,
                 qw.scales.dtype, qw.exponent,
                 can_fold_scale(qw.scales, qw.dtype, _ACT[act], qw.exponent, qw.zero_point,
                                qw.scheme),
                 qw.scheme)


_FOLDABLE: dict[int, tuple] = {}       # id(scales) -> (weak reference, key, answer)


def can_fold_scale(scales: torch.Tensor, dtype: str, act: str, exponent: int,
                   zero_point: float = 0.0, scheme: str = "group") -> bool:
    """Whether the kernel may fold the scales into the weights' activation-dtype arithmetic
    (``QuantMatmul(fold_scale=True)``). Group scales: a float weight type's exponent-bias
    multiply moves into the scale rows: scales in the activation dtype and every scale times
    2^j (``scale_fold_exponent``) exact and finite there. Block scales (``scheme`` "mx",
    "nvfp4"): the fast path (``tilus.ops.blockscale.scale_fold``) is exact for every scale code
    the tensor holds (``blockscale.fold_is_exact``), else the kernel keeps float32 partials
    (mx) or its decode to the activation dtype (nvfp4). One reduction per scales tensor (and
    in-place version), cached: the first call on a CUDA tensor waits for the GPU once."""
    from tilus import dtypes
    from tilus.ops.kernels import scale_fold_exponent, values_exact_in

    if scheme != "group":
        key: tuple = (scheme, dtype, act, exponent, scales._version)
    elif not dtypes.get(dtype).is_float or zero_point or _ACT.get(scales.dtype) != act \
            or not values_exact_in(dtype, act, exponent):
        return False
    else:
        key = (scale_fold_exponent(dtype, act, exponent), scales._version)
    hit = _FOLDABLE.get(id(scales))
    if hit is not None and hit[0]() is scales and hit[1] == key:
        return hit[2]
    if scheme != "group":
        present = torch.bincount(scales.flatten().long(), minlength=256).nonzero().flatten()
        ok = blockscale.fold_is_exact(present.cpu().numpy(), scheme, dtype, act, exponent)
    else:
        j = key[0]
        s = scales.double()
        folded = (s * 2.0 ** j).to(scales.dtype)
        ok = bool(torch.isfinite(folded).all()) and bool(torch.equal(folded.double() * 2.0 ** -j,
                                                                     s))
    ident = id(scales)
    _FOLDABLE[ident] = (weakref.ref(scales, lambda _: _FOLDABLE.pop(ident, None)), key, ok)
    return ok


# ---- checks -------------------------------------------------------------------------------------
def _check(a: Any, qw: Any, bias: Any) -> None:
    if not isinstance(qw, QuantizedWeight):
        raise ArgumentError(f"matmul: qweight must be a tilus.ops.QuantizedWeight (from "
                            f"tilus.ops.quantize), got {type(qw).__name__}")
    check_operands(a, qw, bias, "quantized weight", "qweight")
    check_quant_operands(a, qw.scales, qw.offsets, qw.block_scaled, "matmul")


def check_operands(a: Any, weight: Any, bias: Any, what: str, name: str) -> None:
    """ArgumentError/DeviceMismatchError unless ``a`` is a float16/bfloat16 tensor [..., K] on
    ``weight``'s device and ``bias`` (if any) a tensor [N] on a's device: ``matmul``'s checks
    for any weight with ``k``, ``n``, ``shape`` and ``device`` (``what``/``name`` name it)."""
    if not isinstance(a, torch.Tensor):
        raise ArgumentError(f"matmul: a must be a torch tensor [M, K], got {type(a).__name__}")
    if a.dtype not in _ACT:
        raise ArgumentError(f"matmul: a must be float16 or bfloat16, got {a.dtype} "
                            f"(cast it with a.half() or a.bfloat16())")
    if a.dim() < 1 or a.shape[-1] != weight.k:
        raise ArgumentError(f"matmul: a has shape {list(a.shape)} but the weight is [N, K] = "
                            f"{list(weight.shape)}: a's last dimension must be K = {weight.k}")
    if a.device != weight.device:
        raise DeviceMismatchError(f"matmul: a is on {a.device} but the {what} is on "
                                  f"{weight.device}; move one of them ({name}.to(device))")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.n,):
            raise ArgumentError(f"matmul: bias must be a tensor of shape [{weight.n}], got "
                                f"{getattr(bias, 'shape', type(bias).__name__)}")
        if bias.device != a.device:
            raise DeviceMismatchError(f"matmul: bias is on {bias.device}, a on {a.device}")


# ---- the engines --------------------------------------------------------------------------------
def fallback_matmul(a2, data, scales, offsets, bias, dtype: str, n: int, k: int,
                    group_size: int, zero_point: float, exponent: int = 0,
                    scheme: str = "group", global_scale: float = 1.0) -> torch.Tensor:
    """Dequantize (torch ops, on a2's device) + matmul in float32, rounded to a2's dtype. The
    block-scaled schemes dequantize to float32 (their range exceeds float16's)."""
    w = dequantize_packed(data, scales, offsets, dtype, n, k, group_size, zero_point,
                          a2.dtype if scheme == "group" else torch.float32, exponent, scheme,
                          global_scale)
    out = a2.float() @ w.float()
    if bias is not None:
        out = out + bias.float()
    return out.to(a2.dtype)


def _launch(a2, data, scales, offsets, bias, dtype, n, k, group_size, zero_point, exponent,
            scheme, global_scale, engine, schedule=None) -> torch.Tensor:
    check_quant_operands(a2, scales, offsets, scheme != "group", "matmul")
    m = a2.shape[0]
    act = _ACT[a2.dtype]
    meta = _meta(dtype, group_size, k, zero_point, offsets, scales.dtype, exponent,
                 can_fold_scale(scales, dtype, act, exponent, zero_point, scheme), scheme)
    if schedule is None:
        schedule = pick_schedule(m, n, k, meta, act, engine, a2.device)
    kern = kernel_for(meta, act, bias is not None, schedule)
    return run_kernel(kern, a2, data, scales, offsets, bias, n, k, schedule.get("split_k", 1),
                      global_scale, engine)


def run_kernel(kern, a2, data, scales, offsets, bias, n: int, k: int, split: int,
               global_scale: float, engine: str) -> torch.Tensor:
    """Launch a QuantMatmul-family Script (``tilus.jit``: the interpreter on CPU tensors, the
    compiled kernel on CUDA) on ``a2 [M, K]`` with ``split``-way split-k: allocates C, and
    split-k's workspace and semaphores."""
    m = a2.shape[0]
    dev = a2.device
    c = torch.empty(m, n, dtype=a2.dtype, device=dev)
    if m == 0 or n == 0:
        return c
    if k == 0:
        return c.zero_() if bias is None else c.copy_(bias.expand(m, n))
    if split > 1:
        ws = torch.empty(m, n, dtype=torch.float32, device=dev)
        sema = torch.zeros(math.ceil(m / kern.block_m) * math.ceil(n / kern.block_n),
                           dtype=torch.int32, device=dev)
    else:
        ws = torch.zeros(1, dtype=torch.float32, device=dev)
        sema = torch.zeros(1, dtype=torch.int32, device=dev)
    args = (m, n, k, a2.contiguous(), data.contiguous(), scales.contiguous(),
            torch.zeros(1, dtype=scales.dtype, device=dev) if offsets is None
            else offsets.contiguous(),
            torch.zeros(1, dtype=a2.dtype, device=dev) if bias is None
            else bias.to(a2.dtype).contiguous(), c, ws, sema, float(global_scale))
    if engine == "compiled" and not (dev.type == "cuda"):
        raise TilusError(f"matmul(engine='compiled') needs CUDA tensors, got {dev}")
    try:
        kern(*args)      # CPU: tilus.jit -> interpreter; CUDA: tilus.jit -> build + launch
    except TilusError as e:
        if dev.type == "cuda":
            raise TilusError(f"tilus.ops.matmul: the compiled Tilus kernel is not available: {e}. "
                             f"Use engine='fallback' (dequantize + torch.matmul) meanwhile") \
                from None
        raise
    return c


def pick_schedule(m, n, k, meta, act, engine, device) -> dict:
    """The tuned schedule for this shape bucket on this device, else ``default_schedule``."""
    if engine == "interpreter" or device.type != "cuda":
        return default_schedule(m, n, k, meta["group_size"], "interpreter")
    try:
        from tilus.autotune.database import default_database, device_name

        entry = default_database().lookup(matmul_kernel_name(meta, act),
                                          matmul_bucket(m, n, k), device_name(device))
        if entry is not None:
            return dict(entry["config"])
    except Exception:                               # a broken database must not break matmul
        pass
    props = torch.cuda.get_device_properties(device)
    return heuristic_schedule(meta, m, n, k, props.multi_processor_count,
                              getattr(props, "shared_memory_per_block_optin", SMEM_LIMIT))


def heuristic_schedule(meta: dict, m: int, n: int, k: int, num_sms: int = 132,
                       smem_limit: int = SMEM_LIMIT) -> dict:
    """``default_schedule`` for a weight's kernel metadata (``weight_meta``) on a GPU with
    ``num_sms`` SMs and ``smem_limit`` bytes of shared memory per block: its bits, the scheme's
    ``block_k_limit`` and the block-scaled fast path's staged scale codes."""
    nbits = dtypes.get(meta["dtype"]).nbits
    scheme, fold = meta.get("scheme", "group"), meta.get("fold_scale", False)
    return default_schedule(m, n, k, meta["group_size"], "compiled", num_sms, nbits,
                            block_k_limit(scheme, fold, nbits),
                            meta["group_size"] if scheme != "group" and fold else 0,
                            min(SMEM_LIMIT, smem_limit))


def matmul_kernel_name(meta: dict, act: str) -> str:
    z = "o" if meta["has_offsets"] else ("c" if meta["zero_point"] else "s")
    if meta.get("int_zeros"):
        z = "z"
    e = f"-e{meta['exponent']}" if meta.get("exponent") else ""
    f = "-f" if meta.get("fold_scale") else ""
    b = f"-{meta['scheme']}" if meta.get("scheme") else ""
    return (f"quant_matmul-{meta['dtype']}-g{meta['group_size']}-{z}{e}{f}{b}-{meta['scale']}"
            f"-{act}")


def matmul_bucket(m: int, n: int, k: int) -> str:
    return f"m{bucket_m(m)}-n{n}-k{k}"


# ---- the custom op ------------------------------------------------------------------------------
@torch.library.custom_op("tilus::quant_matmul", mutates_args=())
def quant_matmul(a: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                 offsets: Optional[torch.Tensor], bias: Optional[torch.Tensor], dtype: str,
                 n: int, k: int, group_size: int, zero_point: float,
                 exponent: int = 0, scheme: str = "group",
                 global_scale: float = 1.0) -> torch.Tensor:
    """``a [M, K] @ dequant(qweight).T + bias`` -> [M, N]; CUDA: Tilus kernel, else fallback."""
    if a.device.type == "cuda":
        return _launch(a, qweight, scales, offsets, bias, dtype, n, k, group_size, zero_point,
                       exponent, scheme, global_scale, "compiled")
    return fallback_matmul(a, qweight, scales, offsets, bias, dtype, n, k, group_size, zero_point,
                           exponent, scheme, global_scale)


@quant_matmul.register_fake
def _quant_matmul_fake(a, qweight, scales, offsets, bias, dtype, n, k, group_size, zero_point,
                       exponent=0, scheme="group", global_scale=1.0):
    return a.new_empty((a.shape[0], n))


# ---- autograd: the activations' gradient (the quantized weight is frozen) ---------------------
@torch.library.custom_op("tilus::quant_matmul_grad", mutates_args=())
def quant_matmul_grad(grad: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                      offsets: Optional[torch.Tensor], dtype: str, n: int, k: int,
                      group_size: int, zero_point: float, exponent: int = 0,
                      scheme: str = "group", global_scale: float = 1.0) -> torch.Tensor:
    """``grad [M, N] @ dequant(qweight) [N, K]`` -> [M, K] in grad's dtype (float32 products):
    the gradient of ``quant_matmul`` and ``dequant_linear`` with respect to their activations."""
    w = dequantize_packed(qweight, scales, offsets, dtype, n, k, group_size, zero_point,
                          torch.float32, exponent, scheme, global_scale)   # [K, N]
    return (grad.float() @ w.t()).to(grad.dtype)


@quant_matmul_grad.register_fake
def _quant_matmul_grad_fake(grad, qweight, scales, offsets, dtype, n, k, group_size, zero_point,
                            exponent=0, scheme="group", global_scale=1.0):
    return grad.new_empty((grad.shape[0], k))


def _grad_setup(ctx, inputs, output) -> None:
    a, qweight, scales, offsets, bias, dtype, n, k, group_size, zero_point, *rest = inputs
    ctx.save_for_backward(qweight, scales, offsets)
    ctx.args = (dtype, n, k, group_size, zero_point, *rest)
    ctx.n_inputs = len(inputs)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _grad(ctx, grad):
    qweight, scales, offsets = ctx.saved_tensors
    grad_a = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_a = torch.ops.tilus.quant_matmul_grad(grad, qweight, scales, offsets, *ctx.args)
    if ctx.needs_input_grad[4]:
        grad_bias = grad.sum(0).to(ctx.bias_dtype)
    return (grad_a, None, None, None, grad_bias) + (None,) * (ctx.n_inputs - 5)


def register_activation_grad(op) -> None:
    """Give a (a, qweight, scales, offsets, bias, dtype, n, k, group_size, zero_point, exponent,
    [scheme, global_scale]) custom op the gradient of its activations and bias; the packed weight gets none (frozen,
    as in QLoRA-style fine-tuning of adapters on top of a quantized model)."""
    op.register_autograd(_grad, setup_context=_grad_setup)


register_activation_grad(quant_matmul)


def matmul(a: torch.Tensor, qweight: Union[QuantizedWeight, MixedQuantizedWeight],
           bias: Optional[torch.Tensor] = None, *, engine: str = "auto",
           schedule: "Optional[dict | str]" = None) -> torch.Tensor:
    """``a [..., K] @ qweight.dequantize(a.dtype).T (+ bias)`` -> ``[..., N]`` in a's dtype.
    ``qweight`` is a QuantizedWeight or a mixed-width weight (``tilus.ops.mixed``: one launch of
    ``MixedQuantMatmul``, see ``tilus.ops.mixed_matmul``).

    See the module docstring for ``engine``; ``schedule`` (a dict of some of
    ``QuantMatmul.schedule_names()``: block_m/block_n/block_k/split_k/warps/stages, integers >= 1;
    anything else is an ArgumentError) overrides the tuned/heuristic one for the interpreter and
    compiled engines. ``schedule="lut"``: the LUT-GEMM kernel (``tilus.ops.lut``), accepted only
    where it wins (uint1 weights with float offsets, M = 1, no bias)."""
    if isinstance(qweight, MixedQuantizedWeight):
        if isinstance(schedule, str):
            raise ArgumentError(f"matmul: the named schedule {schedule!r} does not take a "
                                f"mixed-width weight")
        from tilus.ops.mixed_matmul import mixed_matmul

        return mixed_matmul(a, qweight, bias, engine=engine, schedule=schedule)
    if engine not in ENGINES:
        raise ArgumentError(f"matmul: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if isinstance(schedule, str):
        if schedule != "lut":
            raise ArgumentError(f"matmul: a named schedule must be 'lut', got {schedule!r}")
        from tilus.ops.lut import lut_schedule

        _check(a, qweight, bias)
        out = lut_schedule(a.reshape(-1, qweight.k), qweight, bias, engine)
        return out.reshape(*a.shape[:-1], qweight.n)
    if schedule is not None:
        from tilus.ops.kernels import QuantMatmul

        schedule = check_schedule(schedule, QuantMatmul.schedule_names(), "matmul")
    _check(a, qweight, bias)
    lead = a.shape[:-1]
    a2 = a.reshape(-1, qweight.k)
    args = (qweight.data, qweight.scales, qweight.offsets, bias, qweight.dtype, qweight.n,
            qweight.k, qweight.group_size, float(qweight.zero_point), int(qweight.exponent),
            qweight.scheme, float(qweight.global_scale))
    if engine == "auto" and (schedule is None or a.device.type != "cuda"):
        out = torch.ops.tilus.quant_matmul(a2, *args)
    elif engine == "fallback":
        out = fallback_matmul(a2, *args)
    else:
        if engine == "interpreter" and a.device.type != "cpu":
            raise DeviceMismatchError(f"matmul(engine='interpreter') runs on the CPU; got "
                                      f"tensors on {a.device}")
        eng = "interpreter" if engine == "interpreter" else "compiled"
        out = _launch(a2, *args, engine=eng, schedule=schedule)
    return out.reshape(*lead, qweight.n)


__all__ = ["matmul", "default_schedule", "fallback_matmul", "quant_matmul", "bucket_m",
           "matmul_kernel_name", "matmul_bucket", "balanced_split"]
