"""Types of IR values other than scalars: pointers and tensors (dtype, shape, scope, layout)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.dtypes.types import install_pointer_type
from tilus.errors import IRError
from tilus.ir.expr import Expr

GLOBAL = "global"
SHARED = "shared"
REGISTER = "register"
SCOPES = (GLOBAL, SHARED, REGISTER)


@dataclass(frozen=True)
class PointerType:
    """A pointer to elements of ``dtype``; for a sub-byte dtype it points at the packed bit stream."""

    dtype: DataType

    def __str__(self) -> str:
        return f"~{self.dtype.name}"


install_pointer_type(PointerType)
ValueType = Union[DataType, PointerType]

# A pointer to this type is a raw byte pointer (NVIDIA Tilus's ``void_p``): global_view may read its
# bytes as any type, and a call may pass any contiguous buffer for it (its bytes are what is read).
RAW_POINTEE = dtypes.uint8
void_p = PointerType(RAW_POINTEE)


def is_raw_pointer(t: Any) -> bool:
    """True for ``void_p`` (= ``~uint8``), the pointer type ``global_view`` may reinterpret."""
    return isinstance(t, PointerType) and t.dtype is RAW_POINTEE


@dataclass(frozen=True)
class TensorType:
    """A tile's type: element type, shape (ints; expressions for global views), memory scope and
    an optional layout (register/shared/global layout object of tilus.ir.layout)."""

    dtype: DataType
    shape: tuple[Any, ...]
    scope: str
    layout: Any = None

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise IRError(f"unknown tensor scope {self.scope!r}; expected one of {', '.join(SCOPES)}")
        if self.scope != GLOBAL:
            for s in self.shape:
                if isinstance(s, Expr) or not isinstance(s, int) or s <= 0:
                    raise IRError(f"a {self.scope} tensor needs positive constant sizes, got "
                                  f"shape {list(map(str, self.shape))}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements (register/shared tensors only: their shapes are constants)."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    def with_layout(self, layout: Any) -> "TensorType":
        return TensorType(self.dtype, self.shape, self.scope, layout)

    def __str__(self) -> str:
        from tilus.ir.printer import format_tensor_type

        return format_tensor_type(self)


@dataclass(frozen=True)
class Tensor:
    """A tensor variable of the IR: defined by one instruction, possibly overwritten by others
    (``out=``). Names are unique within a Program (front ends make them so)."""

    name: str
    type: TensorType

    @property
    def dtype(self) -> DataType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[Any, ...]:
        return self.type.shape

    @property
    def scope(self) -> str:
        return self.type.scope

    @property
    def layout(self) -> Any:
        return self.type.layout

    def __str__(self) -> str:
        return f"%{self.name}"
