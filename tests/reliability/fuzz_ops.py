"""A deterministic fuzz harness for the public ops' arguments: ``QuantLinear``'s constructor and
forward, and ``tilus.ops.matmul``'s ``schedule`` dicts.

Each case draws every argument from a pool of valid values and, in most cases, replaces one with
an invalid value. A case passes when:

* all arguments are valid and the call returns the right result (shape, dtype, finite values
  close to a float64 reference), or
* one argument is invalid and the call raises a ``tilus.errors`` error whose message names it, or
* the arguments are valid for the op but a kernel constraint may refuse them (``MAYBE``): either
  the right result or a ``tilus.errors`` error.

Anything else (a raw Python/torch exception, NaN, a silently accepted invalid argument) fails.
``outcomes(category)`` gives (case, failure or None) for every case of a category.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn

import tilus
from tilus.errors import TilusError
from tilus.nn import QuantLinear

SEED = 14
MAYBE = "<maybe>"

#: Words an error message about an argument must contain (one of them).
NAMES = {
    "in_features": ("in_features",), "out_features": ("out_features",),
    "group_size": ("group_size",), "dtype": ("weight type", "dtype"), "symmetric": ("symmetric",),
    "scale_dtype": ("scale_dtype",), "x.dtype": ("dtype",), "x.shape": ("in_features",),
    "x": ("tensor",), "x.device": ("meta",), "schedule": ("schedule",),
}


@dataclass
class Case:
    """One call: ``run()`` and what is expected of it."""
    category: str
    label: str
    run: Callable[[], Any]
    bad: Optional[str]                       # the invalid argument, None (all valid) or MAYBE
    check: Callable[[Any], Optional[str]]    # a valid call's result -> None or what is wrong
    names: tuple[str, ...] = ()              # extra words the error must contain (all of them)


def outcome(case: Case) -> Optional[str]:
    """None when the case behaved as expected, else one line saying what went wrong."""
    try:
        result = case.run()
    except TilusError as e:
        text = str(e)
        if case.bad is None:
            return f"rejected valid arguments: {type(e).__name__}: {text[:200]}"
        if case.bad != MAYBE and not any(w in text for w in NAMES[case.bad]):
            return f"the error does not name {case.bad}: {type(e).__name__}: {text[:200]}"
        missing = [w for w in case.names if w not in text]
        if missing:
            return f"the error does not mention {missing}: {text[:200]}"
        return None
    except Exception as e:  # noqa: BLE001 - a raw exception is exactly what the harness reports
        return f"raw {type(e).__name__}: {str(e)[:200]}"
    if case.bad not in (None, MAYBE):
        return f"accepted an invalid {case.bad}"
    return case.check(result)


# ---- a reference ------------------------------------------------------------------------------
_EPS = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-6, torch.float64: 1e-12}


def _close_to_reference(out: Any, x: torch.Tensor, layer: QuantLinear) -> Optional[str]:
    """None when ``out`` is ``x @ W.T + b`` (W the dequantized weight) within x's precision."""
    want = tuple(x.shape[:-1]) + (layer.out_features,)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want or out.dtype != x.dtype:
        return (f"returned {type(out).__name__} {getattr(out, 'dtype', '')} "
                f"{list(getattr(out, 'shape', []))}, expected {x.dtype} {list(want)}")
    if not torch.isfinite(out).all():
        return f"non-finite output for finite input (max |x| {x.abs().max().item():.3g})"
    wdt = x.dtype if x.dtype in (torch.float16, torch.bfloat16) else torch.float32
    w = layer.dequantize(wdt).double()
    b = layer.bias.double() if layer.bias is not None else torch.zeros(layer.out_features,
                                                                       dtype=torch.float64)
    xd = x.double()
    ref = xd @ w.T + b
    bound = xd.abs() @ w.abs().T + b.abs()
    err = (out.double() - ref).abs()
    if (err > _EPS[x.dtype] * bound + 1e-30).any():
        return (f"differs from the reference by {err.max().item():.3g} "
                f"(bound {bound.max().item():.3g})")
    return None


def _works(layer: QuantLinear) -> Optional[str]:
    """A freshly built layer computes (float32 and float16 inputs)."""
    g = torch.Generator().manual_seed(0)
    for dt in (torch.float32, torch.float16):
        x = torch.randn(2, layer.in_features, generator=g).to(dt)
        why = _close_to_reference(layer(x), x, layer)
        if why:
            return f"{dt}: {why}"
    return None


# ---- QuantLinear(...) ---------------------------------------------------------------------------
_VALID = {
    "in_features": [64, 256, np.int64(128)],
    "out_features": [8, 1, 130],
    "dtype": ["uint4", "int8", "float4_e2m1", "int3", tilus.uint2],
    "symmetric": [None, True, False],
    "scale_dtype": [torch.float16, torch.bfloat16, "bfloat16"],
}
_INVALID = {
    "in_features": [0, -1, "256", 256.0, None, True],
    "out_features": [0, -1, "8", 8.5, None, False],
    "group_size": [0, -8, "64", 64.0, True, 3, 512, 1.5, 16],
    "dtype": ["bogus", "float16", "bool", "uint16", 4],
    "symmetric": ["no", 1, 0.0],
    "scale_dtype": [torch.float32, "x", 16],
}


def _valid_groups(k: Any) -> list:
    k = int(k)
    return [None, -1, k] + [g for g in (32, 64) if k % g == 0]


def constructor_cases(n: int = 240) -> Iterator[Case]:
    rng = random.Random(SEED)
    for i in range(n):
        kw = {name: rng.choice(pool) for name, pool in _VALID.items()}
        kw["group_size"] = rng.choice(_valid_groups(kw["in_features"]))
        kw["bias"] = rng.random() < 0.5
        bad = None
        if i % 5:                                  # four cases in five have one invalid argument
            bad = rng.choice(sorted(_INVALID))
            kw[bad] = rng.choice(_INVALID[bad])
            if bad == "in_features":
                kw["group_size"] = rng.choice([None, -1])
        yield Case("QuantLinear(...)", repr(kw), lambda kw=kw: QuantLinear(**kw), bad, _works)


# ---- QuantLinear.forward(x) ---------------------------------------------------------------------
_K, _N = 64, 24


def _layers() -> list[QuantLinear]:
    torch.manual_seed(SEED)
    return [QuantLinear.from_linear(nn.Linear(_K, _N), dtype=d, group_size=g)
            for d, g in (("uint4", 32), ("int8", 64), ("float4_e2m1", None))]


def forward_cases(n: int = 240) -> Iterator[Case]:
    rng = random.Random(SEED + 1)
    layers = _layers()
    good_dtypes = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    bad_dtypes = [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool,
                  torch.float8_e4m3fn, torch.complex64]
    good_shapes = [(2, _K), (_K,), (3, 2, _K), (0, _K), (5, _K)]
    bad_shapes = [(), (2, _K - 1), (2, _K + 1), (2, 0), (_K, 1), (4, 255)]
    for i in range(n):
        layer = rng.choice(layers)
        dt, shape = rng.choice(good_dtypes), rng.choice(good_shapes)
        scale = rng.choice([1.0, 1e-3, 1e5 if dt in (torch.float32, torch.float64) else 100.0])
        device, bad = "cpu", None
        kind = i % 6
        if kind == 1:
            bad, dt = "x.dtype", rng.choice(bad_dtypes)
        elif kind == 2:
            bad, shape = "x.shape", rng.choice(bad_shapes)
        elif kind == 3:
            bad, device = "x.device", "meta"
        seed = rng.randrange(1 << 30)

        def make(dt=dt, shape=shape, scale=scale, device=device, seed=seed) -> torch.Tensor:
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
            if not (dt.is_floating_point or dt.is_complex):
                x = x.clamp(-3, 3)
            return x.to(dt).to(device)

        if kind == 4:                              # not a tensor at all
            value = rng.choice([[1.0] * _K, np.zeros((2, _K), np.float32), None, 3.0])
            yield Case("QuantLinear.forward", f"x={type(value).__name__}",
                       lambda layer=layer, value=value: layer(value), "x", lambda out: None)
            continue
        label = f"{layer.dtype_name} x {dt} {list(shape)} *{scale:g} on {device}"
        if bad is None:
            x = make()
            yield Case("QuantLinear.forward", label, lambda layer=layer, x=x: layer(x), None,
                       lambda out, x=x, layer=layer: _close_to_reference(out, x, layer))
        else:
            yield Case("QuantLinear.forward", label, lambda layer=layer, make=make: layer(make()),
                       bad, lambda out: None)


# ---- matmul(..., schedule=) ---------------------------------------------------------------------
_SCHEDULE_KEYS = ("block_m", "block_n", "block_k", "split_k", "warps", "stages")
_GOOD_VALUES = [1, 2, 8, 16, 32, 64, np.int64(16)]
_BAD_VALUES = [0, -1, "16", 16.0, True, None, 2 ** 0.5]
_BAD_KEYS = ["foo", "", "BLOCK_M", "block-m", 1, None]


def schedule_cases(n: int = 160) -> Iterator[Case]:
    rng = random.Random(SEED + 2)
    torch.manual_seed(SEED)
    weights = [tilus.ops.quantize(torch.randn(16, 64), "uint4", 32),
               tilus.ops.quantize(torch.randn(24, 64), "int8", 64)]
    for i in range(n):
        qw = rng.choice(weights)
        a = torch.randn(rng.choice([1, 3]), 64, generator=torch.Generator().manual_seed(i)).half()
        sched: Any = {rng.choice(_SCHEDULE_KEYS): rng.choice(_GOOD_VALUES)
                      for _ in range(rng.randrange(4))}
        engine, bad, names = "interpreter", MAYBE, ()
        kind = i % 4
        if kind == 1:
            key = rng.choice(_BAD_KEYS)
            sched[key] = rng.choice(_GOOD_VALUES)
            bad, names = "schedule", (repr(key), ", ".join(_SCHEDULE_KEYS))
            engine = rng.choice(["interpreter", "fallback", "auto"])
        elif kind == 2:
            key = rng.choice(_SCHEDULE_KEYS)
            sched[key] = rng.choice(_BAD_VALUES)
            bad, names = "schedule", (key,)
            engine = rng.choice(["interpreter", "fallback", "auto"])
        elif kind == 3 and i % 8 == 3:
            sched, bad = rng.choice([[("block_m", 16)], "block_m=16", 16, ("block_m",)]), "schedule"

        def check(out: Any, a=a, qw=qw) -> Optional[str]:
            ref = tilus.ops.matmul(a, qw, engine="fallback")
            if not isinstance(out, torch.Tensor) or out.shape != ref.shape \
                    or out.dtype != ref.dtype:
                return f"returned {getattr(out, 'dtype', type(out).__name__)} {list(out.shape)}"
            err = (out.float() - ref.float()).abs().max().item() if out.numel() else 0.0
            return None if err <= 2e-3 * max(1.0, ref.float().abs().max().item()) \
                else f"differs from the fallback by {err:.3g}"

        def run(a=a, qw=qw, s=sched, e=engine) -> Any:
            return tilus.ops.matmul(a, qw, engine=e, schedule=s)

        yield Case("matmul(schedule=)", f"{sched!r} engine={engine}", run, bad, check, names)


CATEGORIES: dict[str, Callable[[], Iterator[Case]]] = {
    "QuantLinear(...)": constructor_cases,
    "QuantLinear.forward": forward_cases,
    "matmul(schedule=)": schedule_cases,
}


def outcomes(category: str) -> list[tuple[Case, Optional[str]]]:
    """Every case of ``category`` with its failure (None when it behaved)."""
    return [(c, outcome(c)) for c in CATEGORIES[category]()]
