"""A Script wrapper for tests that swap it in where an op builds its kernel: each call runs the
lowered kernel in tilus.simulator and the interpreter on copies of the same arguments, and
compares the outputs."""
import torch

import tilus


class SimulatedKernel:
    """Calls simulate ``kernel`` and interpret it on copies; ``outputs`` are the argument
    positions compared; ``seen`` collects the kernel class names called."""

    def __init__(self, kernel, outputs, seen: list):
        self.kernel, self.outputs, self.seen = kernel, tuple(outputs), seen

    def __getattr__(self, name):
        return getattr(self.kernel, name)

    def __call__(self, *args):
        from tilus.simulator import run_prim_func
        from tilus.simulator.machine import as_prim_func

        ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        run_prim_func(as_prim_func(self.kernel),
                      [a.reshape(-1) if isinstance(a, torch.Tensor) else a for a in args])
        tilus.interpret(self.kernel, *ref)
        for i in self.outputs:
            torch.testing.assert_close(args[i].float(), ref[i].float(), rtol=1e-3, atol=1e-3,
                                       equal_nan=True)
        self.seen.append(type(self.kernel).__name__)
