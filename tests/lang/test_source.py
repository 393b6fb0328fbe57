"""Reading a kernel's source (tilus.lang.source): the fast block reader gives, for every method of
every Script in Tilus and its examples, the same function (AST) and first line as
``inspect.getsourcelines``; where it cannot (a string back at the def's column, a one-line
lambda) the slow path answers. Method signatures are those inspect gives a bound method."""
import ast
import importlib
import inspect
import pkgutil
import sys
import textwrap
from pathlib import Path

import tilus
from tilus.lang.source import _block_lines, function_source, method_signature

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _scripts():
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    modules = [importlib.import_module(f"tilus.ops.{m.name}")
               for m in pkgutil.iter_modules(tilus.ops.__path__)]
    modules += [importlib.import_module(p.stem) for p in EXAMPLES.glob("*.py")
                if p.stem not in ("demo", "llm_decode")]
    found = set()
    for module in modules:
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, tilus.Script) and obj.__module__ == \
                    module.__name__:
                found.add(obj)
    return sorted(found, key=lambda c: c.__qualname__)


def _functions():
    for cls in _scripts():
        for name, f in vars(cls).items():
            if inspect.isfunction(f):
                yield f"{cls.__qualname__}.{name}", inspect.unwrap(f)


def test_block_reader_agrees_with_inspect():
    funcs = list(_functions())
    assert len(funcs) >= 30, len(funcs)
    for name, f in funcs:
        block = _block_lines(f)
        assert block is not None, name
        lines, first = inspect.getsourcelines(f)
        assert block[1] == first, name
        ours = ast.parse(textwrap.dedent("".join(block[0]))).body[0]
        theirs = ast.parse(textwrap.dedent("".join(lines))).body[0]
        assert ast.dump(ours) == ast.dump(theirs), name


def test_a_string_at_the_def_column_takes_the_slow_path():
    namespace: dict = {}
    code = "def f(x):\n    s = '''\nat column 0\n'''\n    return s\n"
    path = Path(__file__).parent / "_generated_source.py"
    try:
        path.write_text(code)
        exec(compile(code, str(path), "exec"), namespace)
        f = namespace["f"]
        lines, _ = _block_lines(f)
        assert "".join(lines) == "def f(x):\n    s = '''\n"      # stops at the string's body
        src = function_source(f)
        assert src.first_line == 1 and isinstance(src.tree.body[-1], ast.Return)
    finally:
        path.unlink()


def test_method_signature_is_the_bound_methods():
    class K(tilus.Script):
        def helper(self, a, b: int = 2, *rest, c=3) -> int:
            return a

    sig = method_signature(K.helper)
    assert sig == inspect.signature(K().helper).replace(return_annotation=inspect.Signature.empty)
    assert method_signature(K.helper) is sig
