"""The one module of Tilus that imports TVM: every other module takes TVM's names from here.

TVM 0.27 (apache-tvm 0.27.0.post1) facts this module relies on:

- ``tvm.tirx`` is the TIR dialect (it replaces ``tvm.tir``); TVMScript is ``tvm.script.tirx``, so
  kernels are written ``@T.prim_func`` with ``T = tvm.script.tirx``. ``T.ptx[...]`` emits one PTX
  instruction from TVM's instruction table: ``T.ptx["mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"]
  (d0..d3, a0..a3, b0, b1, c0..c3)``, ``T.ptx["ldmatrix.sync.aligned.m8n8.x4.shared.b16"](r0..r3,
  smem.ptr_to([i]))``, ``T.ptx["cp.async.cg.shared.global"](smem.ptr_to([i]), gmem.ptr_to([j]), 16)``,
  ``T.ptx["cp.async.commit_group"]()``, ``T.ptx["cp.async.wait_all"]()``,
  ``T.ptx["lop3.b32"](d, a, b, c, lut)``, ``T.ptx["prmt.b32"](d, a, b, c)``. Register operands are
  elements of ``scope="local"`` buffers; shared addresses are converted with cvta automatically.
- Targets are JSON dicts: ``{"kind": "cuda", "arch": "sm_90"}`` (the CLI string form
  ``"cuda -arch=sm_90"`` is rejected).
- Hand-written tirx kernels must be built with ``tir_pipeline="tirx"``: the default (s_tir) pipeline
  runs CompactBufferAllocation, which shrinks a shared buffer to the elements addressed by
  ``ptr_to`` (one element per cp.async/ldmatrix), giving wrong allocation sizes.
- ``tvm.compile`` (``tvm.tirx.build``) binds the target, runs the pipeline, splits host from
  device functions (``split_host_device_mods``), finalizes each side and generates code through
  the global functions ``target.build.<kind>`` (``target.build.cuda`` gives the device module,
  ``target.build.llvm`` the host one, which imports the device module). :func:`compile_module`
  runs the same steps itself, so that the CUDA source is ready before the host code is generated,
  which only an exported library needs.
- ``tvm.compile`` does not run nvcc or NVRTC: the device module (kind ``"cuda"``) keeps the CUDA C++
  source (``inspect_source("cuda")``) and the CUDA runtime JIT-compiles it on first use through the
  global function ``tvm_callback_cuda_compile`` (tvm.support.nvcc; NVRTC through cuda-bindings by
  default, ``TVM_CUDA_COMPILE_MODE=nvcc`` for nvcc). So without a GPU we get source, and Tilus
  compiles it itself (tilus.backend.toolchain).
- ``Executable.export_library(path)`` needs only a host C++ compiler (g++): it links the LLVM host
  code and embeds the device module as serialized (format "cuda" = the source), no CUDA library at
  link time. Loading it needs ``libtvm_runtime_cuda.so`` (driver ``libcuda.so.1`` + libcudart).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from typing import Any, Callable, Iterator

from tilus.errors import CompilationError, TilusError, ToolNotFoundError

#: TVM packages ``import tvm`` runs that Tilus never uses: loaded at their first use instead.
#: relax (the graph-level dialect) is 0.2 s of the import; ``tvm.runtime.disco`` registers a type
#: of a library TVM loads at the end of the import, fails, and is set to None (an error, below).
LAZY_TVM_PACKAGES = ("tvm.relax", "tvm.runtime.disco")


class _FastTvmImport(importlib.abc.MetaPathFinder):
    """``import tvm`` in 0.3 s instead of 0.9 s in a process that imported torch.

    - :data:`LAZY_TVM_PACKAGES` get a lazy loader (``importlib.util.LazyLoader``): the module
      object exists at once, its code runs at the first attribute access.
    - No C++ error is raised while TVM imports: the first C++ error of a process makes tvm_ffi
      symbolize a backtrace with libbacktrace, which reads the symbol tables of every loaded
      library (0.5 s once torch is loaded), and TVM's script builder provokes ~110 of them on
      purpose: it probes operator names that do not exist with ``Op.get``, and sets printer
      names that C++ already set to the same value, catching the errors. While the import
      runs, ``tvm.ir``'s ``GetOp`` raises a Python ValueError for a name missing from the
      operator registry (re-read when it grew), and ``RegisterOpAttr`` of a string an operator
      already has returns at once (C++ would keep that value, or raise); all else reaches C++.
    """

    def __init__(self) -> None:
        self.restore: list = []

    def find_spec(self, fullname, path, target=None):
        if fullname not in LAZY_TVM_PACKAGES and fullname != "tvm.ir._ffi_api":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        if fullname == "tvm.ir._ffi_api":
            spec.loader = _CheckedOpRegistry(spec.loader, self.restore)
        else:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


class _CheckedOpRegistry(importlib.abc.Loader):
    """Loads ``tvm.ir._ffi_api`` with ``GetOp`` / ``RegisterOpAttr`` answering the two errors
    TVM's import provokes in Python (see :class:`_FastTvmImport`); ``restore`` gets the undo."""

    def __init__(self, loader, restore: list) -> None:
        self.loader = loader
        self.restore = restore

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        if not all(hasattr(module, f) for f in ("GetOp", "RegisterOpAttr", "ListOpNames",
                                                  "OpGetAttr")):
            return                   # another TVM: imported as it is, errors and all
        get_op, register_attr = module.GetOp, module.RegisterOpAttr
        list_ops, get_attr = module.ListOpNames, module.OpGetAttr
        known: set = set()

        def checked_get_op(op_name):
            if op_name not in known:
                names = list_ops()
                if len(names) != len(known):
                    known.clear()
                    known.update(str(n) for n in names)
                if op_name not in known:
                    raise ValueError(f"operator {op_name} is not registered")
            return get_op(op_name)

        def checked_register_attr(op_name, attr_key, value, level):
            if isinstance(value, str) and str(op_name) in known:
                current = get_attr(get_op(op_name), attr_key)
                if current is not None and str(current) == value:
                    return None      # C++ would keep this value (or raise: same level)
            return register_attr(op_name, attr_key, value, level)

        module.GetOp, module.RegisterOpAttr = checked_get_op, checked_register_attr

        def undo() -> None:
            module.GetOp, module.RegisterOpAttr = get_op, register_attr

        self.restore.append(undo)


@contextlib.contextmanager
def _fast_tvm_import() -> Iterator[None]:
    """``import tvm`` inside the block goes through :class:`_FastTvmImport`."""
    finder = _FastTvmImport()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for undo in finder.restore:
            undo()


try:
    with _fast_tvm_import():
        import tvm  # noqa: F401
    import tvm.s_tir  # noqa: F401  (tirx's compilation pipeline uses it without importing it)
    import tvm.tirx as tirx  # noqa: F401
    from tvm.script import tirx as T  # noqa: F401,N812
    from tvm.script.ir_builder import IRBuilder  # noqa: F401
    from tvm.script.ir_builder import tirx as TB  # noqa: F401,N812  (the tirx IR builder)
    from tvm.support import cc as _cc
except ImportError as exc:  # pragma: no cover - the dependency is pinned
    raise CompilationError(f"the Tilus backend needs apache-tvm 0.27 (import failed: {exc})") from exc

from tvm_ffi import structural_equal  # noqa: E402,F401  (tirx expressions equal by structure)

TVM_VERSION = tvm.__version__


DEEP_STACK_BYTES = 512 << 20
DEEP_RECURSION_LIMIT = 200_000


def with_deep_stack(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on a thread with a 512 MiB stack and a high recursion limit.

    TVM's IR builder and passes re-enter Python once per nested statement (frames, lets,
    branches); an unrolled kernel body of a few thousand statements exceeds CPython's default
    limit of 1000 and, raised on a normal 8 MiB stack, the C stack. Exceptions propagate."""
    if getattr(_deep, "active", False):
        return fn(*args, **kwargs)
    out: dict = {}

    def run() -> None:
        _deep.active = True
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised on the caller's thread
            out["error"] = exc

    with _deep_lock:
        old_stack, old_limit = threading.stack_size(), sys.getrecursionlimit()
        threading.stack_size(DEEP_STACK_BYTES)
        try:
            worker = threading.Thread(target=run, name="tilus-deep-stack")
        finally:
            threading.stack_size(old_stack)
        sys.setrecursionlimit(max(old_limit, DEEP_RECURSION_LIMIT))
        try:
            worker.start()
            worker.join()
        finally:
            sys.setrecursionlimit(old_limit)
    if "error" in out:
        raise out["error"]
    return out["value"]


_deep = threading.local()
_deep_lock = threading.Lock()


def provably_true(cond) -> bool:
    """Whether TVM's arithmetic analyzer proves the tirx condition for every value of its vars."""
    import tvm.sym

    return bool(tvm.sym.Analyzer().can_prove(cond))

ir = tvm.ir  # Call, Op, StringImm, TensorLoad, Var, PrimType, PointerType (node classes of TIR expressions)
IRModule = tvm.IRModule
PrimFunc = tirx.PrimFunc


def default_layout(shape: tuple):
    """The layout ``TB.decl_buffer`` gives a buffer of ``shape`` (a tuple of ints or exprs) in a
    tirx PrimFunc, ``TileLayout(S[shape])``, built directly: asking for the default walks the IR
    builder's whole frame stack on each declaration, quadratic in a kernel's nesting depth."""
    from tvm.tirx.layout import S, TileLayout

    return TileLayout(S[tuple(shape)])


def intrinsic_codegen(op_name: str):
    """TVM's CUDA code generator of a ``T.ptx`` / ``T.cuda`` intrinsic (``"tirx.ptx.mma"``, ...),
    or None: called with the call's arguments it gives ``(tirx.cuda.func_call(helper, args...,
    helper_source), tags)``, the inline-asm helper TVM's own printer emits (its instruction
    table is the one source of truth for PTX syntax and operand constraints)."""
    from tvm.backend.cuda.codegen.registry import get_codegen

    return get_codegen(op_name)


class IndexSimplifier:
    """TVM's arithmetic simplifier with what is known of the variables in scope (thread and
    block indices, loop ranges, the bounds of values bound once), for the conditions and
    indices the CUDA printer prints: what StmtSimplify would do to them, without its pass over
    every statement."""

    def __init__(self) -> None:
        import tvm.sym

        self._analyzer = tvm.sym.Analyzer()
        self._memo: dict = {}

    def loop(self, var, start, extent) -> None:
        self._analyzer.bind(var, tvm.ir.Range.from_min_extent(start, extent))

    def bound(self, var, value) -> None:
        self._analyzer.update(var, self._analyzer.const_int_bound(value), True)

    def simplify(self, e):
        try:
            hit = self._memo.get(e)
        except TypeError:
            return e
        if hit is None:
            try:
                hit = self._analyzer.simplify(e)
            except ValueError:      # TVM's simplifier throws on a few casts (Cast(bool, 5))
                hit = e
            self._memo[e] = hit
        return hit


def cuda_target(arch: str):
    """A TVM CUDA target for ``arch`` (``"sm_80"`` ... ``"sm_90a"``)."""
    return tvm.target.Target({"kind": "cuda", "arch": arch})


def as_module(func_or_mod, name: str = "main"):
    """An IRModule from a PrimFunc (named ``name``) or an IRModule."""
    if isinstance(func_or_mod, tvm.IRModule):
        return func_or_mod
    if isinstance(func_or_mod, tirx.PrimFunc):
        return tvm.IRModule({name: func_or_mod})
    raise CompilationError(f"expected a tvm.tirx PrimFunc or IRModule, got {type(func_or_mod).__name__}")


class CompiledModule:
    """What :func:`compile_module` gives: the CUDA device module (``device``, a TVM runtime module
    of kind ``"cuda"`` holding the source) and the host functions not yet generated
    (``host_mod``, an IRModule; :meth:`executable` generates them once)."""

    def __init__(self, device, host_mod, host_target) -> None:
        self.device = device
        self.host_mod = host_mod
        self.host_target = host_target
        self._executable = None

    def executable(self):
        """TVM's Executable (host launcher importing the device module), as ``tvm.compile``
        returns it: the host functions finalized and generated here, once."""
        if self._executable is None:
            from tvm.tirx.build import codegen_build

            _, finalize_host, _ = tirx.get_tir_pipeline("tirx")
            host = codegen_build(finalize_host()(self.host_mod), self.host_target)
            host.import_module(self.device)
            self._executable = tvm.runtime.Executable(host)
        return self._executable


def _compile(mod, arch: str) -> CompiledModule:
    """``tvm.tirx.build``'s steps with the ``tirx`` pipeline, up to the device code."""
    from tvm.tirx.build import codegen_build, split_host_device_mods

    host_target = tvm.target.Target("llvm" if tvm.runtime.enabled("llvm") else "c")
    target = cuda_target(arch)
    pipeline, _, finalize_device = tirx.get_tir_pipeline("tirx")
    mod = pipeline(tirx.transform.BindTarget(target.with_host(host_target))(mod))
    host_mod, device_mods = split_host_device_mods(mod)
    if len(device_mods) != 1:
        raise CompilationError(f"expected one CUDA device module, TVM made {len(device_mods)} "
                               f"(is there a kernel with threadIdx/blockIdx bindings?)")
    ((device_target, device_mod),) = device_mods.items()
    device = codegen_build(finalize_device()(device_mod), device_target)
    return CompiledModule(device, host_mod, host_target)


def compile_module(func_or_mod, arch: str) -> CompiledModule:
    """What ``tvm.compile(mod, target=cuda -arch, tir_pipeline="tirx")`` does, stopping once the
    device code is generated: the host launcher is generated only when an exported library asks
    for it (:meth:`CompiledModule.executable`), so nvcc can start first."""
    mod = as_module(func_or_mod)
    try:
        return with_deep_stack(_compile, mod, arch)
    except TilusError:
        raise
    except Exception as exc:  # TVM raises its own error types from C++
        raise CompilationError(f"TVM failed to lower/generate CUDA for {arch}: {exc}") from exc


def device_modules(compiled: CompiledModule) -> list:
    """The CUDA device modules of a compiled module."""
    return [compiled.device] if compiled.device.kind == "cuda" else []


def cuda_source(compiled: CompiledModule) -> str:
    """The CUDA C++ source TVM generated for a compiled module."""
    sources = [m.inspect_source("cuda") for m in device_modules(compiled)]
    if not sources or not any(sources):
        raise CompilationError("TVM produced no CUDA device module (is there a kernel with "
                               "threadIdx/blockIdx bindings?)")
    return "\n".join(sources)


def link_shared(output: str, objects, options=None, **_kwargs) -> None:
    """TVM's ``fcompile`` for export_library: link with the C++ compiler TVM would use (``CXX``,
    else g++ ...), but time-limited and killed with its children (tilus.backend.run_tool)."""
    from tilus.backend.run_tool import run_tool, tail

    compiler = _cc.get_cc()
    if compiler is None:
        raise ToolNotFoundError("no C++ compiler (g++, clang++, c++) to link the kernel library: "
                                "install one or set CXX")
    objects = [objects] if isinstance(objects, str) else list(objects)
    proc = run_tool([compiler, "-shared", "-fPIC", "-o", output, *(options or []), *objects])
    if proc.returncode != 0:
        raise CompilationError(f"linking {output} with {compiler} failed:\n"
                               f"{tail(proc.stdout + proc.stderr)}")


# what export_library asks of an fcompile, as TVM's own create_shared answers it
link_shared.output_format = _cc.create_shared.output_format          # type: ignore[attr-defined]
link_shared.get_target_triple = _cc.create_shared.get_target_triple  # type: ignore[attr-defined]


def export_library(compiled: CompiledModule, path: str) -> None:
    """Write the host launcher + device module as a shared library (needs g++), linking through
    :func:`link_shared`; the host code (the small argument-checking launcher) is generated
    here, so a build that exports runs it alongside nvcc."""
    try:
        compiled.executable().export_library(str(path), fcompile=link_shared)
    except TilusError:
        raise
    except Exception as exc:
        raise CompilationError(f"export_library({path}) failed: {exc}") from exc


def dt(x) -> str:
    """The dtype string of a TIR expression or buffer (0.27 exprs carry ``.ty``, not ``.dtype``)."""
    ty = getattr(x, "ty", None)
    if isinstance(ty, tvm.ir.PrimType):
        return str(ty.dtype)
    return str(x.dtype)


def stmt_kinds(func) -> tuple[set, set]:
    """(statement node type names, names of the ops called by Evaluate statements) of a PrimFunc's
    body, for checking which TIR constructs the lowering emits."""
    kinds: set = set()
    calls: set = set()
    stack = [func.body]
    while stack:
        s = stack.pop()
        if s is None:
            continue
        kinds.add(type(s).__name__)
        if isinstance(s, tirx.SeqStmt):
            stack.extend(s.seq)
        for attr in ("body", "then_case", "else_case"):
            child = getattr(s, attr, None)
            if isinstance(child, tirx.Stmt):
                stack.append(child)
        if isinstance(s, tirx.Evaluate):
            op = getattr(s.value, "op", None)
            if op is not None:
                name = getattr(op, "name", None) or str(op)
                if name in ("tirx.call_extern", "tirx.call_pure_extern"):
                    name = f"extern:{s.value.args[0].value}"
                calls.add(name)
    return kinds, calls
