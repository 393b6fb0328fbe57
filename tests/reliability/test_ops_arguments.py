"""The public ops reject bad arguments with tilus errors that name them, and compute the rest
right (issue 14, items 2 and 14)."""
import pytest
import torch

import tilus
from tilus.errors import ArgumentError, QuantizationError
from tilus.nn import QuantLinear


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
    out = tilus.ops.matmul(a, qw, engine="interpreter", schedule={"block_n": 8, "stages": 2})
    torch.testing.assert_close(out, tilus.ops.matmul(a, qw, engine="fallback"), rtol=2e-3,
                               atol=2e-3)


# ---- item 14: QuantLinear's constructor ----------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,words", [
    (dict(in_features=256, out_features=8, group_size=0), QuantizationError, "group_size"),
    (dict(in_features=256, out_features=8, group_size=-8), QuantizationError, "group_size"),
    (dict(in_features=256, out_features=8, group_size="64"), QuantizationError, "group_size"),
    (dict(in_features=256, out_features=8, group_size=96), QuantizationError,
     "group_size 96 does not divide in_features 256"),
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
    with pytest.raises(QuantizationError, match="a positive integer that divides in_features = 256, "
                                                "or None / -1 for one group"):
        QuantLinear(256, 8, group_size=0)
