"""``tilus.Script``: the base class of kernels written in the Python DSL.

A subclass stores compile-time parameters in ``__init__`` and writes the program of one thread
block in ``__call__``. Tilus moves that ``__call__`` aside (to ``_tilus_kernel``) so that calling
the object launches the kernel: ``tilus.Script`` is ``tilus.jit.Script``, whose ``__call__`` goes
through ``tilus.jit.launch`` (the DSL knows nothing of what running a kernel means).

Kernel parameters are classified by their annotation:
- a DataType (``tilus.int32``)  -> a run-time scalar parameter of the Program;
- a pointer (``~tilus.float16``) -> a run-time pointer parameter;
- ``int`` / ``float`` / ``bool`` / ``str`` -> a compile-time constant: its value is given at call
  time (``kernel(...)`` takes it from the arguments; ``kernel.program(name=value)`` by keyword) and
  one Program is built and cached per value.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilus.dtypes import DataType
from tilus.errors import (ArgumentError, ScriptError, ScriptVerificationError, TilusError,
                          VerificationError)
from tilus.ir.expr import Expr, as_expr
from tilus.ir.functor import IRRewriter, walk
from tilus.ir.program import Program
from tilus.ir.builder import ProgramBuilder
from tilus.ir.stmt import Stmt
from tilus.ir.types import PointerType, Tensor
from tilus.ir.verifier import verify
from tilus.lang.context import BlockIndex, BuildContext, current
from tilus.lang.instructions import InstructionMethods
from tilus.lang.transpiler import function_source, transpile_kernel

CONST_KINDS = (int, float, bool, str)


@dataclass(frozen=True)
class KernelParam:
    name: str
    annotation: Any  # DataType, PointerType or one of CONST_KINDS
    default: Any = inspect.Parameter.empty

    @property
    def is_const(self) -> bool:
        return self.annotation in CONST_KINDS


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    try:
        hash(v)
        return v
    except TypeError:
        return ("id", id(v))


class _ApplyLayouts(IRRewriter):
    def __init__(self, layouts: dict):
        self.layouts = layouts

    def rewrite_tensor(self, t: Tensor) -> Tensor:
        if t.name in self.layouts and t.layout is not self.layouts[t.name]:
            return Tensor(t.name, t.type.with_layout(self.layouts[t.name]))
        return t


class Script(InstructionMethods):
    """Base class of Tilus kernels (see the module docstring)."""

    def __init__(self):
        pass

    def __init_subclass__(cls, runner: bool = False, **kwargs):
        """Moves a kernel's ``__call__`` (its body) aside; a ``runner`` class's ``__call__`` is the
        one that runs kernels (``tilus.jit.Script``) and stays."""
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__ and not runner:
            cls._tilus_kernel = cls.__dict__["__call__"]
            delattr(cls, "__call__")
            cls._tilus_params = None

    # ----- inside the kernel --------------------------------------------------------------------
    @property
    def attrs(self):
        """Launch attributes: ``self.attrs.blocks`` (grid) and ``self.attrs.warps``."""
        return current("self.attrs").attrs

    @property
    def blockIdx(self) -> BlockIndex:  # noqa: N802 (CUDA's name)
        return BlockIndex()

    # ----- outside: parameters, programs, launches --------------------------------------------
    @classmethod
    def kernel_params(cls) -> list[KernelParam]:
        """The parameters of the kernel (after ``self``), classified by annotation."""
        if getattr(cls, "_tilus_kernel", None) is None:
            raise TilusError(f"{cls.__name__} defines no __call__: a Script's __call__ is its kernel")
        if cls.__dict__.get("_tilus_params") is not None:
            return cls._tilus_params
        func = cls._tilus_kernel
        src = function_source(func)
        args = src.tree.args
        if args.vararg or args.kwarg or args.kwonlyargs:
            node = args.vararg or args.kwarg or args.kwonlyargs[0]
            raise ScriptError("kernel parameters must be plain positional parameters",
                              *src.location(node))
        nodes = {a.arg: a for a in args.posonlyargs + args.args}
        try:
            sig = inspect.signature(func, eval_str=True)
        except Exception as e:
            raise ScriptError(f"cannot evaluate the annotations of {func.__qualname__}: {e}",
                              *src.location(src.tree)) from None
        params = []
        for i, p in enumerate(sig.parameters.values()):
            if i == 0:
                continue  # self
            ann = p.annotation
            if not (isinstance(ann, (DataType, PointerType)) or ann in CONST_KINDS):
                what = "no annotation" if ann is inspect.Parameter.empty else f"annotation {ann!r}"
                raise ScriptError(f"kernel parameter {p.name!r} has {what}; annotate it with a data "
                                  f"type (tilus.int32: run-time scalar), a pointer (~tilus.float16) "
                                  f"or int/float/bool (compile-time constant)",
                                  *src.location(nodes[p.name]))
            if p.default is not inspect.Parameter.empty and ann not in CONST_KINDS:
                raise ScriptError(f"only compile-time parameters may have defaults ({p.name!r})",
                                  *src.location(nodes[p.name]))
            params.append(KernelParam(p.name, ann, p.default))
        cls._tilus_params = params
        return params

    def _settle_schedule(self, args: tuple, kwargs: dict, check) -> None:
        """An ``@tilus.autotune`` kernel created without its schedule parameters gets them now,
        from the call's arguments (the hook ``_tilus_settle`` the decorator installs)."""
        if "_tilus_deferred" in self.__dict__:
            type(self)._tilus_settle(self, args, kwargs, check)

    def program_key(self, values: dict[str, Any]) -> tuple:
        """What tells this Script's Programs apart: the compile-time ``values`` (from
        :meth:`compile_time_values`) and the Script's attributes (a kernel may change them)."""
        attrs = tuple(sorted((k, _freeze(v)) for k, v in vars(self).items() if not k.startswith("_")))
        return tuple(values.items()), attrs

    def program(self, **consts: Any) -> Program:
        """The Program for the given values of the compile-time (``int``/``float``/``bool``)
        parameters; built once per distinct set of values (and of ``self``'s attributes)."""
        values = self.compile_time_values(**consts)
        cache = self.__dict__.setdefault("_tilus_programs", {})
        key = self.program_key(values)
        if key not in cache:
            cache[key] = self._build(values)
        return cache[key]

    def compile_time_values(self, **consts: Any) -> dict[str, Any]:
        """Every compile-time parameter's value, checked and converted, defaults filled in (an
        ``@tilus.autotune`` kernel's schedule is settled first): what :meth:`program` builds from."""
        self._settle_schedule((), dict(consts), lambda: self.program(**dict(consts)))
        params = self.kernel_params()
        values: dict[str, Any] = {}
        for p in params:
            if not p.is_const:
                if p.name in consts:
                    raise TilusError(f"{p.name} is a run-time parameter of {type(self).__name__}; "
                                     f"program() only takes compile-time parameters")
                continue
            if p.name in consts:
                v = consts.pop(p.name)
            elif p.default is not inspect.Parameter.empty:
                v = p.default
            else:
                raise TilusError(f"{type(self).__name__}.program() needs a value for the "
                                 f"compile-time parameter {p.name!r} ({p.annotation.__name__})")
            values[p.name] = self._const_value(p, v)
        if consts:
            raise TilusError(f"{type(self).__name__} has no compile-time parameter "
                             f"{', '.join(map(repr, consts))}")
        return values

    @staticmethod
    def _const_value(p: KernelParam, v: Any) -> Any:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (Expr, Tensor)) or hasattr(v, "shape") and not isinstance(v, CONST_KINDS):
            raise ArgumentError(f"{p.name} is a compile-time {p.annotation.__name__} parameter, "
                                f"got {type(v).__name__}")
        if p.annotation is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ArgumentError(f"{p.name} is a compile-time int parameter, got {v!r}")
        return p.annotation(v)

    def _build(self, consts: dict[str, Any]) -> Program:
        builder = ProgramBuilder(type(self).__name__)
        args: dict[str, Any] = {}
        for p in self.kernel_params():
            args[p.name] = consts[p.name] if p.is_const else builder.param(p.name, p.annotation)
        ctx = BuildContext(self, builder)
        with ctx:
            transpile_kernel(ctx, type(self)._tilus_kernel, self, args)
        attrs = ctx.attrs
        blocks = attrs.blocks if isinstance(attrs.blocks, (list, tuple)) else [attrs.blocks]
        builder.blocks = tuple(as_expr(b) for b in blocks)
        builder.warps = attrs.warps
        recorded = []
        for k, v in vars(self).items():
            if k.startswith("_"):
                continue
            if isinstance(v, DataType):
                v = v.name
            if isinstance(v, (bool, int, float, str)):
                recorded.append((k, v))
        builder.consts = recorded + list(consts.items())
        program = builder.finish()
        if ctx.layouts:
            laid_out = _ApplyLayouts({k: v[0] for k, v in ctx.layouts.items()})(program)
            for old, new in zip(walk(program), walk(laid_out)):
                builder.origins[id(new)] = (new, builder.origin_of(old))
            program = laid_out
        self._verify(program, ctx)
        return program

    def _verify(self, program: Program, ctx: BuildContext) -> None:
        """Runs the verifier on the finished program; its error is raised at the user's line."""
        try:
            verify(program)
        except VerificationError as e:
            node = getattr(e, "node", None)
            where = None
            if getattr(e, "layout_of", None) in ctx.layouts:
                where = ctx.layouts[e.layout_of][1]
            elif isinstance(node, Stmt):
                where = ctx.builder.origin_of(node)
            elif isinstance(node, str):
                where = ctx.attr_locations.get(node)
            if where is None:
                src = function_source(type(self)._tilus_kernel)
                where = src.location(src.tree)
            raise ScriptVerificationError(str(e), *where) from None

    def instantiate(self, *args: Any, **kwargs: Any) -> tuple[Program, list[Any]]:
        """Splits a call's arguments: the Program for its compile-time values, and the run-time
        arguments in the Program's parameter order."""
        consts, runtime = self.bind(*args, **kwargs)
        return self.program(**consts), runtime

    def bind(self, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], list[Any]]:
        """Splits a call's arguments without building the Program: the compile-time arguments
        given (by name, for :meth:`program`) and the run-time ones in the Program's parameter
        order."""
        self._settle_schedule(args, kwargs, lambda: self.instantiate(*args, **kwargs))
        params = self.kernel_params()
        names = [p.name for p in params]
        if len(args) > len(params):
            raise ArgumentError(f"{type(self).__name__} takes {len(params)} arguments "
                                f"({', '.join(names)}), got {len(args)}")
        bound = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise ArgumentError(f"{type(self).__name__} has no parameter {k!r}")
            if k in bound:
                raise ArgumentError(f"{type(self).__name__} got two values for {k!r}")
            bound[k] = v
        consts, runtime = {}, []
        for p in params:
            if p.name not in bound:
                if p.is_const and p.default is not inspect.Parameter.empty:
                    continue
                raise ArgumentError(f"{type(self).__name__} is missing the argument {p.name!r}")
            if p.is_const:
                consts[p.name] = bound[p.name]
            else:
                runtime.append(bound[p.name])
        return consts, runtime

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Running a kernel is ``tilus.jit``'s job: kernels derive from ``tilus.Script``."""
        raise TilusError(f"{type(self).__name__} derives from tilus.lang.Script, which only builds "
                         f"programs; derive from tilus.Script to run it")

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({attrs})"
