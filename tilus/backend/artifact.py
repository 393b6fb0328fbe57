"""A compiled kernel as a cache artefact: what ``tilus.jit`` and ``tilus bundle`` store.

Files of a CUDA entry (see tilus.runtime.cache):

- ``ir.tilus``     the Program after the passes (text form)
- ``kernel.cu``    the kernel's CUDA source (Tilus' printer; TVM's with TILUS_CUDA_PRINTER=tvm)
- ``kernel.cubin`` nvcc's cubin of that source for ``arch`` (what actually runs)
- ``launcher.cu``  the CUDA source embedded in the library when it is not ``kernel.cu``: TVM's
                   device code for the launcher stub (tilus.backend.launcher_stub), never compiled
- ``kernel.ptx``, ``ptxas.log``  nvcc's PTX and ptxas' report (``tilus.build`` gives them back
                   from the cache: :mod:`tilus.backend.cached`)
- ``kernel.so``    TVM's exported host library: the argument-checking launcher (LLVM host code)
                   plus the device module, embedded as CUDA source (format "cuda")
- ``metadata.json`` params, launch expressions, arch, versions, entry, assumptions, and
                   ``extra["cuda_source_sha256"]``, the digest of the source the library embeds:
                   loading registers ``kernel.cubin`` as TVM's answer for that source
                   (tilus.runtime.cubins), so no compiler runs at load.

The cache key is :func:`kernel_key` of the *input* program's IR text (before the passes: that is
what a caller can compute without the compiler), the arch and :func:`key_versions`.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilus.version import __version__

logger = logging.getLogger(__name__)

LIBRARY = "kernel.so"
CUBIN = "kernel.cubin"
PTX = "kernel.ptx"
PTXAS_LOG = "ptxas.log"
LAUNCHER_CUDA = "launcher.cu"


@dataclass
class BuiltArtifact:
    key: str
    artifact: Any            # tilus.runtime.Artifact
    kernel: Any              # CompiledKernel
    timings: dict            # seconds per step


def tool_versions() -> dict:
    """Versions of tilus, TVM, tvm_ffi and nvcc (what a cache entry and a benchmark record)."""
    from tilus.backend import toolchain, tvm_shim

    v = {"tilus": __version__, "tvm": tvm_shim.TVM_VERSION}
    try:
        import tvm_ffi

        v["tvm_ffi"] = tvm_ffi.__version__
    except Exception:  # pragma: no cover
        pass
    nvcc = toolchain.find_tool("nvcc")
    if nvcc is not None:
        from tilus.backend.run_tool import run_tool

        out = run_tool([nvcc, "--version"]).stdout
        line = [ln for ln in out.splitlines() if "release" in ln]
        v["nvcc"] = line[-1].strip() if line else "unknown"
    return v


def _params(program) -> list:
    from tilus.backend.codegen.dtypes_map import pointer_storage
    from tilus.ir.types import PointerType
    from tilus.runtime.metadata import Param

    out = []
    for p in program.params:
        if isinstance(p.dtype, PointerType):
            t = p.dtype.dtype
            out.append((Param(p.name, "pointer", t.name, contiguous=True, align=1),
                        pointer_storage(t)))
        else:
            out.append((Param(p.name, "scalar", p.dtype.name), None))
    return out


def workspace_specs(program) -> list[dict]:
    """The kernel's ``global_tensor`` workspaces (its hidden trailing pointer parameters), for the
    launcher that allocates them (tilus.runtime.workspaces): the hidden parameter's ``name``, the
    IR ``type`` and ``requires_clean`` (for people), the buffer's ``storage`` dtype and ``count``,
    its number of storage elements as an expression of the scalar parameters (the shape's
    let-bound names replaced by their values). CompilationError when a shape depends on anything
    else (a loop variable, a reassigned scalar): the launcher could not size it."""
    from tilus.backend.codegen.dtypes_map import pointer_storage
    from tilus.backend.codegen.lower import workspace_params
    from tilus.dtypes import get as get_dtype
    from tilus.errors import CompilationError
    from tilus.ir.expr import as_expr, substitute
    from tilus.ir.functor import walk
    from tilus.ir.stmt import AssignStmt, LetStmt
    from tilus.ir.types import PointerType
    from tilus.runtime import expr as rexpr

    scalars = {p.name for p in program.params if not isinstance(p.dtype, PointerType)}
    assigned = {s.var for s in walk(program.body) if isinstance(s, AssignStmt)}
    lets = {s.var: s.value for s in walk(program.body)
            if isinstance(s, LetStmt) and s.var not in assigned}
    specs = []
    for ws, name in workspace_params(program):
        count = as_expr(1)
        for d in ws.output.shape:
            count = count * as_expr(d)
        for _ in range(len(lets)):              # each round replaces one level of let names
            replaced = substitute(count, lets)
            if replaced == count:
                break
            count = replaced
        storage = pointer_storage(ws.output.dtype)
        bits = get_dtype(storage).nbits
        text = str(count)
        if ws.output.dtype.nbits != bits:
            text = f"cdiv(({text}) * {ws.output.dtype.nbits}, {bits})"
        try:
            rexpr.validate(text)
            outside = set(rexpr.names(text)) - scalars
        except Exception as e:
            outside = {str(e)}
        if outside:
            raise CompilationError(
                f"{program.name}: the size of the global_tensor {ws.output.name} ({text}) must be "
                f"a function of the scalar parameters; it depends on {sorted(outside)}")
        specs.append({"name": name, "type": str(ws.output.type), "storage": storage,
                      "count": text, "requires_clean": ws.requires_clean})
    return specs


def size_requirements(program) -> dict:
    """{pointer parameter: ("min_count" | "min_bytes", expression text)} from the program's
    ``global_view``s of its pointer parameters: the extent each view reaches, in elements of the
    pointer's type (``min_bytes`` when a view reinterprets it as another type). Views whose extent
    names anything but scalar parameters (a let-bound variable, say) are left out."""
    from tilus.ir.expr import Var
    from tilus.ir.functor import instructions
    from tilus.ir.inst import GlobalViewInst
    from tilus.ir.types import PointerType
    from tilus.runtime import expr as rexpr

    pointers = {p.name: p for p in program.params if isinstance(p.dtype, PointerType)}
    scalars = {p.name for p in program.params if not isinstance(p.dtype, PointerType)}
    found: dict = {}
    for inst in instructions(program.body):
        if not isinstance(inst, GlobalViewInst) or not isinstance(inst.ptr, Var) \
                or inst.ptr.name not in pointers:
            continue
        ttype = inst.output.type
        dims = [str(e) for e in ttype.shape]
        steps = [str(e) for e in inst.strides]
        if not dims:
            continue

        def par(t):
            return t if t.replace("_", "").isalnum() else f"({t})"

        row_major = all(st == (" * ".join(dims[i + 1:]) or "1") for i, st in enumerate(steps))
        if row_major:
            text = " * ".join(par(d) for d in dims)
        else:
            # 1 + sum((d_i - 1) * stride_i) elements, none when a dimension is empty
            reach = " + ".join(f"({par(d)} - 1) * {par(st)}" for d, st in zip(dims, steps))
            text = f"min({' * '.join(par(d) for d in dims)}, 1) * (1 + {reach})"
        ptr_t = pointers[inst.ptr.name].dtype.dtype
        kind = "min_count"
        if ttype.dtype != ptr_t:
            text = f"cdiv(({text}) * {ttype.dtype.nbits}, 8)"
            kind = "min_bytes"
        try:
            rexpr.validate(text)
            if not set(rexpr.names(text)) <= scalars:
                continue
        except Exception:
            continue
        prev = found.get(inst.ptr.name)
        if prev is None:
            found[inst.ptr.name] = (kind, text)
        elif prev[0] == kind:
            found[inst.ptr.name] = (kind, f"max({prev[1]}, {text})")
    return found


def build_artifact(kernel_or_program: Any, arch: "str | int | None" = None, **consts) -> BuiltArtifact:
    """Build a kernel for ``arch`` and package it as a cache artefact (needs TVM, nvcc and g++)."""
    import dataclasses

    from tilus.backend.build_program import as_program, build
    from tilus.backend.toolchain import normalize_arch
    from tilus.runtime import Artifact, KernelMetadata, cubins
    from tilus.runtime.cache import CUDA_FILE, IR_FILE

    arch = normalize_arch(arch)
    t0 = time.perf_counter()
    program = as_program(kernel_or_program, **consts)
    key = kernel_key(program, arch)
    with tempfile.TemporaryDirectory(prefix="tilus-export-") as tmp:
        lib = Path(tmp) / LIBRARY
        kernel = build(program, arch, library=lib)
        library = lib.read_bytes()
    t2 = time.perf_counter()
    timings = {"build": t2 - t0, **kernel.timings}
    source = kernel.cuda_source

    entry = str(kernel.prim_func.attrs["global_symbol"]) if kernel.prim_func.attrs is not None \
        and "global_symbol" in kernel.prim_func.attrs else kernel.kernel_name.removesuffix("_kernel")
    align = 16 if any("16-byte aligned" in a for a in kernel.assumptions) else (
        4 if any("4-byte aligned" in a for a in kernel.assumptions) else 1)
    params, storage = [], {}
    sizes = size_requirements(program)
    for p, st in _params(program):
        if p.is_pointer:
            p = dataclasses.replace(p, align=align)
            if p.name in sizes:
                kind, text = sizes[p.name]
                p = dataclasses.replace(p, **{kind: text})
            storage[p.name] = st
        params.append(p)
    from tilus.runtime.driver import device_params

    workspaces = workspace_specs(program)
    r = kernel.resources
    meta = KernelMetadata(
        name=program.name, entry=entry, target="cuda", arch=arch, library=LIBRARY,
        params=tuple(params), launch=dict(kernel.launch), versions=tool_versions(),
        extra={"cuda_source_sha256": cubins.source_digest(kernel.launcher_source),
               "cubin": CUBIN, "kernel_name": kernel.kernel_name,
               "pointer_storage": storage, "assumptions": list(kernel.assumptions),
               "device_params": device_params(source, kernel.kernel_name, params,
                                              [w["name"] for w in workspaces]),
               "threads": kernel.launch["block"][0],
               "resources": {"registers": r.registers, "spill_store_bytes": r.spill_store_bytes,
                             "spill_load_bytes": r.spill_load_bytes,
                             "static_shared_bytes": r.shared_memory_bytes},
               "tilus_version": __version__, "compiler": kernel.compiler,
               **({"workspaces": workspaces} if workspaces else {})})
    files = {IR_FILE: str(kernel.program).encode(), CUDA_FILE: source.encode(),
             CUBIN: kernel.cubin, LIBRARY: library, PTX: kernel.ptx.encode(),
             PTXAS_LOG: kernel.log.encode()}
    if kernel.launcher_source != source:
        files[LAUNCHER_CUDA] = kernel.launcher_source.encode()
    timings["package"] = time.perf_counter() - t2
    logger.debug("built %s for %s in %.0f ms", program.name, arch, timings["build"] * 1e3)
    return BuiltArtifact(key, Artifact(meta, files), kernel, timings)


def kernel_key(program, arch: str) -> str:
    """The cache key of a Program (before the passes) for ``arch``: computable without TVM."""
    from tilus.runtime.keys import cache_key, key_versions

    return cache_key(str(program), arch, key_versions())
