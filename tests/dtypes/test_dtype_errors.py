"""Bad input raises the named TilusError subclass with a message that names the problem."""
import numpy as np
import pytest
import torch

from tilus import dtypes
from tilus.errors import DataTypeError, PackingError, TilusError


def test_errors_are_tilus_errors():
    assert issubclass(DataTypeError, TilusError) and issubclass(PackingError, TilusError)


@pytest.mark.parametrize("name", ["uint9", "float5_e5m0", "float8_e3m3", "int0", "nope"])
def test_unknown_type_names(name):
    with pytest.raises(DataTypeError, match="unknown data type"):
        dtypes.encode(name, [1.0])
    with pytest.raises(DataTypeError, match="unknown data type"):
        dtypes.pack(np.zeros(3, np.uint8), name)


@pytest.mark.parametrize("k", [0, 9, -1, 12, 65])
def test_bad_bit_widths(k):
    with pytest.raises(DataTypeError, match=f"cannot pack {k}-bit"):
        dtypes.pack(np.zeros(3, np.uint8), k)
    with pytest.raises(DataTypeError, match=f"cannot pack {k}-bit"):
        dtypes.unpack(np.zeros(3, np.uint8), k, 1)


@pytest.mark.parametrize("t", ["float6_e3m2", "float3_e1m1", "int4", "uint8", "bool"])
def test_nan_into_types_without_nan(t):
    with pytest.raises(DataTypeError, match=f"NaN at index \\(1,\\) as {t}"):
        dtypes.encode(t, [1.0, np.nan])


def test_non_numbers():
    with pytest.raises(DataTypeError, match="expects real numbers"):
        dtypes.uint4.encode(["a", "b"])
    with pytest.raises(DataTypeError, match="expects real numbers"):
        dtypes.uint4.encode(np.array([1 + 2j]))


def test_decode_bad_codes():
    with pytest.raises(DataTypeError, match="8 is not a uint3 code at index \\(2,\\): uint3 codes are 0..7"):
        dtypes.uint3.decode(np.array([0, 7, 8], np.uint8))
    with pytest.raises(DataTypeError, match="-1 is not a float4_e2m1 code"):
        dtypes.float4_e2m1.decode([-1])
    with pytest.raises(DataTypeError, match="must be integers"):
        dtypes.float4_e2m1.decode(np.array([1.0, 2.0]))
    with pytest.raises(DataTypeError, match="2 is not a bool code"):
        dtypes.bool.decode([2])
    with pytest.raises(DataTypeError, match="256 is not a float8_e4m3 code"):
        dtypes.float8_e4m3.decode(np.array([256], np.uint16))
    with pytest.raises(DataTypeError, match="must be integers"):
        dtypes.int4.decode(torch.tensor([1.0]))


def test_pack_bad_codes():
    with pytest.raises(PackingError, match="code 8 at flat index 1 does not fit in 3 bits"):
        dtypes.pack(np.array([1, 8], np.uint8), "uint3")
    with pytest.raises(PackingError, match="unsigned integer array"):
        dtypes.pack(np.array([1, 2], np.int64), "uint3")
    with pytest.raises(PackingError, match="unsigned integer array"):
        dtypes.pack(np.array([1.0, 2.0]), "uint3")
    with pytest.raises(PackingError, match="codes are unsigned"):
        dtypes.pack([1, -2], "uint3")
    with pytest.raises(PackingError, match="must be torch.uint8"):
        dtypes.pack(torch.tensor([1, 2]), "uint3")
    with pytest.raises(PackingError, match="code 16 at flat index 0 does not fit in 4 bits"):
        dtypes.pack(torch.tensor([16], dtype=torch.uint8), 4)
    with pytest.raises(PackingError, match="does not fit in 8 bits"):
        dtypes.pack(np.array([256], np.uint16), "int8")
    with pytest.raises(PackingError, match="torch.uint16 or torch.int16"):
        dtypes.pack(torch.tensor([1], dtype=torch.int32), "float16")


def test_unpack_bad_buffers():
    with pytest.raises(PackingError, match="must be a uint8 array"):
        dtypes.unpack(np.zeros(4, np.int8), "uint3", 8)
    with pytest.raises(PackingError, match="must be torch.uint8"):
        dtypes.unpack(torch.zeros(4, dtype=torch.int32), "uint3", 8)
    with pytest.raises(PackingError, match="needs 3 bytes \\(ceil\\(8\\*3/8\\)\\), got 2"):
        dtypes.unpack(np.zeros(2, np.uint8), "uint3", 8)
    with pytest.raises(PackingError, match="needs 3 bytes"):
        dtypes.unpack(torch.zeros(2, dtype=torch.uint8), "uint3", 8)
    with pytest.raises(PackingError, match="needs the element count"):
        dtypes.unpack(np.zeros(2, np.uint8), "uint3")
    with pytest.raises(PackingError, match="disagrees with shape"):
        dtypes.unpack(np.zeros(2, np.uint8), "uint3", 4, shape=(2, 3))
    with pytest.raises(PackingError, match="non-negative int"):
        dtypes.unpack(np.zeros(2, np.uint8), "uint3", -1)
    with pytest.raises(PackingError, match="uint32 \\(or int32\\)"):
        dtypes.unpack_words(np.zeros(2, np.uint8), "uint3", 4)
    with pytest.raises(PackingError, match="needs 5 bytes"):
        dtypes.unpack_words(np.zeros(1, np.uint32), "uint4", 8 + 1)


def test_methods_that_do_not_apply():
    with pytest.raises(DataTypeError, match="int4 is not a float type"):
        dtypes.int4.eps
    with pytest.raises(DataTypeError, match="not a float"):
        dtypes.uint3.smallest_subnormal
    with pytest.raises(DataTypeError, match="too many for a value table"):
        dtypes.float32.value_table()
    with pytest.raises(DataTypeError, match="at most 8 bits"):
        dtypes.format_value_table("float16")
