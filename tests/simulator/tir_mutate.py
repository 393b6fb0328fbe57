"""Small TIR mutators for planting bugs in fixture kernels (TVM 0.27's tirx has no Python
stmt functor, so this rebuilds the statement tree itself)."""
from __future__ import annotations

from tilus.backend.tvm_shim import ir, tirx


def rewrite(stmt, fstmt=None):
    """Rebuild ``stmt`` bottom-up; ``fstmt(s)`` may return a replacement, None to delete it, or s."""
    def go(s):
        if isinstance(s, tirx.SeqStmt):
            parts = [p for p in (go(x) for x in s.seq) if p is not None]
            s = parts[0] if len(parts) == 1 else tirx.SeqStmt(parts)
        elif isinstance(s, tirx.For):
            s = tirx.For(s.loop_var, s.min, s.extent, s.kind, go(s.body), s.thread_binding,
                         s.annotations, s.step)
        elif isinstance(s, tirx.IfThenElse):
            s = tirx.IfThenElse(s.condition, go(s.then_case),
                                go(s.else_case) if s.else_case is not None else None)
        elif isinstance(s, tirx.AttrStmt):
            s = tirx.AttrStmt(s.node, s.attr_key, s.value, go(s.body))
        elif isinstance(s, tirx.While):
            s = tirx.While(s.condition, go(s.body))
        return fstmt(s) if fstmt is not None else s

    return go(stmt)


def call_name(s):
    if isinstance(s, tirx.Evaluate) and isinstance(s.value, ir.Call):
        return getattr(s.value.op, "name", "")
    return None


def drop_calls(func, name):
    """Delete every ``Evaluate(call)`` of the intrinsic ``name`` (e.g. "tirx.tvm_storage_sync")."""
    return func.with_body(rewrite(func.body, lambda s: None if call_name(s) == name else s))


def map_call_args(func, name, fargs):
    """Replace the arguments of every evaluated call of ``name`` with ``fargs(list(args))``."""
    def f(s):
        if call_name(s) == name:
            c = s.value
            return tirx.Evaluate(ir.Call(c.op, fargs(list(c.args)), c.attrs, c.ty_args, c.span, ret_ty=c.ty))
        return s
    return func.with_body(rewrite(func.body, f))


def map_if_conditions(func, fcond):
    """Replace every IfThenElse condition c with ``fcond(c)``."""
    def f(s):
        if isinstance(s, tirx.IfThenElse):
            return tirx.IfThenElse(fcond(s.condition), s.then_case, s.else_case)
        return s
    return func.with_body(rewrite(func.body, f))
