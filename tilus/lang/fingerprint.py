"""What a Script's Program is made from, hashed without building it (a kernel's pre-key).

A Program is a function of the kernel class's code, the Script's attributes and the compile-time
values: :func:`script_fingerprint` hashes the source files that code comes from (the modules of
the classes of the kernel's MRO, the files of every function in their class bodies, and of the
modules, classes and functions those modules' globals name), the classes' plain class
attributes and closures, and the repr of every attribute and value. The ``tilus`` package's own
files are left to the caller (``tilus.runtime.keys.package_fingerprint``). Anything it cannot
describe exactly (an attribute of an unknown type, a class with no source file) gives None: no
pre-key, the full path. Source files are hashed once per process: the code a process runs is the
code it imported.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import sys
import types
from typing import Any, Optional

from tilus.dtypes import DataType
from tilus.ir.layout import RegisterLayout
from tilus.lang.script import Script

_PACKAGE = __name__.split(".")[0] + "."
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_files: dict[str, bytes] = {}       # path -> sha256 of its bytes, once per process


class _Unknown(Exception):
    """A value the fingerprint cannot describe exactly."""


def _describe(v: Any, files: set[str]) -> str:
    """An exact text for a plain value, or a class or function by name (its file into
    ``files``); _Unknown for anything else."""
    if isinstance(v, (type, types.FunctionType)):
        path = _module_file(v.__module__)
        if not _in_package(v.__module__):
            files.add(path or "")
        return f"{type(v).__name__}:{v.__module__}.{v.__qualname__}"
    if v is None or isinstance(v, (bool, int, str)):
        return repr(v)
    if isinstance(v, float):
        return float.hex(v)
    if isinstance(v, DataType):
        return f"dtype:{v.name}"
    if isinstance(v, RegisterLayout):     # what its equality compares
        return f"layout:{(v.shape, v.mode_shape, v.spatial_modes, v.local_modes)}"
    if isinstance(v, (list, tuple)):
        return f"{type(v).__name__}({','.join(_describe(x, files) for x in v)})"
    if isinstance(v, dict):
        return "dict(" + ",".join(f"{_describe(k, files)}:{_describe(x, files)}"
                                  for k, x in v.items()) + ")"
    raise _Unknown(type(v).__name__)


def _file_digest(path: Optional[str]) -> bytes:
    if not path or not path.endswith(".py"):
        raise _Unknown(f"no source file ({path})")
    digest = _files.get(path)
    if digest is None:
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).digest()
        except OSError as e:
            raise _Unknown(str(e)) from None
        _files[path] = digest
    return digest


def _module_file(name: str) -> Optional[str]:
    return getattr(sys.modules.get(name), "__file__", None)


def _in_package(name: Optional[str]) -> bool:
    return bool(name) and (name + ".").startswith(_PACKAGE)


def _referenced_files(module: types.ModuleType) -> set[str]:
    """The source files of the modules, classes and functions a module's globals name (one level:
    the helpers a kernel calls), outside the tilus package; extension modules are left out."""
    out = set()
    for v in vars(module).values():
        if isinstance(v, types.ModuleType):
            name = v.__name__
        elif isinstance(v, (type, types.FunctionType)):
            name = v.__module__
        else:
            continue
        path = _module_file(name)
        if not _in_package(name) and path and path.endswith(".py"):
            out.add(path)
    return out


def _class_parts(cls: type, files: set[str]) -> list[str]:
    """A class's name, module and class-body values; the files of its functions into ``files``."""
    parts = [f"{cls.__module__}.{cls.__qualname__}"]
    for name, v in cls.__dict__.items():
        if name.startswith("__") or name.startswith("_tilus_") and name != "_tilus_kernel":
            continue
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        if isinstance(v, property):
            v = v.fget
        if isinstance(v, types.FunctionType):
            v = inspect.unwrap(v)
            files.add(v.__code__.co_filename)
            cells = [c.cell_contents for c in v.__closure__ or ()]
            parts.append(f"{name}=func:{v.__module__}.{v.__qualname__}"
                         f"{_describe(cells, files)}")
        else:
            parts.append(f"{name}={_describe(v, files)}")
    return parts


def script_fingerprint(script: Any, values: dict[str, Any]) -> Optional[str]:
    """sha256 (hex) of what the Program of ``script`` for the compile-time ``values`` is made
    from, apart from the tilus package itself; None when some of it cannot be described exactly."""
    try:
        kind = type(script)
        parts: list[str] = [f"{kind.__module__}.{kind.__qualname__}"]
        files: set[str] = set()
        for cls in kind.__mro__:
            if cls is object or issubclass(Script, cls) or "__call__" in cls.__dict__:
                continue        # the DSL's base classes and tilus.Script (runners keep __call__)
            if not _in_package(cls.__module__):
                module = sys.modules.get(cls.__module__)
                if module is None:
                    raise _Unknown(f"module {cls.__module__} is not imported")
                files.add(getattr(module, "__file__", None) or "")
                files |= _referenced_files(module)
            parts += _class_parts(cls, files)   # a kernel class tilus made may hold arguments
        parts += [f"{k}={_describe(v, files)}" for k, v in sorted(vars(script).items())
                  if k != "_tilus_programs"]
        parts += [f"const {k}={_describe(v, files)}" for k, v in sorted(values.items())]
        h = hashlib.sha256("\n".join(parts).encode())
        for path in sorted(files):
            if not path.startswith(_PACKAGE_DIR):       # the caller hashes tilus's own files
                h.update(path.encode() + b"\0" + _file_digest(path))
        return h.hexdigest()
    except _Unknown:
        return None
