"""Test oracles for shared-memory planning and barriers, independent of the passes' analyses:
random execution traces of a program (loops run 0 to 3 times, branches and break/continue taken
at random), checked instruction by instruction.

- ``lifetime_clashes(program, trace)``: pairs of shared tensor instances that are live at the same
  time in the trace (from their allocation to their last use) but share bytes.
- ``races(program, trace)``: pairs of instructions that access aliasing shared memory (same
  ``shared_tensor``, or overlapping planned bytes), at least one writing, with no ``sync()`` between
  them in the trace (a convert_layout through shared memory has a barrier of its own between
  its write and its read, and races with itself round a loop). A copy_async counts as a write
  where it is issued (the tests only use traces where every copy is waited for right after it is
  committed). A slice whose offsets evaluate on
  the trace (loop variables take their values) covers only its box of the source (for dtypes of
  whole bytes); otherwise it stands for its whole source.
"""
from __future__ import annotations

import dataclasses
import random

from tilus.ir import inst as I
from tilus.ir.expr import evaluate
from tilus.ir.program import Program
from tilus.ir.stmt import BreakStmt, ContinueStmt, ForStmt, IfStmt, SeqStmt, WhileStmt
from tilus.ir.types import Tensor
from tilus.transforms.shared_memory import shared_tensor_nbytes


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _value(e, env):
    try:
        return int(evaluate(e, env))
    except Exception:
        return None


def random_trace(program: Program, rng: random.Random, max_iterations: int = 3):
    """A list of (instruction, its id in the program, the box a slice_shared covers or None)
    along one random path."""
    out = []
    env = {}

    def box(inst):
        if not isinstance(inst, I.SliceSharedInst) or inst.output.dtype.nbits % 8:
            return None
        offsets = [_value(o, env) for o in inst.offsets]
        if any(o is None for o in offsets):
            return None
        dims = I.tile_dims(len(offsets), inst.output.type.rank, inst.dims)
        extent = [1] * len(offsets)
        for d, n in zip(dims, inst.output.shape):
            extent[d] = n
        return tuple((o, o + n) for o, n in zip(offsets, extent))

    def run(s):
        if isinstance(s, SeqStmt):
            for x in s.stmts:
                run(x)
        elif isinstance(s, I.Instruction):
            out.append((s, id(s), box(s)))
        elif isinstance(s, (ForStmt, WhileStmt)):
            start = _value(s.start, env) if isinstance(s, ForStmt) else None
            step = _value(s.step, env) if isinstance(s, ForStmt) else None
            for i in range(rng.randint(0, max_iterations)):
                if start is not None and step is not None:
                    env[s.var] = start + i * step
                try:
                    run(s.body)
                except _Continue:
                    continue
                except _Break:
                    break
        elif isinstance(s, IfStmt):
            if rng.random() < 0.5:
                run(s.then_body)
            elif s.else_body is not None:
                run(s.else_body)
        elif isinstance(s, BreakStmt):
            raise _Break
        elif isinstance(s, ContinueStmt):
            raise _Continue

    run(program.body)
    return out


def _tensors(inst):
    for f in dataclasses.fields(inst):
        v = getattr(inst, f.name)
        for x in (v if isinstance(v, tuple) else (v,)):
            if isinstance(x, Tensor) and x.scope == "shared":
                yield x


def _memory(program: Program):
    """shared tensor name -> (root name, byte range or None)."""
    out = {}

    def visit(s):
        if isinstance(s, SeqStmt):
            for x in s.stmts:
                visit(x)
        elif isinstance(s, (ForStmt, WhileStmt)):
            visit(s.body)
        elif isinstance(s, IfStmt):
            visit(s.then_body)
            if s.else_body is not None:
                visit(s.else_body)
        elif isinstance(s, I.AllocateSharedInst):
            t = s.output
            span = None if s.offset is None else (s.offset, s.offset + shared_tensor_nbytes(t))
            out[t.name] = (t.name, span)
        elif isinstance(s, I.SliceSharedInst):
            out[s.output.name] = out[s.src.name]

    visit(program.body)
    return out


def _alias(a, b) -> bool:
    (ra, sa, ba), (rb, sb, bb) = a, b
    if ra == rb:
        if ba is None or bb is None:
            return True
        return all(x0 < y1 and y0 < x1 for (x0, x1), (y0, y1) in zip(ba, bb))
    return sa is not None and sb is not None and sa[0] < sb[1] and sb[0] < sa[1]


def lifetime_clashes(program: Program, trace):
    memory = _memory(program)
    instances = []      # [name, start, end, span]
    current = {}
    for pos, (inst, _, _) in enumerate(trace):
        if isinstance(inst, I.AllocateSharedInst):
            current[inst.output.name] = [inst.output.name, pos, pos, memory[inst.output.name][1]]
            instances.append(current[inst.output.name])
            continue
        for t in _tensors(inst):
            root = memory[t.name][0]
            if root in current:
                current[root][2] = pos
    clashes = []
    for i, a in enumerate(instances):
        for b in instances[i + 1:]:
            live_together = a[1] <= b[2] and b[1] <= a[2]
            if live_together and a[3][0] < b[3][1] and b[3][0] < a[3][1]:
                clashes.append((a[0], b[0]))
    return clashes


def _accesses(inst):
    """(kind, tensor) in order; kind "sync": the instruction's own barrier (a convert_layout
    through shared memory: all threads write the scratch, synchronise, read what others wrote)."""
    if isinstance(inst, I.LoadSharedInst):
        return [("r", inst.src)]
    if isinstance(inst, (I.StoreSharedInst, I.CopyAsyncInst)):
        return [("w", inst.dst)]
    if isinstance(inst, I.ConvertLayoutInst) and inst.scratch is not None:
        return [("w", inst.scratch), ("sync", None), ("r", inst.scratch)]
    return []


def races(program: Program, trace):
    memory = _memory(program)
    boxes = {}
    pending = []
    found = []
    for inst, ident, box in trace:
        if isinstance(inst, I.SyncInst):
            pending = []
            continue
        if isinstance(inst, I.SliceSharedInst):
            boxes[inst.output.name] = box if inst.src.name == memory[inst.src.name][0] else None
        accesses = _accesses(inst)
        crosses = any(kind == "sync" for kind, _ in accesses)   # threads read others' writes
        for kind, t in accesses:
            if kind == "sync":
                pending = []
                continue
            where = (*memory[t.name], boxes.get(t.name))
            for other_kind, other_where, other_inst, other_id in pending:
                if (other_id != ident or crosses) and "w" in (kind, other_kind) \
                        and _alias(where, other_where):
                    found.append((other_inst, inst))
            pending.append((kind, where, inst, ident))
    return found
