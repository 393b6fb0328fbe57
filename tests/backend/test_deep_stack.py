"""tvm_shim.with_deep_stack: lowering a deeply nested kernel body re-enters Python once per
nested statement, so it runs on a thread with a large stack and recursion limit."""
import sys

import pytest

pytest.importorskip("tvm")

from tilus.backend.tvm_shim import with_deep_stack  # noqa: E402


def _depth(n: int) -> int:
    return 0 if n == 0 else 1 + _depth(n - 1)


def test_deep_recursion_runs_and_the_limit_is_restored():
    limit = sys.getrecursionlimit()
    with pytest.raises(RecursionError):
        _depth(limit + 100)
    assert with_deep_stack(_depth, 50_000) == 50_000
    assert sys.getrecursionlimit() == limit


def test_errors_propagate_and_nested_calls_stay_on_the_thread():
    def fail():
        raise ValueError("from the deep thread")

    with pytest.raises(ValueError, match="from the deep thread"):
        with_deep_stack(fail)
    assert with_deep_stack(lambda: with_deep_stack(_depth, 3000)) == 3000
