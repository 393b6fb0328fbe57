"""What the runtime knows about a compiled kernel: its parameters, launch, target and files.

Stored as ``metadata.json`` next to the kernel's files (JSON only: nothing is unpickled). The runtime
needs nothing else about how a kernel was written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from tilus import dtypes
from tilus.errors import CacheCorruptionError, DataTypeError
from tilus.runtime import expr as _expr
from tilus.runtime import schema
from tilus.runtime.expr import SizeExpr

FORMAT_VERSION = 1
SCALAR = "scalar"
POINTER = "pointer"
CPU_TARGETS = ("llvm", "c", "cpu")


@dataclass(frozen=True)
class Param:
    """One kernel parameter.

    ``kind`` is ``scalar`` or ``pointer``; ``dtype`` a tilus type name (for a pointer: the pointee).
    Pointer requirements, checked before a launch: ``contiguous`` (row-major dense), ``align`` (bytes
    the data pointer must be a multiple of; 1 = none), ``min_count`` (elements of ``dtype`` the buffer
    must hold) and ``min_bytes`` (bytes it must hold); both are expressions over the scalar parameters
    (text, an int, or a callable taking ``{name: value}``; only text and ints go to JSON).
    ``index_bits`` is the width of the kernel's index arithmetic (32: at most 2**31-1 elements).
    """

    name: str
    kind: str
    dtype: str
    contiguous: bool = True
    align: int = 16
    min_count: Optional[SizeExpr] = None
    min_bytes: Optional[SizeExpr] = None
    index_bits: int = 32
    _dtype: Any = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"parameter name {self.name!r} is not an identifier")
        if self.kind not in (SCALAR, POINTER):
            raise ValueError(f"parameter {self.name}: kind must be 'scalar' or 'pointer', "
                             f"got {self.kind!r}")
        object.__setattr__(self, "_dtype", dtypes.get(self.dtype))  # DataTypeError if unknown
        if self.align < 1 or self.align & (self.align - 1):
            raise ValueError(f"parameter {self.name}: align must be a power of two, got {self.align}")
        for e in (self.min_count, self.min_bytes):
            if e is not None:
                _expr.validate(e)

    @property
    def data_type(self) -> dtypes.DataType:
        return self._dtype

    @property
    def is_pointer(self) -> bool:
        return self.kind == POINTER

    def to_json(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind, "dtype": self.dtype}
        if self.is_pointer:
            d.update(contiguous=self.contiguous, align=self.align, index_bits=self.index_bits)
            for key in ("min_count", "min_bytes"):
                value = getattr(self, key)
                if callable(value):
                    raise ValueError(f"parameter {self.name}: a callable {key} cannot be stored in "
                                     f"metadata.json; give it as expression text")
                if value is not None:
                    d[key] = value
        return d

    @staticmethod
    def from_json(d: Mapping) -> "Param":
        keys = {"name", "kind", "dtype", "contiguous", "align", "min_count", "min_bytes",
                "index_bits"}
        unknown = set(d) - keys
        if unknown:
            raise ValueError(f"unknown parameter fields {sorted(unknown)}")
        return Param(**d)


@dataclass(frozen=True)
class KernelMetadata:
    """Everything about a compiled kernel that loading and launching it needs.

    ``entry``: the function's symbol in the library. ``target``: ``cuda`` or a CPU target
    (``llvm``). ``launch``: launch dimensions as expression texts, e.g.
    ``{"grid": ["cdiv(n, 512)", 1, 1], "block": [128, 1, 1], "shared_bytes": 0}``.
    ``files``: name -> ``{"sha256", "bytes"}``, filled in by the cache when the entry is written.
    """

    name: str
    entry: str
    target: str
    params: tuple[Param, ...]
    arch: str = ""
    library: str = "kernel.so"
    launch: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "params", tuple(self.params))
        seen = set()
        for p in self.params:
            if p.name in seen:
                raise ValueError(f"kernel {self.name}: parameter {p.name!r} appears twice")
            seen.add(p.name)
        scalars = {p.name for p in self.params if not p.is_pointer}
        for p in self.params:
            for e in (p.min_count, p.min_bytes):
                missing = set(_expr.names(e)) - scalars if e is not None else set()
                if missing:
                    raise ValueError(f"kernel {self.name}: parameter {p.name}: size expression "
                                     f"{e!r} names {sorted(missing)}, which are not scalar "
                                     f"parameters")
        for key, value in self.launch.items():
            for e in value if isinstance(value, list) else [value]:
                missing = set(_expr.names(e)) - scalars
                if missing:
                    raise ValueError(f"kernel {self.name}: launch {key} {e!r} names "
                                     f"{sorted(missing)}, which are not scalar parameters")

    @property
    def is_cuda(self) -> bool:
        return self.target == "cuda"

    @property
    def device_type(self) -> str:
        return "cuda" if self.is_cuda else "cpu"

    def with_files(self, files: Mapping[str, Mapping[str, Any]]) -> "KernelMetadata":
        d = dict(self.__dict__)
        d["files"] = dict(files)
        return KernelMetadata(**d)

    def to_json(self) -> dict:
        return {"format": FORMAT_VERSION, "name": self.name, "entry": self.entry,
                "target": self.target, "arch": self.arch, "library": self.library,
                "params": [p.to_json() for p in self.params], "launch": dict(self.launch),
                "versions": dict(self.versions), "files": {k: dict(v) for k, v in self.files.items()},
                "extra": dict(self.extra)}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @staticmethod
    def from_json(d: Any) -> "KernelMetadata":
        """Parse and validate strictly (:mod:`tilus.runtime.schema`); any problem raises
        CacheCorruptionError saying what is wrong."""
        try:
            if not isinstance(d, dict):
                raise ValueError("metadata is not a JSON object")
            if d.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {d.get('format')!r}, expected {FORMAT_VERSION}")
            schema.check(d)
            return KernelMetadata(
                name=_str(d, "name"), entry=_str(d, "entry"), target=_str(d, "target"),
                arch=_str(d, "arch"), library=_str(d, "library"),
                params=tuple(Param.from_json(p) for p in d["params"]),
                launch=dict(d.get("launch", {})), versions=dict(d.get("versions", {})),
                files={k: dict(v) for k, v in d.get("files", {}).items()},
                extra=dict(d.get("extra", {})))
        except (KeyError, TypeError, ValueError, DataTypeError, AttributeError, IndexError,
                RecursionError, MemoryError, OverflowError) as e:
            raise CacheCorruptionError(f"invalid kernel metadata: {type(e).__name__}: "
                                       f"{str(e)[:300]}") from None

    @staticmethod
    def loads(text: "str | bytes") -> "KernelMetadata":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError, MemoryError) as e:
            what = "nested too deeply" if isinstance(e, (RecursionError, MemoryError)) else str(e)
            raise CacheCorruptionError(f"metadata.json is not valid JSON: {what[:300]}") from None
        return KernelMetadata.from_json(data)


def _str(d: Mapping, key: str) -> str:
    v = d[key]
    if not isinstance(v, str):
        raise ValueError(f"{key} must be a string, got {v!r}")
    return v
