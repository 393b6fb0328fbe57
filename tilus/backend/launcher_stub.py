"""The host launcher of a kernel whose CUDA Tilus printed itself (tilus.backend.cuda_printer).

TVM's host library (``export_library``) is the default launcher: it checks the arguments,
computes the grid and calls ``<symbol>_kernel`` with the device function's parameters. TVM derives
those from the device body it compiles, so it is given a stub: the same parameters, the same
thread bindings (grid and block), the same dynamic shared memory pool, and a body that only names
the variables the printed kernel takes. Its host code launches the printed kernel (the device code
TVM generates for the stub is discarded), and :func:`check_signature` makes sure both sides agree
on the parameter list before anything is exported.
"""
from __future__ import annotations

from tilus.backend.cuda_printer import CudaKernel
from tilus.backend.tvm_shim import tirx
from tilus.errors import CompilationError
from tilus.runtime.driver import kernel_declarations


def launcher_stub(func, kernel: CudaKernel):
    """A PrimFunc with ``func``'s parameters, thread bindings and shared memory pool whose device
    part uses exactly ``kernel.params``."""
    nest = []
    body = func.body
    while isinstance(body, tirx.For) and body.kind == tirx.ForKind.THREAD_BINDING:
        nest.append(body)
        body = body.body
    stmts = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]
    pools = [s for s in stmts if isinstance(s, tirx.AllocBuffer)
             and (s.buffer.scope() or "").startswith("shared")]
    uses = [p.var.vload([tirx.const(0, "int32")]) if p.is_pointer else p.var for p in kernel.params]
    inner = [*pools, *(tirx.Evaluate(tirx.call_extern("int32", "tilus_kernel_uses", *uses,
                                                      *(p.buffer.vload([tirx.const(0, "int32")])
                                                        for p in pools))),)]
    stub = inner[0] if len(inner) == 1 else tirx.SeqStmt(inner)
    for loop in reversed(nest):
        stub = tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, stub,
                        thread_binding=loop.thread_binding)
    return tirx.PrimFunc(func.params, stub, attrs=func.attrs)


def signature(cuda_source: str, name: str) -> list[str]:
    """The parameter names of the ``extern "C"`` kernel ``name`` in a CUDA source
    (:func:`tilus.runtime.driver.kernel_declarations`, the driver launcher's reading)."""
    declarations = kernel_declarations(cuda_source, name)
    if declarations is None:
        raise CompilationError(f"no kernel {name} in the generated CUDA source")
    return [d.split()[-1].lstrip("*") for d in declarations]


def check_signature(stub_cuda: str, kernel: CudaKernel) -> None:
    """Raises CompilationError unless TVM's launcher (generated from the stub, whose CUDA is
    ``stub_cuda``) passes the printed kernel's parameters, in its order."""
    theirs = signature(stub_cuda, kernel.name)
    ours = [p.name for p in kernel.params]
    if theirs != ours:
        raise CompilationError(f"the host launcher TVM generated passes ({', '.join(theirs)}) but "
                               f"the printed kernel {kernel.name} takes ({', '.join(ours)})")
