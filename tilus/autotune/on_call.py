"""Tune-on-call: an ``@tilus.autotune`` Script created without its schedule parameters
(``MatmulV2()``) picks them at its first call, as NVIDIA Tilus does.

On CUDA arguments the Autotuner builds and times every config for that call (its compile-time
arguments fixed) and keeps the fastest; the choice is recorded in the tuning database under a
bucket named after the call's compile-time values and tensor shapes. Anywhere else (the CPU
interpreter, ``tilus.build``, ``kernel.program()``) there is nothing to time: the first config
whose program builds is taken, and the log says which. A class attribute ``debug_schedule``
(a dict of every tuned parameter), as in NVIDIA's Tilus, makes that one config the whole space.
"""
from __future__ import annotations

import functools
import inspect
import logging
import sys
from typing import Any, Callable

from tilus.autotune.tuner import Autotuner, configs_of, space_names, space_of
from tilus.errors import AutotuneError, TilusError

logger = logging.getLogger("tilus.autotune")
PENDING = "_tilus_deferred"


def defer_schedule(cls) -> None:
    """Wraps ``cls.__init__`` (once) so that leaving out every schedule parameter defers them."""
    if "_tilus_original_init" in cls.__dict__:
        return
    original = cls.__init__
    cls._tilus_original_init = original
    sig = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = space_names(space_of(type(self)))
        bound = sig.bind_partial(self, *args, **kwargs).arguments
        missing = [n for n in names if n not in bound and n in sig.parameters
                   and sig.parameters[n].default is inspect.Parameter.empty]
        if not missing:
            original(self, *args, **kwargs)
            return
        given = [n for n in names if n in bound]
        if given:
            raise AutotuneError(f"{type(self).__name__}: give every tuned parameter or none "
                                f"(got {', '.join(given)}, missing {', '.join(missing)})")
        self.__dict__[PENDING] = (args, kwargs)

    cls.__init__ = __init__
    cls._tilus_settle = settle


def _fixed(cls, args: tuple, kwargs: dict) -> dict:
    """The non-schedule constructor arguments by name."""
    sig = inspect.signature(cls._tilus_original_init)
    bound = sig.bind_partial(None, *args, **kwargs).arguments
    return {k: v for i, (k, v) in enumerate(bound.items()) if i > 0}


def _on_cuda(values: Any) -> bool:
    torch = sys.modules.get("torch")
    return any(torch is not None and isinstance(v, torch.Tensor) and v.is_cuda
               or hasattr(v, "__cuda_array_interface__") for v in values)


def _describe(v: Any) -> str:
    shape = getattr(v, "shape", None)
    return f"{getattr(v, 'dtype', '')}{list(shape)}" if shape is not None else repr(v)


def build_for_call(consts: dict, kernel) -> Any:
    """The autotuner's builder for one call: ``tilus.build`` with the call's compile-time values."""
    import tilus

    built = tilus.build(kernel, **consts)
    return {"resources": repr(getattr(built, "resources", None))}


def settle(kernel, args: tuple, kwargs: dict, check: Callable[[], Any]) -> None:
    """Gives the deferred ``kernel`` its schedule for a call with ``args``/``kwargs``; ``check()``
    builds the program the call needs (a config is valid when it does not raise)."""
    init_args, init_kwargs = kernel.__dict__.pop(PENDING)
    cls = type(kernel)
    fixed = _fixed(cls, init_args, init_kwargs)
    debug = getattr(cls, "debug_schedule", None)
    space = [(k, [v]) for k, v in debug.items()] if debug else None
    if _on_cuda(list(args) + list(kwargs.values())):
        consts = {p.name: v for p, v in zip(cls.kernel_params(), args) if p.is_const}
        consts.update({k: v for k, v in kwargs.items()
                       if any(p.name == k and p.is_const for p in cls.kernel_params())})
        bucket = "call:" + ",".join([_describe(v) for v in args] +
                                    [f"{k}={_describe(v)}" for k, v in sorted(kwargs.items())])
        tuner = Autotuner(cls, fixed=fixed, space=space,
                          builder=functools.partial(build_for_call, consts))
        result = tuner.tune(bucket, run=lambda k: k(*args, **kwargs))
        cls._tilus_original_init(kernel, *init_args, **init_kwargs, **result.config)
        logger.info("%s: tuned at its first call: %s (%s)", cls.__name__, result.config,
                    "from the database" if result.from_database else f"{result.time_ms:.3f} ms")
        return
    keep, pruned = Autotuner(cls, fixed=fixed, space=space).candidates()
    errors = []
    for config in keep:
        cls._tilus_original_init(kernel, *init_args, **init_kwargs, **config)
        try:
            check()
        except (TilusError, AssertionError) as e:
            errors.append((config, e))
            for k in [k for k in kernel.__dict__ if k != PENDING]:
                del kernel.__dict__[k]
            continue
        logger.info("%s: no GPU to tune on; using the first valid config %s (of %d)",
                    cls.__name__, config, len(configs_of(space or space_of(cls))))
        return
    kernel.__dict__[PENDING] = (init_args, init_kwargs)
    first = f"; first: {errors[0][0]}: {errors[0][1]}" if errors else ""
    raise AutotuneError(f"{cls.__name__}: none of its {len(keep)} configs builds a program for "
                        f"this call ({len(pruned)} pruned){first}")
