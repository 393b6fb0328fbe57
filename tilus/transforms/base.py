"""Passes over Programs and the manager that runs them in order.

A pass is a small object with one job: ``run(program) -> program`` (a new Program; IR nodes are
immutable). ``PassManager`` verifies its input, runs a list of passes and verifies the IR after
each one (``tilus.ir.verify``: the passes accept every program it accepts),
logs each pass's time at debug level on the ``tilus`` logger and, when asked (``dump_dir=`` or the
``TILUS_DUMP_IR`` environment variable), writes the IR text after every pass to
``<dir>/NN-<pass name>.tilus`` (``00-input.tilus`` is the program it was given).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional, Sequence

from tilus.errors import CompilationError, TilusError
from tilus.ir.program import Program
from tilus.ir.verifier import verify

logger = logging.getLogger("tilus")

DUMP_ENV = "TILUS_DUMP_IR"


class Pass:
    """Base class: subclasses set ``name`` and implement ``run``."""

    name: str = "pass"

    def run(self, program: Program) -> Program:
        raise NotImplementedError

    def __call__(self, program: Program) -> Program:
        return self.run(program)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PassManager:
    """Runs ``passes`` in order. ``verify`` checks the IR after each pass; ``dump_dir`` (default: the
    ``TILUS_DUMP_IR`` environment variable, read when ``run`` is called) receives the IR text after
    each pass. A pass that breaks the IR raises ``CompilationError`` naming the pass."""

    def __init__(self, passes: Sequence[Pass], dump_dir: Optional[str | os.PathLike] = None,
                 verify: bool = True):
        self.passes = list(passes)
        self.dump_dir = dump_dir
        self.verify = verify
        self.times: dict[str, float] = {}

    def _dump_dir(self) -> Optional[Path]:
        where = self.dump_dir if self.dump_dir is not None else os.environ.get(DUMP_ENV) or None
        if where is None:
            return None
        path = Path(where)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _dump(where: Optional[Path], index: int, name: str, program: Program) -> None:
        if where is not None:
            (where / f"{index:02d}-{name}.tilus").write_text(str(program) + "\n")

    def run(self, program: Program) -> Program:
        """Verifies ``program`` (its VerificationError is the caller's mistake, raised as is), then
        runs the passes."""
        where = self._dump_dir()
        self._dump(where, 0, "input", program)
        if self.verify:
            verify(program)
        for index, p in enumerate(self.passes, start=1):
            start = time.perf_counter()
            program = p.run(program)
            elapsed = time.perf_counter() - start
            self.times[p.name] = self.times.get(p.name, 0.0) + elapsed
            logger.debug("pass %s took %.3f ms", p.name, elapsed * 1e3)
            if not isinstance(program, Program):
                raise CompilationError(f"pass {p.name} returned {type(program).__name__}, not a Program")
            self._dump(where, index, p.name, program)
            if self.verify:
                try:
                    verify(program)
                except TilusError as e:
                    raise CompilationError(f"the IR after pass {p.name} is malformed: {e}") from e
        return program

    __call__ = run
