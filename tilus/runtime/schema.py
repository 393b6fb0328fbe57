"""Strict validation of a ``metadata.json`` read from disk: the type, range and form of every field,
so that nothing a damaged or edited file says reaches a launch unchecked.

:func:`check` raises ValueError naming the field (``launch.block[0]``, ``params[2].align``, ...);
:class:`tilus.runtime.metadata.KernelMetadata` turns it into a CacheCorruptionError.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from tilus.runtime import expr as _expr

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}\Z")
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}\Z")
SHA256 = re.compile(r"[0-9a-f]{64}\Z")
CUDA_ARCH = re.compile(r"sm_[0-9]{2,3}a?\Z")
MAX_THREADS = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_SHARED_BYTES = 256 * 1024
MAX_ITEMS = 256
MAX_TEXT = 4096
MAX_FILE_BYTES = 1 << 30
# What a pointer's flat buffer can hold (tilus.backend.codegen.dtypes_map.NATIVE).
STORAGE_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                  "float16", "bfloat16", "float32", "float64", "bool"}
# The dtype of a scalar parameter each C type of a device signature passes (tilus.runtime.driver).
CTYPE_DTYPES = {"int": "int32", "unsigned int": "uint32", "uint": "uint32", "long long": "int64",
                "int64_t": "int64", "float": "float32", "double": "float64", "bool": "bool",
                "short": "int16", "signed char": "int8", "char": "int8", "unsigned char": "uint8",
                "uchar": "uint8", "ushort": "uint16", "unsigned short": "uint16",
                "unsigned long long": "uint64", "uint64_t": "uint64"}
TOP_KEYS = {"format", "name", "entry", "target", "arch", "library", "params", "launch",
            "versions", "files", "extra"}
PARAM_KEYS = {"name", "kind", "dtype", "contiguous", "align", "min_count", "min_bytes",
              "index_bits"}
CUDA_EXTRA_KEYS = ("cuda_source_sha256", "cubin", "kernel_name", "pointer_storage")
EXTRA_KEYS = {"cuda_source_sha256", "cubin", "kernel_name", "pointer_storage", "assumptions",
              "device_params", "threads", "resources", "tilus_version", "compiler", "workspaces"}


def _fail(where: str, what: str) -> None:
    raise ValueError(f"{where}: {what}")


def _obj(v: Any, where: str, keys: set, required: tuple = ()) -> Mapping:
    if type(v) is not dict:
        _fail(where, f"expected an object, got {type(v).__name__}")
    unknown = sorted(set(v) - keys)
    if unknown:
        _fail(where, f"unknown fields {unknown[:5]}")
    for k in required:
        if k not in v:
            _fail(where, f"{k} is missing")
    return v


def _list(v: Any, where: str, lo: int = 0, hi: int = MAX_ITEMS) -> list:
    if type(v) is not list or not lo <= len(v) <= hi:
        _fail(where, f"expected a list of {lo} to {hi} items, got {_show(v)}")
    return v


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        _fail(where, f"expected an integer in [{lo}, {hi}], got {_show(v)}")
    return v


def _text(v: Any, where: str, pattern: "re.Pattern | None" = None) -> str:
    if type(v) is not str or len(v) > MAX_TEXT or not v.isprintable() \
            or (pattern is not None and not pattern.match(v)):
        _fail(where, f"expected {'a ' + _WHAT[pattern] if pattern in _WHAT else 'printable text'}"
                     f", got {_show(v)}")
    return v


_WHAT = {IDENT: "identifier", FILE_NAME: "plain file name", SHA256: "sha256 (64 hex digits)",
         CUDA_ARCH: "CUDA arch (sm_90)"}


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _size_expr(v: Any, where: str) -> None:
    if type(v) is int:
        _int(v, where, 0, 2**63 - 1)
    elif type(v) is str:
        try:
            _expr.validate(v)
        except ValueError as e:
            _fail(where, str(e))
    else:
        _fail(where, f"expected an expression text or an integer, got {_show(v)}")


def check(d: Any) -> None:
    """Raise ValueError (naming the field) unless ``d`` is a well-formed metadata object."""
    _obj(d, "metadata", TOP_KEYS, ("format", "name", "entry", "target", "arch", "library",
                                   "params"))
    _text(d["name"], "name")
    _text(d["entry"], "entry", IDENT)
    target = _text(d["target"], "target")
    if target not in ("cuda", "llvm", "c", "cpu"):
        _fail("target", f"expected cuda, llvm, c or cpu, got {_show(target)}")
    if target == "cuda" or d["arch"]:
        _text(d["arch"], "arch", CUDA_ARCH if target == "cuda" else IDENT)
    if not _text(d["library"], "library", FILE_NAME).endswith(".so"):
        _fail("library", f"expected a .so file name, got {_show(d['library'])}")
    params = _list(d["params"], "params")
    kinds = {}
    for i, p in enumerate(params):
        _param(p, f"params[{i}]")
        kinds[p["name"]] = (p["kind"], p["dtype"])
    _launch(d.get("launch", {}), target == "cuda")
    for k, v in _obj(d.get("versions", {}), "versions", set(d.get("versions", {}))).items():
        _text(k, "versions (a key)")
        _text(v, f"versions.{k}")
    files = d.get("files", {})
    for name, info in _obj(files, "files", set(files)).items():
        _text(name, "files (a name)", FILE_NAME)
        _obj(info, f"files.{name}", {"sha256", "bytes"}, ("sha256", "bytes"))
        _text(info["sha256"], f"files.{name}.sha256", SHA256)
        _int(info["bytes"], f"files.{name}.bytes", 0, MAX_FILE_BYTES)
    _extra(d.get("extra", {}), kinds, target == "cuda")


def _param(p: Any, where: str) -> None:
    _obj(p, where, PARAM_KEYS, ("name", "kind", "dtype"))
    _text(p["name"], f"{where}.name", IDENT)
    if p["kind"] not in ("scalar", "pointer"):
        _fail(f"{where}.kind", f"expected scalar or pointer, got {_show(p['kind'])}")
    _text(p["dtype"], f"{where}.dtype", IDENT)
    if "contiguous" in p and type(p["contiguous"]) is not bool:
        _fail(f"{where}.contiguous", f"expected true or false, got {_show(p['contiguous'])}")
    if "align" in p:
        _int(p["align"], f"{where}.align", 1, 4096)
    if "index_bits" in p and _int(p["index_bits"], f"{where}.index_bits", 32, 64) not in (32, 64):
        _fail(f"{where}.index_bits", f"expected 32 or 64, got {p['index_bits']}")
    for key in ("min_count", "min_bytes"):
        if key in p:
            _size_expr(p[key], f"{where}.{key}")


def _launch(launch: Any, cuda: bool) -> None:
    _obj(launch, "launch", {"grid", "block", "shared_bytes"},
         ("grid", "block") if cuda else ())
    if "grid" in launch:
        for i, g in enumerate(_list(launch["grid"], "launch.grid", 1, 3)):
            _size_expr(g, f"launch.grid[{i}]")
    if "block" in launch:
        block = _list(launch["block"], "launch.block", 1, 3)
        total = 1
        for i, b in enumerate(block):
            total *= _int(b, f"launch.block[{i}]", 1, MAX_BLOCK[i])
        if total > MAX_THREADS:
            _fail("launch.block", f"{block} is {total} threads, more than {MAX_THREADS}")
    if "shared_bytes" in launch:
        _int(launch["shared_bytes"], "launch.shared_bytes", 0, MAX_SHARED_BYTES)


def _extra(extra: Any, kinds: Mapping[str, tuple], cuda: bool) -> None:
    _obj(extra, "extra", EXTRA_KEYS, CUDA_EXTRA_KEYS if cuda else ())
    if "cuda_source_sha256" in extra:
        _text(extra["cuda_source_sha256"], "extra.cuda_source_sha256", SHA256)
    if "cubin" in extra:
        _text(extra["cubin"], "extra.cubin", FILE_NAME)
    if "kernel_name" in extra:
        _text(extra["kernel_name"], "extra.kernel_name", IDENT)
    for k in ("tilus_version", "compiler"):
        if k in extra:
            _text(extra[k], f"extra.{k}")
    if "threads" in extra:
        _int(extra["threads"], "extra.threads", 1, MAX_THREADS)
    for i, a in enumerate(_list(extra.get("assumptions", []), "extra.assumptions")):
        _text(a, f"extra.assumptions[{i}]")
    storage = extra.get("pointer_storage", {})
    for name, st in _obj(storage, "extra.pointer_storage", set(storage)).items():
        if kinds.get(name, ("",))[0] != "pointer" or st not in STORAGE_DTYPES:
            _fail(f"extra.pointer_storage.{name}", f"expected a pointer parameter and one of "
                                                   f"{sorted(STORAGE_DTYPES)}, got {_show(st)}")
    pointers = {name for name, (kind, _) in kinds.items() if kind == "pointer"}
    if cuda and set(storage) != pointers:
        _fail("extra.pointer_storage", f"expected the storage of every pointer parameter "
                                       f"({sorted(pointers)}), got {sorted(storage)[:8]}")
    scalars = {name for name, (kind, _) in kinds.items() if kind == "scalar"}
    kinds = dict(kinds)
    for i, w in enumerate(_list(extra.get("workspaces", []), "extra.workspaces")):
        name = _workspace(w, f"extra.workspaces[{i}]", scalars)
        if name in kinds:
            _fail(f"extra.workspaces[{i}].name", f"{_show(name)} is already a parameter's name")
        kinds[name] = ("pointer", w["storage"])
    resources = extra.get("resources", {})
    for k, v in _obj(resources, "extra.resources", set(resources)).items():
        _text(k, "extra.resources (a key)", IDENT)
        _int(v, f"extra.resources.{k}", 0, 2**31 - 1)
    if extra.get("device_params") is not None:
        for i, dp in enumerate(_list(extra["device_params"], "extra.device_params")):
            _device_param(dp, f"extra.device_params[{i}]", kinds)


def _workspace(w: Any, where: str, scalars: set) -> str:
    """A hidden workspace parameter: its name, IR type, storage dtype, element count (an
    expression of the scalar parameters) and requires_clean; returns the name."""
    keys = ("name", "type", "storage", "count", "requires_clean")
    _obj(w, where, set(keys), keys)
    _text(w["name"], f"{where}.name", IDENT)
    _text(w["type"], f"{where}.type")
    if w["storage"] not in STORAGE_DTYPES:
        _fail(f"{where}.storage", f"expected one of {sorted(STORAGE_DTYPES)}, "
                                  f"got {_show(w['storage'])}")
    _size_expr(w["count"], f"{where}.count")
    if type(w["count"]) is str and not set(_expr.names(w["count"])) <= scalars:
        _fail(f"{where}.count", f"{_show(w['count'])} names something other than the scalar "
                                f"parameters")
    if type(w["requires_clean"]) is not bool:
        _fail(f"{where}.requires_clean", f"expected true or false, got "
                                         f"{_show(w['requires_clean'])}")
    return w["name"]


def _device_param(dp: Any, where: str, kinds: Mapping[str, tuple]) -> None:
    _obj(dp, where, {"name", "ctype", "role", "param"}, ("name", "ctype", "role", "param"))
    _text(dp["name"], f"{where}.name", IDENT)
    kind, dtype = kinds.get(_text(dp["param"], f"{where}.param", IDENT), ("", ""))
    role, ctype = dp["role"], dp["ctype"]
    if role == "ptr":
        ok = kind == "pointer" and ctype == "void*"
    elif role == "len":
        ok = kind == "pointer" and CTYPE_DTYPES.get(ctype, "").startswith(("int", "uint"))
    elif role == "scalar":  # a low-bit scalar travels as its uint8 code
        ok = kind == "scalar" and CTYPE_DTYPES.get(ctype) == \
            (dtype if dtype in STORAGE_DTYPES else "uint8")
    else:
        ok = False
    if not ok:
        _fail(where, f"role {_show(role)} with C type {_show(ctype)} does not fit parameter "
                     f"{_show(dp['param'])} ({kind or 'unknown'} {dtype})")
