"""Tilus data types: every width from 1 to 8 bits, plus the standard ones.

``dtypes.get(name)`` looks one up; each type is also a module attribute (``dtypes.uint3``).
``encode``/``decode`` turn numbers into codes and back (``tilus.dtypes.codec``); ``pack``/``unpack``
turn codes into the little-endian bit stream kept in memory and back (``tilus.dtypes.packing``).
"""
from typing import TYPE_CHECKING

from tilus.dtypes.types import (  # noqa: F401
    DataType, all_types, float_type, get, integer_type, lowbit_types, scale_types,
)
from tilus.dtypes.types import _REGISTRY, TILUS_NAMES
from tilus.dtypes.codec import decode, encode, format_value_table, value_table  # noqa: F401
from tilus.dtypes.packing import (  # noqa: F401
    bit_width, pack, pack_words, packed_nbytes, unpack, unpack_words,
)

globals().update(_REGISTRY)
globals().update({alias: _REGISTRY[name] for alias, name in TILUS_NAMES.items()})

if TYPE_CHECKING:
    def __getattr__(name: str) -> DataType:
        """For type checkers: every registered type is a module attribute (set just above)."""

__all__ = ["DataType", "get", "all_types", "lowbit_types", "scale_types", "integer_type", "float_type",
           "encode", "decode", "value_table", "format_value_table",
           "pack", "unpack", "pack_words", "unpack_words", "packed_nbytes", "bit_width",
           *_REGISTRY, *TILUS_NAMES]
