"""The checks of the GPU tests, on any device: ``tests/gpu/test_ops_matmul_gpu.py`` and
``tests/gpu/test_attention_prefill_gpu.py`` run them on CUDA, ``tests/gpu/sanitize.py`` under
compute-sanitizer, and ``tests/gpu/test_cases_on_cpu.py`` on
the CPU (a dry run of the test code, and proof that ``check_output`` rejects wrong kernels).

Tolerances: a correct kernel differs from the reference (``qw.dequantize(dtype)``, a float32
matmul, one rounding to the activation dtype) only by the order of its float32 sums, so its
outputs equal the reference's but for rare one-ulp flips of the final rounding; ``check_output``
allows about two ulps per element and at most a quarter of the elements not equal. A wrong
kernel (a wrong group's scale, an off-by-one zero point, a k-tile or column tile lost, weights
rounded to bf16 instead of fp16) fails it.
"""
from __future__ import annotations

import copy

from tests.gpu.kernels import (LLAMA_MS, LLAMA_PROMPT, LLAMA_SEQ, LLAMA_STEPS, OpsCase,
                               PrefillCase, llama_models, llama_requests, meta_of, ops_activations,
                               ops_bias, ops_meta, ops_requests, ops_weight, quantize_case)

# the cases of the side-stream and torch.compile tests (their kernels are OPS_CASES')
STREAM_CASE = OpsCase("uint4", 1)
COMPILE_CASE = OpsCase("uint4", 16, bias=True)

# (rtol, atol) per output dtype: about 2 ulps at |x| ~ 1 plus the float32 sums' noise
TOLERANCE = {"float16": (2e-3, 2e-3), "bfloat16": (1.6e-2, 1.6e-2)}
MAX_UNEQUAL = 0.25


def check_output(out, ref, what="", min_signal=0.1) -> None:
    """out equals ref (both in the activation dtype) but for rare final-rounding flips."""
    import torch

    assert out.shape == ref.shape and out.dtype == ref.dtype, (what, out.shape, ref.shape)
    assert bool(torch.isfinite(ref.float()).all()), what
    # the reference carries a signal far above the tolerance (else the check proves nothing)
    assert float(ref.float().abs().mean()) > min_signal, (what, float(ref.float().abs().mean()))
    rtol, atol = TOLERANCE[str(out.dtype).replace("torch.", "")]
    torch.testing.assert_close(out.float(), ref.float(), rtol=rtol, atol=atol,
                               msg=lambda m: f"{what}: {m}")
    unequal = float((out != ref).float().mean())
    assert unequal <= MAX_UNEQUAL, f"{what}: {unequal:.1%} of the outputs differ from the reference"


def reference(a, qw, bias=None):
    """a @ qw.dequantize(a.dtype).T (+ bias) in float32, rounded once to a's dtype."""
    out = a.float() @ qw.dequantize(a.dtype).float().t()
    if bias is not None:
        out = out + bias.float()
    return out.to(a.dtype)


_WEIGHTS: dict = {}


def weight_on(case: OpsCase, device):
    """The case's weight on ``device`` (generated once per shape)."""
    key = (case.n, case.k, case.group, str(device))
    if key not in _WEIGHTS:
        _WEIGHTS.clear()
        _WEIGHTS[key] = ops_weight(case).to(device)
    return _WEIGHTS[key]


# ---- the checks, on any device (test_cases_on_cpu.py runs them on the CPU as a dry run) ---------
def run_ops_case(case: OpsCase, device, recorded=None) -> None:
    import tilus

    qw = quantize_case(case, weight_on(case, device))
    assert meta_of(qw, case.act) == ops_meta(case), \
        "the bundle holds the kernel of another weight scheme"
    a = ops_activations(case, device)
    bias = ops_bias(case, device)
    if case.tuned:
        from tilus.autotune.database import default_database, device_name
        from tilus.ops.matmul import matmul_bucket, matmul_kernel_name

        default_database().record(matmul_kernel_name(meta_of(qw, case.act), case.act),
                                  matmul_bucket(case.m, case.n, case.k),
                                  device_name(a.device), dict(case.schedule), 0.01)
    out = tilus.ops.matmul(a, qw, bias, schedule=case.explicit_schedule())
    if recorded is not None:
        assert recorded == ops_requests(case)
    assert out.shape == (case.m, case.n) and out.dtype == a.dtype
    check_output(out, reference(a, qw, bias), case.id)


def run_torch_compile(device, backend="inductor", recorded=None) -> None:
    import torch

    import tilus

    case = COMPILE_CASE
    linear = torch.nn.Linear(case.k, case.n, bias=True, device=device)
    with torch.no_grad():
        linear.weight.copy_(weight_on(case, device))
        linear.bias.copy_(ops_bias(case, device).float())
    layer = tilus.nn.QuantLinear.from_linear(linear, dtype=case.wtype, group_size=case.group)
    assert meta_of(layer.qweight_object, case.act) == ops_meta(case)
    x = ops_activations(case, device)
    eager = layer(x)
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    out = compiled(x)
    again = compiled(x)
    if recorded is not None:
        assert set(recorded) == set(ops_requests(case))
    assert torch.equal(out, eager) and torch.equal(again, eager)
    check_output(out, reference(x, layer.qweight_object, layer.bias.half()), "torch.compile")


def run_tiny_llama(device, recorded=None) -> None:
    import torch

    from tilus.nn import QuantLinear

    base, q = llama_models()
    expected = llama_requests(q)
    ref = copy.deepcopy(base)
    with torch.no_grad():
        for name in q.tilus_quantized:
            ref.get_submodule(name).weight.copy_(q.get_submodule(name).dequantize(torch.float16))
    q = q.to(device, torch.float16)
    ref = ref.to(device, torch.float16)
    calls = []

    def hook(layer, inputs, output):
        x = inputs[0].reshape(-1, layer.in_features)
        calls.append(x.shape[0])
        check_output(output.reshape(-1, layer.out_features), reference(x, layer.qweight_object),
                     f"QuantLinear {layer.in_features}->{layer.out_features} m={x.shape[0]}",
                     min_signal=0.02)

    handles = [m.register_forward_hook(hook) for m in q.modules() if isinstance(m, QuantLinear)]
    assert len(handles) == len(q.tilus_quantized) == 14
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(0, base.c.vocab, (1, LLAMA_SEQ), generator=g).to(device)
    with torch.no_grad():
        out, want = q(seq).float(), ref(seq).float()
        rel = float((out - want).abs().max() / want.abs().max())
        agree = float((out.argmax(-1) == want.argmax(-1)).float().mean())
        assert rel < 1e-2 and agree >= 0.9, (rel, agree)
        # greedy decoding with KV caches, both models fed the quantized model's tokens
        caches, ref_caches = [dict() for _ in q.layers], [dict() for _ in ref.layers]
        tokens = seq[:, :LLAMA_PROMPT]
        start = 0
        for _ in range(LLAMA_STEPS):
            lq = q(tokens, start, caches)[0, -1].float()
            lr = ref(tokens, start, ref_caches)[0, -1].float()
            assert float((lq - lr).abs().max() / lr.abs().max()) < 1e-2
            start += tokens.shape[1]
            tokens = lq.argmax().reshape(1, 1)
    for h in handles:
        h.remove()
    assert set(calls) == set(LLAMA_MS)
    if recorded is not None:
        assert recorded and set(recorded) <= expected, set(recorded) - expected


def run_prefill_case(case: PrefillCase, device, batch: int, seq_q: int, seq_kv: int,
                     seed: int = 0) -> None:
    """tilus.ops.attention_prefill on ``device`` for ``case`` at these sizes equals its torch
    reference (float32, over the dequantized K/V for quantized cases) within the activation
    dtype's tolerance (the kernel's P is rounded to it for the P V mma)."""
    import torch

    import tilus
    from tilus.ops.kv_cache import quantize_rows

    g = torch.Generator(device=device).manual_seed(seed)
    act = getattr(torch, case.act)
    q = torch.randn(batch, case.heads, seq_q, case.head_dim, generator=g, device=device).to(act)
    k, v = (torch.randn(batch, case.kv_heads, seq_kv, case.head_dim, generator=g, device=device)
            for _ in range(2))
    quant: dict = {}
    if case.kv_dtype is None:
        k, v = k.to(act), v.to(act)
    else:
        k, ks, kz = quantize_rows(k, case.kv_dtype, act)
        v, vs, vz = quantize_rows(v, case.kv_dtype, act)
        quant = dict(kv_dtype=case.kv_dtype, k_scales=ks, v_scales=vs, k_zeros=kz, v_zeros=vz)
    out = tilus.ops.attention_prefill(q, k, v, causal=case.causal, **quant)
    ref = tilus.ops.attention_prefill(q, k, v, causal=case.causal, engine="reference", **quant)
    assert out.dtype == q.dtype and out.shape == q.shape
    tol = dict(rtol=1e-2, atol=3e-3) if case.act == "float16" else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out, ref, **tol, msg=lambda m: f"{case} {seq_q}x{seq_kv}: {m}")
