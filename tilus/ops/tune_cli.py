"""``tilus tune``: tune a ready op's schedules on this machine's GPU and store the choices.

    tilus tune matmul --n 4096 --k 4096 --m 1 16 256 --dtype uint4 --group-size 128
    tilus tune matmul ... --dry-run      # no GPU needed: prune and build the space, time nothing

``__main__`` calls :func:`add_parser` with its sub-parsers; the command's function is
:func:`cmd_tune`. Exit status: 0 success, 1 error, 2 usage error or no GPU (without --dry-run).
"""
from __future__ import annotations

import argparse


class TuneCLIError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def add_parser(sub) -> argparse.ArgumentParser:
    t = sub.add_parser("tune", help="autotune a ready op's schedules and store the best per shape "
                                    "bucket (needs a GPU; --dry-run does not)",
                       description="Autotune tilus.ops kernels: prune the schedule space, build "
                                   "the survivors in parallel ($TILUS_BUILD_JOBS), time them "
                                   "with CUDA events and record the fastest in the tuning "
                                   "database ($TILUS_CACHE_DIR/tuning.json).")
    t.add_argument("op", choices=["matmul"], help="the op to tune")
    t.add_argument("--m", type=int, nargs="+", default=[1, 16, 256], help="M values (rows of a)")
    t.add_argument("--n", type=int, required=True, help="N (out_features)")
    t.add_argument("--k", type=int, required=True, help="K (in_features)")
    t.add_argument("--dtype", default="uint4", help="weight type (default uint4)")
    t.add_argument("--group-size", type=int, default=128, help="group size (default 128)")
    t.add_argument("--act", choices=["float16", "bfloat16"], default="float16")
    t.add_argument("--jobs", type=int, default=None, help="build processes "
                                                         "(default $TILUS_BUILD_JOBS or cores)")
    t.add_argument("--force", action="store_true", help="re-tune buckets already in the database")
    t.add_argument("--dry-run", action="store_true",
                   help="prune and build the space, time nothing (no GPU needed)")
    t.set_defaults(func=cmd_tune)
    return t


def cmd_tune(args) -> int:
    import torch

    from tilus.autotune import build_parallel
    from tilus.ops import quantize
    from tilus.ops.matmul import matmul_bucket
    from tilus.ops.tuning import matmul_tuner, tune_matmul

    act = getattr(torch, args.act)
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        raise TuneCLIError("tuning needs a CUDA GPU (none is visible); --dry-run prunes and builds "
                           "the schedule space without timing", 2)
    dev = "cuda" if cuda and not args.dry_run else "cpu"
    w = torch.randn(args.n, args.k, device=dev) * 0.02
    qw = quantize(w, args.dtype, args.group_size, scale_dtype=act)
    for m in args.m:
        bucket = matmul_bucket(m, args.n, args.k)
        if args.dry_run:
            tuner = matmul_tuner(m, qw, act, jobs=args.jobs)
            keep, pruned = tuner.candidates()
            builds = build_parallel(tuner.cls, tuner.fixed, keep, tuner.builder, args.jobs)
            ok = sum(b.ok for b in builds)
            print(f"{tuner.name} {bucket}: {len(keep) + len(pruned)} configs, {len(pruned)} "
                  f"pruned, {ok}/{len(builds)} built")
            continue
        res = tune_matmul(m, qw, act, jobs=args.jobs, force=args.force)
        src = "database" if res.from_database else f"{len(res.timings)} timed"
        print(f"{bucket}: {res.config}  {res.time_ms:.4f} ms  ({src})")
    return 0
