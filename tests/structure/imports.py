"""The import graph of a package tree, read from its source with ``ast`` (no module is imported).

Every ``import`` and ``from ... import`` counts, wherever it stands (inside functions, under
``if TYPE_CHECKING``); relative imports are resolved against the importing module, and
``from pkg import name`` is an import of the module ``pkg.name`` when that module exists.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """One import statement: ``source`` (a module) imports ``target`` at ``path``:``line``."""
    source: str
    target: str
    path: str
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def modules(root: Path) -> dict[str, Path]:
    """Every module under the package directory ``root``, by dotted name (packages by their name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _base(module: str, path: Path, level: int) -> str:
    """The package a relative import of ``level`` dots starts from."""
    parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        raise ValueError(f"{path}: relative import beyond the top-level package")
    return ".".join(parts[:len(parts) - (level - 1)])


def edges(root: Path, external: bool = False) -> list[Edge]:
    """The import statements of the tree at ``root``: into the tree itself, or (``external``)
    every other module imported (by its top-level name, e.g. ``tvm``)."""
    mods = modules(root)
    top = root.name
    out = []
    for module, path in mods.items():
        rel = str(path.relative_to(root.parent))
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, path, node.level) if node.level else ""
                pkg = ".".join(p for p in (base, node.module or "") if p)
                targets = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in mods else pkg
                           for a in node.names]
            for target in targets:
                inside = target == top or target.startswith(top + ".")
                if inside and not external:
                    out.append(Edge(module, _known(target, mods), rel, node.lineno))
                elif external and not inside:
                    out.append(Edge(module, target.split(".")[0], rel, node.lineno))
    return list(dict.fromkeys(out))   # one edge per (statement, target)


def _known(target: str, mods: dict[str, Path]) -> str:
    """The longest existing module that ``target`` names (``a.b.func`` -> ``a.b``)."""
    parts = target.split(".")
    while len(parts) > 1 and ".".join(parts) not in mods:
        parts.pop()
    return ".".join(parts)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)
