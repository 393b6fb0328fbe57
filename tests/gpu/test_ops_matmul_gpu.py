"""tilus.ops.matmul, QuantLinear, quantize_model and torch.compile on a real GPU (skipped where
none is visible): the compiled format-2 kernel against ``qw.dequantize(dtype)`` + a float32 torch
matmul, for every 1-8-bit weight type, decode and prefill M, N and K that do not divide the tiles,
bias, bf16 activations, one group over K, explicit split-k schedules, a tuned schedule, a
non-default stream, the tiny Llama of examples/llm_decode.py and torch.compile(fullgraph=True)
(the checks and their tolerances: tests/gpu/checks.py).

On a machine without TVM every kernel comes from the bundle: each test records the requests
``matmul`` makes (``kernel_for``'s arguments) and checks them against tests/gpu/kernels.py, whose
``bundle_specs()`` holds them all (``test_cases_on_cpu.py`` proves it without a GPU).
"""
from __future__ import annotations

import importlib

import pytest

from tests.gpu.checks import (STREAM_CASE, check_output, reference, run_ops_case,
                              run_tiny_llama, run_torch_compile, weight_on)
from tests.gpu.kernels import (OPS_CASES, OPS_SMS, ops_activations, ops_requests, quantize_case,
                               request, side_stream_behind_matmuls)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def torch():
    import torch

    if torch.cuda.get_device_properties(0).multi_processor_count != OPS_SMS:
        pytest.skip(f"the bundle holds the schedules of a {OPS_SMS}-SM GPU (H100 SXM, H200)")
    torch.backends.cuda.matmul.allow_tf32 = False      # the reference is a float32 matmul
    return torch


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """The requests tilus.ops.matmul makes (kernel_for's arguments, in order); the tuning
    database is an empty one of this test's (a stray tuning.json must not change schedules)."""
    from tilus.autotune import database
    mm = importlib.import_module("tilus.ops.matmul")

    seen = []
    original = mm.kernel_for

    def recording(meta, act, has_bias, schedule):
        seen.append(request(meta, act, has_bias, schedule))
        return original(meta, act, has_bias, schedule)

    db = database.TuningDatabase(tmp_path / "tuning.json")
    monkeypatch.setattr(mm, "kernel_for", recording)
    monkeypatch.setattr(database, "default_database", lambda: db)
    return seen


# ---- on CUDA ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", OPS_CASES, ids=[c.id for c in OPS_CASES])
def test_matmul_on_cuda_equals_dequantize_then_matmul(torch, recorded, case):
    run_ops_case(case, "cuda", recorded)


def test_matmul_on_a_side_stream_waits_for_its_inputs(torch, recorded):
    """The kernel runs on torch's current stream: behind the work that writes its input there."""
    import tilus

    case = STREAM_CASE
    qw = quantize_case(case, weight_on(case, "cuda"))
    a0 = ops_activations(case, "cuda")
    a = torch.zeros_like(a0)
    s = side_stream_behind_matmuls(torch)
    with torch.cuda.stream(s):
        a.copy_(a0)                          # queued behind the matmuls
        out = tilus.ops.matmul(a, qw)
    s.synchronize()
    assert recorded == ops_requests(case)
    check_output(out, reference(a0, qw), "side stream")


def test_quant_linear_under_torch_compile_fullgraph(torch, recorded):
    """torch.compile(fullgraph=True) (inductor) of a QuantLinear with bias: one custom op, the
    same kernel and bit-identical results as eager."""
    run_torch_compile("cuda", "inductor", recorded)


def test_quantize_model_tiny_llama_on_cuda(torch, recorded):
    """examples/llm_decode.py's TinyLlama, quantized by tilus.nn.quantize_model, in fp16 on CUDA:
    every QuantLinear call equals dequantize + matmul, and the logits (teacher-forced and during
    greedy decoding with a KV cache) equal those of the same model with the dequantized weights
    in nn.Linear (cuBLAS) up to fp16 noise."""
    run_tiny_llama("cuda", recorded)
