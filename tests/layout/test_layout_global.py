import pytest

from tilus import dtypes
from tilus.errors import LayoutError
from tilus.ir.expr import Var, evaluate
from tilus.ir.layout import GlobalLayout, global_strided, parse_layout
from tilus.ir.parser import layout_from_text

m, k = Var("m", dtypes.int32), Var("k", dtypes.int32)
i, j = Var("i", dtypes.int32), Var("j", dtypes.int32)


def test_row_major_default_strides_and_offset():
    g = global_strided([m, k])
    assert [str(s) for s in g.strides] == ["k", "1"]
    off = g.offset((i, j))
    assert str(off) == "i * k + j"
    assert evaluate(off, {i: 3, j: 5, k: 100}) == 305
    assert global_strided([2, 3, 4]).strides == global_strided([2, 3, 4], [12, 4, 1]).strides


def test_text_round_trip():
    for g in (global_strided([m, k]), global_strided([m, k], [1, m]), global_strided([m * 2, 16])):
        assert layout_from_text(str(g)) == g
    assert str(global_strided([m, k])) == "global_strided([m,k],[k,1])"
    u = Var("u", dtypes.int64)
    assert layout_from_text("global_strided([u],[1])", env={"u": u}) == GlobalLayout([u], [1])
    assert parse_layout("global_strided([u],[1])", env={"u": u}) == GlobalLayout([u], [1])
    assert parse_layout("global_strided([cdiv(7, 2)],[1])") == global_strided([4])
    with pytest.raises(LayoutError, match="unknown name 'n'"):
        parse_layout("global_strided([n],[1])")   # the layouts alone know no IR variables


def test_errors():
    with pytest.raises(LayoutError, match="one stride per dimension"):
        GlobalLayout([m, k], [1])
    with pytest.raises(LayoutError, match="rank"):
        global_strided([m, k]).offset((i,))
