"""tilus.backend.tvm_shim imports TVM without provoking C++ errors (the first one of a process
costs a 0.5 s backtrace symbolization once torch is loaded), with relax and disco loaded lazily,
and leaves TVM as a plain ``import tvm`` leaves it."""
import json
import subprocess
import sys
import textwrap

import pytest

COUNT_CPP_ERRORS = textwrap.dedent("""
    import json, sys
    import torch  # noqa: F401  (as in a user's process: libbacktrace then reads torch's libraries)
    raised = []

    def local(frame, event, arg):
        if event == "exception" and hasattr(arg[1], "__tvm_ffi_error__"):
            raised.append(type(arg[1]).__name__)
        return local

    sys.settrace(lambda frame, event, arg: local)
    if sys.argv[1] == "shim":
        import tilus.backend.tvm_shim  # noqa: F401
    else:
        import tvm  # noqa: F401
    sys.settrace(None)
    import tvm
    lazy = {m: type(sys.modules.get(m)).__name__ for m in ("tvm.relax", "tvm.runtime.disco")}
    print(json.dumps({"cpp_errors": len(raised), "lazy": lazy}))
""")

PRINTER_NAMES = textwrap.dedent("""
    import json, sys
    import torch  # noqa: F401
    if sys.argv[1] == "shim":
        import tilus.backend.tvm_shim  # noqa: F401
    import tvm
    names = {}
    for n in tvm.ir.Op.list_op_names():
        value = tvm.ir.Op.get(str(n)).get_attr("TScriptPrinterName")
        names[str(n)] = None if value is None else str(value)
    disco = tvm.runtime.disco
    usable = [tvm.relax.Function.__name__, None if disco is None else disco.DRef.__name__]
    print(json.dumps({"names": names, "usable": usable}))
""")


def _run(script: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["plain", "shim"])
def test_tvm_import_raises_no_cpp_error_through_the_shim(mode):
    got = _run(COUNT_CPP_ERRORS, mode)
    if mode == "plain":     # the reason the shim exists: TVM's own import provokes them
        assert got["cpp_errors"] > 0       # (and its disco fails to import: see below)
        assert got["lazy"] == {"tvm.relax": "module", "tvm.runtime.disco": "NoneType"}
    else:
        assert got["cpp_errors"] == 0
        assert got["lazy"] == {"tvm.relax": "_LazyModule", "tvm.runtime.disco": "_LazyModule"}


def test_tvm_after_the_shim_import_is_tvm_after_a_plain_import():
    plain, shim = _run(PRINTER_NAMES, "plain"), _run(PRINTER_NAMES, "shim")
    assert len(plain["names"]) > 500
    assert shim["names"] == plain["names"]
    # disco's type lives in a library TVM loads after trying disco: a plain import leaves
    # tvm.runtime.disco None, the lazy one imports it when first used
    assert plain["usable"] == ["Function", None]
    assert shim["usable"] == ["Function", "DRef"]
