"""The instruction set of the Tilus VM. Each instruction is a statement with an optional ``output``
tensor, tensor operands and attributes, and a ``check`` that states its typing rule.

The field lists ``OPERANDS`` (fields holding Tensors, or Tensor-or-scalar for elementwise ops) and
``ATTRS`` (everything else) let the printer, parser, visitors and verifier treat every instruction
the same way; ``NAME`` is the instruction's name in the text form and the DSL.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Optional, Union

from tilus import dtypes
from tilus.dtypes import DataType
from tilus.errors import IRError
from tilus.ir.expr import Const, Expr, Var
from tilus.ir.layout.conversion import conversion_cost
from tilus.ir.layout.register import RegisterLayout
from tilus.ir.stmt import Stmt
from tilus.ir.types import GLOBAL, REGISTER, SHARED, Tensor

Operand = Union[Tensor, Expr]

UNARY_ELEMENTWISE = ("neg", "abs", "exp", "log", "sqrt", "rsqrt", "not", "bitnot")
BINARY_ELEMENTWISE = ("add", "sub", "mul", "div", "mod", "maximum", "minimum", "lt", "le", "gt", "ge",
                      "eq", "ne", "and", "or", "bitand", "bitor", "bitxor", "shl", "shr")
COMPARE_ELEMENTWISE = ("lt", "le", "gt", "ge", "eq", "ne", "and", "or")
INTEGER_ONLY = ("bitand", "bitor", "bitxor", "shl", "shr", "bitnot")
FLOAT_ONLY = ("exp", "log", "sqrt", "rsqrt")
REDUCE_OPS = ("sum", "max", "min")
MAX_CAST_EXPONENT = 128             # |exponent| of a cast's power-of-two scale


def _fail(inst: "Instruction", message: str) -> None:
    raise IRError(f"{inst.display_name()}: {message}")


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy's broadcasting of constant shapes; raises IRError naming the shapes that don't fit."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise IRError(f"shapes {', '.join(_shape_str(s) for s in shapes)} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def operand_shape(x: Operand) -> tuple[int, ...]:
    return x.shape if isinstance(x, Tensor) else ()


def operand_dtype(x: Operand) -> DataType:
    return x.dtype


@dataclass(frozen=True, repr=False)
class Instruction(Stmt):
    """Base class; subclasses are frozen dataclasses whose first field is ``output`` when they have one."""

    NAME: ClassVar[str] = ""
    OPERANDS: ClassVar[tuple[str, ...]] = ()
    ATTRS: ClassVar[tuple[str, ...]] = ()
    HAS_OUTPUT: ClassVar[bool] = True
    # Fields holding tuples of Vars that the instruction binds: visible only in its own other
    # fields (the printer writes them first, the parser and verifier scope them to the instruction).
    BINDS: ClassVar[tuple[str, ...]] = ()
    # Fields holding the Var an instruction declares (like a let): visible after it to the end of
    # the enclosing body; the text form writes such an instruction as a let (``LoadScalarInst``).
    DEFINES: ClassVar[tuple[str, ...]] = ()
    # For families (elementwise ops, reductions): the field whose value is the instruction's name.
    OP_FIELD: ClassVar[Optional[str]] = None
    OP_VALUES: ClassVar[tuple[str, ...]] = ()

    def display_name(self) -> str:
        return getattr(self, self.OP_FIELD) if self.OP_FIELD else self.NAME

    @classmethod
    def text_names(cls) -> tuple[str, ...]:
        """The names this class has in the text form and the DSL."""
        return cls.OP_VALUES if cls.OP_FIELD else (cls.NAME,)

    def operands(self) -> list[Operand]:
        out = []
        for name in self.OPERANDS:
            value = getattr(self, name)
            if value is not None:
                out.append(value)
        return out

    def comment(self) -> Optional[str]:
        """A note the text form prints after the instruction (``# ...``; the parser skips it)."""
        return None

    def check(self) -> None:
        """Raise IRError when operands, attributes and output disagree (the typing rule)."""

    def _need(self, name: str, x: Any, scope: str) -> Tensor:
        if not isinstance(x, Tensor):
            _fail(self, f"{name} must be a tensor, got {x}")
        if x.scope != scope:
            _fail(self, f"{name} {x} must be a {scope} tensor, it lives in {x.scope} memory")
        return x

    def _output_is(self, scope: str, dtype: DataType | None = None, shape=None) -> None:
        out = self.output  # type: ignore[attr-defined]
        self._need("the output", out, scope)
        if dtype is not None and out.dtype is not dtype:
            _fail(self, f"output {out} has dtype {out.dtype}, expected {dtype}")
        if shape is not None and tuple(out.shape) != tuple(shape):
            _fail(self, f"output {out} has shape {_shape_str(out.shape)}, expected {_shape_str(shape)}")


def _check_tile_access(inst: Instruction, g: Tensor, offsets, tile_shape, dims) -> None:
    if len(offsets) != g.type.rank:
        _fail(inst, f"{len(offsets)} offsets for the rank-{g.type.rank} tensor {g}")
    if dims is None:
        if len(tile_shape) > g.type.rank:
            _fail(inst, f"a rank-{len(tile_shape)} tile does not fit the rank-{g.type.rank} tensor {g}")
        return
    if len(dims) != len(tile_shape) or len(set(dims)) != len(dims) \
            or any(not 0 <= d < g.type.rank for d in dims):
        _fail(inst, f"dims {list(dims)} must name {len(tile_shape)} distinct dimensions of {g}")


def tile_dims(global_rank: int, tile_rank: int, dims: Optional[tuple[int, ...]]) -> tuple[int, ...]:
    """Which dimensions of the global/shared tensor a tile spans: ``dims`` or the last ones."""
    return tuple(dims) if dims is not None else tuple(range(global_rank - tile_rank, global_rank))


@dataclass(frozen=True, repr=False)
class GlobalViewInst(Instruction):
    """A global tensor of the output's dtype and (symbolic) shape over the pointer parameter ``ptr``,
    with element ``strides`` (row-major when the front end gives none)."""

    NAME = "global_view"
    ATTRS = ("ptr", "strides")
    output: Tensor
    ptr: Expr
    strides: tuple[Expr, ...]

    def check(self) -> None:
        self._output_is(GLOBAL)
        if len(self.strides) != self.output.type.rank:
            _fail(self, f"{len(self.strides)} strides for a rank-{self.output.type.rank} view")


@dataclass(frozen=True, repr=False)
class AllocateGlobalInst(Instruction):
    """A row-major global workspace of the output's dtype and (symbolic) shape that the kernel
    owns (NVIDIA Tilus's ``global_tensor``): one buffer per launch shared by every block, a hidden
    pointer parameter in the built kernel. ``requires_clean``: it starts all zeros and the kernel
    must leave it all zeros (the launcher keeps it across launches); otherwise its contents are
    undefined."""

    NAME = "global_tensor"
    ATTRS = ("requires_clean",)
    output: Tensor
    requires_clean: bool

    def check(self) -> None:
        self._output_is(GLOBAL)
        if not isinstance(self.requires_clean, bool):
            _fail(self, f"requires_clean must be True or False, got {self.requires_clean!r}")


@dataclass(frozen=True, repr=False)
class AllocateRegisterInst(Instruction):
    """A register tile of the output's type; elements start as ``init`` converted to its dtype
    (undefined when None). With ``axes`` (one int32 Var per dimension, bound here), ``init`` is an
    expression of them: element ``idx`` starts as ``init`` with ``axes[d] = idx[d]``
    (NVIDIA Tilus's ``register_tensor(init=lambda i, j: ...)``)."""

    NAME = "register_tensor"
    ATTRS = ("init", "axes")
    BINDS = ("axes",)
    output: Tensor
    init: Optional[Expr] = None
    axes: Optional[tuple[Var, ...]] = None

    def check(self) -> None:
        self._output_is(REGISTER)
        init = self.init
        if init is not None and (not isinstance(init, Expr) or not isinstance(init.dtype, DataType)):
            _fail(self, f"init must be a scalar expression (of the element's indices when axes are "
                        f"given), got {type(init).__name__}: {init}")
        if self.axes is None:
            return
        rank = self.output.type.rank
        if init is None:
            _fail(self, "axes are given without an init expression to use them")
        if not isinstance(self.axes, tuple):
            _fail(self, f"axes must be a tuple of Vars, got {type(self.axes).__name__}")
        if len(self.axes) != rank:
            _fail(self, f"init over {len(self.axes)} index variable(s) for the rank-{rank} tile "
                        f"{self.output} {_shape_str(self.output.shape)}: give one per dimension")
        for a in self.axes:
            if not isinstance(a, Var) or a.dtype is not dtypes.int32:
                _fail(self, f"the index variable {a!r} of init must be an int32 Var")
        if len({a.name for a in self.axes}) != rank:
            _fail(self, f"the index variables {', '.join(a.name for a in self.axes)} of init "
                        f"must be distinct")


@dataclass(frozen=True, repr=False)
class AllocateSharedInst(Instruction):
    """A shared-memory tile of the output's type (contents undefined until written).

    ``offset`` is the tile's byte offset in the kernel's dynamic shared-memory arena, which the
    shared-memory planner (``tilus.transforms.PlanSharedMemory``) records; None until planned."""

    NAME = "shared_tensor"
    ATTRS = ("offset",)
    output: Tensor
    offset: Optional[int] = None

    def check(self) -> None:
        self._output_is(SHARED)
        off = self.offset
        if off is not None and (isinstance(off, bool) or not isinstance(off, int) or off < 0):
            _fail(self, f"offset must be a non-negative byte offset, got {self.offset}")


@dataclass(frozen=True, repr=False)
class FreeSharedInst(Instruction):
    """Ends the lifetime of a shared tensor (its memory may be reused afterwards)."""

    NAME = "free_shared"
    OPERANDS = ("tensor",)
    HAS_OUTPUT = False
    tensor: Tensor

    def check(self) -> None:
        self._need("the operand", self.tensor, SHARED)


@dataclass(frozen=True, repr=False)
class SliceSharedInst(Instruction):
    """A view of part of a shared tensor: the output's shape at ``offsets``, spanning ``dims``;
    constant offsets keep it inside ``src`` (run-time ones are checked when the program runs)."""

    NAME = "slice_shared"
    OPERANDS = ("src",)
    ATTRS = ("offsets", "dims")
    output: Tensor
    src: Tensor
    offsets: tuple[Expr, ...]
    dims: Optional[tuple[int, ...]] = None

    def check(self) -> None:
        self._need("src", self.src, SHARED)
        self._output_is(SHARED, self.src.dtype)
        _check_tile_access(self, self.src, self.offsets, self.output.shape, self.dims)
        dims = tile_dims(self.src.type.rank, self.output.type.rank, self.dims)
        for d, (size, offset) in enumerate(zip(self.src.shape, self.offsets)):
            extent = self.output.shape[dims.index(d)] if d in dims else 1
            start = offset.value if isinstance(offset, Const) else 0
            if start < 0:
                _fail(self, f"the slice of {self.src} starts at the negative offset {start} in "
                            f"dimension {d}")
            if start + extent > size:
                at = f"offset {start}" if isinstance(offset, Const) else "offset 0 or more"
                _fail(self, f"the slice {_shape_str(self.output.shape)} of {self.src} "
                            f"{_shape_str(self.src.shape)} at offsets {_shape_str(self.offsets)} "
                            f"reaches past its end: dimension {d} spans {extent} elements from "
                            f"{at}, of {size}")


@dataclass(frozen=True, repr=False)
class LoadGlobalInst(Instruction):
    """Reads the output tile from ``src`` at ``offsets``: tile element i comes from
    ``src[offsets + scatter(i, dims)]``; elements outside ``src`` read as ``other`` (default 0)."""

    NAME = "load_global"
    OPERANDS = ("src",)
    ATTRS = ("offsets", "dims", "other")
    output: Tensor
    src: Tensor
    offsets: tuple[Expr, ...]
    dims: Optional[tuple[int, ...]] = None
    other: Optional[Expr] = None

    def check(self) -> None:
        self._need("src", self.src, GLOBAL)
        self._output_is(REGISTER, self.src.dtype)
        _check_tile_access(self, self.src, self.offsets, self.output.shape, self.dims)


@dataclass(frozen=True, repr=False)
class LoadScalarInst(Instruction):
    """Declares the scalar ``var`` (like a let) with the value of the element ``src[offsets]`` of a
    global tensor, read by every thread (a uniform load): a page id from a block table, a sequence
    length. The element must lie inside ``src`` (the interpreter raises otherwise; on a GPU it is
    an out-of-bounds read). Text form: ``let var: dtype = %src[offsets]``."""

    NAME = "load_scalar"
    OPERANDS = ("src",)
    ATTRS = ("var", "offsets")
    HAS_OUTPUT = False
    DEFINES = ("var",)
    var: Var
    src: Tensor
    offsets: tuple[Expr, ...]

    def check(self) -> None:
        self._need("src", self.src, GLOBAL)
        dtype = self.src.dtype
        if dtype.nbits not in (8, 16, 32, 64) or dtype.is_lowbit:
            _fail(self, f"loads a scalar of 8, 16, 32 or 64 bits; {self.src} is {dtype} (load a "
                        f"tile and cast it instead)")
        if not isinstance(self.var, Var) or self.var.dtype is not dtype:
            _fail(self, f"the variable {self.var!r} must be a Var of {self.src}'s dtype {dtype}")
        if len(self.offsets) != self.src.type.rank:
            _fail(self, f"{len(self.offsets)} offsets for the rank-{self.src.type.rank} tensor "
                        f"{self.src}")


@dataclass(frozen=True, repr=False)
class _TileTransferInst(Instruction):
    """Moves the whole tile ``src``/``dst`` to or from a bigger tensor at ``offsets`` (spanning
    ``dims``); bits move unchanged, so both sides have one dtype."""

    OPERANDS = ("dst", "src")
    ATTRS = ("offsets", "dims")
    HAS_OUTPUT = False
    DST_SCOPE: ClassVar[str] = ""
    SRC_SCOPE: ClassVar[str] = ""
    dst: Tensor
    src: Tensor
    offsets: tuple[Expr, ...]
    dims: Optional[tuple[int, ...]] = None

    def check(self) -> None:
        self._need("dst", self.dst, self.DST_SCOPE)
        self._need("src", self.src, self.SRC_SCOPE)
        if self.src.dtype is not self.dst.dtype:
            _fail(self, f"cannot move {self.src.dtype} tile {self.src} into {self.dst.dtype} "
                        f"tensor {self.dst}; cast it first")
        big, tile = (self.dst, self.src) if self.DST_SCOPE == GLOBAL else (self.src, self.dst)
        _check_tile_access(self, big, self.offsets, tile.shape, self.dims)


@dataclass(frozen=True, repr=False)
class StoreGlobalInst(_TileTransferInst):
    """Writes the register tile ``src`` into ``dst`` at ``offsets``; elements outside ``dst`` are dropped."""

    NAME = "store_global"
    DST_SCOPE = GLOBAL
    SRC_SCOPE = REGISTER


@dataclass(frozen=True, repr=False)
class CopyAsyncInst(_TileTransferInst):
    """Starts copying the tile of ``src`` (global) at ``offsets`` into ``dst`` (shared, whole);
    out-of-bounds elements are filled with zeros. Completes at a ``copy_async_wait_group``."""

    NAME = "copy_async"
    DST_SCOPE = SHARED
    SRC_SCOPE = GLOBAL


@dataclass(frozen=True, repr=False)
class CopyAsyncCommitGroupInst(Instruction):
    """Closes the group of copy_async issued since the last commit."""

    NAME = "copy_async_commit_group"
    HAS_OUTPUT = False


@dataclass(frozen=True, repr=False)
class CopyAsyncWaitGroupInst(Instruction):
    """Waits until at most ``n`` committed groups are still in flight."""

    NAME = "copy_async_wait_group"
    ATTRS = ("n",)
    HAS_OUTPUT = False
    n: int

    def check(self) -> None:
        if not isinstance(self.n, int) or self.n < 0:
            _fail(self, f"n must be a non-negative constant, got {self.n}")


@dataclass(frozen=True, repr=False)
class LoadSharedInst(Instruction):
    """Reads a whole shared tensor into a register tile."""

    NAME = "load_shared"
    OPERANDS = ("src",)
    output: Tensor
    src: Tensor

    def check(self) -> None:
        self._need("src", self.src, SHARED)
        self._output_is(REGISTER, self.src.dtype, self.src.shape)


@dataclass(frozen=True, repr=False)
class LookupInst(Instruction):
    """Table lookup: ``output[i] = table[index[i]]`` for every element i of the int32 register
    tile ``index``, from the 1-D shared tensor ``table`` of a 32-bit type; the output has the
    index's shape and the table's dtype. Every index must lie in ``[0, len(table))``."""

    NAME = "lookup"
    OPERANDS = ("table", "index")
    output: Tensor
    table: Tensor
    index: Tensor

    def check(self) -> None:
        self._need("table", self.table, SHARED)
        self._need("index", self.index, REGISTER)
        if len(self.table.shape) != 1 or self.table.dtype.nbits != 32:
            _fail(self, f"the table {self.table} must be a 1-D shared tensor of a 32-bit type, "
                        f"got {self.table.dtype}{_shape_str(self.table.shape)}")
        if self.index.dtype is not dtypes.int32:
            _fail(self, f"the index {self.index} must be int32, got {self.index.dtype}")
        self._output_is(REGISTER, self.table.dtype, self.index.shape)


@dataclass(frozen=True, repr=False)
class StoreSharedInst(Instruction):
    """Writes a register tile into a whole shared tensor of the same dtype and shape."""

    NAME = "store_shared"
    OPERANDS = ("dst", "src")
    HAS_OUTPUT = False
    dst: Tensor
    src: Tensor

    def check(self) -> None:
        self._need("dst", self.dst, SHARED)
        self._need("src", self.src, REGISTER)
        if self.src.dtype is not self.dst.dtype or tuple(self.src.shape) != tuple(self.dst.shape):
            _fail(self, f"{self.src} ({self.src.dtype}{_shape_str(self.src.shape)}) does not match "
                        f"{self.dst} ({self.dst.dtype}{_shape_str(self.dst.shape)})")


@dataclass(frozen=True, repr=False)
class ViewInst(Instruction):
    """Reinterprets the bits of a register tile: the row-major bit stream of ``x`` (element i at
    bits [i*K, (i+1)*K)) read as the output's dtype and shape. Total bits must match."""

    NAME = "view"
    OPERANDS = ("x",)
    output: Tensor
    x: Tensor

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        self._output_is(REGISTER)
        a = self.x.type.size * self.x.dtype.nbits
        b = self.output.type.size * self.output.dtype.nbits
        if a != b:
            _fail(self, f"{self.x} has {a} bits ({self.x.dtype}{_shape_str(self.x.shape)}) but the view "
                        f"{self.output.dtype}{_shape_str(self.output.shape)} has {b}")


@dataclass(frozen=True, repr=False)
class ReinterpretInst(Instruction):
    """Reinterprets each thread's registers: thread t's slots of ``x`` (in ``x``'s layout), read
    as one bit stream (slot i at bits [i*K, (i+1)*K)), are its slots of the output in the
    output's layout and dtype. Both layouts are part of the instruction (the tensors' types), so
    its meaning is a fixed permutation of bits that the interpreter computes and the GPU gets
    for free (NVIDIA Tilus's ``view(x, layout=)``)."""

    NAME = "reinterpret"
    OPERANDS = ("x",)
    output: Tensor
    x: Tensor

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        self._output_is(REGISTER)
        src, dst = self.x.layout, self.output.layout
        if src is None or dst is None:
            _fail(self, f"both {self.x} and the output need a layout (annotate_layout / layout=)")
        if src.num_threads != dst.num_threads:
            _fail(self, f"{self.x}'s layout spans {src.num_threads} threads, the output's "
                        f"{dst.num_threads}")
        a = src.local_size * self.x.dtype.nbits
        b = dst.local_size * self.output.dtype.nbits
        if a != b:
            _fail(self, f"each thread holds {a} bits of {self.x} ({src.local_size} x "
                        f"{self.x.dtype}) but {b} of the output ({dst.local_size} x "
                        f"{self.output.dtype})")


@dataclass(frozen=True, repr=False)
class FmaInst(Instruction):
    """``a * b + c`` elementwise with broadcasting, rounded once to the output dtype (a fused
    multiply-add: ``fma.rn``); operands share one dtype (float16, bfloat16 or float32), ``b``/``c``
    may be scalars."""

    NAME = "fma"
    OPERANDS = ("a", "b", "c")
    output: Tensor
    a: Operand
    b: Operand
    c: Operand

    def check(self) -> None:
        if not isinstance(self.a, Tensor):
            _fail(self, f"a must be a tensor, got {self.a}")
        dtype = self.a.dtype
        if dtype.name not in ("float16", "bfloat16", "float32"):
            _fail(self, f"fma takes float16, bfloat16 or float32 tiles, {self.a} is {dtype}")
        for x in (self.b, self.c):
            if isinstance(x, Tensor) and x.dtype is not dtype:
                _fail(self, f"{x} has dtype {x.dtype}, {self.a} has {dtype}")
        try:
            shape = broadcast_shapes(*(operand_shape(x) for x in (self.a, self.b, self.c)))
        except IRError as e:
            _fail(self, str(e))
        self._output_is(REGISTER, dtype, shape)


@dataclass(frozen=True, repr=False)
class CastInst(Instruction):
    """Converts every element to the output's dtype (floats round to nearest even and saturate to
    finite-only low-bit types; float-to-int truncates toward zero then saturates).

    ``exponent`` e != 0 scales by a power of two: each result is ``x * 2^e`` computed exactly and
    rounded once to the (float) output dtype. The packed low-bit casts fold it into their final
    constant, so a float type's exponent-bias fix can move into a scale (``free_exponent``)."""

    NAME = "cast"
    OPERANDS = ("x",)
    ATTRS = ("exponent",)
    output: Tensor
    x: Tensor
    exponent: int = 0

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        self._output_is(REGISTER, shape=self.x.shape)
        e = self.exponent
        if not isinstance(e, int) or isinstance(e, bool) \
                or not -MAX_CAST_EXPONENT <= e <= MAX_CAST_EXPONENT:
            _fail(self, f"exponent must be an int in [-{MAX_CAST_EXPONENT}, {MAX_CAST_EXPONENT}], "
                        f"got {e!r}")
        if e and not (self.output.dtype.is_float and self.x.dtype.nbits <= 16
                      and self.x.dtype is not dtypes.bfloat16):
            _fail(self, f"exponent={e} scales casts to a float type from a type of at most 16 bits "
                        f"(not bfloat16), got {self.x.dtype} -> {self.output.dtype}")


@dataclass(frozen=True, repr=False)
class AssignInst(Instruction):
    """Copies register tile ``x`` into the existing register tile ``output`` (same dtype and shape)."""

    NAME = "assign"
    OPERANDS = ("x",)
    output: Tensor
    x: Tensor

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        self._output_is(REGISTER, self.x.dtype, self.x.shape)


@dataclass(frozen=True, repr=False)
class UnaryInst(Instruction):
    """Elementwise ``op(x)``; the text form and the DSL use ``op`` as the instruction's name."""

    OPERANDS = ("x",)
    OP_FIELD = "op"
    OP_VALUES = UNARY_ELEMENTWISE
    output: Tensor
    x: Tensor
    op: str

    def check(self) -> None:
        if self.op not in UNARY_ELEMENTWISE:
            _fail(self, f"unknown unary operation {self.op!r}")
        self._need("x", self.x, REGISTER)
        if self.op in FLOAT_ONLY and not self.x.dtype.is_float:
            _fail(self, f"needs a float tile, {self.x} is {self.x.dtype}")
        if self.op in INTEGER_ONLY and not self.x.dtype.is_integer:
            _fail(self, f"needs an integer tile, {self.x} is {self.x.dtype}")
        dtype = dtypes.bool if self.op == "not" else self.x.dtype
        self._output_is(REGISTER, dtype, self.x.shape)


@dataclass(frozen=True, repr=False)
class BinaryInst(Instruction):
    """Elementwise ``a op b`` with numpy broadcasting; either side may be a scalar expression.
    Comparisons give bool; arithmetic keeps the tile's dtype (tiles of two dtypes must be cast first)."""

    OPERANDS = ("a", "b")
    OP_FIELD = "op"
    OP_VALUES = BINARY_ELEMENTWISE
    output: Tensor
    a: Operand
    b: Operand
    op: str

    def check(self) -> None:
        if self.op not in BINARY_ELEMENTWISE:
            _fail(self, f"unknown binary operation {self.op!r}")
        tensors = [x for x in (self.a, self.b) if isinstance(x, Tensor)]
        if not tensors:
            _fail(self, "needs at least one tensor operand")
        for x in tensors:
            self._need("operand", x, REGISTER)
        if len(tensors) == 2 and self.a.dtype is not self.b.dtype:
            _fail(self, f"operands {self.a} ({self.a.dtype}) and {self.b} ({self.b.dtype}) differ in "
                        f"dtype; cast one of them")
        dtype = tensors[0].dtype
        if self.op in INTEGER_ONLY and not (dtype.is_integer or dtype.is_bool):
            _fail(self, f"needs integer tiles, got {dtype}")
        try:
            shape = broadcast_shapes(operand_shape(self.a), operand_shape(self.b))
        except IRError as e:
            _fail(self, str(e))
        self._output_is(REGISTER, dtypes.bool if self.op in COMPARE_ELEMENTWISE else dtype, shape)


@dataclass(frozen=True, repr=False)
class WhereInst(Instruction):
    """``cond ? a : b`` elementwise with broadcasting; ``a``/``b`` may be scalar expressions."""

    NAME = "where"
    OPERANDS = ("cond", "a", "b")
    output: Tensor
    cond: Operand
    a: Operand
    b: Operand

    def check(self) -> None:
        if not self.cond.dtype.is_bool:
            _fail(self, f"the condition {self.cond} must be bool, it is {self.cond.dtype}")
        values = [x for x in (self.a, self.b) if isinstance(x, Tensor)]
        dtype = values[0].dtype if values else self.output.dtype
        if any(v.dtype is not dtype for v in values):
            _fail(self, f"{self.a} and {self.b} differ in dtype")
        try:
            shape = broadcast_shapes(*(operand_shape(x) for x in (self.cond, self.a, self.b)))
        except IRError as e:
            _fail(self, str(e))
        self._output_is(REGISTER, dtype, shape)


@dataclass(frozen=True, repr=False)
class ReduceInst(Instruction):
    """``op`` (sum, max, min) of ``x`` along ``dim``; the dim stays with size 1 when ``keepdim``."""

    OPERANDS = ("x",)
    ATTRS = ("dim", "keepdim")
    OP_FIELD = "op"
    OP_VALUES = REDUCE_OPS
    output: Tensor
    x: Tensor
    op: str
    dim: int
    keepdim: bool = False

    def check(self) -> None:
        if self.op not in REDUCE_OPS:
            _fail(self, f"unknown reduction {self.op!r}; expected one of {', '.join(REDUCE_OPS)}")
        self._need("x", self.x, REGISTER)
        if not 0 <= self.dim < self.x.type.rank:
            _fail(self, f"dim {self.dim} out of range for the rank-{self.x.type.rank} tile {self.x}")
        shape = list(self.x.shape)
        if self.keepdim:
            shape[self.dim] = 1
        else:
            del shape[self.dim]
        self._output_is(REGISTER, self.x.dtype, tuple(shape))


@dataclass(frozen=True, repr=False)
class DotInst(Instruction):
    """``output = a @ b + c`` on 2-D tiles [m, k] x [k, n] + [m, n], products accumulated in the
    dtype of ``c`` (float32 or int32 in practice). ``output`` may be ``c`` itself (in place)."""

    NAME = "dot"
    OPERANDS = ("a", "b", "c")
    output: Tensor
    a: Tensor
    b: Tensor
    c: Tensor

    def check(self) -> None:
        for name in ("a", "b", "c"):
            self._need(name, getattr(self, name), REGISTER)
        if self.a.type.rank != 2 or self.b.type.rank != 2 or self.c.type.rank != 2:
            _fail(self, "a, b and c must be 2-D tiles")
        (m, k), (k2, n) = self.a.shape, self.b.shape
        if k != k2 or tuple(self.c.shape) != (m, n):
            _fail(self, f"shapes {_shape_str(self.a.shape)} @ {_shape_str(self.b.shape)} + "
                        f"{_shape_str(self.c.shape)} do not match")
        if self.a.dtype is not self.b.dtype:
            _fail(self, f"a is {self.a.dtype} but b is {self.b.dtype}; cast one of them")
        self._output_is(REGISTER, self.c.dtype, (m, n))


@dataclass(frozen=True, repr=False)
class ConvertLayoutInst(Instruction):
    """The tile ``x`` in the output's register layout (values unchanged: the identity on the
    logical tile). ``cost`` says what the move costs (``tilus.ir.layout.conversion``): ``free``,
    a warp ``shuffle``, or through ``shared`` memory, where ``scratch`` is the shared tile of x's
    dtype and shape it goes through (allocated, placed and freed like any shared tensor)."""

    NAME = "convert_layout"
    OPERANDS = ("x", "scratch")
    output: Tensor
    x: Tensor
    scratch: Optional[Tensor] = None

    @property
    def cost(self) -> Optional[str]:
        """``free``/``shuffle``/``shared`` once both layouts are known, else None."""
        src, dst = self.x.layout, self.output.layout
        if not isinstance(src, RegisterLayout) or not isinstance(dst, RegisterLayout) \
                or src.num_threads != dst.num_threads or tuple(src.shape) != tuple(dst.shape):
            return None
        return conversion_cost(src, dst)

    def comment(self) -> Optional[str]:
        cost = self.cost
        return None if cost is None else f"cost: {cost}"

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        self._output_is(REGISTER, self.x.dtype, self.x.shape)
        if self.scratch is not None:
            self._need("scratch", self.scratch, SHARED)
            if self.scratch.dtype is not self.x.dtype or tuple(self.scratch.shape) != tuple(self.x.shape):
                _fail(self, f"the scratch {self.scratch} must have {self.x}'s dtype and shape")
        src, dst = self.x.layout, self.output.layout
        if src is not None and dst is not None and src.num_threads != dst.num_threads:
            _fail(self, f"{self.x}'s layout spans {src.num_threads} threads, the output's "
                        f"{dst.num_threads}")


@dataclass(frozen=True, repr=False)
class TransposeInst(Instruction):
    """Swaps the two dimensions of a 2-D tile."""

    NAME = "transpose"
    OPERANDS = ("x",)
    output: Tensor
    x: Tensor

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        if self.x.type.rank != 2:
            _fail(self, f"needs a 2-D tile, {self.x} has rank {self.x.type.rank}")
        self._output_is(REGISTER, self.x.dtype, tuple(reversed(self.x.shape)))


@dataclass(frozen=True, repr=False)
class SqueezeInst(Instruction):
    """Removes the size-1 dimension ``dim``."""

    NAME = "squeeze"
    OPERANDS = ("x",)
    ATTRS = ("dim",)
    output: Tensor
    x: Tensor
    dim: int

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        if not 0 <= self.dim < self.x.type.rank or self.x.shape[self.dim] != 1:
            _fail(self, f"dim {self.dim} of {self.x} {_shape_str(self.x.shape)} is not of size 1")
        shape = tuple(s for i, s in enumerate(self.x.shape) if i != self.dim)
        self._output_is(REGISTER, self.x.dtype, shape)


@dataclass(frozen=True, repr=False)
class UnsqueezeInst(Instruction):
    """Inserts a size-1 dimension at ``dim``."""

    NAME = "unsqueeze"
    OPERANDS = ("x",)
    ATTRS = ("dim",)
    output: Tensor
    x: Tensor
    dim: int

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        if not 0 <= self.dim <= self.x.type.rank:
            _fail(self, f"dim {self.dim} out of range for inserting into {self.x}")
        shape = list(self.x.shape)
        shape.insert(self.dim, 1)
        self._output_is(REGISTER, self.x.dtype, tuple(shape))


@dataclass(frozen=True, repr=False)
class RepeatInst(Instruction):
    """Tiles ``x`` ``repeats[i]`` times along each dimension i (numpy.tile)."""

    NAME = "repeat"
    OPERANDS = ("x",)
    ATTRS = ("repeats",)
    output: Tensor
    x: Tensor
    repeats: tuple[int, ...]

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        if len(self.repeats) != self.x.type.rank or any(r < 1 for r in self.repeats):
            _fail(self, f"repeats {list(self.repeats)} must give a positive count per dimension of {self.x}")
        shape = tuple(s * r for s, r in zip(self.x.shape, self.repeats))
        self._output_is(REGISTER, self.x.dtype, shape)


@dataclass(frozen=True, repr=False)
class BroadcastInst(Instruction):
    """Broadcasts ``x`` to the output's shape with numpy's rules."""

    NAME = "broadcast"
    OPERANDS = ("x",)
    output: Tensor
    x: Tensor

    def check(self) -> None:
        self._need("x", self.x, REGISTER)
        try:
            shape = broadcast_shapes(self.x.shape, self.output.shape)
        except IRError as e:
            _fail(self, str(e))
        self._output_is(REGISTER, self.x.dtype, shape)


@dataclass(frozen=True, repr=False)
class SyncInst(Instruction):
    """A barrier for all threads of the block (shared memory written before is visible after)."""

    NAME = "sync"
    HAS_OUTPUT = False


@dataclass(frozen=True, repr=False)
class LockSemaphoreInst(Instruction):
    """Waits until the int32 element ``sema[index]`` of a global tensor equals ``value``."""

    NAME = "lock_semaphore"
    OPERANDS = ("sema",)
    ATTRS = ("index", "value")
    HAS_OUTPUT = False
    sema: Tensor
    index: tuple[Expr, ...]
    value: Expr

    def check(self) -> None:
        self._need("the semaphore", self.sema, GLOBAL)
        if self.sema.dtype is not dtypes.int32:
            _fail(self, f"semaphores are int32, {self.sema} is {self.sema.dtype}")
        if len(self.index) != self.sema.type.rank:
            _fail(self, f"{len(self.index)} indices for the rank-{self.sema.type.rank} tensor {self.sema}")


@dataclass(frozen=True, repr=False)
class ReleaseSemaphoreInst(Instruction):
    """Makes this block's global writes visible, then sets ``sema[index] = value``."""

    NAME = "release_semaphore"
    OPERANDS = ("sema",)
    ATTRS = ("index", "value")
    HAS_OUTPUT = False
    sema: Tensor
    index: tuple[Expr, ...]
    value: Expr

    check = LockSemaphoreInst.check


@dataclass(frozen=True, repr=False)
class PrintTensorInst(Instruction):
    """Prints a message and the tile's values (debugging)."""

    NAME = "print_tensor"
    OPERANDS = ("x",)
    ATTRS = ("message",)
    HAS_OUTPUT = False
    x: Tensor
    message: str = ""


def instruction_classes() -> list[type[Instruction]]:
    """Every concrete instruction class."""
    out, stack = [], list(Instruction.__subclasses__())
    while stack:
        cls = stack.pop(0)
        if not cls.__name__.startswith("_"):
            out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def instruction_fields(inst: Instruction) -> list[str]:
    return [f.name for f in fields(inst)]
