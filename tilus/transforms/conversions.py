"""Layout conversions made explicit (the pass after layout inference, ``InsertConversions``): a
``convert_layout`` wherever an instruction needs a layout of a tile other than the one it has, and
a shared scratch tile for every conversion that goes through shared memory.

Where (each instruction reads its operands as its output's layout sees them):

- elementwise (cast, unary, assign, binary, where, fma): an operand the output's layout cannot
  read for free (``tilus.ir.layout.conversion``) is converted to the output's layout (a broadcast
  operand to that layout reduced over the broadcast dimensions) before the instruction;
- ``dot``: mma needs A, B and C exactly in the fragments of the tiling of its output; SIMT needs
  A and B in ``simt_dot_layouts`` of the output and C readable for free;
- ``reduce``: an input whose rows are spread over warps (neither in-thread nor a warp butterfly)
  is converted to rows split over the lanes of one warp (a butterfly then completes them; a
  conversion after the reduction gives the output its layout), or to rows held whole by the
  threads holding the result when that holds fewer elements per thread or no butterfly applies
  (bool and 64-bit integer tiles);
- ``transpose``, ``squeeze``, ``unsqueeze``, ``broadcast``, ``repeat``: the instruction writes
  the layout that follows from its input for free and a conversion after it gives the output its
  layout;
- ``view`` (bits move between threads): the input is converted to the layout bit-compatible with
  the output's; when there is none, the view writes the layout bit-compatible with its input and
  a conversion follows (its scratch holds the packed bits, which the backend writes straight from
  the viewed bytes); with neither, the input first goes to runs of whole output elements.

A difference the reader reads for free needs no instruction. Each ``convert_layout`` whose cost
is ``shared`` gets ``%s = shared_tensor()`` (row-major, x's dtype and shape; sub-byte tiles bit-packed) before it and
``free_shared(%s)`` after it: PlanSharedMemory places the scratch for the conversion's lifetime
only, and InsertBarriers protects it like any shared tensor.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

from tilus.errors import LayoutInferenceError
from tilus.ir import inst as I
from tilus.ir.functor import IRRewriter, instructions
from tilus.ir.layout import RegisterLayout, local, replicate, row_major, spatial
from tilus.ir.layout.conversion import (FREE, SHARED, broadcast_index, conversion_cost, read_cost,
                                        reduce_cost)
from tilus.ir.printer import format_stmt_head
from tilus.ir.program import Program
from tilus.ir.stmt import Stmt, seq
from tilus.ir.types import REGISTER, SHARED as SHARED_SCOPE, Tensor, TensorType
from tilus.transforms.base import Pass
from tilus.transforms.layout_inference import (broadcast_operand_layout, expand_layout,
                                               mma_dot_layouts, simt_dot_layouts, view_layout)


class _Names:
    """Fresh tensor names (``<base>_<suffix><k>``) that no tensor of the program has."""

    def __init__(self, program: Program):
        self.used = {t.name for inst in instructions(program) for t in _tensors(inst)}

    def fresh(self, base: str, suffix: str) -> str:
        k = 0
        while f"{base}_{suffix}{k}" in self.used:
            k += 1
        name = f"{base}_{suffix}{k}"
        self.used.add(name)
        return name


def _tensors(inst: I.Instruction) -> list[Tensor]:
    out = [v for v in (getattr(inst, f) for f in inst.OPERANDS) if isinstance(v, Tensor)]
    output = getattr(inst, "output", None) if inst.HAS_OUTPUT else None
    return out + ([output] if isinstance(output, Tensor) else [])


def _with_layout(t: Tensor, name: str, layout) -> Tensor:
    return Tensor(name, TensorType(t.dtype, t.shape, t.scope, layout))


class _InstructionRewriter(IRRewriter):
    """An IRRewriter that hands every instruction to ``instruction`` (IRRewriter.visit inlined:
    no extra stack frame per nesting level, so programs at the verifier's depth limit pass)."""

    def visit(self, s: Stmt) -> Stmt:
        if isinstance(s, I.Instruction):
            return self.instruction(s)
        method = getattr(self, "visit_" + type(s).__name__, None)
        return method(s) if method is not None else self.generic_visit(s)

    def instruction(self, s: I.Instruction) -> Stmt:
        return s


class _InsertConversions(_InstructionRewriter):
    def __init__(self, program: Program):
        self.names = _Names(program)
        self.threads = program.num_threads

    def instruction(self, s: I.Instruction) -> Stmt:
        before: list[Stmt] = []
        after: list[Stmt] = []
        new = self.fix(s, before, after)
        return s if new is s and not before and not after else seq(before + [new] + after)

    def convert(self, x: Tensor, layout: RegisterLayout, out: Optional[Tensor] = None
                ) -> tuple[Tensor, I.ConvertLayoutInst]:
        """(the converted tile, the instruction): ``out`` when given, else a fresh tensor."""
        y = out if out is not None else _with_layout(x, self.names.fresh(x.name, "cl"), layout)
        return y, I.ConvertLayoutInst(y, x)

    # -- per instruction family
    def fix(self, inst: I.Instruction, before: list, after: list) -> I.Instruction:
        if isinstance(inst, (I.CastInst, I.UnaryInst, I.AssignInst, I.BinaryInst, I.WhereInst,
                             I.FmaInst)):
            return self.elementwise(inst, before)
        if isinstance(inst, I.DotInst):
            return self.dot(inst, before)
        if isinstance(inst, I.ReduceInst):
            return self.reduce(inst, before, after)
        if isinstance(inst, I.ViewInst):
            return self.view(inst, before, after)
        derived = _derived_output(inst)
        if derived is not None:
            return self.output_side(inst, derived, after)
        return inst

    def elementwise(self, inst: I.Instruction, before: list) -> I.Instruction:
        out = inst.output.layout  # type: ignore[attr-defined]
        changes = {}
        for field in inst.OPERANDS:
            x = getattr(inst, field)
            if not isinstance(x, Tensor) or x.scope != REGISTER:
                continue
            if tuple(x.shape) == tuple(out.shape):
                if conversion_cost(x.layout, out) == FREE:
                    continue
                want = out
            else:
                reader = broadcast_index(out, x.shape)
                if read_cost(x.layout, x.shape, out.local_size, self.threads, reader) == FREE:
                    continue
                want = broadcast_operand_layout(out, x.shape)
            y, conv = self.convert(x, want)
            before.append(conv)
            changes[field] = y
        return _replace(inst, changes)

    def dot(self, inst: I.DotInst, before: list) -> I.Instruction:
        out = inst.output.layout
        (m, k), n = inst.a.shape, inst.b.shape[1]
        tiling = next(((a, b, c) for a, b, c in mma_dot_layouts(m, n, k, inst.a.dtype, inst.c.dtype,
                                                                self.threads) if c == out), None)
        if tiling is not None:
            wants, exact = dict(a=tiling[0], b=tiling[1], c=tiling[2]), True
        else:
            a, b = simt_dot_layouts(out, k)
            wants, exact = dict(a=a, b=b, c=out), False
        changes = {}
        for field, want in wants.items():
            x = getattr(inst, field)
            if x.layout == want or (not exact and conversion_cost(x.layout, want) == FREE):
                continue
            y, conv = self.convert(x, want)
            before.append(conv)
            changes[field] = y
        return _replace(inst, changes)

    def reduce(self, inst: I.ReduceInst, before: list, after: list) -> I.Instruction:
        x, out, dim = inst.x, inst.output.layout, inst.dim
        if reduce_cost(x.layout, out, dim, inst.keepdim, x.dtype) != SHARED:
            return inst
        kept = out if inst.keepdim else \
            out.reshape([1 if d == dim else s for d, s in enumerate(x.shape)])
        whole = local(*[s if d == dim else 1 for d, s in enumerate(x.shape)]) * kept
        lanes = _rows_over_lanes(x, dim, self.threads)
        derived = lanes.reduce(dim, keepdim=inst.keepdim)
        if lanes.local_size >= whole.local_size or \
                reduce_cost(lanes, derived, dim, inst.keepdim, x.dtype) == SHARED:
            y, conv = self.convert(x, whole)
            before.append(conv)
            return _replace(inst, {"x": y})
        y, conv = self.convert(x, lanes)
        before.append(conv)
        return self.output_side(_replace(inst, {"x": y}), derived, after)

    def output_side(self, inst: I.Instruction, derived: RegisterLayout, after: list) -> I.Instruction:
        out = inst.output  # type: ignore[attr-defined]
        if conversion_cost(derived, out.layout) == FREE:
            return inst
        pre = _with_layout(out, self.names.fresh(out.name, "pre"), derived)
        _, conv = self.convert(pre, out.layout, out)
        after.append(conv)
        return _replace(inst, {"output": pre})

    def view(self, inst: I.ViewInst, before: list, after: list) -> I.Instruction:
        x, out = inst.x, inst.output
        derived = view_layout(x.layout, x.dtype, out.shape, out.dtype)
        if derived is not None and conversion_cost(derived, out.layout) == FREE:
            return inst
        want = view_layout(out.layout, out.dtype, x.shape, x.dtype)
        if want is None and derived is not None:
            return self.output_side(inst, derived, after)
        if want is None:
            want = _whole_runs(x, out, self.threads)
        seen = view_layout(want, x.dtype, out.shape, out.dtype)
        if seen is None:
            raise LayoutInferenceError(f"{format_stmt_head(inst)}: no layout of %{x.name} keeps whole "
                                       f"elements of the view's type in each thread")
        y, conv = self.convert(x, want)
        before.append(conv)
        return self.output_side(_replace(inst, {"x": y}), seen, after)


def _replace(inst: I.Instruction, changes: dict) -> I.Instruction:
    return replace(inst, **changes) if changes else inst


def _derived_output(inst: I.Instruction) -> Optional[RegisterLayout]:
    """The output layout a shape instruction writes for free from its input's layout."""
    if isinstance(inst, I.TransposeInst):
        return inst.x.layout.permute([1, 0])
    if isinstance(inst, (I.SqueezeInst, I.UnsqueezeInst)):
        return inst.x.layout.reshape(list(inst.output.shape))
    if isinstance(inst, I.BroadcastInst):
        return expand_layout(inst.x.layout, inst.output.shape)
    if isinstance(inst, I.RepeatInst):
        return local(*inst.repeats) * inst.x.layout
    return None


def _rows_over_lanes(x: Tensor, dim: int, threads: int) -> RegisterLayout:
    """A layout of x that a warp's XOR butterfly reduces along ``dim``: each row split over up to
    32 lanes of one warp (a contiguous run per lane), the other dimensions spread over the other
    threads as the default layout spreads them, and threads beyond the tile replicating it."""
    shape = list(x.shape)
    n = shape[dim]
    group = math.gcd(32, n, threads)
    rest = [1 if d == dim else s for d, s in enumerate(shape)]
    sizes, left = [1] * len(shape), threads // group
    for d in reversed(range(len(shape))):
        sizes[d] = math.gcd(left, rest[d])
        rest[d], left = rest[d] // sizes[d], left // sizes[d]
    outer = local(*rest) * replicate(left) if left > 1 else local(*rest)
    lanes = spatial(*[group if d == dim else 1 for d in range(len(shape))])
    return outer * spatial(*sizes) * lanes * local(*[n // group if d == dim else 1 for d in range(len(shape))])


def _whole_runs(x: Tensor, out: Tensor, threads: int) -> RegisterLayout:
    """A layout of x whose per-thread runs along the last dimension hold whole elements of the
    view's type (so that a bit-compatible output layout exists): runs of lcm(bits) bits spread
    over the threads, or the whole tile in every thread when rows don't split so."""
    kx, ko = x.dtype.nbits, out.dtype.nbits
    run = math.lcm(kx, ko) // kx
    shape = list(x.shape)
    if not shape or shape[-1] % run:
        return local(*shape) * replicate(threads)
    rest = shape[:-1] + [shape[-1] // run]
    sizes, left = [1] * len(rest), threads
    for d in reversed(range(len(rest))):
        sizes[d] = math.gcd(left, rest[d])
        rest[d], left = rest[d] // sizes[d], left // sizes[d]
    outer = local(*rest) * replicate(left) if left > 1 else local(*rest)
    return outer * spatial(*sizes) * local(*([1] * (len(shape) - 1) + [run]))


class _AddScratch(_InstructionRewriter):
    """A shared scratch tile, allocated just before and freed just after, for every conversion
    through shared memory that has none."""

    def __init__(self, names: _Names):
        self.names = names

    def instruction(self, s: I.Instruction) -> Stmt:
        if not isinstance(s, I.ConvertLayoutInst) or s.scratch is not None or s.cost != SHARED:
            return s
        x = s.x
        scratch = Tensor(self.names.fresh(x.name, "xchg"),
                         TensorType(x.dtype, x.shape, SHARED_SCOPE, row_major(*x.shape)))
        return seq([I.AllocateSharedInst(scratch), I.ConvertLayoutInst(s.output, x, scratch),
                    I.FreeSharedInst(scratch)])


class InsertConversions(Pass):
    """The pass (after LayoutInference): see the module docstring. After ``run``, ``costs`` counts
    the program's conversions by cost class."""

    name = "insert_conversions"

    def __init__(self) -> None:
        self.costs: dict[str, int] = {}

    def run(self, program: Program) -> Program:
        result = _InsertConversions(program)(program)
        result = _AddScratch(_Names(result))(result)
        self.costs = {}
        for inst in instructions(result):
            if isinstance(inst, I.ConvertLayoutInst):
                if inst.cost is None:
                    raise LayoutInferenceError(
                        f"`{format_stmt_head(inst)}`: the two layouts do not describe the same "
                        f"tile for the same threads")
                self.costs[inst.cost] = self.costs.get(inst.cost, 0) + 1
        return result


def insert_conversions(program: Program) -> Program:
    """``program`` (every tensor with its layout) with the conversions its instructions need and
    their scratch tiles (``InsertConversions``)."""
    return InsertConversions().run(program)
