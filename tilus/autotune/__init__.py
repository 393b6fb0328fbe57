"""Autotuning: ``@tilus.autotune(name, values)`` on a Script class, ``Autotuner`` (pruning,
parallel builds, timing, the persisted choice), timers and the tuning database.

``tilus.autotune`` is both this package and the decorator: ``@tilus.autotune("block_n", [64,
128])`` calls :func:`autotune` (the module is callable).
"""
import sys
import types

from tilus.autotune.database import TuningDatabase, default_database, device_name  # noqa: F401
from tilus.autotune.timers import CudaEventTimer, FakeTimer  # noqa: F401
from tilus.autotune.tuner import (  # noqa: F401
    Autotuner, BuildResult, TuneResult, autotune, build_jobs, build_parallel, configs_of,
    default_builder, kernel_name, space_of,
)

__all__ = ["autotune", "Autotuner", "TuneResult", "TuningDatabase", "default_database",
           "device_name", "CudaEventTimer", "FakeTimer", "configs_of", "space_of",
           "build_parallel", "default_builder"]


class _CallableModule(types.ModuleType):
    def __call__(self, name, values):
        return autotune(name, values)


sys.modules[__name__].__class__ = _CallableModule
