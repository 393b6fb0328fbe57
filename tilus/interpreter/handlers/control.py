"""Synchronisation and debugging instructions: sync, semaphores, print_tensor."""
from __future__ import annotations

import numpy as np

from tilus import dtypes
from tilus.errors import InterpreterError
from tilus.interpreter.memory import read_codes, write_codes
from tilus.interpreter.registry import register
from tilus.interpreter.state import BlockState
from tilus.interpreter import values as V
from tilus.ir import inst as I


@register(I.SyncInst)
def sync(state: BlockState, inst: I.SyncInst) -> None:
    """No-op: the interpreter runs a block's threads in lock-step, one tile operation at a time,
    so every write is visible to every later instruction already."""


def _sema_offset(state: BlockState, inst) -> tuple:
    g = state.global_tensor(inst.sema)
    index = state.ints(inst.index)
    if any(not 0 <= i < n for i, n in zip(index, g.shape)):
        raise InterpreterError(f"{inst.display_name()}: index {list(index)} is outside the "
                               f"semaphore tensor {inst.sema} of shape {list(g.shape)}")
    return g, np.asarray(g.offsets(tuple(np.asarray(i) for i in index)))


@register(I.LockSemaphoreInst)
def lock_semaphore(state: BlockState, inst: I.LockSemaphoreInst) -> None:
    """Waits until sema[index] == value. Blocks run one after another in row-major order
    (blockIdx.x fastest), so a block can only wait for blocks that ran before it: if the value is
    not there yet it never will be, and the interpreter raises InterpreterError (on a GPU such a
    program deadlocks, or depends on an unspecified block order)."""
    g, off = _sema_offset(state, inst)
    value = state.eval_int(inst.value, "the semaphore value")
    current = int(V.from_codes(dtypes.int32, read_codes(g.buffer, dtypes.int32, off)))
    if current != value:
        raise InterpreterError(
            f"lock_semaphore in block {state.block}: waits for {inst.sema}"
            f"{list(state.ints(inst.index))} == {value}, but it is {current}. The interpreter runs "
            f"blocks one at a time in order (blockIdx.x fastest, then y, then z), so no later block "
            f"can release it: on a GPU this program would deadlock unless blocks happen to run in "
            f"a suitable order. Make each block wait only for blocks with smaller indices.")


@register(I.ReleaseSemaphoreInst)
def release_semaphore(state: BlockState, inst: I.ReleaseSemaphoreInst) -> None:
    """sema[index] = value (after this block's earlier global writes, which the interpreter has
    already done)."""
    g, off = _sema_offset(state, inst)
    value = state.eval_int(inst.value, "the semaphore value")
    write_codes(g.buffer, dtypes.int32, off, V.to_codes(dtypes.int32, np.asarray(value)))


@register(I.PrintTensorInst)
def print_tensor(state: BlockState, inst: I.PrintTensorInst) -> None:
    """Prints ``message``, the block index and the tile (its values; a global tensor prints its
    shape and strides)."""
    x = state.get(inst.x)
    head = f"{inst.message} " if inst.message else ""
    b = state.block
    where = f"[block ({b[0]}, {b[1]}, {b[2]})] "
    if isinstance(x, np.ndarray):
        body = np.array2string(x, threshold=4096)
        print(f"{where}{head}{inst.x} {inst.x.dtype}{list(x.shape)}:\n{body}")
    else:
        print(f"{where}{head}{inst.x}: global {x.dtype} shape {list(x.shape)} strides {list(x.strides)}")
