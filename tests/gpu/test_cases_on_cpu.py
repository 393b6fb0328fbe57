"""The GPU session's cases, checked here without a GPU, so that GPU time is not spent on a mistake
in the tests or on a kernel missing from the bundle:

* every example case's inputs fit its kernel, and the interpreter's outputs match the case's
  torch reference;
* every kernel that the GPU tests, tests/gpu/sanitize.py, benchmarks/launch_overhead.py and the
  bench_matmul run of benchmarks/gpu_session.sh launch is in ``bundle_specs()``, compared by the
  cache key ``tilus.jit`` looks the kernel up with;
* the requests tests/gpu/kernels.py predicts are those of tilus.ops.matmul's own dispatch
  (``pick_schedule`` on a 132-SM GPU, with and without a tuning database entry);
* the GPU checks (tests/gpu/checks.py) run on the CPU (a dry run of the test code) and reject
  wrong kernels;
* benchmarks/gpu_session.sh runs what exists, in order, within its time budget.
"""
from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import types
from pathlib import Path

import pytest
import torch

import tilus
from tests.gpu import checks
from tests.gpu.kernels import (ATTENTION_CASES, CASES, MIXED_CASES, MOE_CALLS, MOE_TYPES, OPS_CASES,
                               OPS_SMS, PAGED_ATTENTION_CASES, PREFILL_CASES, SANITIZE_CASES,
                               SANITIZE_PREFILL, SESSION_BENCH_ARGS, SLICED_BITS, SLICED_CALLS,
                               SLICED_SHAPE, OpsCase, act_quant_kernels, lut_kernels,
                               assert_matches_reference, attention_kernels, bench_requests,
                               kernel_of, llama_requests, meta_of, mixed_kernels, ops_meta,
                               ops_requests, ops_weight, paged_attention_kernels, prefill_id,
                               prefill_kernels, quantize_case)
from tilus.runtime import expr as rexpr

ROOT = Path(__file__).resolve().parents[2]
SESSION = ROOT / "benchmarks" / "gpu_session.sh"


# ---- the example cases --------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_case_inputs_fit_and_the_interpreter_matches_the_reference(name):
    pytest.importorskip("tvm")
    from tilus.backend.artifact import size_requirements

    case = CASES[name]
    kernel = case.factory()
    program = kernel.program()
    args, outs = case.inputs(torch, "cpu")
    assert len(args) == len(program.params)
    scalars = {p.name: a for p, a in zip(program.params, args) if isinstance(a, int)}
    needs = size_requirements(program)
    for p, a in zip(program.params, args):
        if p.name in needs:
            kind, text = needs[p.name]
            n = rexpr.evaluate(text, scalars)
            have = a.numel() if kind == "min_count" else a.numel() * a.element_size()
            assert have >= n, (name, p.name, text, have, n)
    expected = case.reference(torch, [a.clone() if isinstance(a, torch.Tensor) else a
                                      for a in args])
    assert sorted(expected) == sorted(outs)
    kernel(*args)
    for i in outs:
        assert_matches_reference(name, args[i], expected[i], case.tol)
        if args[i].is_floating_point():              # a reference of zeros proves little
            assert expected[i].abs().sum() > 0


def test_a_wrong_example_output_fails_its_reference():
    """The references' tolerances are tight enough to see a one-element error of one ulp-ish."""
    for name in ("matmul_fp16", "matmul_lowbit_uint3", "softmax"):
        case = CASES[name]
        args, outs = case.inputs(torch, "cpu")
        want = case.reference(torch, args)[outs[0]]
        bad = want.clone()
        bad.view(-1)[7] += 0.02 * max(1.0, float(want.abs().max()))
        with pytest.raises(AssertionError):
            assert_matches_reference(name, bad, want, case.tol)


# ---- the bundle covers every kernel -------------------------------------------------------------
def _key(kernel, consts=None) -> str:
    """The cache key tilus.jit looks the kernel up with on an sm_90 GPU (and tilus bundle files
    it under)."""
    from tilus.runtime import cache_key, key_versions

    return cache_key(str(kernel.program(**(consts or {}))), "sm_90", key_versions())


@pytest.fixture(scope="module")
def bundle_keys():
    """The keys `make gpu-bundle` builds: tests/gpu/kernels.py loaded the way `tilus bundle`
    loads it (from the file, not as a package module)."""
    from tilus.bundle import resolve_targets

    specs = resolve_targets([str(ROOT / "tests" / "gpu" / "kernels.py")], {})
    keys = [_key(kernel, consts) for _, kernel, consts in specs]
    assert len(keys) == len(set(keys)), "bundle_specs() lists a kernel twice"
    # one QuantMatmul per distinct program: the bundle holds only what is launched
    quant = [k for _, k, _ in specs if type(k).__name__.startswith("QuantMatmul")]
    attention = [k for _, k, _ in specs
                 if type(k).__name__.startswith(("DecodeAttention", "PagedDecodeAttention",
                                                   "PrefillAttention"))]
    moe = [k for _, k, _ in specs if type(k).__name__ == "MoEQuantMatmul"]
    mixed = [k for _, k, _ in specs if type(k).__name__ == "MixedQuantMatmul"]
    assert len(mixed) == len(MIXED_CASES)
    assert len(specs) == len(CASES) + 1 + len(quant) + len(attention) + len(moe) + len(mixed) \
        + len(act_quant_kernels()) + len(SLICED_CALLS) * len(SLICED_BITS) + len(lut_kernels()) \
        and len(quant) <= 160, len(quant)             # + 1: split_k_workspace
    return set(keys)



class NotLaunched:
    """A kernel appended to ``launched`` when made and never launched (its attributes pass
    through): what the bundle tests hand the ops in place of their kernels."""

    def __init__(self, kernel, launched: list):
        self.kernel = kernel
        launched.append(kernel)

    def __getattr__(self, name):
        return getattr(self.kernel, name)

    def __call__(self, *args):
        pass


def recording(make, launched: list):
    """``make`` (a kernel factory) whose kernels are recorded in ``launched``, not launched."""
    return lambda *a, **kw: NotLaunched(make(*a, **kw), launched)


def test_bundle_holds_the_attention_kernels_the_gpu_tests_launch(bundle_keys, monkeypatch):
    """attention_decode run on the CPU for every ATTENTION_CASE, its kernels recorded instead of
    launched: each is in the bundle (the op's own choice of kernels, not attention_kernels')."""
    att = importlib.import_module("tilus.ops.attention")
    launched = []

    monkeypatch.setattr(att, "split_kernel", recording(att.split_kernel, launched))
    monkeypatch.setattr(att, "combine_kernel", recording(att.combine_kernel, launched))
    for case in ATTENTION_CASES:
        act = getattr(torch, case.act)
        cache = att.QuantKVCache.empty(1, case.kv_heads, 40, case.head_dim, case.dtype,
                                       scale_dtype=act, group_size=case.group_size or None)
        q = torch.zeros(1, case.heads, case.head_dim, dtype=act)
        att.attention_decode_cache(q, cache, torch.tensor([33]))
    assert len(launched) == 2 * len(ATTENTION_CASES)
    assert {_key(k) for k in launched} <= bundle_keys
    assert {_key(k) for c in ATTENTION_CASES for k in attention_kernels(c)} == \
        {_key(k) for k in launched}


def test_bundle_holds_the_sliced_and_lut_kernels_the_gpu_tests_launch(bundle_keys, monkeypatch):
    """matmul_sliced called as test_sliced_gpu.py calls it (CUDA's schedule on a 132-SM GPU,
    kernels recorded instead of launched) and matmul_lut's kernels: each is in the bundle."""
    sliced = importlib.import_module("tilus.ops.sliced")
    n, k, group = SLICED_SHAPE
    launched: list = []
    real_schedule = sliced.default_schedule
    monkeypatch.setattr(sliced, "kernel_for", recording(sliced.kernel_for, launched))
    monkeypatch.setattr(sliced, "default_schedule", lambda m, n_, k_, g, engine, sms, bits:
                        real_schedule(m, n_, k_, g, "compiled", OPS_SMS, bits))
    monkeypatch.setattr(sliced, "run_kernel", lambda kernel, a2, *args: torch.zeros(
        a2.shape[0], n, dtype=a2.dtype))
    for m, act in SLICED_CALLS:
        dt = getattr(torch, act)
        sw = tilus.ops.quantize_sliced(torch.randn(n, k), group, scale_dtype=dt)
        for bits in SLICED_BITS:
            sliced.matmul_sliced(torch.zeros(m, k, dtype=dt), sw, bits=bits,
                                 bias=torch.zeros(n, dtype=dt), engine="interpreter")
    assert len(launched) == len(SLICED_CALLS) * len(SLICED_BITS)
    assert {_key(kern) for kern in launched} <= bundle_keys
    assert {_key(kern) for kern in lut_kernels()} <= bundle_keys


def test_bundle_holds_the_moe_kernels_the_gpu_tests_launch(bundle_keys, monkeypatch):
    """moe_matmul and QuantMoE called as test_moe_gpu.py calls them (CUDA's schedule, kernels
    recorded instead of launched): each kernel is in the bundle."""
    moe = importlib.import_module("tilus.ops.moe")
    launched = []

    real_kernel, real_schedule = moe.kernel_for, moe.default_schedule
    monkeypatch.setattr(moe, "kernel_for", recording(real_kernel, launched))
    monkeypatch.setattr(moe, "default_schedule",
                        lambda packed, device: real_schedule(packed, torch.device("cuda")))
    routing = (torch.tensor([[0, 3]]), torch.tensor([[0.5, 0.5]]))
    for group, k, act in MOE_CALLS[:2]:
        dt = getattr(torch, act)
        experts = [tilus.ops.quantize(torch.randn(40, k).to(dt), dtype=t, group_size=group)
                   for t in MOE_TYPES]
        moe.moe_matmul(torch.zeros(1, k, dtype=dt), experts, routing)
    group, k, _ = MOE_CALLS[2]
    layer = tilus.nn.QuantMoE.from_linears([torch.nn.Linear(k, 40) for _ in range(4)],
                                           dtypes=list(MOE_TYPES[:4]), group_size=group)
    layer(torch.zeros(1, k).half(), routing)
    assert len(launched) == len(MOE_CALLS)
    assert {_key(k) for k in launched} <= bundle_keys


def test_bundle_holds_the_paged_attention_kernels_the_gpu_tests_launch(bundle_keys, monkeypatch):
    """attention_decode_paged run on the CPU for every PAGED_ATTENTION_CASE, its kernels
    recorded instead of launched: each is in the bundle."""
    att = importlib.import_module("tilus.ops.attention")
    launched = []

    monkeypatch.setattr(att, "paged_split_kernel", recording(att.paged_split_kernel, launched))
    monkeypatch.setattr(att, "combine_kernel", recording(att.combine_kernel, launched))
    for case in PAGED_ATTENTION_CASES:
        act = getattr(torch, case.act)
        cache = att.PagedQuantKVCache.empty(3, case.kv_heads, case.page_size, case.head_dim,
                                            case.dtype, scale_dtype=act,
                                            group_size=case.group_size or None)
        q = torch.zeros(1, case.heads, case.head_dim, dtype=act)
        att.attention_decode_paged(q, cache, torch.tensor([[2, 0, 1]], dtype=torch.int32),
                                   torch.tensor([case.page_size + 3]))
    assert len(launched) == 2 * len(PAGED_ATTENTION_CASES)
    assert {_key(k) for k in launched} <= bundle_keys
    assert {_key(k) for c in PAGED_ATTENTION_CASES for k in paged_attention_kernels(c)} == \
        {_key(k) for k in launched}


def test_bundle_holds_the_prefill_kernels_the_gpu_tests_launch(bundle_keys, monkeypatch):
    """attention_prefill run on the CPU for every PREFILL_CASE (float16/bfloat16 or quantized
    K/V), its kernel recorded instead of launched: each is in the bundle and is the one
    prefill_kernels predicts, and every case's kernel fits an sm_90 block."""
    from tilus.backend.build_program import prepare
    from tilus.ops.kv_cache import quantize_rows

    pre = importlib.import_module("tilus.ops.prefill")
    predicted = [_key(k) for c in PREFILL_CASES for k in prefill_kernels(c)]
    launched = []
    make = pre.prefill_kernel
    monkeypatch.setattr(pre, "prefill_kernel", lambda *a, **kw: launched.append(
        make(*a, **kw)) or (lambda *args: None))
    for case in PREFILL_CASES:
        act = getattr(torch, case.act)
        q = torch.zeros(1, case.heads, 5, case.head_dim, dtype=act)
        kv = torch.zeros(1, case.kv_heads, 7, case.head_dim)
        if case.kv_dtype is None:
            pre.attention_prefill(q, kv.to(act), kv.to(act), causal=case.causal)
        else:
            codes, scales, zeros = quantize_rows(kv, case.kv_dtype, act)
            pre.attention_prefill(q, codes, codes, causal=case.causal, kv_dtype=case.kv_dtype,
                                  k_scales=scales, v_scales=scales, k_zeros=zeros,
                                  v_zeros=zeros)
    assert len(launched) == len(PREFILL_CASES)
    assert {_key(k) for k in launched} <= bundle_keys
    assert predicted == [_key(k) for k in launched]
    for kernel in launched:
        prepare(kernel.program(), "sm_90")


@pytest.mark.parametrize("case", [PREFILL_CASES[4], PREFILL_CASES[7]],
                         ids=lambda c: prefill_id(c))
def test_gpu_prefill_check_dry_run_on_the_cpu(case):
    """run_prefill_case (the GPU test's and the sanitizer's check) on the CPU interpreter at small
    sizes: causal with more queries than keys, uint8 K/V."""
    checks.run_prefill_case(case, "cpu", 1, 70, 45)


def _gpu_test_ops_cases() -> list:
    """The cases test_ops_matmul_gpu.py parametrizes its matmul test with, read off the test."""
    from tests.gpu import test_ops_matmul_gpu as gpu

    marks = [m for m in gpu.test_matmul_on_cuda_equals_dequantize_then_matmul.pytestmark
             if m.name == "parametrize"]
    assert len(marks) == 1 and marks[0].args[0] == "case"
    return list(marks[0].args[1])


def _missing(requests, keys) -> list:
    return [r for r in requests if _key(kernel_of(r)) not in keys]


def test_bundle_holds_every_kernel_the_gpu_tests_launch(bundle_keys):
    """Examples (both launchers), tilus.ops.matmul for every case, the side stream and
    torch.compile tests, the tiny Llama, the sanitizer's kernels and launch_overhead's."""
    assert {_key(c.factory()) for c in CASES.values()} <= bundle_keys
    cases = _gpu_test_ops_cases() + [checks.STREAM_CASE, checks.COMPILE_CASE] + SANITIZE_CASES
    assert set(SANITIZE_CASES) <= set(cases)
    requests = [r for case in cases for r in ops_requests(case)]
    assert len(cases) >= 115 and not _missing(requests, bundle_keys)
    assert not _missing(llama_requests(), bundle_keys)
    # the GPU tests cover every weight type quantize supports, the core ones at every M
    from tilus.ops.quantize import supported_weight_types

    assert {c.wtype for c in cases} == set(supported_weight_types())
    core = {("uint4", m) for m in (1, 16, 64, 256)} | {("float8_e4m3", m) for m in (1, 256)}
    assert core <= {(c.wtype, c.m) for c in cases}
    assert any(c.bias for c in cases) and any(c.act == "bfloat16" for c in cases)
    assert any(dict(c.schedule).get("split_k", 1) > 1 and not c.tuned for c in cases)
    assert any(c.tuned for c in cases) and any(not c.schedule for c in cases)


def test_bundle_holds_the_kernels_of_the_sessions_benchmark(bundle_keys, session_run):
    bench = [argv for argv in session_run["calls"] if "benchmarks/bench_matmul.py" in argv]
    assert len(bench) == 1
    argv = bench[0][bench[0].index("benchmarks/bench_matmul.py") + 1:]
    rest = []
    skip = 0
    for i, a in enumerate(argv):                 # less --out DIR and --budget-s S
        if skip:
            skip -= 1
        elif a in ("--out", "--budget-s"):
            skip = 1
        else:
            rest.append(a)
    assert tuple(rest) == SESSION_BENCH_ARGS
    requests = bench_requests(rest)
    assert len(requests) > 100 and not _missing(sorted(requests, key=repr), bundle_keys)


def _widest_per_schedule(requests) -> list:
    """Per schedule, the request with the widest weight type: the kernel with the most shared
    memory (the copy_async ring holds k-tiles of activations and packed weights)."""
    from tilus import dtypes

    best = {}
    for r in requests:
        nbits = dtypes.get(dict(r[0])["dtype"]).nbits
        if r[3] not in best or nbits > best[r[3]][0]:
            best[r[3]] = (nbits, r)
    return [r for _, r in best.values()]


def _too_big(requests) -> list:
    """(schedule, error) of the requests whose kernel the passes reject for sm_90 (shared memory,
    ...): found here in a fraction of a second, instead of by `make gpu-bundle`."""
    from tilus.backend.build_program import prepare
    from tilus.errors import TilusError

    bad = []
    for r in _widest_per_schedule(requests):
        try:
            prepare(kernel_of(r).program(), "sm_90")
        except TilusError as e:
            bad.append((dict(r[3]), dict(r[0])["dtype"], str(e).splitlines()[0]))
    return bad


def test_the_gpu_tests_kernels_fit_an_sm_90_block():
    cases = _gpu_test_ops_cases() + [checks.STREAM_CASE, checks.COMPILE_CASE]
    requests = [r for case in cases for r in ops_requests(case)] + sorted(llama_requests(),
                                                                          key=repr)
    assert not _too_big(requests)


def test_the_mixed_width_kernels_fit_an_sm_90_block():
    """The MixedQuantMatmul kernels of MIXED_CASES (both parts' pipelines in one block)."""
    from tilus.backend.build_program import prepare

    for kernel in mixed_kernels():
        prepare(kernel.program(), "sm_90")


def test_the_sessions_benchmark_kernels_fit_an_sm_90_block():
    assert not _too_big(sorted(bench_requests(SESSION_BENCH_ARGS), key=repr))


# ---- the predicted requests are matmul's --------------------------------------------------------
def test_predicted_schedules_are_what_pick_schedule_picks(monkeypatch, tmp_path):
    """tilus.ops.matmul's pick_schedule on a (pretended) 132-SM CUDA device returns, for every
    case without an explicit schedule, the schedule of its predicted request; with the tuned
    case's database entry, that entry."""
    from tilus.autotune import database
    mm = importlib.import_module("tilus.ops.matmul")

    props = types.SimpleNamespace(multi_processor_count=OPS_SMS)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    cuda = torch.device("cuda")
    for case in _gpu_test_ops_cases():
        db = database.TuningDatabase(tmp_path / f"{case.id}.json")
        monkeypatch.setattr(database, "default_database", lambda db=db: db)
        meta = ops_meta(case)
        if case.tuned:
            db.record(mm.matmul_kernel_name(meta, case.act),
                      mm.matmul_bucket(case.m, case.n, case.k),
                      database.device_name(cuda), dict(case.schedule), 0.01)
        (req,) = ops_requests(case)
        if case.explicit_schedule() is None:
            got = mm.pick_schedule(case.m, case.n, case.k, meta, case.act, "compiled", cuda)
            assert tuple(sorted(got.items())) == req[3], case.id
        assert dict(req[0]) == meta and req[1:3] == (case.act, case.bias)


def test_a_weights_scheme_is_decided_by_any_eight_rows():
    """ops_meta quantizes 8 rows: the group maxima (which decide a float type's exponent) of the
    whole weight are those of 8 rows, and whole-weight quantization agrees for a type with an
    exponent and one without."""
    shapes = {(c.n, c.k, c.group): c for c in OPS_CASES}
    for case in shapes.values():
        gs = case.group_size

        def peaks(w):
            return set(w.reshape(w.shape[0], -1, gs).abs().amax(-1).unique().tolist())
        assert peaks(ops_weight(case)) == peaks(ops_weight(case, rows=8)) and \
            len(peaks(ops_weight(case, rows=8))) == 4, case.id
    for case in (OpsCase("float8_e5m2", 1), OpsCase("uint4", 1)):
        assert meta_of(quantize_case(case, ops_weight(case))) == ops_meta(case)
    assert ops_meta(OpsCase("float8_e5m2", 1))["exponent"] == 15


# ---- the GPU checks on the CPU ------------------------------------------------------------------
# every branch of run_ops_case: bias, bf16 activations and scales, a tuned and an explicit
# schedule (the rest of its work is the same for every case)
DRY_RUN = [OpsCase("uint4", 16, bias=True),
           OpsCase("float4_e2m1", 64, act="bfloat16", scale="bfloat16"),
           next(c for c in OPS_CASES if c.tuned), next(c for c in OPS_CASES if c.k == 1152),
           SANITIZE_CASES[2]]


@pytest.mark.parametrize("case", DRY_RUN, ids=[c.id for c in DRY_RUN])
def test_gpu_matmul_check_dry_run_on_the_cpu(case, monkeypatch, tmp_path):
    from tilus.autotune import database

    db = database.TuningDatabase(tmp_path / "tuning.json")
    monkeypatch.setattr(database, "default_database", lambda: db)
    assert case in _gpu_test_ops_cases()
    checks.run_ops_case(case, "cpu")


def test_gpu_torch_compile_and_tiny_llama_checks_dry_run_on_the_cpu():
    checks.run_torch_compile("cpu", backend="aot_eager")
    checks.run_tiny_llama("cpu")


def test_check_output_rejects_wrong_kernels():
    """What a wrong kernel computes fails check_output; what a right one computes with its sums
    in another order (split-k) passes."""
    case = OpsCase("uint4", 16, n=1000)                       # K as in the GPU tests
    qw = quantize_case(case, ops_weight(case))
    a = checks.ops_activations(case)
    ref = checks.reference(a, qw)
    w = qw.dequantize(torch.float16).float()                  # [N, K]
    af = a.float()
    parts = sum(af[:, i:i + 256] @ w[:, i:i + 256].t() for i in range(0, case.k, 256))
    checks.check_output(parts.half(), ref, "split-k order")     # a right kernel
    s = qw.scales.float().repeat_interleave(case.group, 0).t()  # [N, K]
    wrong = {
        "another group's scale": w + (torch.roll(s, 128, dims=1) - s) * (w / s),
        "zero point off by one code": w - s,
        "a k-tile of 256 lost": torch.cat([w[:, :256] * 0, w[:, 256:]], dim=1),
        "the last column tile lost": torch.cat([w[:896], w[896:] * 0]),
        "weights rounded to bf16": qw.dequantize(torch.bfloat16).float(),
    }
    for what, bad in wrong.items():
        with pytest.raises(AssertionError):
            checks.check_output((af @ bad.t()).half(), ref, what)
    bf = OpsCase("float4_e2m1", 64, act="bfloat16", scale="bfloat16", n=1000)
    qb = quantize_case(bf, ops_weight(bf))
    ab = checks.ops_activations(bf)
    wb = qb.dequantize(torch.bfloat16).float()
    checks.check_output((ab.float() @ wb.t()).bfloat16(), checks.reference(ab, qb), "bf16")
    with pytest.raises(AssertionError):                        # one group's scale doubled
        bad = wb.clone()
        bad[:, 128:256] *= 2
        checks.check_output((ab.float() @ bad.t()).bfloat16(), checks.reference(ab, qb), "bf16")


# ---- benchmarks/gpu_session.sh ------------------------------------------------------------------
STUB = r"""#!/usr/bin/env bash
# a stand-in for the bundle's run_on_gpu.sh: records how it is called
{ printf '%s|' "${TILUS_RUN_PREFIX:-}" "${PYTORCH_NO_CUDA_MEMORY_CACHING:-}"
  printf '%q ' "$@"; echo; } >> "$RECORD"
"""


@pytest.fixture(scope="module")
def session_run(tmp_path_factory):
    """gpu_session.sh run here against a stand-in bundle (and a stand-in compute-sanitizer)."""
    tmp = tmp_path_factory.mktemp("session")
    bundle, out, bin_ = tmp / "bundle", tmp / "out", tmp / "bin"
    bundle.mkdir()
    bin_.mkdir()
    (bundle / "run_on_gpu.sh").write_text(STUB)
    (bundle / "run_on_gpu.sh").chmod(0o755)
    (bundle / "manifest.json").write_text(
        '{"kernels": [{"key": "k1", "state": "built"},\n{"key": "k2", "state": "failed"}],\n'
        ' "versions": {"git_commit": "0123abc+dirty"}}')
    (bin_ / "compute-sanitizer").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "compute-sanitizer").chmod(0o755)
    record = tmp / "calls.txt"
    env = dict(os.environ, OUT=str(out), TILUS_BUNDLE=str(bundle), RECORD=str(record),
               PATH=f"{bin_}{os.pathsep}{os.environ['PATH']}")
    env.pop("TILUS_SESSION_SECONDS", None)
    proc = subprocess.run(["bash", str(SESSION)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)
    calls = []
    for line in record.read_text().splitlines():
        prefix, nocache, argv = line.split("|", 2)
        calls.append(shlex.split(prefix) + ["|", nocache, "|"] + shlex.split(argv))
    return {"proc": proc, "calls": calls, "out": out,
            "log": (out / "session.log").read_text()}


def test_gpu_session_runs_its_steps_in_order_within_nine_minutes(session_run):
    proc, log = session_run["proc"], session_run["log"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    starts = [line for line in log.splitlines() if ": start (limit" in line]
    steps = [line.split(":")[0].split()[-1] for line in starts]
    assert steps == ["gpu_tests", "memcheck", "racecheck", "launch_overhead", "bench_matmul"]
    limits = [int(line.split("limit ")[1].split()[0]) for line in starts]
    assert limits[:4] == [240, 100, 100, 45] and limits[4] <= 530 - 20
    assert "2 kernels, 1 of them failed to build, commit 0123abc+dirty" in log
    assert "budget 530 s" in log               # the session ends within 9 minutes (540 s)
    assert "done in" in log and "status 0" in log


def test_gpu_session_calls_only_what_exists(session_run):
    """Every script, test path and option the session passes exists; the sanitizer wraps the
    python that runs tests/gpu/sanitize.py."""
    calls = session_run["calls"]
    tests, memcheck, racecheck, overhead, bench = calls
    assert tests[:3] == ["|", "", "|"] and tests[3:6] == ["-m", "gpu", "tests/gpu"]
    for argv, tool in ((memcheck, "memcheck"), (racecheck, "racecheck")):
        cut = argv.index("|")
        assert argv[:cut][-6:] == ["--tool", tool, "--error-exitcode", "9", "--print-limit", "30"]
        assert argv[cut + 1] == "1" and argv[cut + 3:] == ["python", "tests/gpu/sanitize.py"]
    for argv in calls:
        for a in argv:
            if a.endswith(".py") or a.startswith("tests/"):
                assert (ROOT / a).exists(), a
    # the options parse
    from benchmarks import bench_matmul

    out = str(session_run["out"])
    assert overhead[3:] == ["python", "benchmarks/launch_overhead.py", "--out", out]
    lo = importlib.import_module("benchmarks.launch_overhead")
    if not torch.cuda.is_available():
        assert lo.main(["--out", out]) == {}               # parses, then finds no GPU
    args = bench_matmul.parse_args(bench[5:])
    assert args.out == Path(out) and 300 < args.budget_s < 530
    pytest_args = tests[3:]
    assert {"-v", "-rA", "--durations"} <= set(pytest_args)
    from tests.gpu import sanitize

    assert set(sanitize.jobs()) == set(CASES) | {c.id for c in SANITIZE_CASES} | {
        prefill_id(c) for c in SANITIZE_PREFILL}


def test_bundle_script_passes_the_run_prefix(tmp_path):
    """run_on_gpu.sh (tilus.bundle.RUN_SCRIPT) puts TILUS_RUN_PREFIX before the final python,
    for pytest and for `python SCRIPT`."""
    from tilus.bundle import DEFAULT_SELECTION, RUN_SCRIPT

    script = RUN_SCRIPT.format(arch="sm_90", default=DEFAULT_SELECTION)
    assert script.count('exec ${TILUS_RUN_PREFIX:-} "$PY"') == 2
    (tmp_path / "run_on_gpu.sh").write_text(script)
    (tmp_path / "src").mkdir()
    py = tmp_path / "fakepy"
    py.write_text('#!/bin/sh\nif [ "$1" = "-c" ] || [ "$1" = "-" ]; then exit 0; fi\n'
                  'echo "PY $*"\n')
    py.chmod(0o755)
    pre = tmp_path / "prefix"
    pre.write_text('#!/bin/sh\necho "PREFIX $*"\n')
    pre.chmod(0o755)
    env = dict(os.environ, PYTHON=str(py), TILUS_RUN_PREFIX=f"{pre} --tool memcheck")
    proc = subprocess.run(["bash", str(tmp_path / "run_on_gpu.sh"), "python", "x.py", "a b"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert f"PREFIX --tool memcheck {py} x.py a b" in proc.stdout, proc.stdout + proc.stderr
    env.pop("TILUS_RUN_PREFIX")
    proc = subprocess.run(["bash", str(tmp_path / "run_on_gpu.sh"), "-m", "gpu"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert "PY -m pytest -q -p no:cacheprovider -m gpu" in proc.stdout, proc.stdout + proc.stderr
