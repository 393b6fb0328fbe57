"""Every instruction is complete: the interpreter has its semantics, layout inference its rule (or
the explicit ``any_layout``), codegen its emitter; and every extern function the emitters call has
a simulator entry. Failures name what is missing and the file that registers it (see
docs/adding-an-instruction.md)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tilus.errors import RegistryError
from tilus.ir.inst import instruction_classes
from tilus.registry import Registry

BACKEND = Path(__file__).resolve().parents[2] / "tilus" / "backend"


def missing_parts() -> list[str]:
    from tilus.backend.codegen import emitters  # noqa: F401  (registers the emitters)
    from tilus.backend.codegen.registry import EMITTERS
    from tilus.interpreter.registry import HANDLERS
    from tilus.transforms.layout_inference import RULES

    tables = [
        (HANDLERS, "no interpreter handler (@register in tilus/interpreter/handlers/)"),
        (RULES, "no layout rule (@layout_rule, or any_layout, in tilus/transforms/layout_inference.py)"),
        (EMITTERS, "no emitter (@emitter in tilus/backend/codegen/emitters/)"),
    ]
    return [f"{cls.__name__}: {what}" for cls in instruction_classes()
            for table, what in tables if table.find(cls) is None]


def test_every_instruction_has_semantics_a_layout_rule_and_an_emitter():
    assert len(instruction_classes()) > 20
    missing = missing_parts()
    assert not missing, "incomplete instructions:\n" + "\n".join(missing)


# the launcher stub's body is TVM's input for the host launcher only: never compiled, never run
NOT_RUN = {"launcher_stub.py"}


def _extern_calls() -> list[tuple[str, str]]:
    """(name, file:line) of every ``call_extern(dtype, "name", ...)`` spelled in the backend
    (but for the code that is never run, :data:`NOT_RUN`)."""
    out = []
    for path in sorted(p for p in BACKEND.rglob("*.py") if p.name not in NOT_RUN):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "call_extern"
                    and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)):
                out.append((node.args[1].value, f"{path.relative_to(BACKEND.parents[1])}:{node.lineno}"))
    return out


def test_every_extern_the_emitters_call_has_a_simulator_entry():
    pytest.importorskip("tilus.simulator.intrinsics")
    from tilus.simulator.intrinsics import _EXTERNS

    calls = _extern_calls()
    assert {"__shfl_sync", "atomicCAS"} <= {name for name, _ in calls}
    missing = [f"{where}: {name}" for name, where in calls if name not in _EXTERNS]
    assert not missing, "extern functions the simulator cannot run:\n" + "\n".join(missing)


def test_a_key_registered_twice_raises():
    table: Registry = Registry("emitter")
    table.register(int)(str)
    with pytest.raises(RegistryError, match="two emitters for int"):
        table.add(int, repr)
    with pytest.raises(RegistryError, match="two emitters for 'x'"):
        table.add_all([("x", 1), ("x", 2)])
    assert table.find(bool) is str and table.get(bool) is None   # bool's base int


def test_the_completeness_check_names_what_is_missing(monkeypatch):
    from tilus.interpreter import registry

    bare: Registry = Registry("interpreter handler")
    monkeypatch.setattr(registry, "HANDLERS", bare)
    assert "DotInst: no interpreter handler (@register in tilus/interpreter/handlers/)" in missing_parts()
