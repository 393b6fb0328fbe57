"""Shared-memory planning: every ``shared_tensor`` gets a byte offset in one dynamic shared-memory
arena, and tensors whose lifetimes don't overlap share bytes.

Rules (``PlanSharedMemory``):

- Program points are the instructions in program (pre-)order. A shared tensor is live from its
  ``shared_tensor`` to its last use: any instruction that names it or a slice of it
  (``slice_shared`` outputs alias their source), ``free_shared`` included.
- Loops: a tensor used inside a loop (``for`` or ``while``) that it was allocated outside of is
  live for the whole loop (the next iteration may use it again).
- Asynchronous copies: a ``copy_async`` into a tensor keeps it live up to the next
  ``copy_async_wait_group`` after it (within its loop; when its loop body has none after it, for the
  whole loop and on to the next wait after the loop), so no other tensor is placed in bytes that a
  copy still in flight may write.
- Size: ``layout.nbytes(dtype)`` of the tensor's shared layout (``layout.size`` elements, sub-byte
  types bit-packed, rounded up to bytes); row-major (``size * nbits`` bits) when it has no layout.
- Offsets are multiples of ``alignment`` (128 bytes by default: swizzles and TMA want it; at least
  16, a power of two). Placement is first fit, largest tensors first (ties in program order): each
  tensor takes the lowest aligned offset that overlaps no tensor live at the same time.
- The plan is recorded in ``AllocateSharedInst.offset``; the arena's size is
  ``shared_memory_bytes(program)`` = max(offset + size) (0 without shared tensors).
- More than 48 KB (``STATIC_SHARED_MEMORY_LIMIT``) needs the dynamic shared-memory opt-in
  (``cudaFuncAttributeMaxDynamicSharedMemorySize``): ``needs_shared_memory_opt_in(program)``; more
  than the architecture allows per block (``max_shared_memory_bytes(arch)``: 227 KB on sm_90, 163 KB
  on sm_80) is a ``CompilationError`` that names every tensor with its size and offset.

Using the plan (the backend): declare one ``extern __shared__ __align__(A) uint8_t smem[]`` (A at
least ``alignment``); a ``shared_tensor`` lives at ``smem + offset``; a ``slice_shared`` at its
source's address plus the source layout's offset of the slice's first element (in bits for
sub-byte types); launch with ``shared_memory_bytes(program)`` bytes of dynamic shared memory, and
above 48 KB raise ``cudaFuncAttributeMaxDynamicSharedMemorySize`` to that size first.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional

from tilus.errors import CompilationError
from tilus.ir import inst as I
from tilus.ir.functor import IRRewriter, instructions
from tilus.ir.layout.shared import SharedLayout
from tilus.ir.program import Program
from tilus.ir.stmt import ForStmt, IfStmt, SeqStmt, Stmt, WhileStmt
from tilus.ir.types import SHARED, Tensor
from tilus.transforms.base import Pass

logger = logging.getLogger("tilus")

KB = 1024
STATIC_SHARED_MEMORY_LIMIT = 48 * KB
"""Bytes of shared memory a block may use without the dynamic shared-memory opt-in."""

# The most shared memory one block may use (after the opt-in), per compute capability.
MAX_SHARED_MEMORY = {70: 96 * KB, 75: 64 * KB, 80: 163 * KB, 86: 99 * KB, 87: 163 * KB,
                     89: 99 * KB, 90: 227 * KB, 100: 227 * KB, 101: 227 * KB, 120: 99 * KB}
DEFAULT_ARCH = "sm_90"
DEFAULT_ALIGNMENT = 128


def max_shared_memory_bytes(arch: str = DEFAULT_ARCH) -> int:
    """The most shared memory one block may use on ``arch`` ("sm_80", "sm_90a", ...)."""
    m = re.fullmatch(r"sm_(\d+)[a-z]?", str(arch))
    if m is None:
        raise CompilationError(f"unknown architecture {arch!r}; expected sm_<number>, e.g. sm_90")
    cc = int(m.group(1))
    known = [k for k in MAX_SHARED_MEMORY if k <= cc]
    if not known:
        raise CompilationError(f"architecture {arch} is not supported (sm_70 and newer)")
    return MAX_SHARED_MEMORY[max(known)]


def shared_tensor_nbytes(t: Tensor) -> int:
    """Bytes a shared tensor occupies: its shared layout's span, or row-major without a layout;
    sub-byte elements are bit-packed and the total rounded up to whole bytes."""
    if isinstance(t.layout, SharedLayout):
        return t.layout.nbytes(t.dtype)
    return -(-t.type.size * t.dtype.nbits // 8)


def _tensors_in(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _tensors_in(v)


def tensors_of(inst: I.Instruction) -> Iterator[Tensor]:
    """Every tensor an instruction names (its output and any field holding tensors)."""
    for name in inst.__dataclass_fields__:
        yield from _tensors_in(getattr(inst, name))


def shared_roots(program: Program | Stmt) -> dict[str, str]:
    """Shared tensor name -> the name of the ``shared_tensor`` it lives in (itself for an
    allocation; a slice's source's root for a ``slice_shared`` output)."""
    roots: dict[str, str] = {}
    for inst in instructions(program):
        if isinstance(inst, I.AllocateSharedInst):
            roots[inst.output.name] = inst.output.name
        elif isinstance(inst, I.SliceSharedInst):
            roots[inst.output.name] = roots.get(inst.src.name, inst.src.name)
    return roots


# ----- program points -------------------------------------------------------------------------

@dataclass
class _Loop:
    start: int          # first program point inside the loop
    end: int = -1       # last program point inside the loop
    parent: Optional["_Loop"] = None


@dataclass
class _Points:
    """Instructions numbered in program order, with the loops around each one."""

    insts: list[I.Instruction] = field(default_factory=list)
    loops: list[Optional[_Loop]] = field(default_factory=list)  # innermost loop of each point

    @classmethod
    def of(cls, body: Stmt) -> "_Points":
        points = cls()
        points._visit(body, None)
        return points

    def _visit(self, s: Stmt, loop: Optional[_Loop]) -> None:
        if isinstance(s, SeqStmt):
            for x in s.stmts:
                self._visit(x, loop)
        elif isinstance(s, I.Instruction):
            self.insts.append(s)
            self.loops.append(loop)
        elif isinstance(s, (ForStmt, WhileStmt)):
            inner = _Loop(len(self.insts), parent=loop)
            self._visit(s.body, inner)
            inner.end = len(self.insts) - 1
        elif isinstance(s, IfStmt):
            self._visit(s.then_body, loop)
            if s.else_body is not None:
                self._visit(s.else_body, loop)

    def enclosing(self, point: int) -> Iterator[_Loop]:
        """The loops around ``point``, innermost first."""
        loop = self.loops[point]
        while loop is not None:
            yield loop
            loop = loop.parent

    @property
    def last(self) -> int:
        return len(self.insts) - 1


def _in(loop: _Loop, point: int) -> bool:
    return loop.start <= point <= loop.end


@dataclass(frozen=True)
class SharedTensorInfo:
    """One planned shared tensor: its allocation, byte size, live range (program points, both
    ends included) and byte offset."""

    tensor: Tensor
    nbytes: int
    start: int
    end: int
    offset: int = -1

    def overlaps_in_time(self, other: "SharedTensorInfo") -> bool:
        return self.start <= other.end and other.start <= self.end

    def overlaps_in_bytes(self, other: "SharedTensorInfo") -> bool:
        return self.offset < other.offset + other.nbytes \
            and other.offset < self.offset + self.nbytes

    def describe(self) -> str:
        t = self.tensor
        layout = f" as {t.layout}" if t.layout is not None else ""
        shape = ", ".join(map(str, t.shape))
        return (f"%{t.name} ({t.dtype.name}[{shape}]{layout}: {self.nbytes} bytes at offset "
                f"{self.offset})")


@dataclass
class SharedMemoryPlan:
    """The result of planning: every shared tensor's info (by name, in program order), the arena's
    size in bytes and whether it needs the dynamic shared-memory opt-in."""

    tensors: dict[str, SharedTensorInfo]
    total_bytes: int
    alignment: int

    @property
    def offsets(self) -> dict[str, int]:
        return {name: info.offset for name, info in self.tensors.items()}

    @property
    def needs_opt_in(self) -> bool:
        return self.total_bytes > STATIC_SHARED_MEMORY_LIMIT


def live_ranges(program: Program) -> dict[str, SharedTensorInfo]:
    """Every ``shared_tensor``'s size and live range (see the module docstring), unplaced."""
    points = _Points.of(program.body)
    roots = shared_roots(program.body)
    ranges: dict[str, list[int]] = {}
    allocs: dict[str, Tensor] = {}
    allocated: dict[str, int] = {}  # the program point of each shared_tensor

    def extend(root: str, lo: int, hi: int) -> None:
        r = ranges[root]
        r[0], r[1] = min(r[0], lo), max(r[1], hi)

    waits = [p for p, inst in enumerate(points.insts) if isinstance(inst, I.CopyAsyncWaitGroupInst)]

    def next_wait(point: int) -> tuple[int, int]:
        """The live range a copy_async at ``point`` needs: up to the next wait in its loop, or
        the whole loop and on outwards when the loop has none after it."""
        lo, pos = point, point
        for loop in points.enclosing(point):
            found = [w for w in waits if pos < w <= loop.end]
            if found:
                return lo, found[0]
            lo, pos = min(lo, loop.start), loop.end
        found = [w for w in waits if w > pos]
        return lo, found[0] if found else points.last

    for p, inst in enumerate(points.insts):
        if isinstance(inst, I.AllocateSharedInst):
            name = inst.output.name
            allocs[name] = inst.output
            allocated[name] = p
            ranges[name] = [p, p]
            continue
        for t in tensors_of(inst):
            if t.scope != SHARED:
                continue
            root = roots.get(t.name)
            if root is None or root not in ranges:
                continue
            extend(root, p, p)
            for loop in points.enclosing(p):
                if not _in(loop, allocated[root]):
                    extend(root, loop.start, loop.end)
            if isinstance(inst, I.CopyAsyncInst) and t is inst.dst:
                extend(root, *next_wait(p))
    return {name: SharedTensorInfo(allocs[name], shared_tensor_nbytes(allocs[name]), lo, hi)
            for name, (lo, hi) in ranges.items()}


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def place(infos: dict[str, SharedTensorInfo], alignment: int) -> dict[str, SharedTensorInfo]:
    """First fit, largest first: each tensor takes the lowest ``alignment``-aligned offset that
    overlaps no tensor placed before it whose live range overlaps its own."""
    order = sorted(infos.values(), key=lambda x: (-x.nbytes, x.start, x.tensor.name))
    placed: list[SharedTensorInfo] = []
    for info in order:
        busy = sorted((o.offset, o.offset + o.nbytes) for o in placed if o.overlaps_in_time(info))
        offset = 0
        for lo, hi in busy:
            if offset + info.nbytes <= lo:
                break
            offset = max(offset, _align(hi, alignment))
        placed.append(replace(info, offset=offset))
    by_name = {x.tensor.name: x for x in placed}
    return {name: by_name[name] for name in infos}


def _check_alignment(alignment: int) -> None:
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 16 \
            or alignment & (alignment - 1):
        raise CompilationError(f"shared-memory alignment must be a power of two of at least 16 "
                               f"bytes, got {alignment}")


def plan_shared_memory_of(program: Program, arch: str = DEFAULT_ARCH,
                          alignment: int = DEFAULT_ALIGNMENT) -> SharedMemoryPlan:
    """The plan for ``program`` (without changing it). Raises ``CompilationError`` when the arena
    is larger than ``arch`` allows per block."""
    _check_alignment(alignment)
    infos = place(live_ranges(program), alignment)
    total = max((x.offset + x.nbytes for x in infos.values()), default=0)
    plan = SharedMemoryPlan(infos, total, alignment)
    limit = max_shared_memory_bytes(arch)
    if total > limit:
        listed = "\n    ".join(x.describe() for x in sorted(infos.values(), key=lambda x: x.offset))
        raise CompilationError(
            f"kernel {program.name} needs {total} bytes of shared memory, more than the {limit} "
            f"bytes ({limit // KB} KB) one block may use on {arch}; its shared tensors (those live "
            f"at the same time cannot share bytes):\n    {listed}\nuse smaller tiles or fewer "
            f"pipeline stages, or end lifetimes earlier (free_shared) so that tensors can share "
            f"memory")
    if plan.needs_opt_in:
        logger.info("kernel %s uses %d bytes of shared memory (more than 48 KB): it needs the "
                    "dynamic shared-memory opt-in", program.name, total)
    return plan


class _RecordOffsets(IRRewriter):
    def __init__(self, offsets: dict[str, int]):
        self.offsets = offsets

    def visit_AllocateSharedInst(self, inst: I.AllocateSharedInst) -> Stmt:
        offset = self.offsets[inst.output.name]
        return inst if inst.offset == offset else replace(inst, offset=offset)


class PlanSharedMemory(Pass):
    """Records every shared tensor's byte offset in ``AllocateSharedInst.offset`` (see the module
    docstring for the rules). After ``run``, ``plan`` is the SharedMemoryPlan and ``total_bytes``
    the arena's size."""

    name = "plan-shared-memory"

    def __init__(self, arch: str = DEFAULT_ARCH, alignment: int = DEFAULT_ALIGNMENT):
        _check_alignment(alignment)
        max_shared_memory_bytes(arch)
        self.arch = arch
        self.alignment = alignment
        self.plan: Optional[SharedMemoryPlan] = None

    @property
    def total_bytes(self) -> int:
        if self.plan is None:
            raise CompilationError("PlanSharedMemory has not run yet")
        return self.plan.total_bytes

    def run(self, program: Program) -> Program:
        self.plan = plan_shared_memory_of(program, self.arch, self.alignment)
        return _RecordOffsets(self.plan.offsets)(program)

    def __repr__(self) -> str:
        return f"PlanSharedMemory(arch={self.arch!r}, alignment={self.alignment})"


def plan_shared_memory(program: Program, arch: str = DEFAULT_ARCH,
                       alignment: int = DEFAULT_ALIGNMENT) -> Program:
    """``program`` with every shared tensor's offset recorded (``PlanSharedMemory``)."""
    return PlanSharedMemory(arch, alignment).run(program)


def shared_memory_bytes(program: Program) -> int:
    """The size in bytes of a planned program's dynamic shared-memory arena: max(offset + size)
    over its ``shared_tensor``s (0 when it has none). Raises ``CompilationError`` when a shared
    tensor has no offset (the program was not planned)."""
    total = 0
    for inst in instructions(program):
        if isinstance(inst, I.AllocateSharedInst):
            if inst.offset is None:
                raise CompilationError(f"shared tensor %{inst.output.name} of kernel "
                                       f"{program.name} has no offset; run PlanSharedMemory first")
            total = max(total, inst.offset + shared_tensor_nbytes(inst.output))
    return total


def needs_shared_memory_opt_in(program: Program) -> bool:
    """Whether a planned program uses more than 48 KB of shared memory, which a launch can only
    get after raising ``cudaFuncAttributeMaxDynamicSharedMemorySize`` to the arena's size."""
    return shared_memory_bytes(program) > STATIC_SHARED_MEMORY_LIMIT
