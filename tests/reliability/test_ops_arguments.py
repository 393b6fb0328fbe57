"""The public ops reject bad arguments with tilus errors that name them, and compute the rest
right (issue 14, items 2 and 14): the reproducers, then the fuzz harness of ``fuzz_ops``."""
import time

import numpy as np
import pytest
import torch
from torch import nn

import tilus
from tilus.errors import ArgumentError, DeviceMismatchError, QuantizationError
from tilus.nn import QuantLinear

from tests.reliability.fuzz_ops import CATEGORIES, outcomes


# ---- item 14: matmul's schedule ------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["interpreter", "fallback", "auto"])
@pytest.mark.parametrize("schedule,words", [
    ({"foo": 1}, "unknown schedule key 'foo'; the allowed keys are block_m, block_n, block_k, "
                 "split_k, warps, stages"),
    ({"block_m": 0}, r"schedule\['block_m'\] must be an integer >= 1, got int 0"),
    ({"block_n": "64"}, r"schedule\['block_n'\] must be an integer >= 1"),
    ([("block_m", 16)], "schedule must be a dict"),
])
def test_matmul_schedule_is_checked_for_every_engine(schedule, words, engine):
    qw = tilus.ops.quantize(torch.randn(16, 64), "uint4", 32)
    with pytest.raises(ArgumentError, match=words):
        tilus.ops.matmul(torch.randn(2, 64).half(), qw, engine=engine, schedule=schedule)


def test_matmul_accepts_a_partial_schedule():
    torch.manual_seed(0)
    qw = tilus.ops.quantize(torch.randn(16, 64), "uint4", 32)
    a = torch.randn(3, 64).half()
    out = tilus.ops.matmul(a, qw, engine="interpreter", schedule={"block_k": 64, "stages": 2})
    torch.testing.assert_close(out, tilus.ops.matmul(a, qw, engine="fallback"), rtol=2e-3,
                               atol=2e-3)


# ---- item 14: QuantLinear's constructor ----------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,words", [
    (dict(in_features=256, out_features=8, group_size=0), QuantizationError, "group_size"),
    (dict(in_features=256, out_features=8, group_size=-8), QuantizationError, "group_size"),
    (dict(in_features=256, out_features=8, group_size="64"), QuantizationError, "group_size"),
    (dict(in_features=256, out_features=8, group_size=96), QuantizationError,
     "group_size 96 does not fit in_features 256"),
    (dict(in_features=256, out_features=-1), ArgumentError, "out_features must be an integer >= 1"),
    (dict(in_features=0, out_features=8, group_size=None), ArgumentError,
     "in_features must be an integer >= 1"),
    (dict(in_features=256.0, out_features=8), ArgumentError, "in_features"),
    (dict(in_features=256, out_features=8, symmetric="no"), QuantizationError,
     "symmetric must be None, True or False"),
])
def test_quant_linear_constructor_errors(kwargs, error, words):
    with pytest.raises(error, match=words):
        QuantLinear(**kwargs)


def test_group_size_error_says_what_is_allowed():
    with pytest.raises(QuantizationError, match="a multiple of 32 that divides in_features = 256, "
                                                "or None / -1 for one group"):
        QuantLinear(256, 8, group_size=0)


# ---- items 2 and 14: QuantLinear.forward ---------------------------------------------------------
@pytest.fixture(scope="module")
def layer() -> QuantLinear:
    torch.manual_seed(0)
    return QuantLinear.from_linear(nn.Linear(256, 8), dtype="uint4", group_size=128)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_wide_float_input_is_computed_in_its_own_dtype(layer, dtype):
    x = (torch.randn(2, 256) * 1e5).to(dtype)
    out = layer(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    w = layer.dequantize(torch.float32).double()
    ref = nn.functional.linear(x.double(), w, layer.bias.double())
    bound = (x.double().abs() @ w.abs().T).max().item()      # float32 rounding: relative to this
    eps = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=eps * bound)


def test_float32_input_matches_the_float_layer_it_came_from():
    torch.manual_seed(3)
    lin = nn.Linear(256, 8)
    q = QuantLinear.from_linear(lin, dtype="int8", group_size=32)
    x = torch.randn(4, 256) * 1e5
    y, want = q(x), lin(x)
    assert torch.isfinite(y).all()
    assert (y - want).abs().max() < 2e-2 * want.abs().max()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool,
                                   torch.float8_e4m3fn, torch.complex64])
def test_non_float_input_is_rejected_naming_the_dtype(layer, dtype):
    x = torch.ones(2, 256).to(dtype)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(ArgumentError, match=f"dtype {name}; allowed: float16, bfloat16, float32"):
        layer(x)


def test_wide_input_is_one_custom_op_under_torch_compile(layer):
    x = torch.randn(3, 256) * 1e5
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x), rtol=0, atol=0)
    args = (x, layer.qweight, layer.scales, layer.offsets, layer.bias.float(), "uint4", 8, 256,
            128, 0.0, 0)
    torch.library.opcheck(torch.ops.tilus.dequant_linear.default, args)


def test_half_input_still_goes_through_the_kernel_op(layer):
    x = torch.randn(3, 256).half()
    qw = layer.qweight_object
    torch.testing.assert_close(layer(x), tilus.ops.matmul(x, qw, layer.bias.half()), rtol=0, atol=0)


def test_wrong_in_features_names_it(layer):
    with pytest.raises(ArgumentError, match=r"shape \[4, 255\]; its last dimension must be "
                                            r"in_features = 256"):
        layer(torch.randn(4, 255))


def test_input_on_another_device_is_a_device_mismatch(layer):
    with pytest.raises(DeviceMismatchError, match="meta"):
        layer(torch.randn(2, 256, device="meta"))


def test_not_a_tensor_is_rejected(layer):
    with pytest.raises(ArgumentError, match="torch tensor"):
        layer(np.zeros((2, 256), np.float32))


# ---- the fuzz harness ----------------------------------------------------------------------------
@pytest.mark.parametrize("category", list(CATEGORIES))
def test_fuzz_ops_arguments(category):
    start = time.perf_counter()
    results = outcomes(category)
    failures = [f"{case.label}: {why}" for case, why in results if why is not None]
    assert len(results) >= 150
    assert not failures, f"{len(failures)} of {len(results)} cases failed:\n" + "\n".join(failures[:20])
    assert time.perf_counter() - start < 20


def test_fuzz_cases_are_deterministic():
    for make in CATEGORIES.values():
        assert [c.label for c in make()] == [c.label for c in make()]
