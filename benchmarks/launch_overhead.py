"""Launch overhead: microseconds per launch of a tiny kernel, Tilus vs an empty torch op vs Triton.

Each row launches N times back to back on the current stream, then synchronizes; the time per
launch is the wall time over N (the kernels are tiny, so this is the host-side cost). Rows:

- ``torch empty op``      ``x.zero_()`` on a 1-element CUDA tensor (torch's dispatcher + launch)
- ``tilus kernel(...)``   a Script call: instantiate, cache lookup, argument checks, launch
- ``tilus LoadedKernel``  the loaded kernel called directly (argument checks + launch)
- ``tilus raw``           the library's function with prepared 1-D views (TVM's checks + launch)
- ``tilus driver``        the same entry through the CUDA driver launcher (TILUS_LAUNCHER=driver)
- ``triton vector add``   the same vector add in Triton (when triton is installed)

Usage: python benchmarks/launch_overhead.py [--n 1000] [--iters 2000] [--out DIR]
(prints a table; writes DIR/launch_overhead.json with the device name). Needs a GPU; kernels come
from the Tilus cache (build here with TVM, or run from a bundle, see `tilus bundle`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timeit(fn, iters: int, torch) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e6


def triton_vector_add():
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def add_kernel(a, b, c, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(c + offs, tl.load(a + offs, mask=mask) + tl.load(b + offs, mask=mask), mask=mask)

    def launch(n, a, b, c):
        add_kernel[(triton.cdiv(n, 256),)](a, b, c, n, BLOCK=256)
    return launch


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="vector length (default 1000)")
    p.add_argument("--iters", type=int, default=2000, help="launches per row (default 2000)")
    p.add_argument("--out", default=None, help="folder for launch_overhead.json")
    args = p.parse_args(argv)

    import torch

    from tests.gpu.kernels import vector_add
    from tilus import jit
    from tilus.runtime.kernel import flat_view

    if not torch.cuda.is_available():
        print("launch_overhead: no CUDA GPU visible", file=sys.stderr)
        return {}
    n = args.n
    a = torch.randn(n, device="cuda")
    b = torch.randn(n, device="cuda")
    c = torch.empty(n, device="cuda")
    one = torch.zeros(1, device="cuda")
    kernel = vector_add()
    t0 = time.perf_counter()
    kernel(n, a, b, c)
    torch.cuda.synchronize()
    first_ms = (time.perf_counter() - t0) * 1e3
    assert torch.equal(c, a + b)
    loaded = jit.compiled_kernel(kernel, arch=jit.device_arch(a))
    fa, fb, fc = (flat_view(x, "float32") for x in (a, b, c))
    raw = loaded.function
    rows = {
        "torch empty op": timeit(lambda: one.zero_(), args.iters, torch),
        "tilus kernel(...)": timeit(lambda: kernel(n, a, b, c), args.iters, torch),
        "tilus LoadedKernel": timeit(lambda: loaded(n, a, b, c), args.iters, torch),
        "tilus raw": timeit(lambda: raw(n, fa, fb, fc), args.iters, torch),
    }
    from tilus.runtime import LoadedKernel, cache_key, default_cache, key_versions

    entry = default_cache().lookup(cache_key(str(kernel.program()), jit.device_arch(a),
                                             key_versions()))
    driver = LoadedKernel.load(entry, launcher="driver")
    c.zero_()
    driver(n, a, b, c)
    torch.cuda.synchronize()
    assert torch.equal(c, a + b)
    rows["tilus driver"] = timeit(lambda: driver(n, a, b, c), args.iters, torch)
    tri = triton_vector_add()
    if tri is not None:
        tri(n, a, b, c)
        torch.cuda.synchronize()
        rows["triton vector add"] = timeit(lambda: tri(n, a, b, c), args.iters, torch)
    device = torch.cuda.get_device_name()
    print(f"launch overhead on {device} (n={n}, {args.iters} launches per row; first Tilus call "
          f"{first_ms:.1f} ms incl. cache load)")
    print(f"{'what':22} {'us/launch':>10}")
    for k, v in rows.items():
        print(f"{k:22} {v:10.2f}")
    from benchmarks.provenance import provenance

    result = {**provenance(), "device": device, "n": n, "iters": args.iters,
              "first_call_ms": first_ms,
              "us_per_launch": rows, "torch": torch.__version__,
              "torch_c_dlpack": hasattr(torch.Tensor, "__dlpack_c_exchange_api__")}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "launch_overhead.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
