"""Every data type Tilus knows, defined once: name, bit width, kind and (for floats) bit split.

All other modules (printer, parser, interpreter, lowering) derive what they need from these objects.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from tilus.errors import DataTypeError

INT = "int"
UINT = "uint"
FLOAT = "float"
BOOL = "bool"


@dataclass(frozen=True, eq=False)
class DataType:
    """A scalar data type.

    ``kind`` is one of ``int`` (two's complement), ``uint``, ``float`` or ``bool``. Floats carry
    their exponent and mantissa widths; ``finite_only`` floats have no inf/NaN codes (every code is
    a finite number, the all-ones exponent holds normals), while the IEEE/OCP types keep theirs.
    ``unsigned`` floats have no sign bit (``float8_e8m0``, the OCP MX scale: exponent only).
    Types compare by identity: each name exists once, in the registry below.
    """

    name: str
    nbits: int
    kind: str
    exponent_bits: int = 0
    mantissa_bits: int = 0
    finite_only: bool = False
    unsigned: bool = False
    ml_dtypes_name: str | None = field(default=None, repr=False)

    @property
    def is_signed(self) -> bool:
        return self.kind == INT or (self.kind == FLOAT and not self.unsigned)

    @property
    def is_float(self) -> bool:
        return self.kind == FLOAT

    @property
    def is_integer(self) -> bool:
        return self.kind in (INT, UINT)

    @property
    def is_bool(self) -> bool:
        return self.kind == BOOL

    @property
    def is_subbyte(self) -> bool:
        """True when elements do not occupy whole bytes (K < 8): stored as a bit stream."""
        return self.nbits < 8

    @property
    def is_lowbit(self) -> bool:
        """True for the 1..8-bit types other than the plain bytes handled natively everywhere."""
        return self.nbits <= 8 and self.kind != BOOL and self.name not in ("int8", "uint8")

    @property
    def exponent_bias(self) -> int:
        if not self.is_float:
            raise DataTypeError(f"{self.name} is not a float type and has no exponent bias")
        return (1 << (self.exponent_bits - 1)) - 1

    # -- value set (tilus.dtypes.formats) --------------------------------------------------------
    @property
    def min_value(self) -> "int | float":
        """The most negative finite value (Python int for integers and bool, float for floats)."""
        from tilus.dtypes import formats
        return formats.min_value(self)

    @property
    def max_value(self) -> "int | float":
        """The largest finite value (Python int for integers and bool, float for floats)."""
        from tilus.dtypes import formats
        return formats.max_value(self)

    @property
    def eps(self) -> float:
        """Floats: the gap between 1.0 and the next larger value (``2^-Y``; ``2^(1-Y)`` for e1 types)."""
        from tilus.dtypes import formats
        return formats.eps(self)

    @property
    def smallest_normal(self) -> float:
        """Floats: the smallest positive normal number, ``2^(1-bias)`` (``2^-bias`` for the
        exponent-only ``float8_e8m0``, whose codes are all normal)."""
        from tilus.dtypes import formats
        return formats.smallest_normal(self)

    @property
    def smallest_subnormal(self) -> "float | None":
        """Floats: the smallest positive subnormal, ``2^(1-bias-Y)``; ``None`` when Y = 0."""
        from tilus.dtypes import formats
        return formats.smallest_subnormal(self)

    @property
    def has_nan(self) -> bool:
        """True for floats with NaN codes (float8_e4m3, float8_e5m2, float16, bfloat16, float32, float64)."""
        return self.is_float and not self.finite_only

    @property
    def has_inf(self) -> bool:
        """True for floats with inf codes (float8_e5m2 and the IEEE 16/32/64-bit floats)."""
        return self.has_nan and self.name != "float8_e4m3" and not self.unsigned

    @property
    def code_dtype(self):
        """The numpy dtype of this type's codes: uint8 up to 8 bits, else uint16/uint32/uint64."""
        from tilus.dtypes import formats
        return formats.code_numpy_dtype(self)

    # -- codes (tilus.dtypes.codec) ---------------------------------------------------------------
    def encode(self, values):
        """Numbers -> codes (round to nearest even, saturating); see ``tilus.dtypes.codec``."""
        from tilus.dtypes import codec
        return codec.encode(self, values)

    def decode(self, codes):
        """Codes -> numbers (float32; float64 for float64 and 32/64-bit integers)."""
        from tilus.dtypes import codec
        return codec.decode(self, codes)

    def value_table(self):
        """The value of every code, as a float32 numpy array indexed by code (types of <= 16 bits)."""
        from tilus.dtypes import codec
        return codec.value_table(self)

    def format_value_table(self, columns: "int | None" = None) -> str:
        """A printable grid of code -> value (types of <= 8 bits)."""
        from tilus.dtypes import codec
        return codec.format_value_table(self, columns)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"tilus.{self.name}"

    def __reduce__(self):
        return (get, (self.name,))

    def __invert__(self):
        """``~dtype`` is a pointer to ``dtype`` (kernel parameter annotations), of the IR's type."""
        if _pointer_type is None:
            raise DataTypeError(f"~{self.name} is an IR pointer type: import tilus.ir first")
        return _pointer_type(self)


# A pointer type is the IR's (tilus.ir.types.PointerType); the IR installs its constructor here, so
# that ``~dtype`` spells it while dtypes knows nothing of the IR.
_pointer_type: Optional[Callable[[DataType], Any]] = None


def install_pointer_type(make: Callable[[DataType], Any]) -> None:
    """Makes ``~dtype`` return ``make(dtype)`` (called by tilus.ir.types when it is imported)."""
    global _pointer_type
    _pointer_type = make


_REGISTRY: dict[str, DataType] = {}


def _register(dtype: DataType) -> DataType:
    if dtype.name in _REGISTRY:
        raise DataTypeError(f"data type {dtype.name} defined twice")
    _REGISTRY[dtype.name] = dtype
    return dtype


def float_name(nbits: int, exponent_bits: int, mantissa_bits: int) -> str:
    return f"float{nbits}_e{exponent_bits}m{mantissa_bits}"


def _define_all() -> None:
    for k in range(1, 9):
        _register(DataType(f"int{k}", k, INT))
        _register(DataType(f"uint{k}", k, UINT))
    for k in (16, 32, 64):
        _register(DataType(f"int{k}", k, INT))
        _register(DataType(f"uint{k}", k, UINT))
    for k in range(3, 9):
        for e in range(1, k):
            m = k - 1 - e
            if (k, e) in ((8, 4), (8, 5)):
                continue  # the OCP float8_e4m3 / float8_e5m2 below take these names
            ml = {(6, 2, 3): "float6_e2m3fn", (6, 3, 2): "float6_e3m2fn", (4, 2, 1): "float4_e2m1fn"}
            _register(DataType(float_name(k, e, m), k, FLOAT, e, m, finite_only=True,
                               ml_dtypes_name=ml.get((k, e, m))))
    _register(DataType("float8_e4m3", 8, FLOAT, 4, 3, ml_dtypes_name="float8_e4m3fn"))
    _register(DataType("float8_e5m2", 8, FLOAT, 5, 2, ml_dtypes_name="float8_e5m2"))
    # OCP MX v1.0 scale: unsigned, exponent only, bias 127; code e is 2^(e-127), 0xFF is NaN
    _register(DataType("float8_e8m0", 8, FLOAT, 8, 0, unsigned=True,
                       ml_dtypes_name="float8_e8m0fnu"))
    _register(DataType("float16", 16, FLOAT, 5, 10, ml_dtypes_name="float16"))
    _register(DataType("bfloat16", 16, FLOAT, 8, 7, ml_dtypes_name="bfloat16"))
    _register(DataType("float32", 32, FLOAT, 8, 23, ml_dtypes_name="float32"))
    _register(DataType("float64", 64, FLOAT, 11, 52, ml_dtypes_name="float64"))
    _register(DataType("bool", 8, BOOL))


_define_all()

# NVIDIA Tilus's names for types that have another name here; they are also attributes of
# tilus.dtypes and tilus (``tilus.f32``, ``tilus.int4b``, ``tilus.boolean``)
TILUS_NAMES = {
    "f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64", "boolean": "bool",
    **{f"int{k}b": f"int{k}" for k in range(1, 8)}, **{f"uint{k}b": f"uint{k}" for k in range(1, 8)},
}
_ALIASES = {
    "float4_e2m1fn": "float4_e2m1", "float6_e2m3fn": "float6_e2m3", "float6_e3m2fn": "float6_e3m2",
    "float8_e4m3fn": "float8_e4m3", "float8_e8m0fnu": "float8_e8m0", "half": "float16", "float": "float32",
    "int": "int32", **TILUS_NAMES,
}


def get(name: "str | DataType") -> DataType:
    """Look a type up by name (``"uint3"``, ``"float6_e3m2"``); unknown names list near matches."""
    if isinstance(name, DataType):
        return name
    if not isinstance(name, str):
        raise DataTypeError(f"a data type name must be a string, got {type(name).__name__}: {name!r}")
    key = _ALIASES.get(name, name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    near = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise DataTypeError(f"unknown data type {name!r}{hint} (Tilus has int1..int8, uint1..uint8, "
                        f"floatK_eXmY for 3 <= K <= 8, float16, bfloat16, float32, ...)")


def all_types() -> list[DataType]:
    """Every registered type, in definition order."""
    return list(_REGISTRY.values())


def lowbit_types() -> list[DataType]:
    """The int/uint/float types of 1 to 8 bits that quantized weights use (the unsigned
    exponent-only scale type ``float8_e8m0`` is not one: see ``scale_types``)."""
    return [t for t in _REGISTRY.values() if t.nbits <= 8 and t.kind != BOOL and not t.unsigned]


def scale_types() -> list[DataType]:
    """The types block scales are stored in: ``float8_e8m0`` (OCP MX: a power of two per block
    of 32), ``float8_e4m3`` (NVFP4: per block of 16), ``float16``, ``bfloat16`` (group scales)."""
    return [_REGISTRY[n] for n in ("float8_e8m0", "float8_e4m3", "float16", "bfloat16")]


def integer_type(nbits: int, signed: bool) -> DataType:
    """``intK``/``uintK`` for a width, with an error naming the widths that exist."""
    name = f"{'int' if signed else 'uint'}{nbits}"
    if name not in _REGISTRY:
        raise DataTypeError(f"no {'signed' if signed else 'unsigned'} integer type of {nbits} bits "
                            f"(widths are 1..8, 16, 32, 64)")
    return _REGISTRY[name]


def float_type(nbits: int, exponent_bits: int, mantissa_bits: int) -> DataType:
    """``floatK_eXmY`` for a bit split, with an error that says which splits exist."""
    if exponent_bits + mantissa_bits + 1 != nbits:
        raise DataTypeError(f"a {nbits}-bit float needs exponent + mantissa + 1 sign bit = {nbits}, "
                            f"got e{exponent_bits}m{mantissa_bits}")
    return get(float_name(nbits, exponent_bits, mantissa_bits))
