import numpy as np
import pytest
from hypothesis import given, strategies as st

from tilus import dtypes
from tilus.errors import IRError
from tilus.ir.expr import Var, BlockIdx, cdiv, const, evaluate, select, cast, minimum, free_vars, substitute

i = Var("i", dtypes.int32)
j = Var("j", dtypes.int32)


def test_constant_folding_and_identities():
    assert (const(3) + 4) == const(7)
    assert i + 0 == i and 0 + i == i and i * 1 == i and i * 0 == const(0)
    assert i // 1 == i and i % 1 == const(0)
    assert cdiv(7, 2) == 4 and cdiv(const(7), 2) == const(4)


def test_structural_equality_and_hash():
    assert i * 2 + j == i * 2 + j
    assert hash(i * 2 + j) == hash(i * 2 + j)
    assert i * 2 + j != j + i * 2


def test_python_truth_value_is_an_error():
    with pytest.raises(IRError, match="run time"):
        bool(i < 3)


def test_integer_true_division_is_rejected():
    with pytest.raises(IRError, match="//"):
        _ = i / j


def test_printing():
    assert str((i + j) * 2) == "(i + j) * 2"
    assert str(i + j * 2) == "i + j * 2"
    assert str(i - (j - 1)) == "i - (j - 1)"
    assert str(BlockIdx(1) * 4) == "blockIdx.y * 4"
    assert str(select(i < j, i, j)) == "select(i < j, i, j)"
    assert str(cast(i, dtypes.float32)) == "cast(i, float32)"
    assert str(const(5, dtypes.int64)) == "int64(5)"


@given(st.integers(-1000, 1000), st.integers(1, 50), st.integers(-50, 50))
def test_evaluate_matches_python(a, b, c):
    e = (i * c + j) // b + (i % b) - minimum(i, j) + cdiv(j * j, b)
    expected = (a * c + 3) // b + (a % b) - min(a, 3) + -((-9) // b)
    assert evaluate(e, {i: a, j: 3}) == expected


def test_evaluate_vectorized():
    xs = np.arange(10)
    np.testing.assert_array_equal(evaluate(i * 3 % 4, {i: xs}), xs * 3 % 4)


def test_free_vars_and_substitute():
    e = i * 4 + j
    assert free_vars(e) == {i, j}
    assert substitute(e, {i: 2}) == j + 8 or substitute(e, {i: 2}) == 8 + j
    assert evaluate(substitute(e, {i: 2, j: 1})) == 9


@given(st.integers(-100, 100), st.integers(1, 9), st.integers(1, 5))
def test_products_divided_by_their_factor_fold(x, c, k):
    e = (i * (c * k)) // c
    assert e == i * k or e == i
    assert (i * (c * k)) % c == const(0)
    assert evaluate(e, {i: x}) == (x * c * k) // c
    assert str((i * 32) // 32) == "i"
