"""Barrier insertion: a ``sync()`` wherever threads of a block may race on shared memory, and only
there.

Rules (``InsertBarriers``):

- What instructions do to shared memory (``shared_accesses``): ``load_shared`` reads its source,
  ``store_shared`` and ``copy_async`` write their destination; ``shared_tensor``, ``slice_shared``
  and ``free_shared`` touch no data. An instruction class without a registered rule
  (``shared_effects``) reads its shared operands, writes a shared operand named ``dst`` and a shared
  output.
- Where: a tensor stands for the ``shared_tensor`` it lives in (a slice aliases its source, whole).
  Two accesses alias when they are in one ``shared_tensor`` or, when the program is planned
  (``PlanSharedMemory`` recorded offsets), when their tensors' arena bytes overlap: tensors that
  reuse the same bytes alias.
- Hazards: two accesses by different instructions to aliasing memory, at least one a write (RAW,
  WAR, WAW), with no barrier between them on some path. An instruction is not in conflict with
  itself (in a loop, each thread touches the same elements each time round), except one with a
  barrier of its own (``BARRIER`` among its accesses: a ``convert_layout`` through shared memory
  writes its scratch, synchronises, reads what other threads wrote): round a loop, its next write
  races with its last read. The paths are the
  program's control flow: branches join, loops have their back edge (end of the body, or a
  ``continue``, to the start of the body) and may run zero times, ``break`` jumps to the exit.
- Barriers: an existing ``sync()`` clears every completed access before it. A barrier is inserted
  immediately before an instruction that would complete a hazard (as late as possible, which
  covers the most hazards with one barrier), except for hazards that only come round a loop's back
  edge (every earlier access lies after the instruction, in the loop): their barrier goes at the
  end of the innermost loop body holding them (where a hand-written pipeline has it; it also
  orders the loop's last accesses before what follows the loop). The analysis starts over after
  each barrier it adds; at the end, every inserted barrier that the others make unnecessary is
  dropped again, so removing any inserted barrier leaves a race. Existing barriers are kept.
- Asynchronous copies: a ``copy_async``'s write is in flight until a ``copy_async_wait_group(n)``
  finds its group (closed by ``copy_async_commit_group``) older than the ``n`` most recent ones; a
  barrier does not complete it. Reading or overwriting a tensor that a ``copy_async`` into that very
  tensor (or a slice of it at the same constant offsets) may still be writing is a
  ``CompilationError`` naming both instructions: a barrier cannot fix it. (Slices at offsets that
  are not constant may or may not alias; the check is left to the programmer there.)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional

from tilus.errors import CompilationError
from tilus.ir import inst as I
from tilus.ir.expr import Const
from tilus.ir.functor import instructions
from tilus.ir.printer import format_stmt_head
from tilus.ir.program import Program
from tilus.ir.stmt import BreakStmt, ContinueStmt, ForStmt, IfStmt, SeqStmt, Stmt, WhileStmt, seq
from tilus.ir.types import SHARED, Tensor
from tilus.registry import Registry
from tilus.transforms.base import Pass
from tilus.transforms.shared_memory import shared_tensor_nbytes

READ = "read"
WRITE = "write"
BARRIER = "barrier"   # the instruction itself synchronises the block between its accesses


@dataclass(frozen=True)
class SharedAccess:
    """An instruction reads or writes (``kind``) the shared ``tensor`` (named as the instruction
    names it); kind BARRIER (no tensor): the instruction's own barrier between its accesses."""

    tensor: Optional[Tensor]
    kind: str


_EFFECTS: Registry[Callable[[I.Instruction], list[SharedAccess]]] = Registry("shared-memory effect")


def shared_effects(cls: type) -> Callable:
    """Registers ``fn(inst) -> list[SharedAccess]`` as what instructions of ``cls`` do to shared
    memory (a decorator; a class registered twice raises)."""
    return _EFFECTS.register(cls)


def _no_access(inst: I.Instruction) -> list[SharedAccess]:
    return []


_EFFECTS.add_all((cls, _no_access) for cls in (I.AllocateSharedInst, I.SliceSharedInst,
                                                I.FreeSharedInst))


@shared_effects(I.LoadSharedInst)
def _load_shared(inst: I.LoadSharedInst) -> list[SharedAccess]:
    return [SharedAccess(inst.src, READ)]


@shared_effects(I.StoreSharedInst)
def _store_shared(inst: I.StoreSharedInst) -> list[SharedAccess]:
    return [SharedAccess(inst.dst, WRITE)]


@shared_effects(I.CopyAsyncInst)
def _copy_async(inst: I.CopyAsyncInst) -> list[SharedAccess]:
    return [SharedAccess(inst.dst, WRITE)]


@shared_effects(I.ConvertLayoutInst)
def _convert_layout(inst: I.ConvertLayoutInst) -> list[SharedAccess]:
    """Through shared memory: every thread writes the scratch, the conversion's own barrier, every
    thread reads what others wrote (so, unlike other instructions, it races with itself round a
    loop: the next write against this read)."""
    if inst.scratch is None:
        return []
    return [SharedAccess(inst.scratch, WRITE), SharedAccess(None, BARRIER),
            SharedAccess(inst.scratch, READ)]


def shared_accesses(inst: I.Instruction) -> list[SharedAccess]:
    """What ``inst`` does to shared memory (see the module docstring)."""
    rule = _EFFECTS.get(type(inst))
    if rule is not None:
        return rule(inst)
    out = []
    for name in inst.OPERANDS:
        value = getattr(inst, name)
        if isinstance(value, Tensor) and value.scope == SHARED:
            out.append(SharedAccess(value, WRITE if name == "dst" else READ))
    output = getattr(inst, "output", None) if inst.HAS_OUTPUT else None
    if isinstance(output, Tensor) and output.scope == SHARED:
        out.append(SharedAccess(output, WRITE))
    return out


# ----- where accesses land --------------------------------------------------------------------

WHOLE = ("whole",)


@dataclass(frozen=True)
class _Region:
    """The memory an access may touch: its ``shared_tensor`` (``root``), that tensor's arena bytes
    [lo, hi) when planned, and ``exact``: which part for sure (WHOLE, a slice at constant offsets),
    or None when that depends on run-time values."""

    root: str
    lo: Optional[int]
    hi: Optional[int]
    exact: Optional[tuple]

    def may_alias(self, other: "_Region") -> bool:
        if self.root == other.root:
            return True
        return self.lo is not None and other.lo is not None and self.hi is not None \
            and other.hi is not None and self.lo < other.hi and other.lo < self.hi

    def must_alias(self, other: "_Region") -> bool:
        if self.root != other.root or self.exact is None or other.exact is None:
            return False
        return self.exact == other.exact or WHOLE in (self.exact, other.exact)


def _regions(program: Program) -> dict[str, _Region]:
    """Shared tensor name -> its region."""
    out: dict[str, _Region] = {}
    for inst in instructions(program):
        if isinstance(inst, I.AllocateSharedInst):
            t = inst.output
            lo = inst.offset
            hi = None if lo is None else lo + shared_tensor_nbytes(t)
            out[t.name] = _Region(t.name, lo, hi, WHOLE)
        elif isinstance(inst, I.SliceSharedInst):
            src = out.get(inst.src.name) or _Region(inst.src.name, None, None, None)
            exact = None
            if src.exact == WHOLE and all(isinstance(o, Const) for o in inst.offsets):
                exact = ("slice", tuple(o.value for o in inst.offsets if isinstance(o, Const)),
                         tuple(inst.output.shape),
                         inst.dims)
            out[inst.output.name] = _Region(src.root, src.lo, src.hi, exact)
    return out


# ----- the program as numbered nodes ----------------------------------------------------------

@dataclass
class _Node:
    """A statement with its instructions numbered in program order: ``point`` for an instruction;
    ``first``..``last`` the points inside; ``nid`` numbers every node."""

    stmt: Stmt
    nid: int
    children: tuple["_Node", ...] = ()
    point: int = -1
    first: int = 0
    last: int = -1


class _Numbered:
    """The program as a tree of _Nodes, its instructions by point, and for each point the loops
    around it (innermost first)."""

    def __init__(self, program: Program):
        self.insts: list[I.Instruction] = []
        self.inst_nodes: list[_Node] = []
        self.loops_of: list[tuple[_Node, ...]] = []
        self.nodes = 0
        self.by_nid: list[_Node] = []
        self._loops: list[_Node] = []
        self.root = self._number(program.body)
        self.regions = _regions(program)

    def _number(self, s: Stmt) -> _Node:
        node = _Node(s, self.nodes, first=len(self.insts))
        self.nodes += 1
        self.by_nid.append(node)
        if isinstance(s, I.Instruction):
            node.point = len(self.insts)
            self.insts.append(s)
            self.inst_nodes.append(node)
            self.loops_of.append(tuple(reversed(self._loops)))
        elif isinstance(s, (ForStmt, WhileStmt)):
            self._loops.append(node)
            node.children = (self._number(s.body),)
            self._loops.pop()
        else:
            node.children = tuple(self._number(c) for c in _child_stmts(s))
        node.last = len(self.insts) - 1
        return node


def _child_stmts(s: Stmt) -> list[Stmt]:
    if isinstance(s, SeqStmt):
        return list(s.stmts)
    if isinstance(s, IfStmt):
        return [s.then_body] + ([s.else_body] if s.else_body is not None else [])
    return []


# Where a barrier goes: ("before", nid) before the statement numbered nid, or ("end", nid) at
# the end of the body of the loop numbered nid (before its back edge).
_Key = tuple


def _rebuild(node: _Node, barriers: set[_Key]) -> Stmt:
    s = node.stmt
    if isinstance(s, SeqStmt):
        out = seq([_rebuild(c, barriers) for c in node.children])
    elif isinstance(s, (ForStmt, WhileStmt)):
        body = _rebuild(node.children[0], barriers)
        if ("end", node.nid) in barriers:
            body = seq([body, I.SyncInst()])
        out = s if body is s.body else replace(s, body=body)
    elif isinstance(s, IfStmt):
        then = _rebuild(node.children[0], barriers)
        other = _rebuild(node.children[1], barriers) if len(node.children) > 1 else None
        out = s if then is s.then_body and other is s.else_body else \
            replace(s, then_body=then, else_body=other)
    else:
        out = s
    return seq([I.SyncInst(), out]) if ("before", node.nid) in barriers else out


# ----- the analysis ---------------------------------------------------------------------------

# A pending access: (point, kind, region, age); age None: completed (a barrier orders it),
# 0: a copy_async not yet committed, k >= 1: in the k-th most recent committed group.
_State = Optional[frozenset]  # None: unreachable


def _join(a: _State, b: _State) -> _State:
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def _in_flight(state: frozenset) -> frozenset:
    """What a barrier leaves pending: the copies still in flight."""
    return frozenset(e for e in state if e[3] is not None)


class _Restart(Exception):
    """A barrier was added: the analysis starts over with it."""


class _Analysis:
    """The data-flow analysis over a numbered program with the barriers ``barriers``. With
    ``insert`` it adds a barrier for the first hazard it meets and raises _Restart; otherwise it
    records every hazard (earlier point, later point) in ``hazards``."""

    def __init__(self, prog: _Numbered, barriers: set[_Key], insert: bool):
        self.prog = prog
        self.barriers = barriers
        self.insert = insert
        self.hazards: list[tuple[int, int]] = []
        self.breaks: list[_State] = []
        self.continues: list[_State] = []
        waits = [i.n for i in prog.insts if isinstance(i, I.CopyAsyncWaitGroupInst)]
        self.max_age = max(waits, default=0) + 1
        self.accesses = [[(a.kind, None if a.tensor is None else self.region(a.tensor), a.tensor)
                          for a in shared_accesses(i)] for i in prog.insts]
        self.self_racing = [any(kind == BARRIER for kind, _, _ in acc) for acc in self.accesses]

    def region(self, t: Tensor) -> _Region:
        return self.prog.regions.get(t.name) or _Region(t.name, None, None, None)

    def run(self) -> None:
        self.stmt(self.prog.root, frozenset())

    def stmt(self, node: _Node, state: _State) -> _State:
        if state is None:
            return None  # unreachable (after a break or continue): nothing here runs
        if ("before", node.nid) in self.barriers:
            state = _in_flight(state)
        s = node.stmt
        if isinstance(s, SeqStmt):
            for c in node.children:
                state = self.stmt(c, state)
            return state
        if isinstance(s, I.Instruction):
            return self.instruction(node.point, s, state)
        if isinstance(s, (ForStmt, WhileStmt)):
            return self.loop(node, state)
        if isinstance(s, IfStmt):
            then = self.stmt(node.children[0], state)
            other = self.stmt(node.children[1], state) if len(node.children) > 1 else state
            return _join(then, other)
        if isinstance(s, BreakStmt):
            self.breaks[-1] = _join(self.breaks[-1], state)
            return None
        if isinstance(s, ContinueStmt):
            self.continues[-1] = _join(self.continues[-1], state)
            return None
        return state

    def loop(self, node: _Node, state: frozenset) -> _State:
        """The state at the loop's head is the join of the state before it and at its back edges
        (a fixpoint); the loop leaves from its head (possibly before any iteration) or a break."""
        head: _State = state
        while True:
            self.breaks.append(None)
            self.continues.append(None)
            end = self.stmt(node.children[0], head)
            if end is not None and ("end", node.nid) in self.barriers:
                end = _in_flight(end)
            back = _join(end, self.continues.pop())
            exits = self.breaks.pop()
            new_head = _join(head, back)
            if new_head == head:
                return _join(head, exits)
            head = new_head

    def instruction(self, p: int, inst: I.Instruction, state: frozenset) -> frozenset:
        if isinstance(inst, I.SyncInst):
            return _in_flight(state)
        if isinstance(inst, I.CopyAsyncCommitGroupInst):
            return frozenset((q, k, r, age if age is None else min(age + 1, self.max_age))
                             for q, k, r, age in state)
        if isinstance(inst, I.CopyAsyncWaitGroupInst):
            return frozenset((q, k, r, None if age is not None and age > inst.n else age)
                             for q, k, r, age in state)
        accesses = self.accesses[p]
        if not accesses:
            return state
        if self.self_racing[p]:       # a barrier inside: the accesses before it, then after it
            cut = next(i for i, a in enumerate(accesses) if a[0] == BARRIER)
            state = self.accesses_at(p, inst, accesses[:cut], state)
            return self.accesses_at(p, inst, accesses[cut + 1:], _in_flight(state))
        return self.accesses_at(p, inst, accesses, state)

    def accesses_at(self, p: int, inst: I.Instruction, accesses: list, state: frozenset) -> frozenset:
        """``state`` after the accesses of the instruction at ``p`` (a barrier added for the
        first hazard they complete, when inserting)."""
        conflicts = set()
        for kind, region, tensor in accesses:
            for q, other_kind, other, age in state:
                if (q == p and not self.self_racing[p]) or not region.may_alias(other):
                    continue
                if age is not None:
                    if region.must_alias(other):
                        self.in_flight_error(q, p, tensor)
                    continue
                if WRITE in (kind, other_kind):
                    conflicts.add(q)
        if conflicts:
            if self.insert:
                self.barriers.add(self.placement(p, conflicts))
                raise _Restart
            self.hazards.extend((q, p) for q in sorted(conflicts))
        is_copy = isinstance(inst, I.CopyAsyncInst)
        return state | {(p, kind, region, 0 if is_copy else None) for kind, region, _ in accesses}

    def placement(self, p: int, conflicts: set[int]) -> _Key:
        """Where the barrier for the hazards between ``conflicts`` and ``p`` goes: for hazards
        only across a loop's back edge (every earlier access after ``p`` in the loop), at the end of
        the innermost loop body holding them all, unless a loop around ``p`` already ends with
        one (then one barrier before ``p`` serves both); otherwise just before ``p``."""
        before = ("before", self.prog.inst_nodes[p].nid)
        if min(conflicts) < p:
            return before
        loops = self.prog.loops_of[p]
        if any(("end", loop.nid) in self.barriers for loop in loops):
            return before
        for loop in loops:
            if all(loop.first <= q <= loop.last for q in conflicts):
                return ("end", loop.nid)
        return before

    def in_flight_error(self, copy: int, later: int, tensor: Tensor) -> None:
        a, b = self.prog.insts[copy], self.prog.insts[later]
        what = "overwrites" if any(x[0] == WRITE for x in self.accesses[later]) else "reads"
        raise CompilationError(
            f"`{_head(b)}` {what} %{tensor.name} while `{_head(a)}` may still be copying into it: "
            f"the data of a copy_async is there only after copy_async_commit_group() and a "
            f"copy_async_wait_group(n) that leaves its group done (n smaller than the number of "
            f"groups committed after it); a barrier does not wait for it")


def _head(inst: I.Instruction) -> str:
    out = getattr(inst, "output", None) if inst.HAS_OUTPUT else None
    return format_stmt_head(inst, {out.name} if isinstance(out, Tensor) else ())


def _hazards(prog: _Numbered, barriers: Iterable[_Key]) -> list[tuple[int, int]]:
    analysis = _Analysis(prog, set(barriers), insert=False)
    analysis.run()
    return list(dict.fromkeys(analysis.hazards))


def shared_memory_hazards(program: Program) -> list[tuple[I.Instruction, I.Instruction]]:
    """The pairs (earlier, later) of instructions that race on shared memory in ``program`` as it
    is (no barrier between them on some path); empty when its barriers suffice. Raises
    ``CompilationError`` for a read of data a copy_async may still be writing."""
    prog = _Numbered(program)
    return [(prog.insts[a], prog.insts[b]) for a, b in _hazards(prog, ())]


def _plan_barriers(prog: _Numbered) -> set[_Key]:
    barriers: set[_Key] = set()
    while True:
        try:
            _Analysis(prog, barriers, insert=True).run()
            break
        except _Restart:
            continue
    # drop every barrier the others make unnecessary (the latest first)
    def position(key: _Key) -> float:
        node = prog.by_nid[key[1]]
        return node.last + 0.5 if key[0] == "end" else node.first - 0.5

    order = sorted(barriers, key=lambda k: (position(k), k), reverse=True)
    for key in order:
        if not _hazards(prog, barriers - {key}):
            barriers.discard(key)
    return barriers


class InsertBarriers(Pass):
    """Inserts ``sync()`` before every instruction that would otherwise race on shared memory
    with an earlier one (see the module docstring). After ``run``, ``inserted`` is the number of
    barriers it added."""

    name = "insert-barriers"

    def __init__(self) -> None:
        self.inserted = 0

    def run(self, program: Program) -> Program:
        prog = _Numbered(program)
        barriers = _plan_barriers(prog)
        self.inserted = len(barriers)
        if not barriers:
            return program
        return replace(program, body=_rebuild(prog.root, barriers))


def insert_barriers(program: Program) -> Program:
    """``program`` with the barriers its shared memory accesses need (``InsertBarriers``)."""
    return InsertBarriers().run(program)
