"""Synchronisation and debugging: sync, lock/release_semaphore, print_tensor.

- ``sync``: ``__syncthreads()`` (tvm_storage_sync("shared")).
- ``lock_semaphore``: barrier; thread 0 spins with ``atomicCAS(p, v, v)`` (an atomic read) until
  ``*p == value``; barrier. ``release_semaphore``: barrier; thread 0 runs ``__threadfence()`` and
  ``atomicExch(p, value)``; barrier.
- ``print_tensor``: emits nothing (a comment in the docs: debugging output is the interpreter's
  job; device printf would serialise the kernel).
"""
from __future__ import annotations

from tilus.backend.codegen.registry import emitter
from tilus.backend.codegen.lower import Lowerer
from tilus.backend.tvm_shim import TB, dt, tirx
from tilus.ir import expr as E
from tilus.ir import inst as I


@emitter(I.SyncInst)
def sync(lw: Lowerer, inst) -> None:
    lw.sync()


def _sema_operands(lw: Lowerer, inst):
    """The semaphore's buffer, element offset and the int32 value of a lock/release."""
    g = lw.glob(inst.sema)
    off = lw.expr(E.as_expr(g.offset(inst.index)))
    value = lw.expr(E.as_expr(inst.value))
    return g.buf, off, value if dt(value) == "int32" else tirx.Cast("int32", value)


@emitter(I.LockSemaphoreInst)
def lock_semaphore(lw: Lowerer, inst: I.LockSemaphoreInst) -> None:
    buf, off, value = _sema_operands(lw, inst)
    lw.sync()
    with TB.If(lw.tx == 0):
        with TB.Then():
            seen = lw.alloc_local(1, "int32", lw.fresh("sema"))
            lw.store(seen, tirx.call_extern("int32", "atomicCAS", tirx.address_of(buf[off]), value, value), [0])
            with TB.While(seen[0] != value):
                lw.store(seen, tirx.call_extern("int32", "atomicCAS", tirx.address_of(buf[off]),
                                                value, value), [0])
            lw.emit(tirx.call_extern("void", "__threadfence"))
    lw.sync()


@emitter(I.ReleaseSemaphoreInst)
def release_semaphore(lw: Lowerer, inst: I.ReleaseSemaphoreInst) -> None:
    buf, off, value = _sema_operands(lw, inst)
    lw.sync()
    with TB.If(lw.tx == 0):
        with TB.Then():
            lw.emit(tirx.call_extern("void", "__threadfence"))
            lw.emit(tirx.call_extern("int32", "atomicExch", tirx.address_of(buf[off]), value))
    lw.sync()


@emitter(I.PrintTensorInst)
def print_tensor(lw: Lowerer, inst) -> None:
    """No code: printing is for the interpreter (documented)."""
