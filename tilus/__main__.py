"""The ``tilus`` command line (also ``python -m tilus``).

    tilus cache list|info|clear        inspect or empty the kernel cache
    tilus build FILE.py:Kernel --arch sm_90 [--param k=v ...] --emit ir|cuda|ptx|sass|resources
    tilus bundle --arch sm_90 --out DIR [--python 3.12] [--tgz FILE] TARGET...
                                                                      prebuild for a GPU machine
    tilus bench matmul [options]       the low-bit matmul benchmark (GPU; --dry-run anywhere)
    tilus tune matmul --n N --k K [--m M ...] [--dry-run]   autotune a ready op (tilus.ops.tune_cli)

Exit status: 0 success, 1 error, 2 usage error or feature not available yet.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

EMITS = ("ir", "cuda", "ptx", "sass", "resources")
NEEDS_BACKEND = "needs the CUDA backend (not built yet)"


class CLIError(Exception):
    """A failure to report in one line and exit with ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ---- cache --------------------------------------------------------------------------------------
def _cache(args):
    from tilus.runtime.cache import KernelCache

    return KernelCache(args.cache_dir)


def cmd_cache_list(args) -> int:
    entries = _cache(args).list_entries()
    if args.json:
        print(json.dumps([{"key": e.key, "name": e.name, "target": e.target, "arch": e.arch,
                           "bytes": e.bytes, "path": str(e.path)} for e in entries], indent=2))
        return 0
    if not entries:
        print("(no cached kernels)")
        return 0
    print(f"{'key':16}  {'kernel':24}  {'target':6}  {'arch':6}  {'size':>10}")
    for e in entries:
        print(f"{e.key[:16]}  {e.name[:24]:24}  {e.target[:6]:6}  {e.arch[:6]:6}  "
              f"{_human(e.bytes):>10}")
    return 0


def cmd_cache_info(args) -> int:
    info = _cache(args).info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"root:    {info['root']}")
        print(f"entries: {info['count']}")
        print(f"size:    {_human(info['bytes'])} ({info['bytes']} bytes)")
        if info["temporaries"]:
            print(f"temporaries: {info['temporaries']} ({_human(info['temporary_bytes'])}: "
                  f"writers at work, or left by killed ones; removed when their owner is gone)")
    return 0


def cmd_cache_clear(args) -> int:
    cache = _cache(args)
    n = cache.clear()
    print(f"removed {n} cached kernel{'s' if n != 1 else ''} from {cache.root}")
    return 0


# ---- build --------------------------------------------------------------------------------------
def parse_param(text: str):
    """``k=v``: v as a Python literal (int, float, bool, string, tuple), else a tilus dtype name,
    else the string itself."""
    if "=" not in text:
        raise CLIError(f"--param {text!r}: expected NAME=VALUE", 2)
    name, value = text.split("=", 1)
    name = name.strip()
    if not name.isidentifier():
        raise CLIError(f"--param {text!r}: {name!r} is not a parameter name", 2)
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    from tilus import dtypes

    try:
        return name, dtypes.get(value)
    except Exception:
        return name, value


def _load_kernel_class(target: str):
    if ":" not in target:
        raise CLIError(f"{target!r}: expected FILE.py:KernelClass", 2)
    file, _, cls_name = target.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise CLIError(f"{file}: no such file", 2)
    spec = importlib.util.spec_from_file_location(f"_tilus_cli_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except (AttributeError, ImportError) as e:
        if "Script" in str(e) or "tilus.lang" in str(e):
            raise CLIError(f"{file}: the Tilus DSL (tilus.Script) is not available in this build: "
                           f"{e}", 2) from None
        raise CLIError(f"{file}: importing it failed: {type(e).__name__}: {e}") from None
    except Exception as e:
        raise CLIError(f"{file}: importing it failed: {type(e).__name__}: {e}") from None
    finally:
        sys.path.pop(0)
    cls = getattr(module, cls_name, None)
    if cls is None:
        found = [n for n, v in vars(module).items() if isinstance(v, type) and hasattr(v, "program")]
        raise CLIError(f"{file} defines no {cls_name!r}"
                       + (f" (kernel classes there: {', '.join(found)})" if found else ""), 2)
    return cls


def _check_arch(arch: str) -> None:
    if not re.fullmatch(r"sm_\d+a?", arch) or int(re.sub(r"\D", "", arch)) < 80:
        raise CLIError(f"--arch {arch}: expected sm_80 or newer, e.g. sm_90", 2)


def cmd_build(args) -> int:
    _check_arch(args.arch)
    cls = _load_kernel_class(args.kernel)
    params = dict(parse_param(p) for p in args.param)
    from tilus.bundle import split_consts

    init, consts = split_consts(cls, params)
    try:
        kernel = cls(**init)
    except TypeError as e:
        raise CLIError(f"{args.kernel}: cannot instantiate with {params}: {e}", 2) from None
    program = getattr(kernel, "program", None)
    if not callable(program):
        raise CLIError(f"{args.kernel} is not a tilus.Script (it has no program() method)", 2)
    prog = program(**consts)
    if args.emit == "ir":
        text = str(prog)
    else:
        from tilus.ir.program import Program

        if not isinstance(prog, Program):
            raise CLIError(f"{args.kernel}: program() returned {type(prog).__name__}, not a "
                           f"tilus.ir.Program: --emit {args.emit} needs a tilus.Script", 2)
        text = _emit_compiled(prog, args.arch, args.emit)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _emit_compiled(kernel, arch: str, emit: str) -> str:
    """The CUDA source, PTX, SASS or resource report of ``tilus.build(kernel, arch)``."""
    if importlib.util.find_spec("tvm") is None:       # a runtime-only install (no TVM)
        raise CLIError(f"--emit {emit} {NEEDS_BACKEND}: TVM is not installed", 2)
    import tilus

    compiled = tilus.build(kernel, arch)      # through the kernel cache
    if emit == "cuda":
        return compiled.cuda_source
    if emit == "ptx":
        return compiled.ptx
    if emit == "sass":
        return compiled.sass
    r = compiled.resources
    return json.dumps({"kernel": compiled.kernel_name, "arch": compiled.arch,
                       "registers": r.registers, "spill_store_bytes": r.spill_store_bytes,
                       "spill_load_bytes": r.spill_load_bytes, "stack_frame_bytes": r.stack_frame_bytes,
                       "static_shared_bytes": r.shared_memory_bytes, "launch": compiled.launch,
                       "assumptions": compiled.assumptions}, indent=2)


def cmd_bundle(args) -> int:
    _check_arch(args.arch)
    from tilus.bundle import BundleError, bundle, wheel_download_command

    if not args.targets and not args.allow_empty:
        raise CLIError("give at least one TARGET (FILE.py:Kernel, FILE.py or a module with "
                       "bundle_specs()), or --allow-empty for the runtime pieces alone", 2)
    if args.print_wheel_command:
        if not args.python:
            raise CLIError("--print-wheel-command needs --python X.Y", 2)
        try:
            print(" ".join(wheel_download_command(args.python, Path(args.out) / "wheels")))
        except BundleError as e:
            raise CLIError(str(e), 2) from None
        return 0
    params = dict(parse_param(p) for p in args.param)
    print(f"tilus bundle: building {len(args.targets)} target(s) for {args.arch} into {args.out}")
    try:
        manifest = bundle(args.out, args.targets, params, arch=args.arch, python=args.python,
                          wheel=args.wheel, include_sources=not args.no_sources,
                          include_runtime=not args.no_runtime, keep_going=args.keep_going,
                          jobs=args.jobs)
    except BundleError as e:
        raise CLIError(str(e)) from None
    for name, n in manifest["bytes"].items():
        print(f"  {name + '/':14} {_human(n):>10}")
    print(f"  {'total':14} {_human(manifest['total_bytes']):>10} ({manifest['total_bytes']} bytes)")
    if manifest["failed"]:
        print(f"  {manifest['failed']} of {len(manifest['kernels'])} kernels FAILED to build "
              f"(--keep-going; listed in manifest.json): a GPU run that needs them fails")
    if args.tgz:
        from tilus.bundle import pack_tgz

        size = pack_tgz(args.out, args.tgz, manifest)
        print(f"  packed into {args.tgz}: {_human(size)} ({size} bytes)")
    print(f"run there: {Path(args.out) / 'run_on_gpu.sh'} [pytest arguments]")
    return 0


def cmd_build_op(args) -> int:
    """Build the kernel a ready op launches for one shape (no GPU) and show it."""
    import json

    import torch

    from tilus.ops import compile_matmul, quantize

    act = {"float16": torch.float16, "bfloat16": torch.bfloat16}[args.act]
    weight = torch.linspace(-1, 1, args.n * args.k).reshape(args.n, args.k)
    qw = quantize(weight, args.dtype, group_size=args.group_size, scale_dtype=act)
    built = compile_matmul(qw, args.m, arch=args.arch, act=act)
    if args.emit == "sass":
        print(built.sass)
    elif args.emit == "cuda":
        print(built.cuda_source)
    elif args.emit == "resources":
        print(json.dumps({"schedule": built.schedule, **built.resources.__dict__}, indent=1))
    else:
        print(json.dumps({"schedule": built.schedule, **built.loop_cost()}, indent=1))
    return 0


BENCHMARKS = {"matmul": "bench_matmul.py", "decode-cost": "bench_decode_cost.py"}


def cmd_bench(args) -> int:
    """Hand over to a benchmark script of the checkout's benchmarks/ folder."""
    if args.what is None:
        raise CLIError(f"name a benchmark: {', '.join(BENCHMARKS)} (e.g. tilus bench matmul --dry-run)", 2)
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / BENCHMARKS[args.what]
    if not path.is_file():
        raise CLIError(f"{path} not found: the benchmarks ship with the source checkout, not the wheel", 2)
    spec = importlib.util.spec_from_file_location(f"tilus_bench_{args.what}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(args.rest)


def cmd_tune(args) -> int:
    from tilus.ops.tune_cli import TuneCLIError, cmd_tune as run

    try:
        return run(args)
    except TuneCLIError as e:
        raise CLIError(str(e), e.code) from None


# ---- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from tilus import __version__

    p = argparse.ArgumentParser(prog="tilus", description="Tilus: GPU kernels over 1-8-bit types.")
    p.add_argument("--version", action="version", version=f"tilus {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    cache = sub.add_parser("cache", help="list, inspect or clear the kernel cache",
                           description="The on-disk kernel cache ($TILUS_CACHE_DIR or "
                                       "~/.cache/tilus).")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    for name, fn, text in (("list", cmd_cache_list, "list cached kernels"),
                           ("info", cmd_cache_info, "show the cache's location, entries and size"),
                           ("clear", cmd_cache_clear, "remove every cached kernel")):
        c = cache_sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        c.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="cache root (default: $TILUS_CACHE_DIR or ~/.cache/tilus)")
        if name != "clear":
            c.add_argument("--json", action="store_true", help="print JSON")
        c.set_defaults(func=fn)

    b = sub.add_parser("build", help="build a kernel for an arch and show its IR, CUDA, PTX, SASS "
                                     "or resources (no GPU needed)",
                       description="Instantiate a tilus.Script class from a Python file and show "
                                   "what it compiles to.")
    b.add_argument("kernel", metavar="FILE.py:Kernel", help="a Python file and a Script class in it")
    b.add_argument("--arch", default="sm_90", help="target GPU architecture (default: sm_90)")
    b.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="compile-time parameter for the class's __init__ (repeatable); VALUE is a "
                        "Python literal or a dtype name")
    b.add_argument("--emit", choices=EMITS, default="ir",
                   help="what to print: ir (the program before the passes), cuda (TVM's CUDA "
                        "source), ptx, sass (needs cuobjdump or nvdisasm), resources (JSON: "
                        "registers, spills, shared memory, launch)")
    b.set_defaults(func=cmd_build)

    bo = sub.add_parser("build-op", help="build the kernel a ready op launches for a shape and "
                                         "show its SASS, CUDA, resources or static cost (no GPU)",
                        description="Quantize a stand-in [N, K] weight and build the kernel that "
                                    "tilus.ops.matmul launches for M rows (tilus.ops."
                                    "compile_matmul).")
    bo.add_argument("op", choices=["matmul"], help="the ready op")
    bo.add_argument("--dtype", default="uint4", help="weight type (default: uint4)")
    bo.add_argument("--m", type=int, default=1, help="activation rows (default: 1)")
    bo.add_argument("--n", type=int, default=4096, help="output features (default: 4096)")
    bo.add_argument("--k", type=int, default=4096, help="input features (default: 4096)")
    bo.add_argument("--group-size", type=int, default=128, help="group size (default: 128)")
    bo.add_argument("--act", choices=["float16", "bfloat16"], default="float16")
    bo.add_argument("--arch", default="sm_90", help="target GPU architecture (default: sm_90)")
    bo.add_argument("--emit", choices=["sass", "cuda", "resources", "cost"], default="cost",
                    help="what to print (default: cost, the main loop's static cost as JSON)")
    bo.set_defaults(func=cmd_build_op)

    bu = sub.add_parser("bundle", help="prebuild kernels into a folder that a GPU machine without "
                                       "TVM runs them from",
                        description="Build kernels here (TVM + nvcc, no GPU) into DIR/cache, and "
                                    "copy TVM's runtime libraries, the tilus sources and (with "
                                    "--python) the apache-tvm-ffi wheel, plus run_on_gpu.sh.")
    bu.add_argument("targets", nargs="*", metavar="TARGET",
                    help="FILE.py:Kernel (with --param), or FILE.py / a module exposing "
                         "bundle_specs() -> [(kernel, {consts})]")
    bu.add_argument("--arch", default="sm_90", help="target GPU architecture (default: sm_90)")
    bu.add_argument("--out", required=True, metavar="DIR", help="the bundle folder")
    bu.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="compile-time parameter for every FILE.py:Kernel target (repeatable)")
    bu.add_argument("--python", metavar="X.Y", default=None,
                    help="also download the apache-tvm-ffi wheel for this CPython (e.g. 3.12)")
    bu.add_argument("--wheel", metavar="FILE", default=None,
                    help="an apache-tvm-ffi wheel to copy into the bundle instead of downloading")
    bu.add_argument("--print-wheel-command", action="store_true",
                    help="print the pip command that --python runs, and stop")
    bu.add_argument("--no-sources", action="store_true", help="do not copy the tilus sources")
    bu.add_argument("--no-runtime", action="store_true",
                    help="do not copy TVM's runtime libraries")
    bu.add_argument("--allow-empty", action="store_true", help="allow no targets")
    bu.add_argument("--keep-going", action="store_true",
                    help="build the other kernels when one fails; list the failures in "
                         "manifest.json")
    bu.add_argument("--jobs", type=int, default=None,
                    help="build processes (default $TILUS_BUILD_JOBS or cores)")
    bu.add_argument("--tgz", metavar="FILE", default=None,
                    help="also pack the bundle (this build's kernels only) into a gzipped tar")
    bu.set_defaults(func=cmd_bundle)

    bench = sub.add_parser("bench", help="run a benchmark (a GPU; --dry-run anywhere)",
                           description="Run a benchmark script of benchmarks/ with its own options.")
    bench.add_argument("what", nargs="?", choices=sorted(BENCHMARKS), help="which benchmark")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    bench.set_defaults(func=cmd_bench)

    from tilus.ops.tune_cli import add_parser as add_tune_parser

    add_tune_parser(sub).set_defaults(func=cmd_tune)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from tilus.logging_config import configure_logging
    from tilus.errors import TilusError

    try:
        configure_logging()
    except ValueError as e:
        print(f"tilus: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"tilus {args.command}: {e}", file=sys.stderr)
        return e.code
    except TilusError as e:
        print(f"tilus {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
