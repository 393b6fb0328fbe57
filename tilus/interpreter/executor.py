"""Running a Program: the grid loop and the statements (instructions dispatch to the registry)."""
from __future__ import annotations

import itertools
from typing import Any

from tilus.errors import InterpreterError, TilusError
from tilus.interpreter import handlers  # noqa: F401  (registers the instruction handlers)
from tilus.interpreter.arguments import bind_arguments
from tilus.interpreter.registry import handler_for
from tilus.interpreter.state import BlockState, evaluate_scalar, max_elements
from tilus.ir.functor import instructions
from tilus.ir.inst import AllocateGlobalInst, Instruction
from tilus.ir.program import Program
from tilus.ir.stmt import (AssignStmt, BreakStmt, ContinueStmt, ForStmt, IfStmt, LetStmt,
                           SeqStmt, Stmt, WhileStmt)


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _describe(inst: Instruction) -> str:
    out = getattr(inst, "output", None)
    return f"'{inst.display_name()}'" + (f" defining {out}" if out is not None else "")


def _run_iteration(state, body) -> bool:
    """One loop iteration; False when the body breaks out of the loop."""
    try:
        run_stmt(state, body)
    except _Continue:
        pass
    except _Break:
        return False
    return True


def run_stmt(state: BlockState, s: Stmt) -> None:
    """Executes one statement. Scalars are Python numbers (no int32 wrap-around is modelled for
    loop variables and lets). ``for v in range(start, stop, step)`` evaluates its bounds once, on
    entry; ``while`` re-evaluates its condition before every iteration."""
    if isinstance(s, Instruction):
        try:
            out = getattr(s, "output", None)
            if out is not None:
                state.check_size(out)
            handler_for(s)(state, s)
        except TilusError as e:
            if not getattr(e, "_tilus_located", False):
                e._tilus_located = True
                e.add_note(f"(in the interpreter: instruction {_describe(s)}, block {state.block})")
            raise
    elif isinstance(s, SeqStmt):
        for x in s.stmts:
            run_stmt(state, x)
    elif isinstance(s, ForStmt):
        start = state.eval_int(s.start, "the loop start")
        stop = state.eval_int(s.stop, "the loop stop")
        step = state.eval_int(s.step, "the loop step")
        if step == 0:
            raise InterpreterError(f"for {s.var}: step is 0")
        for i in range(start, stop, step):
            state.scalars[s.var] = i
            if not _run_iteration(state, s.body):
                break
    elif isinstance(s, WhileStmt):
        while bool(state.eval(s.cond)):
            if not _run_iteration(state, s.body):
                break
    elif isinstance(s, IfStmt):
        if bool(state.eval(s.cond)):
            run_stmt(state, s.then_body)
        elif s.else_body is not None:
            run_stmt(state, s.else_body)
    elif isinstance(s, (LetStmt, AssignStmt)):
        state.scalars[s.var] = _scalar(state.eval(s.value))
    elif isinstance(s, BreakStmt):
        raise _Break()
    elif isinstance(s, ContinueStmt):
        raise _Continue()
    else:
        raise InterpreterError(f"the interpreter cannot run a {type(s).__name__}")


def _scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") and getattr(v, "ndim", 0) == 0 else v


def grid(program: Program, scalars: dict) -> list[tuple[int, int, int]]:
    """Every block index (x, y, z) of the grid, in the order the interpreter runs them: x
    fastest, then y, then z (a GPU's order is unspecified)."""
    sizes = []
    for e in program.blocks:
        n = int(evaluate_scalar(e, scalars))
        if n < 0:
            raise InterpreterError(f"kernel '{program.name}': the grid size {e} evaluated to {n}")
        sizes.append(n)
    sizes += [1] * (3 - len(sizes))
    return [(x, y, z) for z, y, x in itertools.product(range(sizes[2]), range(sizes[1]),
                                                       range(sizes[0]))]


def as_program(kernel: Any, args: tuple) -> tuple[Program, tuple]:
    """(Program, run-time arguments) for what ``interpret`` was given (see ``interpret``)."""
    if isinstance(kernel, Program):
        return kernel, args
    instantiate = getattr(kernel, "instantiate", None)
    if callable(instantiate):
        program, runtime = instantiate(*args)
        if isinstance(program, Program):
            return program, tuple(runtime)
    make = getattr(kernel, "program", None)
    if callable(make):
        program = make()
        if isinstance(program, Program):
            return program, args
    raise TypeError(f"tilus.interpret runs a tilus.ir.Program or a kernel object with "
                    f".instantiate(*args) or .program() (a tilus.Script), got {type(kernel).__name__}")


def interpret(kernel: Any, *args: Any) -> None:
    """Runs ``kernel`` on the CPU for every block of its grid.

    ``kernel`` is a ``tilus.ir.Program``, or a kernel object such as a ``tilus.Script`` instance:
    one with ``.instantiate(*args) -> (program, runtime_args)`` (which splits off compile-time
    arguments) is asked for both; otherwise one with ``.program()`` gives the Program and ``args``
    pass through unchanged.

    ``args`` are numpy arrays / CPU torch tensors for pointer parameters and Python numbers for
    scalar parameters (see ``tilus.interpreter.arguments``). Kernels write their results through
    pointers: stores land in the caller's arrays and tensors, in place. Returns None.
    """
    program, args = as_program(kernel, args)
    scalars = bind_arguments(program, args)
    limit = max_elements()
    workspaces: dict = {}
    for block in grid(program, scalars):
        run_stmt(BlockState(scalars, block, limit, workspaces), program.body)
    check_clean(program, workspaces)


def check_clean(program: Program, workspaces: dict) -> None:
    """A ``requires_clean`` global_tensor must be all zeros when the kernel ends (the launcher
    reuses it for the next launch); InterpreterError names the first one left dirty."""
    for inst in instructions(program):
        if not isinstance(inst, AllocateGlobalInst) or not inst.requires_clean:
            continue
        g = workspaces.get(inst.output.name)
        if g is not None and g.buffer.data.any():
            raise InterpreterError(
                f"kernel '{program.name}' left the global_tensor {inst.output} (requires_clean=True) "
                f"with non-zero elements: the kernel must reset it to zeros before it ends")
