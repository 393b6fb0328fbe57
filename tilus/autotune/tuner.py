"""The autotuner: a schedule space on a Script class, pruning, parallel builds, timing, and the
persisted choice.

    @tilus.autotune("block_n", [64, 128, 256])      # stacked: the cartesian product
    @tilus.autotune("block_k", [32, 64])
    class MyKernel(tilus.Script):
        def __init__(self, wtype, block_n=128, block_k=32): ...

    tuner = Autotuner(MyKernel, fixed={"wtype": "uint4"}, prune=fits_in_smem)
    best = tuner.tune(bucket="m16-n4096-k4096", run=lambda kernel: kernel(*args))
    kernel = tuner.best_kernel(bucket, run)          # MyKernel(wtype="uint4", **best)

Steps of ``tune``: (1) the database (``TuningDatabase``) is asked for (kernel name, bucket,
device): a hit returns at once, with nothing built or timed; (2) the space is pruned (``prune``
hook(s): return a reason string / True to drop a config; the kernel class may define a
``prune_config(config, fixed)`` static method that is applied too); (3) the survivors are built
in parallel worker processes (``jobs``, default ``$TILUS_BUILD_JOBS`` or the number of cores;
forked from this process once it has imported the backend, so they share that one TVM import:
:func:`worker_context`; the builder is injectable and defaults to ``tilus.build`` when that
exists, else to constructing the Program): builds warm the kernel cache, they return only small
summaries; failed builds are logged and dropped; (4) each built config is timed in this process
with ``timer`` (default ``CudaEventTimer``: L2 flush, warm-up, median); (5) the fastest is
recorded in the database.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import inspect
import itertools
import logging
import os
import pickle
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from tilus.autotune.database import TuningDatabase, default_database, device_name
from tilus.errors import AutotuneError, TilusError

logger = logging.getLogger("tilus.autotune")
SPACE_ATTR = "_tilus_autotune_space"


# ---- the decorator and the space ----------------------------------------------------------------
def autotune(name: str, values: Iterable[Any]):
    """Class decorator: the tuning space of a Script class gets the parameter ``name`` with
    ``values`` (stack several for their cartesian product). ``name`` may list several parameters,
    ``"block_m, block_n"``, whose values are then tuples taken together. An instance created
    without its schedule parameters is tuned at its first call (see tilus.autotune.on_call)."""
    names = split_names(name)
    values = list(values)
    if not values:
        raise AutotuneError(f"autotune({name!r}, []): give at least one value")
    if len(names) > 1:
        for v in values:
            if not isinstance(v, (tuple, list)) or len(v) != len(names):
                raise AutotuneError(f"autotune({name!r}): each value must be a tuple of "
                                    f"{len(names)} values, got {v!r}")
        values = [tuple(v) for v in values]

    def decorate(cls):
        from tilus.autotune.on_call import defer_schedule

        if not isinstance(cls, type):
            raise AutotuneError(f"@tilus.autotune decorates a Script class, got {cls!r}")
        init = cls.__dict__.get("_tilus_original_init", cls.__init__)
        sig = inspect.signature(init)
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        for n in names:
            if n not in sig.parameters and not takes_kwargs:
                raise AutotuneError(f"@tilus.autotune({name!r}): {cls.__name__}.__init__ has no "
                                    f"parameter {n!r}")
        own = list(cls.__dict__.get(SPACE_ATTR, ()))
        taken = {n for entry, _ in own for n in split_names(entry)}
        if taken & set(names):
            raise AutotuneError(f"@tilus.autotune({name!r}) given twice on {cls.__name__}")
        # decorators apply bottom-up; keep the order as written (top first)
        setattr(cls, SPACE_ATTR, [(", ".join(names), values)] + own)
        defer_schedule(cls)
        return cls

    return decorate


def split_names(name: Any) -> tuple[str, ...]:
    """The parameter names of one ``autotune`` entry: ``"block_m, block_n"`` -> two names."""
    names = tuple(n.strip() for n in name.split(",")) if isinstance(name, str) else ()
    if not names or not all(n.isidentifier() for n in names) or len(set(names)) != len(names):
        raise AutotuneError(f"autotune: the parameter name must be an identifier or a "
                            f"comma-separated list of distinct identifiers, got {name!r}")
    return names


def space_of(cls) -> list[tuple[str, list]]:
    for klass in cls.__mro__:
        if SPACE_ATTR in klass.__dict__:
            return list(klass.__dict__[SPACE_ATTR])
    return []


def space_names(space: list[tuple[str, list]]) -> list[str]:
    """Every parameter a space sets (a multi-name entry gives several)."""
    return [n for entry, _ in space for n in split_names(entry)]


def configs_of(space: list[tuple[str, list]]) -> list[dict]:
    """The cartesian product of a space, as a list of dicts (first parameter slowest)."""
    out = []
    for combo in itertools.product(*(v for _, v in space)):
        config: dict = {}
        for (entry, _), value in zip(space, combo):
            names = split_names(entry)
            config.update(zip(names, value) if len(names) > 1 else [(names[0], value)])
        out.append(config)
    return out


# ---- building -----------------------------------------------------------------------------------
def default_builder(kernel) -> Any:
    """``tilus.build(kernel)`` when the backend provides it; otherwise the Program's construction
    (``kernel.program()``), returning its IR text."""
    import tilus

    build = getattr(tilus, "build", None)
    if build is not None:
        built = build(kernel)
        res = getattr(built, "resources", None)
        return {"built": type(built).__name__, "resources": res if _plain(res) else repr(res)}
    return str(kernel.program())


def _plain(x: Any) -> bool:
    try:
        pickle.dumps(x)
        return True
    except Exception:
        return False


@dataclass
class BuildResult:
    config: dict
    ok: bool
    summary: Any = None
    error: str = ""
    pid: int = 0
    seconds: float = 0.0


def _build_one(cls, fixed: dict, config: dict, builder: Callable) -> BuildResult:
    """Runs in a worker process: instantiate and build one config."""
    t0 = time.perf_counter()
    try:
        kernel = cls(**fixed, **config)
        summary = builder(kernel)
        if not _plain(summary):
            summary = repr(summary)
        return BuildResult(config, True, summary, "", os.getpid(), time.perf_counter() - t0)
    except Exception as e:   # a failed build drops the config; the parent logs why
        return BuildResult(config, False, None, f"{type(e).__name__}: {e}", os.getpid(),
                           time.perf_counter() - t0)


def build_jobs(jobs: Optional[int] = None) -> int:
    if jobs is not None:
        return max(1, int(jobs))
    env = os.environ.get("TILUS_BUILD_JOBS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise AutotuneError(f"TILUS_BUILD_JOBS={env!r} is not an integer") from None
    return os.cpu_count() or 1


# The backend modules a build imports: TVM through tvm_shim (with torch and ml_dtypes, through
# tvm_ffi), the lowering and the kernel cache. About 1.5 s of CPU per process that imports them.
BACKEND_MODULES = ("tilus.backend.tvm_shim", "tilus.backend.cached")


def load_backend() -> bool:
    """Imports :data:`BACKEND_MODULES` into this process (once; later calls cost nothing), so that
    build workers forked from it start with TVM loaded. False when the backend cannot be imported
    here (no TVM): the workers then fail their builds as they would have, with its error."""
    try:
        for name in BACKEND_MODULES:
            importlib.import_module(name)
    except (ImportError, TilusError) as e:
        logger.debug("build workers will import the backend themselves: %s", e)
        return False
    return True


def worker_context() -> Any:
    """The ``multiprocessing`` context of parallel builds: ``fork``, from this process after
    :func:`load_backend`, so that every worker shares the parent's one TVM import (copy-on-write
    pages) instead of importing it again. Chosen over a ``forkserver`` whose preload imports the
    backend, which would share one import too, because a fork server is a fresh interpreter that
    the workers' arguments reach only by reference: it imports its preload with the default
    ``sys.path`` (Python 3.11's ``forkserver.main`` ignores the parent's ``sys.path``, so a
    checkout put on the path in-process, as benchmarks/ do, loses to the installed copy of Tilus),
    it keeps the environment of its start (a later ``TILUS_CACHE_DIR`` would not reach the workers'
    kernel cache), every worker re-runs the parent's ``__main__`` script (unguarded scripts
    recurse) and cannot unpickle a kernel class defined in a notebook, ``python -c`` or a
    ``tilus bundle`` target file. ``fork`` keeps what the workers saw before (this process's
    modules, path, environment and working directory), and it is safe here: importing the backend
    starts no thread (measured: the native thread count of the process stays at the one OpenBLAS
    worker that ``import tilus`` starts, whose pool has fork handlers), a build joins its threads
    before it returns, and a worker never touches CUDA (:func:`_worker_init`), so a parent with a
    CUDA context (``tilus tune`` on a GPU) is not a problem. ``fork`` is named rather than taken as
    the default because Python 3.14 makes ``forkserver`` the default on Linux. Platforms without
    ``fork`` (Windows, and macOS where it is unsafe) use their default, ``spawn``."""
    import multiprocessing
    import sys

    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()
    load_backend()
    return multiprocessing.get_context("fork")


def _worker_init(arch: str) -> None:
    """Runs first in each build worker: builds that do not name an arch target ``arch``, the one
    the parent resolved (``TILUS_ARCH`` or its GPU's), so that a worker never asks torch for the
    GPU: CUDA cannot be initialized again in a process forked from one that has it, and finding
    that out would make the worker fall back to sm_80 and fill the kernel cache for the wrong arch."""
    os.environ["TILUS_ARCH"] = arch


def build_parallel(cls, fixed: dict, configs: list[dict], builder: Callable,
                   jobs: Optional[int] = None, progress: Optional[bool] = None,
                   pruned: int = 0) -> list[BuildResult]:
    """Builds every config, in ``jobs`` worker processes (one job: in this process), showing
    progress (:class:`tilus.progress.Progress`: built, failed and ``pruned`` counts, ETA;
    ``progress=False`` silences it). The workers are forked from this process after it imported
    the backend, so they share its one TVM import (:func:`worker_context`)."""
    from tilus.progress import Progress
    from tilus.runtime.arch import default_arch

    jobs = min(build_jobs(jobs), max(1, len(configs)))
    counts = {"built": 0, "failed": 0, **({"pruned": pruned} if pruned else {})}
    results: list[BuildResult] = []
    with Progress(len(configs), f"building {cls.__name__}", counts, enabled=progress) as bar:
        if jobs == 1:
            for c in configs:
                results.append(_build_one(cls, fixed, c, builder))
                bar.update("built" if results[-1].ok else "failed")
            return results
        for what, obj in (("the kernel class", cls), ("the builder", builder),
                          ("the fixed parameters", fixed)):
            try:
                pickle.dumps(obj)
            except Exception as e:
                raise AutotuneError(f"parallel builds need {what} to be picklable (defined at "
                                    f"module level): {e}; or pass jobs=1") from None
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context(),
                                    initializer=_worker_init,
                                    initargs=(default_arch(),)) as pool:
            futures = {pool.submit(_build_one, cls, fixed, c, builder): i
                       for i, c in enumerate(configs)}
            out: dict[int, BuildResult] = {}
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    out[i] = fut.result()
                except Exception as e:     # the worker died (e.g. killed): drop the config
                    out[i] = BuildResult(configs[i], False, None,
                                         f"worker failed: {type(e).__name__}: {e}")
                bar.update("built" if out[i].ok else "failed")
            results = [out[i] for i in range(len(configs))]
    return results


# ---- the tuner ----------------------------------------------------------------------------------
def kernel_name(cls, fixed: dict) -> str:
    """``ClassName`` plus a short hash of the fixed parameters (the database's kernel key)."""
    if not fixed:
        return cls.__name__
    text = repr(sorted((k, str(v)) for k, v in fixed.items()))
    return f"{cls.__name__}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass
class TuneResult:
    config: dict
    time_ms: Optional[float]
    from_database: bool
    timings: list = field(default_factory=list)      # (config, ms) for every timed config
    pruned: list = field(default_factory=list)       # (config, reason)
    failed: list = field(default_factory=list)       # BuildResult of failed builds
    builds: list = field(default_factory=list)       # every BuildResult


class Autotuner:
    """Tunes the schedule of one Script class for fixed non-schedule parameters (see module doc)."""

    def __init__(self, kernel_cls, fixed: Optional[dict] = None,
                 space: Optional[list[tuple[str, list]]] = None,
                 prune: Optional[Callable[[dict], Any]] = None,
                 builder: Optional[Callable] = None, timer: Optional[Callable] = None,
                 jobs: Optional[int] = None, database: Optional[TuningDatabase] = None,
                 progress: Optional[bool] = None, name: Optional[str] = None):
        self.cls = kernel_cls
        self.fixed = dict(fixed or {})
        self.space = space if space is not None else space_of(kernel_cls)
        if not self.space:
            raise AutotuneError(f"{kernel_cls.__name__} has no tuning space: decorate it with "
                                f"@tilus.autotune(name, values) or pass space=")
        self.prune = prune
        self.builder = builder or default_builder
        self.timer = timer
        self.jobs = jobs
        self.database = database
        self.progress = progress
        self.name = name or kernel_name(kernel_cls, self.fixed)

    def _db(self) -> TuningDatabase:
        return self.database if self.database is not None else default_database()

    def candidates(self) -> tuple[list[dict], list[tuple[dict, str]]]:
        """(kept configs, [(pruned config, reason)])."""
        keep, pruned = [], []
        hooks = [h for h in (getattr(self.cls, "prune_config", None), self.prune) if h is not None]
        for c in configs_of(self.space):
            reason = None
            for hook in hooks:
                r = hook(c, self.fixed) if hook is not self.prune else _call_prune(hook, c,
                                                                                   self.fixed)
                if r:
                    reason = r if isinstance(r, str) else "pruned"
                    break
            if reason is None:
                keep.append(c)
            else:
                pruned.append((c, reason))
        return keep, pruned

    def lookup(self, bucket: str, device: Any = None) -> Optional[dict]:
        entry = self._db().lookup(self.name, bucket, device_name(device))
        return None if entry is None else dict(entry["config"])

    def tune(self, bucket: str, run: Callable[[Any], Any], device: Any = None,
             force: bool = False) -> TuneResult:
        """The best config for ``bucket`` on ``device``: from the database, or by building and
        timing every surviving config (``run(kernel)`` performs one launch)."""
        dev = device_name(device)
        db = self._db()
        if not force:
            entry = db.lookup(self.name, bucket, dev)
            if entry is not None:
                return TuneResult(dict(entry["config"]), entry.get("time_ms"), True)
        keep, pruned = self.candidates()
        if not keep:
            raise AutotuneError(f"{self.name}: every one of the {len(pruned)} configs was pruned "
                                f"(e.g. {pruned[0][0]}: {pruned[0][1]})" if pruned else
                                f"{self.name}: the tuning space is empty")
        builds = build_parallel(self.cls, self.fixed, keep, self.builder, self.jobs,
                                self.progress, pruned=len(pruned))
        failed = [b for b in builds if not b.ok]
        for b in failed:
            logger.info("%s: config %s failed to build: %s", self.name, b.config, b.error)
        ok = [b for b in builds if b.ok]
        if not ok:
            raise AutotuneError(f"{self.name}: all {len(builds)} builds failed; first: "
                                f"{failed[0].config}: {failed[0].error}")
        timer = self.timer
        if timer is None:
            from tilus.autotune.timers import CudaEventTimer

            timer = CudaEventTimer()
        timings = []
        for b in ok:
            kernel = self.cls(**self.fixed, **b.config)
            try:
                ms = timer(lambda: run(kernel), b.config)
            except Exception as e:
                logger.info("%s: config %s failed to run: %s", self.name, b.config, e)
                failed.append(BuildResult(b.config, False, None, f"run: {type(e).__name__}: {e}"))
                continue
            timings.append((b.config, ms))
        if not timings:
            raise AutotuneError(f"{self.name}: no config ran; first error: {failed[-1].error}")
        best, best_ms = min(timings, key=lambda x: x[1])
        db.record(self.name, bucket, dev, best, best_ms, candidates=len(timings))
        return TuneResult(dict(best), best_ms, False, timings, pruned, failed, builds)

    def best_config(self, bucket: str, run: Callable[[Any], Any], device: Any = None) -> dict:
        return self.tune(bucket, run, device).config

    def best_kernel(self, bucket: str, run: Callable[[Any], Any], device: Any = None):
        return self.cls(**self.fixed, **self.best_config(bucket, run, device))


def _call_prune(hook: Callable, config: dict, fixed: dict) -> Any:
    try:
        n = len(inspect.signature(hook).parameters)
    except (TypeError, ValueError):
        n = 2
    return hook(config, fixed) if n >= 2 else hook(config)


def format_traceback() -> str:  # pragma: no cover - debugging aid
    return traceback.format_exc()
