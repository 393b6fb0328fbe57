"""DESIGN.md's layer table, kept true by the import graph: no package imports a later layer (even
inside a function), no package imports what its "knows nothing of" column names, and no two
packages import each other, directly or around a cycle.

DESIGN.md's table lists the packages in data-flow order; the order below is the dependency order
it implies, written out here. Two rows sit lower than in the table, by their own columns: the
runtime knows nothing of how kernels were written, nor TVM's compiler or lark (so it sits below the
IR, and the backend writes its artefacts), and the autotuner knows nothing of kernels' contents
(so the ready ops, whose kernels it tunes, sit above it). The package root ``tilus`` is the public
facade over the compiler (``tilus.build``, ``tilus.interpret``, ``tilus.Script``): only what stands
above ``tilus.jit`` may import it. ``tilus.utils`` (Tilus's helper names) times kernels with the
autotuner's CUDA-event timer, so it sits above the autotuner.
"""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

from tests.structure.imports import Edge, cycles, edges, modules

ROOT = Path(__file__).resolve().parents[2] / "tilus"

# Lowest first; packages on one line form one layer.
LAYERS: list[tuple[str, ...]] = [
    ("tilus.errors", "tilus.logging_config", "tilus.version", "tilus.registry"),
    ("tilus.dtypes",),
    ("tilus.runtime",),
    ("tilus.ir.layout",),
    ("tilus.ir",),
    ("tilus.lang",),
    ("tilus.interpreter",),
    ("tilus.transforms",),
    ("tilus.backend",),
    ("tilus.simulator",),
    ("tilus.jit",),
    ("tilus",),
    ("tilus.autotune",),
    ("tilus.utils",),
    ("tilus.ops",),
    ("tilus.nn",),
    ("tilus.bundle",),
    ("tilus.__main__",),
]
RANK = {pkg: r for r, layer in enumerate(LAYERS) for pkg in layer}

# The table's "knows nothing of" column where the order alone allows the import: (importer, imported
# package, why). A prefix names a package and everything in it.
FORBIDDEN: list[tuple[str, str, str]] = [
    ("tilus.backend", "tilus.lang", "the backend knows nothing of the DSL"),
    ("tilus.simulator", "tilus.lang", "the simulator knows nothing of the DSL"),
    ("tilus.backend.codegen", "tilus.transforms",
     "codegen lowers what the IR says (DESIGN.md: the backend invents nothing); rules it shares "
     "with a pass belong in the IR or the layouts"),
    ("tilus.ops", "tilus.backend", "ops know nothing of backend internals"),
    ("tilus.nn", "tilus.backend", "nn knows nothing of backend internals"),
    ("tilus.autotune", "tilus.ops", "the autotuner knows nothing of kernels' contents"),
    ("tilus.autotune", "tilus.nn", "the autotuner knows nothing of kernels' contents"),
    ("tilus.autotune", "tilus.lang", "the autotuner knows nothing of kernels' contents"),
]

# Modules outside tilus that only some packages may import: (module, packages allowed, why).
EXTERNAL: list[tuple[str, tuple[str, ...], str]] = [
    ("tvm", ("tilus.backend.tvm_shim",), "all imports of tvm go through tilus.backend.tvm_shim"),
    ("lark", ("tilus.ir",), "lark is the IR parser's (the runtime runs where it is absent)"),
]
NO_TORCH = ("tilus.ir", "tilus.transforms")   # the IR knows nothing of torch


def package(module: str) -> str:
    """The layer-table package ``module`` belongs to (the longest listed prefix)."""
    best = None
    for pkg in RANK:
        if module == pkg or module.startswith(pkg + ".") or (pkg == "tilus" and module == "tilus"):
            if best is None or len(pkg) > len(best):
                best = pkg
    if best is None:
        raise KeyError(module)
    return best


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(graph: list[Edge]) -> list[str]:
    """One line per import against the order or the forbidden list, naming file:line."""
    out = []
    for e in graph:
        src, dst = package(e.source), package(e.target)
        if src == dst:
            continue
        if RANK[dst] > RANK[src]:
            out.append(f"{e.where()}: {e.source} imports {e.target}: {dst} is a later layer than {src}")
        for importer, imported, why in FORBIDDEN:
            if _under(e.source, importer) and _under(e.target, imported):
                out.append(f"{e.where()}: {e.source} imports {e.target}: {why}")
    return out


def package_cycles(graph: list[Edge]) -> list[str]:
    """One line per package cycle, with the imports (file:line) that close it."""
    deps: dict[str, set[str]] = collections.defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    for e in graph:
        src, dst = package(e.source), package(e.target)
        if src != dst:
            deps[src].add(dst)
            where.setdefault((src, dst), e.where())
    out = []
    for comp in cycles(deps):
        links = [f"{a} -> {b} ({where[a, b]})" for a in comp for b in comp if (a, b) in where]
        out.append(f"cycle {{{', '.join(comp)}}}: " + "; ".join(links))
    return out


def external_violations(graph: list[Edge]) -> list[str]:
    out = []
    for e in graph:
        for name, allowed, why in EXTERNAL:
            if e.target == name and not any(_under(e.source, a) for a in allowed):
                out.append(f"{e.where()}: {e.source} imports {name}: {why}")
        if e.target == "torch" and any(_under(e.source, p) for p in NO_TORCH):
            out.append(f"{e.where()}: {e.source} imports torch: the IR and its passes know nothing of torch")
    return out


def test_every_module_is_in_the_layer_table():
    missing = sorted(m for m in modules(ROOT) if _safe_package(m) is None)
    assert not missing, f"modules in no layer of tests/structure/test_layers.py: {missing}"


def _safe_package(module: str):
    try:
        return package(module)
    except KeyError:
        return None


def test_no_import_against_the_layer_order():
    bad = layer_violations(edges(ROOT))
    assert not bad, "imports against DESIGN.md's layers:\n" + "\n".join(bad)


def test_no_package_cycle():
    bad = package_cycles(edges(ROOT))
    assert not bad, "package cycles:\n" + "\n".join(bad)


def test_external_modules_stay_in_their_packages():
    bad = external_violations(edges(ROOT, external=True))
    assert not bad, "\n".join(bad)


# ----- the checker itself, on a small tree it must judge wrong ---------------------------------
@pytest.fixture
def tree(tmp_path):
    def write(files: dict[str, str]) -> Path:
        for name, text in files.items():
            p = tmp_path / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return tmp_path / "tilus"
    return write


def test_checker_sees_imports_inside_functions_and_relative_ones(tree):
    root = tree({
        "tilus/__init__.py": "",
        "tilus/dtypes/__init__.py": "def f():\n    from ..ir import expr\n",
        "tilus/ir/__init__.py": "from . import expr\n",
        "tilus/ir/expr.py": "from tilus.dtypes import f\n",
    })
    got = {(e.source, e.target, e.where()) for e in edges(root)}
    assert ("tilus.dtypes", "tilus.ir.expr", "tilus/dtypes/__init__.py:2") in got
    assert ("tilus.ir", "tilus.ir.expr", "tilus/ir/__init__.py:1") in got
    assert ("tilus.ir.expr", "tilus.dtypes", "tilus/ir/expr.py:1") in got
    bad = layer_violations(edges(root))
    assert bad == ["tilus/dtypes/__init__.py:2: tilus.dtypes imports tilus.ir.expr: "
                   "tilus.ir is a later layer than tilus.dtypes"]
    [cycle] = package_cycles(edges(root))
    assert cycle.startswith("cycle {tilus.dtypes, tilus.ir}") and "tilus/ir/expr.py:1" in cycle


def test_checker_flags_the_root_and_forbidden_and_external_imports(tree):
    root = tree({
        "tilus/__init__.py": "",
        "tilus/runtime/keys.py": "import tilus\n",
        "tilus/backend/codegen/dot.py": "import tvm\nfrom tilus.transforms.layout_inference import x\n",
        "tilus/transforms/layout_inference.py": "x = 1\n",
    })
    bad = layer_violations(edges(root))
    assert any(b.startswith("tilus/runtime/keys.py:1: tilus.runtime.keys imports tilus:") for b in bad)
    assert any(b.startswith("tilus/backend/codegen/dot.py:2:") and "codegen lowers" in b for b in bad)
    ext = external_violations(edges(root, external=True))
    assert ext == ["tilus/backend/codegen/dot.py:1: tilus.backend.codegen.dot imports tvm: "
                   "all imports of tvm go through tilus.backend.tvm_shim"]
