"""The Tilus CPU interpreter: the reference semantics of every instruction.

``tilus.interpret(kernel_or_program, *args)`` runs a Program for every block of its grid, one block
after another (blockIdx.x fastest, then y, then z), with numpy, and writes results into the
caller's numpy arrays / CPU torch tensors in place.

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
