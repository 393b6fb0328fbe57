"""How Tilus data types live in TIR: storage (what buffers hold) and compute (what arithmetic uses).

- Native types (int8..int64, uint8..uint64, float16, bfloat16, float32, float64, bool) are stored
  as themselves.
- Every other type (the 1-7-bit integers and floats, float8_e4m3/e5m2, the 8-bit finite-only
  floats) is a *low-bit* type: in registers and scratch shared memory each element is one uint8
  holding its code (bit pattern); in global memory and in Tilus shared tensors it is a bit stream.
- Arithmetic on floats is done in float32 (float64 for float64) and rounded back once per
  operation, as the interpreter does; on integers in int32/uint32 (64-bit types in 64 bits) and
  wrapped back to the type's width.
"""
from __future__ import annotations

from tilus import dtypes
from tilus.dtypes import DataType

NATIVE = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "bfloat16", "float32", "float64", "bool"}


def is_native(dtype: DataType) -> bool:
    return dtype.name in NATIVE


def storage(dtype: DataType) -> str:
    """The TIR dtype of one register element of ``dtype``."""
    return dtype.name if is_native(dtype) else "uint8"


def compute(dtype: DataType) -> str:
    """The TIR dtype arithmetic on ``dtype`` values uses."""
    if dtype.is_bool:
        return "bool"
    if dtype.is_float:
        return "float64" if dtype.nbits == 64 else "float32"
    if dtype.nbits == 64:
        return dtype.name
    return "int32" if dtype.is_signed or dtype.nbits < 32 else "uint32"


def pointer_storage(dtype: DataType) -> str:
    """The TIR dtype of a pointer parameter's flat buffer (sub-byte and low-bit: bytes)."""
    if dtype.is_bool:
        return "bool"
    return dtype.name if is_native(dtype) else "uint8"


def bits_of(dtype: DataType) -> int:
    return dtype.nbits


def all_lowbit() -> list[DataType]:
    return [t for t in dtypes.all_types() if not is_native(t)]
