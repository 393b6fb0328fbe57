"""Builds the API reference of ``tilus`` from its docstrings with pdoc (HTML, into ``build/api``
or the directory given) and fails when pdoc warns (an annotation it cannot resolve, a module that
does not import). ``make docs`` runs it; CI runs ``make docs`` after the tests."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

import tilus


def modules() -> list[str]:
    """``tilus`` and the submodules pdoc would hide: pdoc shows only the members in ``__all__`` of
    a package that has one (tilus.nn, tilus.ops, ...), so their other submodules are named."""
    specs = ["tilus", "!tilus.__main__"]
    for info in pkgutil.walk_packages(tilus.__path__, "tilus."):
        if not info.ispkg:
            continue
        package = importlib.import_module(info.name)
        shown = getattr(package, "__all__", None)
        if shown is not None:
            specs += [f"{info.name}.{c.name}" for c in pkgutil.iter_modules(package.__path__)
                      if c.name not in shown]
    return specs


def build(out: Path) -> list[str]:
    """Writes the HTML reference into ``out``; returns pdoc's warnings."""
    pdoc.render.configure(docformat="restructuredtext", footer_text="Tilus API reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules(), output_directory=out)
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "build/api")
    problems = build(out)
    for p in problems:
        print(f"docs: {p}", file=sys.stderr)
    print(f"API reference: {out / 'index.html'} ({len(problems)} warnings)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
