"""Test-suite-wide set-up: tests marked ``gpu`` are skipped where no CUDA GPU is visible, and
property tests (hypothesis) draw the same examples on every run, so CI's verdict does not depend
on luck; ``TILUS_HYPOTHESIS=explore`` draws new ones (to hunt for bugs); kernels are cached in a
temporary directory of the session unless TILUS_CACHE_DIR is set."""
from __future__ import annotations

import functools
import os
import tempfile

import pytest
from hypothesis import settings

settings.register_profile("tilus-ci", derandomize=True)
settings.register_profile("tilus-explore", derandomize=False)
settings.load_profile("tilus-explore" if os.environ.get("TILUS_HYPOTHESIS") == "explore"
                      else "tilus-ci")


def pytest_configure(config):
    """Builds go to a kernel cache of this session (shared by its tests, so a kernel is built
    once), never the user's ~/.cache/tilus; an explicit TILUS_CACHE_DIR (a bundle's prebuilt
    kernels on a GPU machine) is kept."""
    if not os.environ.get("TILUS_CACHE_DIR"):
        os.environ["TILUS_CACHE_DIR"] = tempfile.mkdtemp(prefix="tilus-test-cache-")


@functools.lru_cache(maxsize=1)
def cuda_gpu_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if cuda_gpu_visible():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (none visible here)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
