"""The Tilus CPU interpreter: the reference semantics of every instruction.

``tilus.interpret(kernel_or_program, *args)`` runs a Program for every block of its grid, one block
after another (blockIdx.x fastest, then y, then z), with numpy, and writes results into the
caller's numpy arrays / CPU torch tensors in place.

Semantics in brief (the details are in each handler's docstring and in ``values``):

* Blocks run sequentially, blockIdx.x fastest, then y, then z; a block's threads run in lock-step,
  one whole-tile instruction at a time, so ``sync`` and ``copy_async_wait_group`` are no-ops and
  ``copy_async`` copies at once. ``lock_semaphore`` on a value that no earlier block has released
  raises InterpreterError (on a GPU: a deadlock).
* Tiles hold values: floats as float32 arrays (exact values of their type, rounded after every
  operation; float16/bfloat16 like IEEE, 8-bit-and-narrower floats with saturation), integers of
  every width as int64 arrays wrapped to their width, bools as bool arrays.
* Global memory is the caller's bytes; a K-bit element at linear element offset e occupies bits
  [e*K, (e+1)*K), little-endian. Out-of-bounds loads give ``other`` (0), out-of-bounds stores are
  dropped, and nothing outside the caller's buffer is ever touched (a global view larger than its
  buffer raises ArgumentError naming the parameter).
* Casts: float->int truncates then saturates (NaN -> 0), int->int wraps (C), ->float rounds to
  nearest even. Integer ``div`` truncates toward zero, ``mod`` is C's remainder.
* Scalars (parameters, loop variables, lets) are Python numbers, evaluated with
  ``tilus.ir.expr.evaluate``; int32 wrap-around of scalars is not modelled. A division or
  remainder by zero in a scalar expression is an InterpreterError naming the expression.
* Shared memory starts undefined: ``load_shared`` of an element that no ``store_shared`` or
  ``copy_async`` wrote is an UninitializedMemoryError (naming the tensor and the index).
* A register or shared tensor may have at most ``state.DEFAULT_MAX_ELEMENTS`` (2^24) elements, or
  ``$TILUS_INTERPRETER_MAX_ELEMENTS``; a larger one is an InterpreterError before any allocation.

Modules, one job each:

* ``arguments`` - binding arguments to parameters, with checks (ArgumentError names the parameter)
* ``values``    - how tiles hold values (float32 / int64 / bool arrays) and the cast/rounding rules
* ``memory``    - the caller's buffers, global views, bit-exact element reads and writes
* ``state``     - one block's scalars and tensors
* ``registry``  - instruction class -> handler
* ``handlers``  - one handler per instruction (memory, arith, shape, control); their docstrings
  are the reference semantics
* ``executor``  - statements, the grid loop and ``interpret``
"""
from tilus.interpreter.executor import interpret  # noqa: F401
from tilus.interpreter.registry import HANDLERS, register  # noqa: F401

__all__ = ["interpret", "register", "HANDLERS"]
