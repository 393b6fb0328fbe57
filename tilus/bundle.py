"""``tilus bundle``: prebuild kernels on a machine with TVM and nvcc (no GPU needed) into a folder
that a GPU machine with torch but without TVM, lark or a CUDA compiler runs them from.

Layout of ``DIR``::

    cache/<key>/...          a kernel cache (TILUS_CACHE_DIR): ir.tilus, kernel.cu, kernel.cubin,
                             kernel.ptx, ptxas.log, kernel.so, metadata.json per kernel; taken
                             from the kernel cache when it has them (tilus.build put them there)
    tvm_runtime/             libtvm_runtime.so, libtvm_runtime_cuda.so (TILUS_TVM_RUNTIME_DIR);
                             they need libtvm_ffi.so (the apache-tvm-ffi wheel), libcudart.so.13 and
                             the driver's libcuda.so.1, never libtvm_compiler.so
    wheels/                  apache_tvm_ffi-<installed version>-cp<XY>-...whl (with --python X.Y)
    src/                     tilus/, tests/, examples/, benchmarks/, pyproject.toml (PYTHONPATH)
    run_on_gpu.sh            sets the variables above, installs the wheel to a private folder and
                             runs pytest on the given selections (default: the GPU tests)
    manifest.json            what was built (kernel, consts, arch, key, state: "built" now,
                             "reused" from the kernel cache, "cached" already in DIR/cache),
                             sizes, versions, the git commit of the sources

``--tgz FILE`` also packs the bundle into one gzipped tar (the kernels of this manifest only, not
entries left in DIR/cache by earlier builds): a QuantMatmul entry is about 2.2 MB (its CUDA
source twice, its PTX, the cubin) and 0.3 MB packed, and a device call carries at most 64 MiB.

Targets: ``FILE.py:Kernel`` (instantiated with the ``--param`` values: a name of a compile-time
parameter of ``__call__`` goes to ``program()``, any other to ``__init__``), or ``FILE.py`` /
``package.module`` exposing ``bundle_specs()``: an iterable of kernels (Script instances or
Programs) or ``(kernel, {const: value})`` pairs.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from tilus.errors import TilusError

RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_runtime_cuda.so")
SOURCE_DIRS = ("tilus", "tests", "examples", "benchmarks")
SOURCE_FILES = ("pyproject.toml",)
DEFAULT_SELECTION = "-m gpu tests"


class BundleError(TilusError):
    pass


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# ---- targets ------------------------------------------------------------------------------------
def load_file_module(path: Path, prefix: str = "_tilus_bundle_"):
    """The module of a Python file, registered in sys.modules (as ``prefix + stem``) while and
    after it runs, as an import would (dataclasses and pickling look their module up there)."""
    name = f"{prefix}{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.pop(0)
    return module


def split_consts(cls, params: dict) -> tuple[dict, dict]:
    """(``__init__`` keyword arguments, compile-time values for ``program()``)."""
    names = set()
    kernel_params = getattr(cls, "kernel_params", None)
    if callable(kernel_params):
        try:
            names = {p.name for p in kernel_params() if p.is_const}
        except Exception:
            names = set()
    init = {k: v for k, v in params.items() if k not in names}
    consts = {k: v for k, v in params.items() if k in names}
    return init, consts


def resolve_targets(targets: Sequence[str], params: dict) -> list[tuple[str, Any, dict]]:
    """[(label, kernel or Program, consts)] for the command-line targets."""
    out = []
    for target in targets:
        if ":" in target and target.rsplit(":", 1)[0].endswith(".py"):
            file, _, cls_name = target.rpartition(":")
            path = Path(file)
            if not path.is_file():
                raise BundleError(f"{file}: no such file")
            cls = getattr(load_file_module(path), cls_name, None)
            if cls is None:
                raise BundleError(f"{file} defines no {cls_name!r}")
            init, consts = split_consts(cls, params)
            try:
                kernel = cls(**init)
            except TypeError as e:
                raise BundleError(f"{target}: cannot instantiate with {init}: {e}") from None
            out.append((target, kernel, consts))
            continue
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise BundleError(f"{target}: no such file")
            module = load_file_module(path)
        else:
            try:
                module = importlib.import_module(target)
            except ImportError as e:
                raise BundleError(f"{target}: cannot import: {e}") from None
        specs = getattr(module, "bundle_specs", None)
        if not callable(specs):
            raise BundleError(f"{target} has no bundle_specs() function (or give FILE.py:Kernel)")
        for i, spec in enumerate(specs()):
            kernel, consts = (spec if isinstance(spec, tuple) else (spec, {}))
            out.append((f"{target}[{i}]", kernel, dict(consts)))
    return out


# ---- pieces -------------------------------------------------------------------------------------
def tvm_ffi_version() -> str:
    from importlib import metadata

    return metadata.version("apache-tvm-ffi")


def wheel_download_command(python: str, dest: Path, version: Optional[str] = None) -> list[str]:
    """The pip command that fetches the apache-tvm-ffi wheel for CPython ``python`` (``3.12``)
    on manylinux x86-64."""
    if not python.replace(".", "").isdigit() or python.count(".") != 1:
        raise BundleError(f"--python {python!r}: expected MAJOR.MINOR, e.g. 3.12")
    version = version or tvm_ffi_version()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "-d", str(dest)]
    for plat in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                 "manylinux2014_x86_64"):
        cmd += ["--platform", plat]
    return cmd + [f"apache-tvm-ffi=={version}"]


def copy_runtime_libs(dest: Path) -> list[Path]:
    from tilus.runtime.libraries import tvm_runtime_dir

    src = tvm_runtime_dir()
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name in RUNTIME_LIBS:
        if not (src / name).is_file():
            raise BundleError(f"{src} has no {name} (this TVM was built without CUDA?)")
        shutil.copy2(src / name, dest / name)
        out.append(dest / name)
    return out


def copy_sources(dest: Path) -> None:
    root = repo_root()
    if dest.exists():
        shutil.rmtree(dest)          # no stale files from an earlier bundle
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.so", "*.cubin")
    for d in SOURCE_DIRS:
        if (root / d).is_dir():
            shutil.copytree(root / d, dest / d, ignore=ignore, dirs_exist_ok=True)
    for f in SOURCE_FILES:
        if (root / f).is_file():
            shutil.copy2(root / f, dest / f)


RUN_SCRIPT = r"""#!/usr/bin/env bash
# Runs Tilus' prebuilt kernels on a GPU machine that has torch but no TVM: generated by
# `tilus bundle`. Usage: ./run_on_gpu.sh [pytest arguments...]   (default: {default})
#                  ./run_on_gpu.sh python SCRIPT [arguments...]  (same environment, no pytest)
# TILUS_RUN_PREFIX (words split on spaces) goes before the final python, e.g.
# TILUS_RUN_PREFIX="compute-sanitizer --tool memcheck" ./run_on_gpu.sh python SCRIPT
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
PY="${{PYTHON:-python3}}"
export TILUS_CACHE_DIR="${{TILUS_CACHE_DIR:-$HERE/cache}}"
export TILUS_TVM_RUNTIME_DIR="$HERE/tvm_runtime"
export TILUS_ARCH="${{TILUS_ARCH:-{arch}}}"
SITE="${{TILUS_SITE:-/tmp/tilus-site}}"
if ! "$PY" -c "import tvm_ffi" 2>/dev/null; then
  if ls "$HERE"/wheels/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$HERE"/wheels/*.whl
    export PYTHONPATH="$SITE${{PYTHONPATH:+:$PYTHONPATH}}"
  else
    echo "run_on_gpu.sh: tvm_ffi is not installed and the bundle holds no wheel" \
         "(rebuild it with --python X.Y)" >&2
    exit 1
  fi
fi
export PYTHONPATH="$HERE/src${{PYTHONPATH:+:$PYTHONPATH}}"
cd "$HERE/src"
"$PY" - <<'PYEOF' || true
import importlib
for name in ("tilus", "tvm_ffi", "torch"):
    try:
        m = importlib.import_module(name)
        extra = ""
        if name == "torch" and m.cuda.is_available():
            extra = " on " + m.cuda.get_device_name()
        print(name, getattr(m, "__version__", "?"), extra, flush=True)
    except Exception as e:
        print(name, "unavailable:", e, flush=True)
PYEOF
if [ "${{1:-}}" = "python" ]; then shift; exec ${{TILUS_RUN_PREFIX:-}} "$PY" "$@"; fi
if [ "$#" -eq 0 ]; then set -- {default}; fi
exec ${{TILUS_RUN_PREFIX:-}} "$PY" -m pytest -q -p no:cacheprovider "$@"
"""


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- building -----------------------------------------------------------------------------------
def _build_entry(program, key: str, arch: str, root: Path,
                 keep_going: bool) -> tuple[str, Optional[str]]:
    """(state, error) of a kernel the bundle's cache (at ``root``) lacks: taken from the kernel
    cache or built into it ("reused" / "built"), then copied into the bundle's cache; a
    TilusError raises, or with ``keep_going`` gives ("failed", its first line)."""
    from tilus.backend.cached import cached_entry, entry_artifact
    from tilus.runtime import KernelCache, default_cache

    built: dict = {}
    try:
        entry = cached_entry(program, arch, default_cache(), built)
    except TilusError as e:
        if not keep_going:
            raise
        return "failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if entry.path.parent.resolve() != root.resolve():
        KernelCache(root).store(key, entry_artifact(entry))
    return ("built" if built else "reused"), None


_WORK: dict = {}    # a build worker's share of the bundle, set by _init_worker


def _init_worker(programs: list, arch: str, root: str, keep_going: bool) -> None:
    """Runs first in each build worker. The Programs arrive through ``fork`` (the arguments of a
    forked worker's initializer are inherited, not pickled): a Program does not pickle."""
    _WORK.update(programs=programs, arch=arch, root=Path(root), keep_going=keep_going)


def _build_in_worker(n: int) -> tuple[str, Optional[str], float]:
    t0 = time.perf_counter()
    program, key = _WORK["programs"][n]
    state, error = _build_entry(program, key, _WORK["arch"], _WORK["root"], _WORK["keep_going"])
    return state, error, time.perf_counter() - t0


def _build_entries(todo: list, arch: str, root: Path, keep_going: bool,
                   jobs: int) -> Iterator[tuple[tuple, tuple[str, Optional[str], float]]]:
    """(item, (state, error, seconds)) for each ``todo`` item ``(index, label, program, key,
    consts, seconds)``, as its build ends: in ``jobs`` worker processes forked from this one,
    or here where there is one item or no ``fork`` (the workers could not get the Programs)."""
    import concurrent.futures as cf

    from tilus.autotune.tuner import worker_context

    context = worker_context() if len(todo) > 1 else None
    if context is None or context.get_start_method() != "fork":
        for item in todo:
            t0 = time.perf_counter()
            state, error = _build_entry(item[2], item[3], arch, root, keep_going)
            yield item, (state, error, time.perf_counter() - t0)
        return
    pool = cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context,
                                  initializer=_init_worker,
                                  initargs=([(item[2], item[3]) for item in todo], arch,
                                            str(root), keep_going))
    try:
        futures = {pool.submit(_build_in_worker, n): item for n, item in enumerate(todo)}
        for fut in cf.as_completed(futures):
            try:
                result = fut.result()        # a build's error (no keep_going) raises here
            except cf.process.BrokenProcessPool as e:     # a worker died (e.g. killed)
                if not keep_going:
                    raise
                result = ("failed", f"worker failed: {type(e).__name__}: {e}", 0.0)
            yield futures[fut], result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def bundle(out: "str | os.PathLike", targets: Sequence[str] = (), params: Optional[dict] = None,
           arch: str = "sm_90", python: Optional[str] = None, wheel: Optional[str] = None,
           include_sources: bool = True, include_runtime: bool = True, log=print,
           keep_going: bool = False, progress: Optional[bool] = None,
           jobs: Optional[int] = None) -> dict:
    """Build ``targets`` into ``out`` (see module doc); returns the manifest. A kernel that does
    not compile raises, or with ``keep_going`` is logged and listed in the manifest (``"state":
    "failed"``, ``"error"``; ``"failed"``: how many) while the others are built. Progress (counts
    per state, ETA) goes to stderr (:class:`tilus.progress.Progress`; ``progress=False``: none).
    The kernels to build are built in ``jobs`` worker processes (default ``$TILUS_BUILD_JOBS`` or
    the cores; one job: in this process), forked as the autotuner's are (they share this
    process's TVM import: :func:`tilus.autotune.tuner.worker_context`)."""
    from tilus.autotune.tuner import build_jobs
    from tilus.backend.build_program import as_program
    from tilus.backend.toolchain import normalize_arch
    from tilus.progress import Progress
    from tilus.runtime import KernelCache, cache_key, key_versions

    arch = normalize_arch(arch)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = KernelCache(out / "cache")
    specs = resolve_targets(targets, dict(params or {}))
    jobs = build_jobs(jobs)
    kernels: dict[int, dict] = {}
    with Progress(len(specs), f"bundling for {arch}", enabled=progress) as bar:
        def done(i: int, label: str, program, key: str, consts: dict, state: str,
                 error: Optional[str], secs: float) -> None:
            kernels[i] = {"target": label, "kernel": program.name, "key": key, "arch": arch,
                          "consts": {k: str(v) for k, v in consts.items()}, "state": state,
                          "seconds": round(secs, 3), **({"error": error} if error else {})}
            line = (f"  {state:6} {program.name:24} {key[:12]}  {secs * 1e3:7.0f} ms  ({label})"
                    + (f"\n         {error}" if error else ""))
            if log is print:        # through the bar, which a plain print would break
                bar.write(line, file=sys.stdout)
            else:
                log(line)
            bar.update(state)

        todo = []
        for i, (label, kernel, consts) in enumerate(specs):
            t0 = time.perf_counter()
            program = as_program(kernel, **consts)
            key = cache_key(str(program), arch, key_versions())
            if cache.lookup(key) is not None:
                done(i, label, program, key, consts, "cached", None, time.perf_counter() - t0)
            elif jobs == 1:
                state, error = _build_entry(program, key, arch, cache.root, keep_going)
                done(i, label, program, key, consts, state, error, time.perf_counter() - t0)
            else:
                todo.append((i, label, program, key, consts, time.perf_counter() - t0))
        for (i, label, program, key, consts, secs), (state, error, build_secs) in _build_entries(
                todo, arch, cache.root, keep_going, jobs):
            done(i, label, program, key, consts, state, error, secs + build_secs)
    kernels_in_order = [kernels[i] for i in range(len(specs))]
    if include_runtime:
        copy_runtime_libs(out / "tvm_runtime")
    if include_sources:
        copy_sources(out / "src")
    wheels = out / "wheels"
    if wheel:
        wheels.mkdir(exist_ok=True)
        shutil.copy2(wheel, wheels / Path(wheel).name)
    if python:
        from tilus.backend.run_tool import run_tool, tail

        wheels.mkdir(exist_ok=True)
        cmd = wheel_download_command(python, wheels)
        log("  " + " ".join(cmd[1:]))
        proc = run_tool(cmd)
        if proc.returncode != 0:
            raise BundleError(f"pip download failed:\n{tail(proc.stdout + proc.stderr)}")
    script = out / "run_on_gpu.sh"
    script.write_text(RUN_SCRIPT.format(arch=arch, default=DEFAULT_SELECTION))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    sizes = {d.name: dir_bytes(d) for d in sorted(out.iterdir()) if d.is_dir()}
    manifest = {"arch": arch, "kernels": kernels_in_order,
                "failed": sum(k["state"] == "failed" for k in kernels_in_order), "bytes": sizes,
                "total_bytes": dir_bytes(out), "versions": _versions()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    manifest["total_bytes"] = dir_bytes(out)
    return manifest


def pack_tgz(out: "str | os.PathLike", path: "str | os.PathLike", manifest: dict) -> int:
    """Writes ``path``: a gzipped tar of bundle ``out`` (run_on_gpu.sh, manifest.json,
    tvm_runtime/, wheels/, src/ and the cache entries ``manifest`` lists, in that order; no other
    cache entry). Returns its size in bytes."""
    import tarfile

    out, path = Path(out), Path(path)
    names = ["run_on_gpu.sh", "manifest.json", "tvm_runtime", "wheels", "src"]
    names += sorted({f"cache/{k['key']}" for k in manifest["kernels"]
                     if k.get("state") != "failed"})
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for name in names:
            if (out / name).exists():
                tar.add(out / name, arcname=name)
    os.replace(tmp, path)
    return path.stat().st_size


def _versions() -> dict:
    import tilus

    v = {"tilus": tilus.__version__, "python_built_with": sys.version.split()[0],
         "git_commit": _git_commit()}
    try:
        v["tvm_ffi"] = tvm_ffi_version()
        from importlib import metadata

        v["tvm"] = metadata.version("apache-tvm")
    except Exception:
        pass
    return v


def _git_commit() -> str:
    """The commit the bundle's sources come from (a GPU machine's copy has no .git), with
    ``+dirty`` when the work tree has changes; "" outside a git checkout."""
    import subprocess

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30,
                                  cwd=repo_root()).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    return commit


def iter_programs(specs: Iterable) -> Iterable:
    from tilus.backend.build_program import as_program

    for spec in specs:
        kernel, consts = spec if isinstance(spec, tuple) else (spec, {})
        yield as_program(kernel, **consts)
