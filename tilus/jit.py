"""What calling a kernel does: interpret it on CPU data, or (later) build and launch it on CUDA
tensors. The one place that joins the front end, the interpreter, the backend and the runtime."""
from __future__ import annotations

from typing import Any

from tilus.errors import TilusError


def _on_cuda(x: Any) -> bool:
    if getattr(x, "is_cuda", False):
        return True
    return hasattr(x, "__cuda_array_interface__")


def launch(kernel: Any, args: tuple, kwargs: dict | None = None) -> Any:
    """Runs ``kernel`` (a tilus.Script or a tilus.ir.Program) on ``args``.

    CPU torch tensors and numpy arrays: the CPU interpreter (``tilus.interpret``).
    CUDA tensors: the compiled path, not built yet (raises TilusError).
    """
    from tilus.ir.program import Program

    kwargs = kwargs or {}
    if isinstance(kernel, Program):
        if kwargs:
            raise TilusError("a Program takes positional arguments only")
        program, runtime_args = kernel, list(args)
    else:
        program, runtime_args = kernel.instantiate(*args, **kwargs)
    if any(_on_cuda(a) for a in runtime_args):
        raise TilusError(f"{program.name}: compiled launch on CUDA tensors is not available yet "
                         f"(the Tilus backend is not built); pass CPU tensors or numpy arrays to "
                         f"run it in the interpreter")
    interpret = _interpreter()
    return interpret(program, *runtime_args)


def _interpreter():
    import tilus

    fn = getattr(tilus, "interpret", None)
    if fn is None:
        try:
            from tilus.interpreter import interpret as fn  # type: ignore[no-redef]
        except ImportError:
            fn = None
    if fn is None:
        raise TilusError("the CPU interpreter (tilus.interpret) is not available in this build")
    return fn
