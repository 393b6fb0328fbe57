import pytest

import tilus
from tilus import dtypes
from tilus.errors import DataTypeError


def test_every_width_exists():
    for k in range(1, 9):
        assert dtypes.get(f"uint{k}").nbits == k and not dtypes.get(f"uint{k}").is_signed
        assert dtypes.get(f"int{k}").nbits == k and dtypes.get(f"int{k}").is_signed


def test_float_splits():
    names = {t.name for t in dtypes.all_types() if t.is_float and t.nbits <= 8}
    for k in range(3, 9):
        for e in range(1, k):
            assert f"float{k}_e{e}m{k - 1 - e}" in names
    assert tilus.float6_e3m2.exponent_bits == 3 and tilus.float6_e3m2.mantissa_bits == 2


@pytest.mark.parametrize("bad", ["uint9", "int0", "float9_e4m4", "floot16", ""])
def test_unknown_names(bad):
    with pytest.raises(DataTypeError):
        dtypes.get(bad)
