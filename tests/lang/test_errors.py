"""Mistakes in kernels are reported as ScriptError at the user's file and line."""
import inspect
import os

import pytest

import tilus
from tilus.errors import ScriptError

FILE = os.path.basename(__file__)


def line_of(cls, text):
    """Absolute line number of the first source line of ``cls`` containing ``text``."""
    lines, first = inspect.getsourcelines(cls)
    for i, line in enumerate(lines):
        if text in line:
            return first + i
    raise AssertionError(text)


def expect_error(cls, marker, match, **consts):
    with pytest.raises(ScriptError, match=match) as info:
        cls().program(**consts)
    e = info.value
    line = line_of(cls, marker)
    assert f"{FILE}:{line}:" in str(e), str(e)
    assert e.lineno == line and e.filename.endswith(FILE)
    assert marker in str(e)  # the source line is shown
    return e


class UnknownName(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[16])
        x = self.load_global(g, offsets=[0], shape=[nonexistent_size])  # noqa: F821  # MARK


def test_unknown_name():
    expect_error(UnknownName, "# MARK", "name 'nonexistent_size' is not defined")


class UnknownMethod(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[16])
        x = self.load_globl(g, offsets=[0], shape=[16])  # MARK


def test_unknown_self_method():
    expect_error(UnknownMethod, "# MARK", "no method or attribute 'load_globl'.*self.load_global")


class WrongKeyword(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[16])
        x = self.load_global(g,
                             offset=[0], shape=[16])  # MARK


def test_wrong_keyword():
    # the error points at the call, which starts on the line before the marker
    with pytest.raises(ScriptError, match="unexpected keyword argument 'offset'") as info:
        WrongKeyword().program()
    assert f"{FILE}:{line_of(WrongKeyword, 'x = self.load_global')}:" in str(info.value)


class WrongArity(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[16])
        x = self.load_global(g, offsets=[0], shape=[16])
        self.store_global(g, x, [0], None, 5)  # MARK


def test_wrong_arity():
    expect_error(WrongArity, "# MARK", "too many positional arguments")


class ShapeMismatch(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[64])
        x = self.load_global(g, offsets=[0], shape=[16])
        y = self.load_global(g, offsets=[0], shape=[32])
        z = x + y  # MARK


def test_shape_mismatch():
    expect_error(ShapeMismatch, "# MARK", r"\[16\], \[32\] do not broadcast")


class Unsupported(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        try:  # MARK
            pass
        finally:
            pass


class UnsupportedLambda(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        f = lambda *v: v  # MARK  # noqa: E731


class ComprehensionOverIR(tilus.Script):
    def __call__(self, n: tilus.int32):
        xs = [i for i in self.range(n)]  # MARK


def test_unsupported_syntax():
    expect_error(Unsupported, "# MARK", "unsupported syntax.*try")
    expect_error(UnsupportedLambda, "# MARK", "lambda in a kernel takes plain positional parameters")
    expect_error(ComprehensionOverIR, "# MARK", "comprehension cannot iterate")


class TensorAsScalar(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[64])
        x = self.load_global(g, offsets=[0], shape=[16])
        y = self.load_global(g, offsets=[x], shape=[16])  # MARK


class TensorAsCondition(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[64])
        x = self.load_global(g, offsets=[0], shape=[16])
        if x > 0.0:  # MARK
            pass


class TensorAsBlocks(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[64])
        x = self.load_global(g, offsets=[0], shape=[16])
        self.attrs.blocks = x  # MARK


def test_tensor_where_a_scalar_is_needed():
    expect_error(TensorAsScalar, "# MARK", "offsets.*must be a scalar.*register tensor")
    expect_error(TensorAsCondition, "# MARK", "condition of if must be a scalar")
    expect_error(TensorAsBlocks, "# MARK", "attrs.blocks must be integer scalars")


class RuntimeShape(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[n])
        x = self.load_global(g, offsets=[0], shape=[n])  # MARK


class RebindShapeInLoop(tilus.Script):
    def __call__(self, n: tilus.int32, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[n])
        acc = self.register_tensor(dtype=tilus.float32, shape=[16], init=0.0)
        for i in self.range(n):
            acc = self.load_global(g, offsets=[i], shape=[32])  # MARK


class UseAfterLoop(tilus.Script):
    def __call__(self, n: tilus.int32):
        for i in self.range(n):
            k = i * 2
        m = k + 1  # MARK


class BreakInRuntimeIfOfUnrolledLoop(tilus.Script):
    def __call__(self, n: tilus.int32):
        for i in range(4):
            if n > i:
                break  # MARK


class IntegerDivide(tilus.Script):
    def __call__(self, n: tilus.int32):
        k = n / 2  # MARK


class SetSelfAttr(tilus.Script):
    def __call__(self, n: tilus.int32):
        self.block = 4  # MARK


def test_more_mistakes():
    expect_error(RuntimeShape, "# MARK", "shape must be compile-time integers")
    expect_error(RebindShapeInLoop, "# MARK", "dtype and shape must stay")
    expect_error(UseAfterLoop, "# MARK", "'k' is defined only inside the loop at line")
    expect_error(BreakInRuntimeIfOfUnrolledLoop, "# MARK", "cannot be under a run-time if")
    expect_error(IntegerDivide, "# MARK", "use '//'")
    expect_error(SetSelfAttr, "# MARK", "cannot set self.block")


class BadAnnotation(tilus.Script):
    def __call__(self, n):
        pass


def test_parameter_annotations():
    with pytest.raises(ScriptError, match="'n' has no annotation") as info:
        BadAnnotation().program()
    assert f"{FILE}:{line_of(BadAnnotation, 'def __call__')}:" in str(info.value)


def helper_with_bad_load(script, g):
    return script.load_global(g, offsets=[0], shape=[0.5])


class ErrorInPlainHelper(tilus.Script):
    def __call__(self, a: ~tilus.float32):
        g = self.global_view(a, dtype=tilus.float32, shape=[64])
        x = helper_with_bad_load(self, g)  # MARK


def test_error_in_a_plain_helper_is_reported_at_the_call():
    expect_error(ErrorInPlainHelper, "# MARK", "shape must be compile-time integers")


def test_dsl_methods_outside_a_build():
    with pytest.raises(tilus.errors.TilusError, match="only be used inside"):
        ErrorInPlainHelper().sync()
