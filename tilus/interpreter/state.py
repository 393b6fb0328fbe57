"""The state of one running thread block: scalar environment and tensor values."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from tilus.dtypes import DataType
from tilus.errors import InterpreterError, UninitializedMemoryError
from tilus.interpreter import values as V
from tilus.interpreter.memory import GlobalTensor
from tilus.ir.expr import BlockIdx, Expr, evaluate, free_vars
from tilus.ir.types import REGISTER, SHARED, Tensor

#: The environment variable that overrides ``DEFAULT_MAX_ELEMENTS``.
MAX_ELEMENTS_ENV = "TILUS_INTERPRETER_MAX_ELEMENTS"
#: The most elements one register or shared tensor may have in the interpreter. No thread block
#: holds more: 255 registers x 1024 threads x 32 one-bit elements is 8,355,840.
DEFAULT_MAX_ELEMENTS = 1 << 24


def max_elements() -> int:
    """The per-tensor element limit: ``$TILUS_INTERPRETER_MAX_ELEMENTS`` or the default."""
    text = os.environ.get(MAX_ELEMENTS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_ELEMENTS
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise InterpreterError(f"{MAX_ELEMENTS_ENV}={text!r}: must be a positive integer "
                               f"(the default is {DEFAULT_MAX_ELEMENTS})")
    return limit


def evaluate_scalar(e: Expr, env: Mapping[Any, Any]) -> Any:
    """``evaluate(e, env)``; a division or remainder by zero is an InterpreterError naming ``e``."""
    try:
        return evaluate(e, env)
    except ZeroDivisionError:
        values = ", ".join(f"{v} = {env[v]}" for v in sorted(free_vars(e), key=str) if v in env)
        raise InterpreterError(f"division by zero in the scalar expression {e}"
                               + (f" (with {values})" if values else "")
                               + " (undefined on a GPU)") from None


class BlockState:
    """``scalars`` maps Vars (parameters, loop variables, lets) and ``BlockIdx`` to Python values
    or Buffers; ``tensors`` maps each Tensor to its numpy array (register/shared) or GlobalTensor.

    Register arrays are never mutated in place (handlers build new arrays and rebind), so views
    between them are safe; shared arrays are mutated in place, so slices of them are views.
    ``written`` maps each shared tensor to a bool array of its shape (views for slices): which
    elements something has written; reading any other is an UninitializedMemoryError.
    ``limit`` is the most elements a register or shared tensor may have.
    """

    def __init__(self, scalars: dict, block: tuple[int, int, int],
                 limit: int = DEFAULT_MAX_ELEMENTS, workspaces: dict | None = None):
        self.scalars: dict[Any, Any] = dict(scalars)
        # global_tensor name -> its GlobalTensor, one dict per launch shared by every block
        self.workspaces: dict[str, Any] = {} if workspaces is None else workspaces
        for axis, b in enumerate(block):
            self.scalars[BlockIdx(axis)] = b
        self.block = block
        self.limit = limit
        self.tensors: dict[Tensor, Any] = {}
        self.written: dict[Tensor, np.ndarray] = {}

    # ----- scalars
    def eval(self, e: Expr) -> Any:
        return evaluate_scalar(e, self.scalars)

    def eval_int(self, e: Expr, what: str = "an index") -> int:
        v = self.eval(e)
        try:
            return int(v)
        except (TypeError, ValueError):
            raise InterpreterError(f"{what} {e} evaluated to {v!r}, not an integer") from None

    def ints(self, exprs) -> tuple[int, ...]:
        return tuple(self.eval_int(e) for e in exprs)

    # ----- tensors
    def get(self, t: Tensor) -> Any:
        try:
            return self.tensors[t]
        except KeyError:
            raise InterpreterError(f"tensor {t} is used before any instruction defines it") from None

    def global_tensor(self, t: Tensor) -> GlobalTensor:
        g = self.get(t)
        if not isinstance(g, GlobalTensor):
            raise InterpreterError(f"{t} is not a global tensor")
        return g

    def value(self, x, dtype: DataType | None = None) -> np.ndarray:
        """An elementwise operand as an array: a tensor's values, or a scalar expression evaluated
        now and converted to ``dtype`` (the other operand's type)."""
        if isinstance(x, Tensor):
            return self.get(x)
        v = self.eval(x)
        return V.from_python(dtype if dtype is not None else x.dtype, v)

    def check_size(self, t: Tensor) -> None:
        """InterpreterError when register/shared tensor ``t`` has more elements than ``limit``."""
        if t.scope not in (REGISTER, SHARED) or t.type.size <= self.limit:
            return
        raise InterpreterError(
            f"{t.scope} tensor {t} ({t.dtype}{list(t.shape)}) has {t.type.size:,} elements, more "
            f"than the interpreter's limit of {self.limit:,} per tensor (no thread block holds "
            f"that many); use smaller tiles, or raise the limit with {MAX_ELEMENTS_ENV}")

    def allocate_shared(self, t: Tensor, values: np.ndarray, written: np.ndarray) -> None:
        """Bind shared tensor ``t`` (or a slice) to ``values`` and its written-mask ``written``."""
        self.tensors[t] = values
        self.written[t] = written

    def free_shared(self, t: Tensor) -> None:
        """Forget shared tensor ``t``: using it afterwards is an InterpreterError."""
        self.get(t)
        del self.tensors[t]
        del self.written[t]

    def write_shared(self, t: Tensor, values: np.ndarray) -> None:
        """Store ``values`` (broadcast) into every element of shared tensor ``t``."""
        self.get(t)[...] = values
        self.written[t][...] = True

    def read_shared(self, t: Tensor) -> np.ndarray:
        """A copy of shared tensor ``t``; UninitializedMemoryError if an element is unwritten."""
        values = self.get(t)
        unwritten = ~self.written[t]
        if unwritten.any():
            first = [int(i) for i in np.argwhere(unwritten)[0]]
            raise UninitializedMemoryError(
                f"read of shared tensor {t} ({t.dtype}{list(t.shape)}) at index {first}, which "
                f"nothing has written ({int(unwritten.sum())} of {unwritten.size} elements "
                f"unwritten): shared memory starts undefined; fill it with store_shared or "
                f"copy_async first")
        return np.array(values, copy=True)

    def set(self, t: Tensor, value: np.ndarray) -> None:
        """Bind a register tensor to a new array of its dtype's representation and shape."""
        arr = np.asarray(value)
        want = V.storage_dtype(t.dtype)
        if arr.dtype != want:
            arr = arr.astype(want)
        if arr.shape != tuple(t.shape):
            arr = np.broadcast_to(arr, tuple(t.shape))
        self.tensors[t] = arr
