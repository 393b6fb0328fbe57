"""Every kernel the GPU session launches, with its inputs and an independent reference: one list,
so that ``tilus bundle --arch sm_90 --out DIR tests/gpu/kernels.py`` (``make gpu-bundle``)
prebuilds exactly what a GPU machine without TVM needs to run ``tests/gpu``,
``tests/gpu/sanitize.py``, ``benchmarks/launch_overhead.py`` and ``benchmarks/bench_matmul.py``
(as ``benchmarks/gpu_session.sh`` runs it) from the cache.

* ``CASES``: the example kernels, name -> ``Case(factory, inputs, exact, reference, tol)``; sizes
  do not divide the tiles. ``reference`` computes the expected outputs with torch alone.
* ``OPS_CASES``: ``tilus.ops.matmul`` on CUDA (``OpsCase``): every 1-8-bit weight type, the core
  ones at M = 1, 16, 64, 256, plus bias, bf16 activations (bf16 and fp16 scales), one group over K,
  explicit split-k schedules, a tuned schedule and the sanitizer's cases.
* ``LLAMA_*``: the tiny Llama of ``examples/llm_decode.py`` quantized by ``tilus.nn``.
* ``ATTENTION_CASES``: ``tilus.ops.attention_decode`` on CUDA (``AttentionCase``), what
  ``test_attention_gpu.py`` launches; ``attention_kernels(case)`` its split and combine kernels;
  ``PAGED_ATTENTION_CASES`` / ``paged_attention_kernels(case)`` the same for
  ``attention_decode_paged``.
* ``MOE_TYPES``, ``MOE_CALLS``: ``tilus.ops.moe_matmul`` / ``tilus.nn.QuantMoE`` on CUDA, what
  ``test_moe_gpu.py`` launches; ``moe_kernels()`` their kernels.
* ``PREFILL_CASES``: ``tilus.ops.attention_prefill`` on CUDA (``PrefillCase``), what
  ``test_attention_prefill_gpu.py`` launches; ``prefill_kernels(case)`` its kernel.
* ``SLICED_*`` / ``sliced_kernels()``, ``LUT_CALLS`` / ``lut_kernels()``: what ``test_sliced_gpu.py``
  and ``test_lut_gpu.py`` launch.
* ``bench_requests(argv)``: what ``bench_matmul.py argv`` launches.
* ``split_k_workspace()``: a kernel with ``global_tensor`` workspaces (test_gpu_launch.py).

A *request* is what ``tilus.ops.matmul`` hands to ``kernel_for``: ``(meta, act, has_bias,
schedule)``, computed here with the dispatch's own functions (``weight_meta``, ``default_schedule``,
``kernel_for``) for the 132-SM GPU the bundle targets (H100 SXM, H200). The GPU tests record the
requests ``matmul`` really makes and compare them with these; ``test_cases_on_cpu.py`` checks that
every one of them is in ``bundle_specs()``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
LOWBIT = ("uint3", "int4", "uint6", "float6_e3m2", "float4_e2m1")


def example(name):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return __import__(name)


# ---- the example kernels ------------------------------------------------------------------------
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


# references: torch (and numpy) alone, from the CPU arguments before the call
def _vector_add_ref(torch, args):
    return {3: args[1] + args[2]}


def _softmax_ref(torch, args):
    return {3: torch.softmax(args[2].double(), dim=1).float()}


def _matmul_fp16_ref(torch, args):
    return {5: (args[3].double() @ args[4].double()).half()}


def _matmul_splitk_ref(torch, args):
    # c = A @ B in float32; every tile's semaphore is back at 0
    return {5: (args[3].double() @ args[4].double()).float(), 6: torch.zeros_like(args[6])}


def _lowbit_ref(wtype):
    def ref(torch, args):
        # make_inputs' reference: the codes decoded by numpy (tilus.dtypes' value tables), the
        # fixed zero point 2^(B-1) of unsigned types, fp16 scales, float32 matmul
        m, n, k = args[:3]
        return {6: example("matmul_lowbit").make_inputs(wtype, m, n, k, 32)[3].half()}
    return ref


class Case(NamedTuple):
    factory: Callable       # () -> the kernel
    inputs: Callable        # (torch, device) -> (arguments, indices of the outputs)
    exact: bool             # compiled == interpreter bit for bit
    reference: Callable     # (torch, CPU arguments) -> {output index: expected tensor}
    tol: tuple              # (rtol, atol) against the reference; (0, 0): equal


CASES = {
    "vector_add": Case(vector_add, _vector_add_inputs, True, _vector_add_ref, (0, 0)),
    "softmax": Case(softmax, _softmax_inputs, False, _softmax_ref, (1e-5, 1e-6)),
    # fp16 outputs: about 1 ulp (2^-10 relative) of the final rounding, fp32 sums of <= 75 terms
    "matmul_fp16": Case(matmul_fp16, _matmul_fp16_inputs, False, _matmul_fp16_ref, (2e-3, 1e-3)),
    "matmul_splitk": Case(matmul_splitk, _matmul_splitk_inputs, False, _matmul_splitk_ref,
                          (1e-5, 1e-5)),
    **{f"matmul_lowbit_{t}": Case((lambda t=t: matmul_lowbit(t)), _lowbit_inputs(t), False,
                                  _lowbit_ref(t), (2e-3, 1e-3))
       for t in LOWBIT},
}


def split_k_workspace():
    """The split-K kernel whose partial sums and semaphores are ``global_tensor`` workspaces
    (tests/interpreter/test_global_tensor.py): the launcher allocates them."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.interpreter.test_global_tensor import SplitKWorkspace

    return SplitKWorkspace(3)


def assert_matches_reference(name, got, want, tol) -> None:
    """``got`` (an output, any device) equals ``want`` within ``tol`` = (rtol, atol)."""
    import torch

    got = got.detach().cpu()
    assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape)
    if tol == (0, 0) or not got.is_floating_point():
        assert torch.equal(got, want), (name, int((got != want).sum()))
    else:
        torch.testing.assert_close(got.float(), want.float(), rtol=tol[0], atol=tol[1],
                                   msg=lambda m: f"{name}: {m}")


# ---- tilus.ops.matmul on CUDA -------------------------------------------------------------------
# N and K do not divide the tiles (N = 31.25 column tiles, K = 15.5 k-tiles of 256). With group 128
# on 132 SMs the default schedules are decode (M <= 16): block_k 256, split-k 4, 4 stages (K < 4096
# keeps block_k below 512); M = 64: block_m 64; M = 256: block_m 128, 8 warps: the last two are
# those of benchmarks/bench_matmul.py, so the GPU tests and the benchmark share those kernels.
OPS_N, OPS_K, OPS_GROUP, OPS_SMS = 4000, 3968, 128, 132
OPS_MS = (1, 16, 64, 256)
CORE_TYPES = ("uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7", "uint8", "int2",
              "int3", "int4", "int5", "int6", "int7", "int8", "float4_e2m1", "float6_e3m2",
              "float8_e4m3")


def _schedule(block_m=16, block_k=32, split_k=1, warps=4, stages=1) -> tuple:
    return tuple(sorted(dict(block_m=block_m, block_n=128, block_k=block_k, split_k=split_k,
                             warps=warps, stages=stages).items()))


# the default decode schedule of OPS_N x OPS_K on 132 SMs
DECODE_SCHEDULE = _schedule(16, 256, 4, 4, 4)
# split-k 2 over k-tiles of 64 (one group in two tiles), 8 warps of 32 rows
SPLIT2_SCHEDULE = _schedule(32, 64, 2, 8, 3)


@dataclass(frozen=True)
class OpsCase:
    """One ``tilus.ops.matmul(a [m, k], quantize(w [n, k], wtype, group, scale_dtype=scale),
    bias)`` on CUDA."""
    wtype: str
    m: int
    act: str = "float16"          # activations and output
    scale: str = "float16"        # the quantized weight's scales (and offsets)
    bias: bool = False
    group: int = OPS_GROUP        # 0: one group over all of K
    n: int = OPS_N
    k: int = OPS_K
    schedule: tuple = ()          # sorted schedule items; () = what matmul picks
    tuned: bool = False           # the schedule comes from the tuning database (schedule= holds it)
    scheme: str = "group"         # or the block-scaled "mx" / "nvfp4" (no scale_dtype, no group)
    zero: str = "float"           # quantize's zero_mode ("int": uint8 integer zero points)

    @property
    def id(self) -> str:
        parts = [self.wtype, f"m{self.m}"]
        if self.act != "float16" or self.scale != "float16":
            parts.append(f"{self.act[:2]}{self.act[-2:]}-s{self.scale[:2]}{self.scale[-2:]}")
        if self.bias:
            parts.append("bias")
        if self.scheme != "group":
            parts.append(self.scheme)
        if self.zero != "float":
            parts.append(f"z{self.zero}")
        if self.group != OPS_GROUP:
            parts.append(f"g{self.group or 'K'}")
        if (self.n, self.k) != (OPS_N, OPS_K):
            parts.append(f"n{self.n}k{self.k}")
        if self.schedule:
            s = dict(self.schedule)
            parts.append(("tuned-" if self.tuned else "")
                         + f"bm{s['block_m']}k{s['block_k']}x{s['split_k']}w{s['warps']}"
                           f"s{s['stages']}")
        return "-".join(parts)

    @property
    def group_size(self) -> int:
        return self.group or self.k

    def explicit_schedule(self) -> Optional[dict]:
        """What the test passes as ``matmul(..., schedule=)``."""
        return dict(self.schedule) if self.schedule and not self.tuned else None


def _other_types():
    from tilus.ops.quantize import supported_weight_types

    return [t for t in supported_weight_types() if t not in CORE_TYPES]


# the sanitizer's matmuls (tests/gpu/sanitize.py): one per bit width, small, in the decode kernel
# (a 4-stage copy_async ring, split-k 4 over 9 k-tiles: the last split gets none), and the
# 8-warp large-M kernel
SANITIZE_CASES = ([OpsCase(f"uint{b}", 16, n=300, k=2304, schedule=DECODE_SCHEDULE)
                   for b in range(1, 9)]
                  + [OpsCase("int4", 130, n=300, k=2304)])

OPS_CASES = (
    [OpsCase(t, m) for t in CORE_TYPES for m in OPS_MS]
    + [OpsCase(t, 1) for t in _other_types()]
    + [OpsCase("uint4", 16, bias=True),
       OpsCase("int8", 64, bias=True),
       OpsCase("uint4", 1, act="bfloat16", scale="bfloat16"),
       OpsCase("float4_e2m1", 64, act="bfloat16", scale="bfloat16"),
       OpsCase("int4", 16, act="bfloat16"),               # bf16 activations, fp16 scales
       OpsCase("uint4", 3, group=0),                       # one group over K
       OpsCase("uint4", 1, zero="int"),                    # integer zero points (v - z) * s
       OpsCase("uint3", 64, act="bfloat16", scale="bfloat16", zero="int"),
       # split-k 4 over 9 k-tiles of 128 (3 per split: the last split has none)
       OpsCase("int4", 5, n=1000, k=1152, schedule=_schedule(16, 128, 4, 4, 2)),
       OpsCase("float6_e3m2", 64, schedule=SPLIT2_SCHEDULE),
       OpsCase("float6_e3m2", 33, schedule=SPLIT2_SCHEDULE, tuned=True),
       # block-scaled (issue 16): MXFP4 at decode, NVFP4 with bf16 activations, MXINT8
       OpsCase("float4_e2m1", 1, scheme="mx"),
       OpsCase("float4_e2m1", 16, act="bfloat16", scheme="nvfp4"),
       OpsCase("int8", 5, n=1000, k=1152, scheme="mx")]
    + SANITIZE_CASES)


def ops_weight(case: OpsCase, rows: Optional[int] = None):
    """The case's float32 weight [n, k] on the CPU (``rows``: only its first rows).

    Random (std 0.05, clamped to +-0.19), and every group's largest magnitude is set to one of
    0.2, 0.25, 0.3, 0.35 (by group and column), so that scales differ from group to group and
    column to column while the set of group maxima, which decides the quantized weight's
    ``exponent``, is the same in any 8 rows as in the whole weight (``ops_meta`` quantizes 8
    rows)."""
    import torch

    n = case.n if rows is None else rows
    g = torch.Generator().manual_seed(case.n * 7919 + case.k)
    w = (torch.randn(n, case.k, generator=g) * 0.05).clamp_(-0.19, 0.19)
    groups = case.k // case.group_size
    col = torch.arange(n).unsqueeze(1)
    grp = torch.arange(groups).unsqueeze(0)
    peak = 0.2 + 0.05 * ((grp + col) % 4).float()
    sign = torch.where((grp * 3 + col) % 2 == 0, 1.0, -1.0)
    w[col, grp * case.group_size + col % 7] = peak * sign
    return w


def quantize_case(case: OpsCase, weight):
    import torch

    from tilus.ops import quantize

    if case.scheme != "group":
        return quantize(weight, case.wtype, scheme=case.scheme)
    scale = {"float16": torch.float16, "bfloat16": torch.bfloat16}[case.scale]
    return quantize(weight, case.wtype, group_size=case.group_size, scale_dtype=scale,
                    zero_mode=case.zero)


def ops_activations(case: OpsCase, device="cpu"):
    import torch

    g = torch.Generator().manual_seed(case.m * 131 + case.k)
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[case.act]
    return (torch.randn(case.m, case.k, generator=g) * 0.5).to(dt).to(device)


def ops_bias(case: OpsCase, device="cpu"):
    import torch

    if not case.bias:
        return None
    g = torch.Generator().manual_seed(case.n)
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[case.act]
    return torch.randn(case.n, generator=g).to(dt).to(device)


def meta_of(qw, act: str = "float16") -> dict:
    """The metadata ``tilus.ops.matmul`` dispatches on (its ``weight_meta``) for a
    QuantizedWeight and activations of dtype ``act`` (float weights fold their scales by it)."""
    import torch

    from tilus.ops.matmul import weight_meta

    return weight_meta(qw, {"float16": torch.float16, "bfloat16": torch.bfloat16}[act])


_METAS: dict = {}


def ops_meta(case: OpsCase) -> dict:
    """meta_of(quantize_case(case, weight)) from 8 rows of the weight (see ops_weight)."""
    key = (case.wtype, case.scale, case.group, case.n, case.k, case.act, case.scheme, case.zero)
    if key not in _METAS:
        _METAS[key] = meta_of(quantize_case(case, ops_weight(case, rows=8)), case.act)
    return dict(_METAS[key])


def request(meta: dict, act: str, has_bias: bool, schedule: dict) -> tuple:
    """A request as ``kernel_for`` keys it."""
    return (tuple(sorted(meta.items())), act, bool(has_bias), tuple(sorted(schedule.items())))


def ops_requests(case: OpsCase, num_sms: int = OPS_SMS) -> list:
    """The requests ``tilus.ops.matmul`` makes for ``case`` (one call) on a ``num_sms`` GPU."""
    from tilus.ops.matmul import heuristic_schedule

    meta = ops_meta(case)
    if case.schedule:                      # explicit, or the tuning database's entry
        sched = dict(case.schedule)
    else:
        sched = heuristic_schedule(meta, case.m, case.n, case.k, num_sms)
    return [request(meta, case.act, case.bias, sched)]


def kernel_of(req: tuple):
    """The QuantMatmul Script for a request (``kernel_for``, as matmul calls it)."""
    from tilus.ops.matmul import kernel_for

    meta, act, has_bias, sched = req
    return kernel_for(dict(meta), act, has_bias, dict(sched))


def ops_kernels() -> list:
    """The QuantMatmul kernels of every OPS_CASES entry."""
    return [kernel_of(r) for case in OPS_CASES for r in ops_requests(case)]


# ---- QuantLinear / quantize_model: the tiny Llama of examples/llm_decode.py ---------------------
LLAMA_TYPE, LLAMA_GROUP, LLAMA_SEED = "uint4", 64, 0
LLAMA_PROMPT, LLAMA_SEQ, LLAMA_STEPS = 8, 24, 6
# the M of every QuantLinear call: teacher-forced sequence, prompt, then one token at a time
LLAMA_MS = (LLAMA_SEQ, LLAMA_PROMPT, 1)


def llama_models():
    """(float model, quantized model) on the CPU, float32: examples/llm_decode.TinyLlama with
    LLAMA_SEED, quantized by tilus.nn.quantize_model (lm_head kept)."""
    import torch

    import tilus

    mod = example("llm_decode")
    torch.manual_seed(LLAMA_SEED)
    base = mod.TinyLlama().eval()
    q = mod.TinyLlama().eval()
    q.load_state_dict(base.state_dict())
    tilus.nn.quantize_model(q, dtype=LLAMA_TYPE, group_size=LLAMA_GROUP, skip=["lm_head"])
    return base, q


def llama_requests(qmodel=None, num_sms: int = OPS_SMS) -> set:
    """Every request the quantized tiny Llama's QuantLinear layers make (fp16, on CUDA)."""
    from tilus.nn import QuantLinear
    from tilus.ops.matmul import default_schedule

    qmodel = qmodel if qmodel is not None else llama_models()[1]
    out = set()
    for layer in qmodel.modules():
        if isinstance(layer, QuantLinear):
            qw = layer.qweight_object
            for m in LLAMA_MS:
                sched = default_schedule(m, qw.n, qw.k, qw.group_size, "compiled", num_sms,
                                         qw.nbits)
                out.add(request(meta_of(qw), "float16", layer.bias is not None, sched))
    return out


# ---- benchmarks/bench_matmul.py -----------------------------------------------------------------
def bench_requests(argv=(), num_sms: int = OPS_SMS) -> set:
    """The requests of the ``tilus`` rows of ``bench_matmul.py argv`` on a ``num_sms`` GPU (its
    weights: ``random_qweight``, fp16 activations, no bias, the default schedule)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks import bench_matmul as bm
    from tilus.ops.kernels import QuantMatmul
    from tilus.ops.matmul import default_schedule

    args = bm.parse_args(list(argv))
    if "tilus" not in args.methods:
        return set()
    out = set()
    for k, n in args.shape_list:
        for tname in args.types:
            meta = meta_of(bm.random_qweight(128, k, bm.TYPES[tname], device="cpu"))
            for m in args.m:
                sched = default_schedule(m, n, k, bm.GROUP, "compiled", num_sms,
                                         QuantMatmul._nbits(bm.TYPES[tname]))
                out.add(request(meta, "float16", False, sched))
    return out


# the arguments benchmarks/gpu_session.sh gives bench_matmul.py, less --out and --budget-s
# (test_cases_on_cpu.py checks the script against it)
SESSION_BENCH_ARGS: tuple = ()


# ---- decode attention (test_attention_gpu.py) ----------------------------------------------------
class AttentionCase(NamedTuple):
    """One attention_decode call of the GPU tests: the cache type, (query heads, KV heads,
    head_dim), q's dtype and the scales' group along head_dim (0: one per row)."""
    dtype: str
    heads: int
    kv_heads: int
    head_dim: int
    act: str = "float16"
    group_size: int = 0


ATTENTION_TYPES = ("uint4", "int4", "uint8", "uint2", "uint3", "float8_e4m3", "float4_e2m1")
ATTENTION_SHAPES = ((32, 8, 128), (8, 8, 64), (14, 2, 128))
ATTENTION_GROUPED = (("uint4", 32), ("int8", 64), ("float8_e4m3", 32))
ATTENTION_LOOP = AttentionCase("uint8", 16, 4, 128)           # test_decode_loop_appends_on_device


def attention_act(dtype: str) -> str:
    """q's dtype in the GPU tests: bfloat16 for int4 and float8_e4m3 caches, else float16."""
    return "bfloat16" if dtype in ("int4", "float8_e4m3") else "float16"


ATTENTION_CASES = ([AttentionCase(t, h, kv, d, attention_act(t)) for t in ATTENTION_TYPES
                    for h, kv, d in ATTENTION_SHAPES] + [ATTENTION_LOOP]
                   + [AttentionCase(t, 32, 8, 128, "float16", g) for t, g in ATTENTION_GROUPED])


def attention_kernels(case: AttentionCase) -> list:
    """The split and combine Scripts attention_decode builds for ``case`` (default softmax scale
    1/sqrt(head_dim), default tile)."""
    from tilus.ops.attention import combine_kernel, split_kernel

    group = case.heads // case.kv_heads
    return [split_kernel(case.dtype, case.dtype, case.head_dim, group, case.head_dim ** -0.5,
                         act=case.act, group_size=case.group_size),
            combine_kernel(case.head_dim, group, act=case.act)]


#: Mixed-width cases (tests/gpu/test_mixed_width_gpu.py): (m, n, k, salient features, act)
MIXED_CASES = ((1, OPS_N, OPS_K, 400, "float16"), (16, 1000, 1024, 130, "bfloat16"),
               (256, 1000, 1024, 24, "float16"))


def mixed_weight(n: int, k: int, salient: int, act: str, device="cpu"):
    """The mixed-width weight of a MIXED_CASES entry: uint8 for every (n // salient)-th output
    feature (``salient`` of them), uint4 for the rest, groups of 128, scales in ``act``."""
    import torch

    import tilus

    g = torch.Generator().manual_seed(n + k + salient)
    w = torch.randn(n, k, generator=g) * 0.05
    cols = torch.arange(salient) * (n // salient)
    return tilus.ops.quantize(w.to(device), dtype={"uint8": cols, "uint4": "rest"},
                              group_size=OPS_GROUP, scale_dtype=getattr(torch, act))


def mixed_kernels(num_sms: int = OPS_SMS) -> list:
    """The MixedQuantMatmul Scripts ``tilus.ops.matmul`` launches for MIXED_CASES (with bias)."""
    import torch

    from tilus.ops.matmul import weight_meta
    from tilus.ops.mixed_matmul import mixed_kernel_for, mixed_schedule

    out = []
    for m, n, k, salient, act in MIXED_CASES:
        mw = mixed_weight(n, k, salient, act)
        dt = getattr(torch, act)
        out.append(mixed_kernel_for(weight_meta(mw.wide, dt), weight_meta(mw.narrow, dt), act,
                                    True, mixed_schedule(m, mw, "compiled", num_sms)))
    return out


class PagedAttentionCase(NamedTuple):
    """One attention_decode_paged call of the GPU tests: an AttentionCase's fields and the
    pages' size in tokens."""
    dtype: str
    heads: int
    kv_heads: int
    head_dim: int
    page_size: int
    act: str = "float16"
    group_size: int = 0


PAGED_ATTENTION_CASES = (PagedAttentionCase("uint4", 32, 8, 128, 16),
                         PagedAttentionCase("uint8", 14, 2, 128, 32),
                         PagedAttentionCase("float8_e4m3", 32, 8, 128, 64, "bfloat16", 32))


def paged_attention_kernels(case: PagedAttentionCase) -> list:
    """The split and combine Scripts attention_decode_paged builds for ``case``."""
    from tilus.ops.attention import combine_kernel, paged_split_kernel

    group = case.heads // case.kv_heads
    return [paged_split_kernel(case.dtype, case.dtype, case.head_dim, group,
                               case.head_dim ** -0.5, case.page_size, act=case.act,
                               group_size=case.group_size),
            combine_kernel(case.head_dim, group, act=case.act)]


# ---- tilus.ops.moe_matmul: what tests/gpu/test_moe_gpu.py launches ------------------------------
MOE_TYPES = ("uint4", "int4", "uint2", "uint3", "uint4", "int4", "uint2", "uint3")
#: (group size, K, activation dtype) of the GPU test's moe_matmul calls; the last is QuantMoE's
MOE_CALLS = [(32, 1056, "float16"), (32, 1056, "bfloat16"), (128, 512, "float16")]


def moe_kernels() -> list:
    """The MoEQuantMatmul Scripts ``moe_matmul`` builds for MOE_CALLS on CUDA: its own packing and
    dispatch (``kernel_for``, ``default_schedule``) on small experts of the same types."""
    import torch

    from tilus.ops import moe, quantize

    out = []
    for group, k, act in MOE_CALLS:
        w = torch.linspace(-1, 1, 8 * k).reshape(8, k)
        scale = getattr(torch, act) if act == "bfloat16" else torch.float32
        packed = moe.MoEExperts.pack([quantize(w.to(scale), dtype=t, group_size=group)
                                      for t in MOE_TYPES])
        out.append(moe.kernel_for(packed, act, moe.default_schedule(packed, torch.device("cuda"))))
    return out


# ---- bit-sliced and LUT matmuls (test_sliced_gpu.py, test_lut_gpu.py) ------------------------------
#: (n, k, group) of the GPU tests' weights; their (m, activation dtype) and served widths
SLICED_SHAPE, SLICED_CALLS, SLICED_BITS = (1000, 1536, 128), \
    ((1, "float16"), (7, "bfloat16"), (200, "float16")), (8, 4, 2)
#: (bits, block_m, m) of test_lut_gpu.py's matmul_lut calls (float16, group 128)
LUT_CALLS = ((1, 1, 1), (2, 1, 1), (2, 2, 3))


def sliced_kernels(num_sms: int = OPS_SMS) -> list:
    """The SlicedMatmul Scripts matmul_sliced launches for SLICED_CALLS x SLICED_BITS (with a
    bias): its own dispatch (``default_schedule``, ``kernel_for``) on a ``num_sms`` GPU."""
    from tilus.ops.matmul import default_schedule
    from tilus.ops.sliced import kernel_for

    n, k, group = SLICED_SHAPE
    return [kernel_for(bits, group, k, act, True,
                       default_schedule(m, n, k, group, "compiled", num_sms, bits))
            for m, act in SLICED_CALLS for bits in SLICED_BITS]


def lut_kernels() -> list:
    """The LutMatmul Scripts matmul_lut launches for LUT_CALLS (``matmul(schedule="lut")`` at
    uint1, M = 1 is the first)."""
    from tilus.ops.lut import kernel_for

    return [kernel_for(bits, SLICED_SHAPE[2], "float16", dict(block_m=block_m))
            for bits, block_m, _ in LUT_CALLS]


# ---- prefill attention (test_attention_prefill_gpu.py) ------------------------------------------
class PrefillCase(NamedTuple):
    """One attention_prefill configuration of the GPU tests: (query heads, KV heads, head_dim),
    q's dtype, the K/V code type (None: K/V in q's dtype) and the causal mask."""
    heads: int
    kv_heads: int
    head_dim: int
    act: str = "float16"
    kv_dtype: Optional[str] = None
    causal: bool = False


PREFILL_CASES = (PrefillCase(32, 8, 128, "float16", None, True),
                 PrefillCase(32, 8, 128, "bfloat16", None, False),
                 PrefillCase(8, 8, 64, "float16", None, False),
                 PrefillCase(14, 2, 64, "bfloat16", None, True),
                 PrefillCase(4, 4, 32, "float16", None, True),
                 PrefillCase(32, 8, 128, "float16", "int8", True),
                 PrefillCase(32, 8, 128, "bfloat16", "float8_e4m3", True),
                 PrefillCase(8, 2, 64, "float16", "uint8", False))


SANITIZE_PREFILL = (PREFILL_CASES[0], PREFILL_CASES[5])      # sanitize.py: fp16 and int8 K/V


def prefill_id(case: PrefillCase) -> str:
    """A name for sanitize.py: prefill-<heads>x<kv_heads>-d<head_dim>-<act>-<kv>[-causal]."""
    return (f"prefill-{case.heads}x{case.kv_heads}-d{case.head_dim}-{case.act}-"
            f"{case.kv_dtype or 'kv16'}" + ("-causal" if case.causal else ""))


def prefill_kernels(case: PrefillCase) -> list:
    """The Script attention_prefill builds for ``case`` (default softmax scale 1/sqrt(head_dim))."""
    from tilus.ops.prefill import prefill_kernel

    return [prefill_kernel(case.head_dim, case.heads // case.kv_heads, case.head_dim ** -0.5,
                           case.causal, case.act, case.kv_dtype)]


def act_quant_kernels() -> list:
    """The kernels tests/gpu/test_act_quant_gpu.py launches on sm_90: per-row quantization to
    int8, int4 and e4m3, and the W8A8 (also split-k, as at decode M), W4A4 (int8 widening, per
    channel, also split-k, and group 128) and FP8 matmuls with a bias."""
    from tilus.ops import fp8, rowquant, w4a4, w8a8

    return [rowquant.QuantizeRows(t) for t in ("int8", "int4", "float8_e4m3")] + [
        w8a8.MatmulW8A8(has_bias=True), w8a8.MatmulW8A8(has_bias=True, split_k=2),
        w8a8.MatmulW8A8(split_k=2), w4a4.MatmulW4A4(has_bias=True),
        w4a4.MatmulW4A4(has_bias=True, split_k=2), w4a4.MatmulW4A4(split_k=2),
        w4a4.MatmulW4A4(has_bias=True, group_size=128), fp8.MatmulFP8(has_bias=True)]


def bundle_specs():
    """For `tilus bundle`: the example kernels (their compile-time values live in __init__), then
    the QuantMatmul kernels of OPS_CASES (with the sanitizer's), the tiny Llama and the session's
    bench_matmul run, then the decode- and prefill-attention, mixed-width and MoE kernels, the
    activation-quantized, bit-sliced and LUT kernels, each once (by IR text)."""
    specs = [case.factory() for case in CASES.values()] + [split_k_workspace()]
    reqs = [r for case in OPS_CASES for r in ops_requests(case)]
    reqs += sorted(llama_requests() | bench_requests(SESSION_BENCH_ARGS), key=repr)
    kernels = [kernel_of(req) for req in reqs]
    kernels += [k for case in ATTENTION_CASES for k in attention_kernels(case)]
    kernels += mixed_kernels()
    kernels += [k for case in PAGED_ATTENTION_CASES for k in paged_attention_kernels(case)]
    kernels += moe_kernels()
    kernels += [k for case in PREFILL_CASES for k in prefill_kernels(case)]
    kernels += act_quant_kernels()
    kernels += sliced_kernels() + lut_kernels()
    seen = set()
    for kernel in kernels:
        text = str(kernel.program())
        if text not in seen:
            seen.add(text)
            specs.append(kernel)
    return specs


def side_stream_behind_matmuls(torch, rounds: int = 8):
    """A new CUDA stream with ``rounds`` 4096^2 matmuls queued on it (entered with
    ``torch.cuda.stream``): work queued there next runs only after them, so a launch that ignores
    the current stream would read its inputs too early."""
    big = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(rounds):
            big = big @ big
            big = big / big.norm()
    return s
