"""Tilus data types: every width from 1 to 8 bits, plus the standard ones.

``dtypes.get(name)`` looks one up; each type is also a module attribute (``dtypes.uint3``).
"""
from tilus.dtypes.types import (  # noqa: F401
    DataType, all_types, float_type, get, integer_type, lowbit_types,
)
from tilus.dtypes.types import _REGISTRY

globals().update(_REGISTRY)

__all__ = ["DataType", "get", "all_types", "lowbit_types", "integer_type", "float_type", *_REGISTRY]
