"""The GPU tests' cases, checked here without a GPU: every case's inputs fit its kernel (signature,
buffer sizes the compiled kernel will require) and run in the interpreter, so GPU time is not spent
on a mistake in the test itself."""
from __future__ import annotations


import pytest
import torch

from tests.gpu.kernels import CASES, OPS_CASES, bundle_specs
from tilus.runtime import expr as rexpr


@pytest.mark.parametrize("name", list(CASES))
def test_case_inputs_fit_and_run_in_the_interpreter(name):
    pytest.importorskip("tvm")
    from tilus.backend.artifact import size_requirements

    factory, inputs, _ = CASES[name]
    kernel = factory()
    program = kernel.program()
    args, outs = inputs(torch, "cpu")
    assert len(args) == len(program.params)
    scalars = {p.name: a for p, a in zip(program.params, args) if isinstance(a, int)}
    needs = size_requirements(program)
    for p, a in zip(program.params, args):
        if p.name in needs:
            kind, text = needs[p.name]
            n = rexpr.evaluate(text, scalars)
            have = a.numel() if kind == "min_count" else a.numel() * a.element_size()
            assert have >= n, (name, p.name, text, have, n)
    before = [args[i].clone() for i in outs]
    kernel(*args)
    for i, old in zip(outs, before):
        out = args[i]
        assert out.shape == old.shape
        if out.is_floating_point():
            assert not torch.isnan(out.float()).any(), (name, i)


def test_bundle_specs_cover_every_case():
    """Every example case, and one tilus.ops.matmul kernel per OPS_CASES entry (distinct
    schedules and weight schemes, as matmul would pick them on a 132-SM GPU)."""
    specs = bundle_specs()
    assert len(specs) == len(CASES) + len(OPS_CASES)
    ops = specs[len(CASES):]
    assert len({(k.wtype.name, k.block_m, k.block_k, k.split_k) for k in ops}) == len(OPS_CASES)
