"""A static cost of a kernel's main loop, read from its SASS (no GPU needed).

The main loop is the back edge whose body holds the most tensor-core instructions (HMMA/IMMA).
One steady-state iteration is the path from the loop head to its back edge that moves the most
bytes from global memory (cp.async, LDG) and, among those, issues the fewest instructions: the
fast paths of a tile in bounds, not the per-element fallbacks of a tail. Every instruction on
that path counts once (predicated ones too: they issue).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from tilus.errors import CompilationError

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_TARGET = re.compile(r"\bBRA(?:\.\S+)?\s+(?:!?U?P\d+,\s*)?(0x[0-9a-f]+)")
_WIDTH = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}

# Instruction classes of the cost table (opcode -> class); anything else is "other".
CLASSES = {
    "HMMA": "mma", "IMMA": "mma",
    "LOP3": "int", "PRMT": "int", "SHF": "int", "IADD3": "int", "IMAD": "int", "LEA": "int",
    "VIADD": "int", "IABS": "int", "SEL": "int", "ISETP": "int", "VIMNMX": "int", "MOV": "int",
    "PLOP3": "int", "P2R": "int", "R2P": "int", "SGXT": "int", "BMSK": "int", "FLO": "int",
    "HFMA2": "half", "HADD2": "half", "HMUL2": "half", "HMNMX2": "half",
    "FFMA": "float", "FADD": "float", "FMUL": "float", "FMNMX": "float", "FSETP": "float",
    "I2F": "convert", "F2F": "convert", "F2I": "convert", "F2FP": "convert", "I2FP": "convert",
    "LDS": "shared", "STS": "shared", "LDSM": "shared",
    "LDG": "global", "STG": "global", "LDGSTS": "global", "LDGDEPBAR": "sync", "DEPBAR": "sync",
    "BAR": "sync", "BRA": "control", "BSSY": "control", "BSYNC": "control", "WARPSYNC": "control",
    "NOP": "control",
}


@dataclass
class Instr:
    addr: int
    text: str

    @property
    def opcode(self) -> str:
        return re.sub(r"^@!?U?P\w+\s+", "", self.text).split()[0]

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def target(self) -> int | None:
        m = _TARGET.search(self.text)
        return int(m.group(1), 16) if m else None

    @property
    def conditional(self) -> bool:
        return self.text.startswith("@") or bool(re.search(r"BRA\s+!?U?P\d+,", self.text))

    def global_bytes(self) -> int:
        """Bytes this instruction reads from global memory (cp.async and loads)."""
        if self.base not in ("LDG", "LDGSTS"):
            return 0
        parts = self.opcode.split(".")
        return next((_WIDTH[p] for p in parts if p in _WIDTH), 4)


@dataclass
class LoopCost:
    """One steady-state iteration of the main loop: instructions by opcode and class."""

    instructions: int
    by_opcode: Counter = field(default_factory=Counter)
    by_class: Counter = field(default_factory=Counter)
    global_bytes: int = 0
    mma: int = 0
    path: list = field(default_factory=list)       # the instructions' text, in order


def parse(sass: str) -> list[Instr]:
    """The instructions of SASS text (cuobjdump/nvdisasm), in address order."""
    out = [Instr(int(m.group(1), 16), m.group(2).strip()) for m in _LINE.finditer(sass)]
    if not out:
        raise CompilationError("no SASS instructions found")
    return out


def _blocks(body: list[Instr], start: int, end: int) -> tuple[list[int], dict[int, list[Instr]]]:
    leaders = {start}
    for i, ins in enumerate(body):
        t = ins.target
        if t is not None and start <= t <= end:
            leaders.add(t)
        if (t is not None or ins.base == "EXIT") and i + 1 < len(body):
            leaders.add(body[i + 1].addr)
    heads = sorted(leaders)
    blocks: dict[int, list[Instr]] = {h: [] for h in heads}
    cur = heads[0]
    for ins in body:
        if ins.addr in blocks:
            cur = ins.addr
        blocks[cur].append(ins)
    return heads, blocks


def main_loop_cost(sass: str, markers: tuple = ("HMMA", "IMMA"),
                   innermost: bool = False) -> LoopCost:
    """The cost of one steady-state iteration of the loop with the most ``markers`` instructions
    (by default the tensor-core ones, HMMA/IMMA; a table-lookup kernel's main loop is the one
    with the most LDS). ``innermost``: the smallest loop holding any ``markers`` instead (the
    inner loop of a nest, whose outer loop's path counts it once)."""
    code = parse(sass)
    loops = []
    for ins in code:
        t = ins.target
        if t is not None and t <= ins.addr:
            body = [x for x in code if t <= x.addr <= ins.addr]
            mma = sum(x.base in markers for x in body)
            loops.append((mma, len(body), t, ins.addr))
    if not loops or max(loops)[0] == 0:
        raise CompilationError(f"no loop with {'/'.join(markers)} instructions in this SASS")
    _, _, head, latch = (min((x for x in loops if x[0]), key=lambda x: x[1]) if innermost
                         else max(loops))
    body = [x for x in code if head <= x.addr <= latch]
    heads, blocks = _blocks(body, head, latch)
    order = {h: i for i, h in enumerate(heads)}
    best: dict[int, tuple] = {head: (0, 0, [])}     # entering block -> (bytes, -instructions, path)
    final = None
    for h in heads:
        if h not in best:
            continue
        nbytes, neg, path = best[h]
        ins = blocks[h]
        score = (nbytes + sum(x.global_bytes() for x in ins), neg - len(ins), path + [h])
        if h == heads[-1]:
            final = score
            break
        last = ins[-1]
        succ = []
        t = last.target
        if t is not None and head < t <= latch:
            succ.append(t)
        if (t is None or last.conditional) and last.base != "EXIT":
            succ.append(heads[order[h] + 1])
        for nxt in succ:
            if nxt not in best or score[:2] > best[nxt][:2]:
                best[nxt] = score
    if final is None:
        raise CompilationError("no path from the main loop's head to its back edge")
    cost = LoopCost(0)
    for h in final[2]:
        for x in blocks[h]:
            cost.instructions += 1
            cost.path.append(f"{x.addr:#06x} {x.text}")
            cost.by_opcode[x.opcode] += 1
            cost.by_class[CLASSES.get(x.base, "other")] += 1
            cost.global_bytes += x.global_bytes()
            cost.mma += x.base in ("HMMA", "IMMA")
    return cost
