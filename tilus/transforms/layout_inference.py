"""Layout inference: gives every register tensor a register layout and every shared tensor a
shared layout, for ``program.warps * 32`` threads.

How it works
------------
Layouts are solved per tensor *name* (a tensor written several times, e.g. an accumulator updated
in a loop, has one layout). Three sources fill them in, in this order:

1. **Annotations win.** A layout already in a tensor's type (``annotate_layout`` in the DSL, or
   written in the IR text) is fixed from the start; it must cover the tensor's shape and use
   exactly ``warps * 32`` threads.
2. **Rules propagate** to a fixed point over the whole program (loops and branches included:
   the program is a flat set of constraints, re-visited whenever one of an instruction's tensors
   gets a layout). One rule per instruction class (``@layout_rule(CastInst)``), see the table
   below. A rule that requires a layout different from the one a tensor already has raises
   ``LayoutInferenceError`` naming the instruction (its text line) and both layouts.
3. **Defaults**, when propagation stalls with tensors still unknown; one default is applied, then
   propagation runs again, until every tensor has a layout. The order (the priority):

   a. ``dot`` instructions first, in program order: mma.sync fragments tiled over the warps
      (so the operands' loads, ``load_shared`` or ``load_global``, get the fragment layouts
      directly), or the SIMT layout when mma does not fit (``dot_candidates``: every mma warp
      grid, preferred first, then SIMT choices);
   b. then *suggestions*: layouts that rules propose for an unknown tensor without requiring them
      (through a view, a broadcast, a repeat, from a reduction's result back to its input, from
      a broadcast operand to a new tile), oldest first;
   c. then the largest unknown register tensor (ties: tensors read or written by global memory
      instructions, then by shared memory instructions, then the others; then program order) gets
      ``default_layout``: 16-byte contiguous runs per thread along the last dimension.
      Largest-first makes broadcast operands (``[1, n]`` scales, reduction results) derive their
      layout from the full tile they combine with, instead of conflicting with it.

   Reduction results never take b or c while their input is unknown (their layout follows from
   the input). Every choice in a-c is a *trial*: if propagating it leads to a conflict it is
   undone and the next candidate is tried (the next dot candidate, suggestion or tensor); only
   when none fits is the first conflict reported. Conflicts between annotations, and conflicts
   that no choice avoids (a dot's fixed fragments meeting each other through elementwise
   instructions in ways no tiling allows), are errors; where the user wants two layouts of one
   tile, ``convert_layout`` says so. Differences that rules only suggest over (transpose, views,
   broadcasts, repeats) are made explicit afterwards by ``InsertConversions``
   (``tilus.transforms.conversions``), which inserts a ``convert_layout`` wherever an instruction
   reads a tile in a layout other than its own.

Rules (what an instruction requires of its operands' and output's layouts)
---------------------------------------------------------------------------
- ``cast``, unary ops, ``assign``: output and operand have the same layout (both directions).
- binary ops, ``where``: an operand of the output's shape has the output's layout (both
  directions); a broadcast operand (a size-1 or missing dimension) has the output's layout
  reduced over those dimensions (``L.reduce(d)``: the threads that held the dimension replicate).
  When only broadcast operands are known, the output is suggested the first layout they agree
  with among the default layout and those of same-shape tiles already placed (so a row
  statistic of a reduction keeps its rows spread over the lanes that reduced them, and the
  reduction is a warp shuffle), else ``local(f) * operand``.
  After solving, a tile whose inferred layout gives a thread more than half of its registers,
  and more elements than an even spread would, is logged as a warning
  (``LayoutInference.heavy_tiles``): it is likely to spill.
- ``reduce``: output = ``input.reduce(dim, keepdim)`` (required forward; backward only a
  suggestion, ``local(f) * output``: the reduced dimension held by the threads holding the result).
- ``dot``: once any of A, B, C is known, the first of ``mma_dot_layouts`` that agrees with the
  known ones, else SIMT around the known C (or A, or B). ``dot_candidates`` (the defaults): A/B/C
  fragments of mma.m16n8k16 (f16/bf16 operands, f32/f16
  accumulator), mma.m16n8k32 (s8/u8 operands, s32 accumulator; e4m3, f32), or mma.m16n8k64
  (s4, s32) tiled as
  ``replicate(r) * local(tiles) * warps * fragment`` (warps the outer thread digits, lanes the
  inner ones); the warp grid wm x wn is picked to cover the tile (A is replicated over wn, B over
  wm). Otherwise (shapes not multiples of the instruction, other dtypes, or a C layout that is not
  an mma tiling) the SIMT layout: C any, A = C.reduce(n) * local(1, k), B = local(k, 1) * C.reduce(m).
- ``transpose``: permuted layout (both directions); ``squeeze``/``unsqueeze``: the reshaped layout.
  Suggestions only: ``InsertConversions`` converts layouts that don't line up, so
  ``add(transpose(r), r)`` infers instead of conflicting.
- ``broadcast``: x = output reduced over the broadcast dimensions (backward, required); forward,
  an unknown output is suggested x's layout with the new elements held locally (``local(f) * x``).
- ``repeat``: output = ``local(repeats) * x`` when one side is unknown (a suggestion both ways,
  never a conflict: repeating moves data anyway).
- ``view``: a *bit-compatible* layout: each thread keeps exactly the bits it holds. Computed with
  the algebra as ``(x.reshape([N]) * local(bits_x)) / local(bits_out)`` reshaped to the output's
  shape, and the same way back; e.g. uint8 ``local(1, 4)`` <-> uint4 ``local(1, 8)``: the last
  dimension's per-thread run scales by the bit ratio. This is a suggestion for the unknown side
  (taken unless it leads to a conflict). When one side is known and no
  bit-compatible layout exists (a thread would hold part of a byte), or both sides were fixed
  otherwise, the view is a *redistributing* view: ``InsertConversions`` moves the bits between
  threads with a ``convert_layout``. Such views are listed in
  ``LayoutInference.redistributing_views`` after a run; a view never raises a conflict.
- ``convert_layout``: any two layouts; an unknown side is suggested the other's.
- ``load_global``/``store_global``/``load_shared``/``store_shared``/``register_tensor``: any
  layout (memory instructions adapt; the defaults favour them).

Shared tensors: an annotation wins; ``shared_tensor`` gets ``row_major`` (``swizzle_128b`` of it
for 2-D 16-bit tiles with 128-byte rows that are never sliced); ``slice_shared`` gets the
source's strides.

Output: the same program with every register and shared tensor's type carrying its layout; the
text form prints and re-parses it exactly.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from typing import Callable, Iterable, Optional, Sequence

from tilus.dtypes import DataType
from tilus.errors import LayoutError, LayoutInferenceError
from tilus.ir import inst as I
from tilus.ir.functor import IRRewriter, instructions
from tilus.ir.layout import (RegisterLayout, SharedLayout, StridedShared, divide, local,
                             replicate, row_major, same_owners, spatial, strided, swizzle_128b)
from tilus.ir.layout.mma import mma_dot_layouts
from tilus.ir.printer import format_stmt_head
from tilus.ir.program import Program
from tilus.ir.types import REGISTER, SHARED, Tensor
from tilus.ir.verifier import MAX_REGISTERS, register_bits
from tilus.registry import Registry
from tilus.transforms.base import Pass

logger = logging.getLogger("tilus")

__all__ = ["LayoutInference", "infer_layouts", "layout_rule", "any_layout", "RULES", "default_layout", "dot_layouts",
           "dot_candidates", "mma_dot_layouts", "simt_dot_layouts", "view_layout", "broadcast_operand_layout",
           "expand_layout", "check_layouts"]

#: a tile whose inferred layout gives a thread more registers than this is warned about
SPILL_WARN_REGISTERS = MAX_REGISTERS // 2

Rule = Callable[..., Iterable[tuple]]   # fn(inst: the rule's instruction class, solver)
RULES: Registry[Rule] = Registry("layout rule")

#: third item of a rule's ``(tensor, layout, SOFT)``: a suggestion, not a requirement
SOFT = False


def layout_rule(*classes: type) -> Callable[[Rule], Rule]:
    """Registers ``fn(inst, solver) -> [(tensor, layout), ...]`` as the rule of instruction
    classes: given the layouts known so far (``solver.layout(t)``), the layouts the instruction
    requires of its register tensors. Returning a layout for a known tensor that differs from its
    layout is a conflict. An item ``(tensor, layout, SOFT)`` is only a suggestion for an unknown
    tensor: it is taken when propagation stalls, before the generic defaults, and dropped when
    it would lead to a conflict."""
    return RULES.register(*classes)


def any_layout(inst: I.Instruction, solver: "_Solver") -> Iterable[tuple]:
    """The rule of instructions that accept their register tensors in any layout: it requires
    nothing (those tensors get theirs from the other instructions, else from the defaults)."""
    return ()


layout_rule(I.GlobalViewInst, I.AllocateGlobalInst, I.AllocateRegisterInst, I.AllocateSharedInst, I.FreeSharedInst,
            I.SliceSharedInst, I.LoadGlobalInst, I.LoadScalarInst, I.StoreGlobalInst, I.LoadSharedInst,
            I.StoreSharedInst, I.CopyAsyncInst, I.CopyAsyncCommitGroupInst,
            I.CopyAsyncWaitGroupInst, I.ReinterpretInst, I.SyncInst, I.LockSemaphoreInst,
            I.ReleaseSemaphoreInst, I.PrintTensorInst)(any_layout)


# ----------------------------------------------------------------------------------------------
# layouts the rules and defaults build
# ----------------------------------------------------------------------------------------------

def default_layout(shape: Sequence[int], dtype: DataType, threads: int) -> RegisterLayout:
    """The layout favouring 16-byte accesses: ``local(rest) * replicate(r) * spatial(s) *
    local(1, .., vec)``: each thread holds runs of ``vec`` consecutive elements of the last
    dimension, threads spread from the last dimension outwards, and threads beyond what the tile
    needs replicate it. ``vec`` is a power of two dividing the last dimension, at most 16 bytes,
    chosen to fit a thread's registers (``MAX_REGISTERS``) when one does, then to need the fewest
    accesses per thread (``local_size / vec``), then the largest."""
    shape = [int(s) for s in shape]
    if not shape:
        return replicate(threads)
    max_vec = max(1, 128 // dtype.nbits)
    vecs = [1]
    while shape[-1] % (vecs[-1] * 2) == 0 and vecs[-1] * 2 <= max_vec:
        vecs.append(vecs[-1] * 2)
    best = None
    for vec in vecs:
        rest = list(shape)
        rest[-1] //= vec
        sizes = [1] * len(shape)
        left = threads
        for d in reversed(range(len(shape))):
            s = math.gcd(left, rest[d])
            sizes[d], rest[d], left = s, rest[d] // s, left // s
        accesses = math.prod(rest)
        registers = -(-accesses * vec * register_bits(dtype) // 32)
        key = (registers > MAX_REGISTERS, accesses, -vec)
        if best is None or key < best[0]:
            best = (key, vec, rest, sizes, left)
    assert best is not None   # vec = 1 always fits
    _, vec, rest, sizes, left = best
    outer = local(*rest)
    if left > 1:
        outer = outer * replicate(left)
    return outer * spatial(*sizes) * local(*([1] * (len(shape) - 1) + [vec]))


def simt_dot_layouts(c_layout: RegisterLayout, k: int) -> tuple[RegisterLayout, RegisterLayout]:
    """(A, B) for a SIMT dot whose C has ``c_layout``: the thread holding C[i, j] holds row i of A
    and column j of B whole (replicated over the threads sharing them)."""
    a = c_layout.reduce(1, keepdim=True) * local(1, k)
    b = local(k, 1) * c_layout.reduce(0, keepdim=True)
    return a, b


def dot_candidates(inst: I.DotInst, threads: int) -> list[tuple[RegisterLayout, RegisterLayout,
                                                                   RegisterLayout]]:
    """(A, B, C) choices for a dot nothing constrains yet, the preferred first: every mma tiling
    (``mma_dot_layouts``), then SIMT around the default C, then SIMT with whole rows of C per
    thread (then C's layout equals A's when k == n: C and A can meet elementwise), then whole
    columns (likewise C and B when k == m), and last every thread computing the whole dot (all
    three whole in every thread, so any two of the same shape agree). Choices whose tiles need
    more registers than a thread has (``MAX_REGISTERS``) are left out."""
    (m, k), n = inst.a.shape, inst.b.shape[1]
    out = list(mma_dot_layouts(m, n, k, inst.a.dtype, inst.c.dtype, threads))
    for c in (default_layout((m, n), inst.c.dtype, threads),
              default_layout((m, 1), inst.c.dtype, threads) * local(1, n),
              local(m, 1) * default_layout((1, n), inst.c.dtype, threads),
              local(m, n) * replicate(threads)):
        out.append((*simt_dot_layouts(c, k), c))
    dtypes_ = (inst.a.dtype, inst.b.dtype, inst.c.dtype)
    fitting = [c for c in out if all(_fits_registers(l, d) for l, d in zip(c, dtypes_))]
    return fitting or out[:1]


def _fits_registers(layout: RegisterLayout, dtype: DataType) -> bool:
    """Whether a thread's share of a tile in ``layout`` fits its registers."""
    return -(-layout.local_size * register_bits(dtype) // 32) <= MAX_REGISTERS


def dot_layouts(inst: I.DotInst, threads: int) -> tuple[RegisterLayout, RegisterLayout, RegisterLayout]:
    """The default (A, B, C) of a dot: the preferred mma tiling, else SIMT around the default C."""
    return dot_candidates(inst, threads)[0]


def broadcast_operand_layout(out: RegisterLayout, shape: Sequence[int]) -> RegisterLayout:
    """The layout of an operand of ``shape`` broadcast (numpy rules) to ``out``'s tile: ``out``
    reduced over the dimensions the operand lacks or has of size 1."""
    rank, shape = out.rank, tuple(shape)
    pad = rank - len(shape)
    layout = out
    for d in range(rank):
        if (d < pad or shape[d - pad] == 1) and out.shape[d] != 1:
            layout = layout.reduce(d, keepdim=True)
    return layout.reshape(shape) if tuple(layout.shape) != shape else layout


def expand_layout(x: RegisterLayout, shape: Sequence[int]) -> RegisterLayout:
    """``x`` broadcast to ``shape``, the new elements held by the same threads in new slots."""
    shape = tuple(shape)
    padded = (1,) * (len(shape) - x.rank) + tuple(x.shape)
    if padded != tuple(x.shape):
        x = x.reshape(padded)
    factors = [o // i for o, i in zip(shape, padded)]
    return local(*factors) * x if any(f != 1 for f in factors) else x


def view_layout(x: RegisterLayout, x_dtype: DataType, shape: Sequence[int],
                dtype: DataType) -> Optional[RegisterLayout]:
    """The bit-compatible layout of the view of a tile with layout ``x`` as ``dtype[shape]``:
    every (thread, slot range) keeps the same bits. None when no such layout exists."""
    try:
        flat = x.reshape([x.size]) if x.rank != 1 else x
        bits = flat * local(x_dtype.nbits)
        out = divide(bits, local(dtype.nbits))
        return out.reshape(list(shape)) if tuple(shape) != tuple(out.shape) else out
    except LayoutError:
        return None


# ----------------------------------------------------------------------------------------------
# rules
# ----------------------------------------------------------------------------------------------

def _register_tensors(values: Iterable) -> list[Tensor]:
    return [v for v in values if isinstance(v, Tensor) and v.scope == REGISTER]


@layout_rule(I.CastInst, I.UnaryInst, I.AssignInst)
def _same_layout(inst, s: "_Solver"):
    """Output and operand: one layout (a cast may also reorder each thread's slots: both given,
    with the same elements per thread, stand)."""
    x, out = s.layout(inst.x), s.layout(inst.output)
    if isinstance(inst, I.CastInst) and x is not None and out is not None and same_owners(x, out):
        return []
    for a, b in ((inst.x, inst.output), (inst.output, inst.x)):
        layout = s.layout(a)
        if layout is not None:
            return [(b, layout)]
    return []


@layout_rule(I.LookupInst)
def _lookup(inst, s: "_Solver"):
    """Index and output: one layout (each thread looks up the elements whose indices it holds)."""
    for a, b in ((inst.index, inst.output), (inst.output, inst.index)):
        layout = s.layout(a)
        if layout is not None:
            return [(b, layout)]
    return []


@layout_rule(I.BinaryInst, I.WhereInst, I.FmaInst)
def _elementwise(inst, s: "_Solver"):
    out = inst.output
    full = [x for x in _register_tensors(inst.operands()) if tuple(x.shape) == tuple(out.shape)]
    layout = s.layout(out)
    if layout is None:
        layout = next((s.layout(x) for x in full if s.layout(x) is not None), None)
        if layout is None:
            known = [x for x in _register_tensors(inst.operands()) if s.layout(x) is not None]
            if not known:
                return []
            return [(out, _from_broadcast_operands(out, known, s), SOFT)]
    implied = [(out, layout)]
    for x in _register_tensors(inst.operands()):
        if tuple(x.shape) == tuple(out.shape):
            implied.append((x, layout))
        else:
            implied.append((x, broadcast_operand_layout(layout, x.shape)))
    return implied


def _from_broadcast_operands(out: Tensor, known: list[Tensor], s: "_Solver") -> RegisterLayout:
    """The layout suggested for a new tile when only broadcast operands of it are known (a row
    statistic from a reduction, a [1, n] scale): the first layout that agrees with all of them
    among the default layout and the layouts of tiles of the same shape already placed (the input
    of the reduction a row statistic came from agrees with it), so that each row stays spread over
    the lanes that reduced it instead of one thread holding a whole row; else the largest
    operand's layout with the new elements held locally."""
    shape = tuple(out.shape)
    candidates = [default_layout(shape, out.dtype, s.threads)] + \
        [s.known[n] for n, t in s.tensors.items() if n in s.known and tuple(t.shape) == shape]
    placed = [(x, layout) for x in known if (layout := s.layout(x)) is not None]
    for cand in candidates:
        if all(same_owners(broadcast_operand_layout(cand, x.shape), layout) for x, layout in placed):
            return cand
    largest = max(placed, key=lambda item: item[0].type.size)[1]
    return expand_layout(largest, out.shape)


@layout_rule(I.ReduceInst)
def _reduce(inst: I.ReduceInst, s: "_Solver"):
    x, out = s.layout(inst.x), s.layout(inst.output)
    if x is not None:
        return [(inst.output, x.reduce(inst.dim, keepdim=inst.keepdim))]
    if out is not None:   # suggest: the reduced dimension held by the threads that hold the result
        if not inst.keepdim:
            out = out.reshape([1 if d == inst.dim else n for d, n in enumerate(inst.x.shape)])
        return [(inst.x, expand_layout(out, inst.x.shape), SOFT)]
    return []


@layout_rule(I.TransposeInst)
def _transpose(inst: I.TransposeInst, s: "_Solver"):
    for a, b in ((inst.x, inst.output), (inst.output, inst.x)):
        layout = s.layout(a)
        if layout is not None:
            return [(b, layout.permute([1, 0]), SOFT)]
    return []


@layout_rule(I.SqueezeInst, I.UnsqueezeInst)
def _reshape(inst, s: "_Solver"):
    for a, b in ((inst.x, inst.output), (inst.output, inst.x)):
        layout = s.layout(a)
        if layout is not None:
            return [(b, layout.reshape(list(b.shape)), SOFT)]
    return []


@layout_rule(I.BroadcastInst)
def _broadcast(inst: I.BroadcastInst, s: "_Solver"):
    out, x = s.layout(inst.output), s.layout(inst.x)
    if out is not None:
        return [(inst.x, broadcast_operand_layout(out, inst.x.shape))]
    if x is not None:
        return [(inst.output, expand_layout(x, inst.output.shape), SOFT)]
    return []


@layout_rule(I.RepeatInst)
def _repeat(inst: I.RepeatInst, s: "_Solver"):
    out, x = s.layout(inst.output), s.layout(inst.x)
    if x is not None and out is None:
        return [(inst.output, local(*inst.repeats) * x, SOFT)]
    if out is not None and x is None:
        try:
            cand = out.slice([0] * out.rank, list(inst.x.shape))
        except LayoutError:
            return []
        if local(*inst.repeats) * cand == out:
            return [(inst.x, cand, SOFT)]
    return []


@layout_rule(I.ConvertLayoutInst)
def _convert_layout(inst: I.ConvertLayoutInst, s: "_Solver"):
    """Any two layouts (that is the point); an unknown side is suggested the other's (free)."""
    for a, b in ((inst.x, inst.output), (inst.output, inst.x)):
        layout = s.layout(a)
        if layout is not None and s.layout(b) is None:
            return [(b, layout, SOFT)]
    return []


@layout_rule(I.ViewInst)
def _view(inst: I.ViewInst, s: "_Solver"):
    out, x = s.layout(inst.output), s.layout(inst.x)
    if x is not None and out is None:
        mapped = view_layout(x, inst.x.dtype, inst.output.shape, inst.output.dtype)
        return [] if mapped is None else [(inst.output, mapped, SOFT)]
    if out is not None and x is None:
        mapped = view_layout(out, inst.output.dtype, inst.x.shape, inst.x.dtype)
        return [] if mapped is None else [(inst.x, mapped, SOFT)]
    return []


@layout_rule(I.DotInst)
def _dot(inst: I.DotInst, s: "_Solver"):
    roles = [(inst.a, "a"), (inst.b, "b"), (inst.c, "c"), (inst.output, "c")]
    known = [(t, role, s.layout(t)) for t, role in roles if s.layout(t) is not None]
    if not known:
        return []
    (m, k), n = inst.a.shape, inst.b.shape[1]
    for al, bl, cl in mma_dot_layouts(m, n, k, inst.a.dtype, inst.c.dtype, s.threads):
        want = {"a": al, "b": bl, "c": cl}
        if all(want[role] == layout for _, role, layout in known):
            return [(t, want[role]) for t, role in roles]
    c = s.layout(inst.c) or s.layout(inst.output)
    if c is None:
        a, b = s.layout(inst.a), s.layout(inst.b)
        if a is not None:
            c = a.reduce(1, keepdim=True) * local(1, n)
        else:
            assert b is not None
            c = local(m, 1) * b.reduce(0, keepdim=True)
    al, bl = simt_dot_layouts(c, k)
    return [(inst.a, al), (inst.b, bl), (inst.c, c), (inst.output, c)]


# ----------------------------------------------------------------------------------------------
# the solver
# ----------------------------------------------------------------------------------------------

_GLOBAL_MEMORY = (I.LoadGlobalInst, I.StoreGlobalInst)
_SHARED_MEMORY = (I.LoadSharedInst, I.StoreSharedInst)


def _inst_tensors(inst: I.Instruction) -> list[Tensor]:
    out = []
    output = getattr(inst, "output", None)
    if inst.HAS_OUTPUT and isinstance(output, Tensor):
        out.append(output)
    out += [x for x in inst.operands() if isinstance(x, Tensor)]
    return out


class _Solver:
    def __init__(self, program: Program, threads: int):
        self.program = program
        self.threads = threads
        self.insts = list(instructions(program))
        self.tensors: dict[str, Tensor] = {}
        self.first: dict[str, int] = {}
        self.kind: dict[str, int] = {}
        self.users: dict[str, list[int]] = {}
        self.known: dict[str, RegisterLayout] = {}
        self.origin: dict[str, str] = {}
        self.suggestions: list[tuple[Tensor, RegisterLayout, I.Instruction]] = []
        # outputs of reductions: their layout follows from their input, so they are never the
        # ones to take a suggestion or a default while the input is unknown
        self.reduced = {x.output.name for x in self.insts if isinstance(x, I.ReduceInst)}
        self.names = {t.name for inst in self.insts for t in _inst_tensors(inst)}
        for i, inst in enumerate(self.insts):
            kind = 0 if isinstance(inst, _GLOBAL_MEMORY) else 1 if isinstance(inst, _SHARED_MEMORY) else 2
            for t in _inst_tensors(inst):
                if t.scope != REGISTER:
                    continue
                if t.name not in self.tensors:
                    self.tensors[t.name], self.first[t.name] = t, i
                    self.users[t.name] = []
                    self.kind[t.name] = kind
                    if t.layout is not None:
                        self._check_annotation(t, inst)
                        self.known[t.name] = t.layout
                        self.origin[t.name] = "annotated"
                self.kind[t.name] = min(self.kind[t.name], kind)
                if i not in self.users[t.name]:
                    self.users[t.name].append(i)

    # -- what rules see
    def layout(self, t: Tensor) -> Optional[RegisterLayout]:
        return self.known.get(t.name)

    def text(self, inst: I.Instruction) -> str:
        return format_stmt_head(inst, self.names)

    def _check_annotation(self, t: Tensor, inst: I.Instruction) -> None:
        layout = t.layout
        if not isinstance(layout, RegisterLayout):
            raise LayoutInferenceError(f"register tensor %{t.name} is annotated with {layout!r}, "
                                       f"which is not a register layout (at `{self.text(inst)}`)")
        self._check_fit(t, layout, "annotated with")

    def _check_fit(self, t: Tensor, layout: RegisterLayout, how: str) -> None:
        if tuple(layout.shape) != tuple(t.shape):
            raise LayoutInferenceError(f"%{t.name} of shape {list(t.shape)} is {how} {layout} of "
                                       f"shape {list(layout.shape)}")
        if layout.num_threads != self.threads:
            raise LayoutInferenceError(
                f"%{t.name} is {how} {layout}, which uses {layout.num_threads} threads, but the "
                f"kernel has {self.threads} ({self.program.warps} warps)")

    # -- solving
    def assign(self, t: Tensor, layout: RegisterLayout, inst: I.Instruction, why: str) -> bool:
        old = self.known.get(t.name)
        if old is not None:
            if old != layout:
                known = [f"%{x.name}: {self.known[x.name]} ({self.origin[x.name]})"
                         for x in dict.fromkeys(_inst_tensors(inst))
                         if x.scope == REGISTER and x.name in self.known and x.name != t.name]
                context = "".join(f"\n    {line}" for line in known)
                out = getattr(inst, "output", None)
                where = self.program.source_of(out.name) if out is not None else None
                raise LayoutInferenceError(
                    f"layout conflict at `{self.text(inst)}`: %{t.name} has layout {old} "
                    f"({self.origin[t.name]}), but this instruction requires {layout}"
                    + (f"\n  written at {where}" if where else "")
                    + (f"\n  the instruction's other tensors:{context}" if context else ""))
            return False
        self._check_fit(t, layout, f"given (by `{self.text(inst)}`)")
        self.known[t.name] = layout
        self.origin[t.name] = f"{why} `{self.text(inst)}`"
        return True

    def propagate(self, pending: Iterable[int]) -> None:
        queue = deque(pending)
        queued = set(queue)
        while queue:
            i = queue.popleft()
            queued.discard(i)
            inst = self.insts[i]
            rule = RULES.find(type(inst))
            if rule is None:
                continue
            try:
                implied = list(rule(inst, self))
            except LayoutInferenceError:
                raise
            except LayoutError as e:
                raise LayoutInferenceError(f"no layout satisfies `{self.text(inst)}`: {e}") from None
            for t, layout, *soft in implied:
                if soft and soft[0] is SOFT:
                    if t.name not in self.known:
                        self.suggestions.append((t, layout, inst))
                    continue
                if self.assign(t, layout, inst, "required by"):
                    for j in self.users[t.name]:
                        if j not in queued:
                            queue.append(j)
                            queued.add(j)

    def _trial(self, t: Tensor, layout: RegisterLayout, inst: I.Instruction,
               why: str) -> Optional[LayoutInferenceError]:
        """Give ``t`` a layout and propagate; on a conflict undo everything and return the error."""
        return self._trial_all([(t, layout)], inst, why)

    def _trial_all(self, items: list[tuple[Tensor, RegisterLayout]], inst: I.Instruction,
                   why: str) -> Optional[LayoutInferenceError]:
        """Give the unknown tensors of ``items`` their layouts and propagate; on a conflict undo
        everything and return the error."""
        saved = dict(self.known), dict(self.origin), list(self.suggestions)
        try:
            changed = [t for t, layout in items
                       if self.layout(t) is None and self.assign(t, layout, inst, why)]
            self.propagate([j for t in changed for j in self.users[t.name]])
            return None
        except LayoutInferenceError as e:
            self.known, self.origin, self.suggestions = saved
            return e

    def default_step(self) -> bool:
        """Apply one default (see the module docstring for the order); False when none is left."""
        for inst in self.insts:
            if isinstance(inst, I.DotInst) and any(self.layout(t) is None for t in _inst_tensors(inst)):
                first_error: Optional[LayoutInferenceError] = None
                for al, bl, cl in dot_candidates(inst, self.threads):
                    error = self._trial_all([(inst.a, al), (inst.b, bl), (inst.c, cl),
                                             (inst.output, cl)], inst, "the dot default of")
                    if error is None:
                        return True
                    first_error = first_error or error
                assert first_error is not None   # the SIMT candidates are never empty
                raise first_error
        while self.suggestions:
            t, layout, inst = self.suggestions.pop(0)
            if t.name in self.known or t.name in self.reduced:
                continue
            if self._trial(t, layout, inst, "suggested by") is None:
                return True
        unknown = [n for n in self.tensors if n not in self.known]
        if not unknown:
            return False
        unknown.sort(key=lambda n: (n in self.reduced, -self.tensors[n].type.size, self.kind[n],
                                    self.first[n]))
        first_error = None
        for name in unknown:
            t = self.tensors[name]
            layout = default_layout(t.shape, t.dtype, self.threads)
            error = self._trial(t, layout, self.insts[self.first[name]], "the default at")
            if error is None:
                return True
            first_error = first_error or error
        assert first_error is not None   # unknown is not empty
        raise first_error

    def solve(self) -> dict[str, RegisterLayout]:
        self.propagate(range(len(self.insts)))
        while self.default_step():
            pass
        return self.known

    # -- shared tensors
    def shared_layouts(self) -> dict[str, SharedLayout]:
        out: dict[str, SharedLayout] = {}
        sliced = {inst.src.name for inst in self.insts if isinstance(inst, I.SliceSharedInst)}
        for inst in self.insts:
            for t in _inst_tensors(inst):
                if t.scope == SHARED and t.layout is not None and t.name not in out:
                    if not isinstance(t.layout, SharedLayout) or tuple(t.layout.shape) != tuple(t.shape):
                        raise LayoutInferenceError(
                            f"shared tensor %{t.name} of shape {list(t.shape)} is annotated with "
                            f"{t.layout}, which is not a shared layout of that shape")
                    out[t.name] = t.layout
            if isinstance(inst, I.AllocateSharedInst) and inst.output.name not in out:
                t = inst.output
                out[t.name] = _default_shared(t, swizzle_ok=t.name not in sliced)
            elif isinstance(inst, I.SliceSharedInst) and inst.output.name not in out:
                src = out.get(inst.src.name, inst.src.layout)
                if src is None:
                    src = _default_shared(inst.src, swizzle_ok=False)
                    out[inst.src.name] = src
                if not isinstance(src, StridedShared):
                    raise LayoutInferenceError(
                        f"cannot infer the layout of the slice at `{self.text(inst)}`: the source "
                        f"%{inst.src.name} has layout {src}, which is not strided; annotate the slice")
                dims = I.tile_dims(inst.src.type.rank, inst.output.type.rank, inst.dims)
                out[inst.output.name] = strided(inst.output.shape, [src.strides[d] for d in dims])
        return out


def _default_shared(t: Tensor, swizzle_ok: bool) -> SharedLayout:
    base = row_major(*t.shape)
    if swizzle_ok and t.type.rank == 2 and t.dtype.nbits == 16 \
            and (t.shape[1] * t.dtype.nbits) % 1024 == 0 and t.shape[0] % 8 == 0:
        return swizzle_128b(base, t.dtype)
    return base


class _ApplyLayouts(IRRewriter):
    def __init__(self, layouts: dict[str, object]):
        self.layouts = layouts

    def rewrite_tensor(self, t: Tensor) -> Tensor:
        layout = self.layouts.get(t.name) if t.scope in (REGISTER, SHARED) else None
        if layout is None or t.layout == layout:
            return t
        return Tensor(t.name, t.type.with_layout(layout))


def _bit_compatible(inst: I.ViewInst, x: RegisterLayout, out: RegisterLayout) -> bool:
    return view_layout(x, inst.x.dtype, inst.output.shape, inst.output.dtype) == out


def heavy_tiles(solver: "_Solver") -> list[tuple[str, int, RegisterLayout]]:
    """(name, registers, layout) of the register tiles whose inferred (not annotated) layout gives
    a thread more than ``SPILL_WARN_REGISTERS`` registers and more elements than an even spread
    over the threads would (replicated or whole rows): with anything else live, they spill."""
    out = []
    for name, t in solver.tensors.items():
        layout = solver.known.get(name)
        if layout is None or solver.origin.get(name) == "annotated":
            continue
        regs = -(-layout.local_size * register_bits(t.dtype) // 32)
        if regs > SPILL_WARN_REGISTERS and layout.local_size > -(-t.type.size // solver.threads):
            out.append((name, regs, layout))
    return out


class LayoutInference(Pass):
    """The pass: see the module docstring. After ``run``, ``redistributing_views`` lists the text
    of the views whose two sides are not bit-compatible (InsertConversions converts them), and
    ``heavy_tiles`` the tiles whose inferred layout is likely to spill (each logged as a warning)."""

    name = "layout_inference"

    def __init__(self):
        self.redistributing_views: list[str] = []
        self.heavy_tiles: list[tuple[str, int, RegisterLayout]] = []

    def run(self, program: Program) -> Program:
        solver = _Solver(program, program.num_threads)
        layouts: dict[str, object] = dict(solver.solve())
        layouts.update(solver.shared_layouts())
        self.redistributing_views = [
            solver.text(inst) for inst in solver.insts if isinstance(inst, I.ViewInst)
            and not _bit_compatible(inst, solver.known[inst.x.name], solver.known[inst.output.name])]
        for text in self.redistributing_views:
            logger.debug("layout inference: redistributing view `%s`", text)
        self.heavy_tiles = heavy_tiles(solver)
        for name, regs, layout in self.heavy_tiles:
            logger.warning("layout inference: %%%s holds %d of a thread's %d registers under the "
                           "inferred layout %s; the kernel is likely to spill (annotate_layout a "
                           "layout spreading it over more threads, or use a smaller tile)",
                           name, regs, MAX_REGISTERS, layout)
        result = _ApplyLayouts(layouts)(program)
        check_layouts(result)
        return result


def infer_layouts(program: Program) -> Program:
    """``program`` with every register and shared tensor's layout filled in."""
    return LayoutInference().run(program)


def check_layouts(program: Program) -> None:
    """Raise LayoutInferenceError unless every register tensor has a register layout of its shape
    over ``warps * 32`` threads and every shared tensor a shared layout of its shape."""
    for inst in instructions(program):
        for t in _inst_tensors(inst):
            if t.scope == REGISTER:
                ok = isinstance(t.layout, RegisterLayout) and tuple(t.layout.shape) == tuple(t.shape) \
                    and t.layout.num_threads == program.num_threads
            elif t.scope == SHARED:
                ok = isinstance(t.layout, SharedLayout) and tuple(t.layout.shape) == tuple(t.shape)
            else:
                continue
            if not ok:
                raise LayoutInferenceError(
                    f"%{t.name} ({t.type}) has no valid layout for {program.num_threads} threads "
                    f"at `{format_stmt_head(inst)}`")
