"""The kernels benchmarks/gpu_session.sh runs under compute-sanitizer (memcheck, racecheck): every
example kernel of tests/gpu/kernels.py ``CASES``, the matmuls of ``SANITIZE_CASES`` (one
QuantMatmul per bit width in the decode kernel: a 4-stage copy_async ring, split-k with an empty
last split; and the 8-warp large-M kernel) and the prefill attention kernels of
``SANITIZE_PREFILL`` (causal, more queries than keys: the cp.async K/V pipeline, int8 K/V
dequantized through shared memory), each launched once on CUDA and checked against its
reference. Prints one line per kernel; exit status 1 when a value is wrong.

Run it with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1`` under memcheck, so that every tensor is its own
allocation and an access past its end is reported.

    python tests/gpu/sanitize.py [NAME ...]   (names: CASES keys, SANITIZE_CASES ids, prefill ids)
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def jobs() -> dict:
    """name -> callable(torch) running one kernel on CUDA and checking its outputs."""
    from tests.gpu.checks import run_ops_case, run_prefill_case
    from tests.gpu.kernels import (CASES, SANITIZE_CASES, SANITIZE_PREFILL,
                                   assert_matches_reference, prefill_id)

    def example_job(name, case):
        def run(torch):
            cpu_args, outs = case.inputs(torch, "cpu")
            want = case.reference(torch, cpu_args)
            args, _ = case.inputs(torch, "cuda")
            case.factory()(*args)
            torch.cuda.synchronize()
            for i in outs:
                assert_matches_reference(name, args[i], want[i], case.tol)
        return run

    out = {name: example_job(name, case) for name, case in CASES.items()
           if name != "matmul_splitk"}
    serial = {"matmul_splitk": example_job("matmul_splitk", CASES["matmul_splitk"])}
    for case in SANITIZE_CASES:
        job = (lambda torch, case=case: run_ops_case(case, "cuda"))
        (serial if dict(case.schedule).get("split_k", 1) > 1 else out)[case.id] = job
    for pc in SANITIZE_PREFILL:
        out[prefill_id(pc)] = (lambda torch, pc=pc: run_prefill_case(pc, "cuda", 1, 130, 77))
    # split-k kernels last: their blocks wait on each other through global semaphores, so if a
    # sanitizer ran blocks one at a time they could wait forever (the step's time limit ends them)
    return {**out, **serial}


def main(argv=None) -> int:
    import torch

    names = list(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        print("sanitize.py: no CUDA GPU visible", file=sys.stderr)
        return 2
    todo = jobs()
    unknown = [n for n in names if n not in todo]
    if unknown:
        print(f"sanitize.py: unknown names {unknown}; known: {sorted(todo)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or list(todo):
        t0 = time.perf_counter()
        try:
            todo[name](torch)
            torch.cuda.synchronize()
            state = "ok"
        except Exception as e:                # keep going: report every kernel
            failed.append(name)
            state = f"FAILED {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            traceback.print_exc()
        print(f"sanitize {name:40} {time.perf_counter() - t0:7.2f} s  {state}", flush=True)
    print(f"sanitize: {len(names or todo) - len(failed)} ok, {len(failed)} failed"
          + (f": {' '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
