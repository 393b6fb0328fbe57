"""GPU architecture names (``sm_XY``): the ones Tilus targets, the default, and the arch of the GPU
torch sees. Here rather than in the backend's toolchain because a kernel's first call needs them
before anything is built (the cache key holds the arch) and should not import the backend."""
from __future__ import annotations

import os
import re
import sys

from tilus.errors import CompilationError, TilusError

SUPPORTED_ARCHES = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_90a")
DEFAULT_ARCH = "sm_80"


def normalize_arch(arch: "str | int | None" = None) -> str:
    """``"sm_90"``, ``"sm90"``, ``"90"``, ``90`` -> ``"sm_90"``; None -> the default arch.

    Raises CompilationError for an architecture Tilus does not target (it needs sm_80 or newer:
    cp.async, ldmatrix, mma.m16n8k16, bf16).
    """
    if arch is None:
        return default_arch()
    text = str(arch).strip().lower()
    m = re.fullmatch(r"(?:sm_?)?(\d+)(a?)", text)
    name = f"sm_{m.group(1)}{m.group(2)}" if m else text
    if name not in SUPPORTED_ARCHES:
        raise CompilationError(f"unsupported CUDA architecture {arch!r}: Tilus builds for "
                               f"{', '.join(SUPPORTED_ARCHES)}")
    return name


_ARCH_OF_DEVICE: dict[int, str] = {}


def default_arch(device_index: "int | None" = None) -> str:
    """``TILUS_ARCH`` if set, else the architecture of the GPU torch sees (``device_index``, or
    the current one), else ``sm_80``. A visible GPU older than sm_80 is an error, not a guess."""
    env = os.environ.get("TILUS_ARCH")
    if env:
        return normalize_arch(env)
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available():
            return DEFAULT_ARCH
        index = torch.cuda.current_device() if device_index is None else device_index
        if index not in _ARCH_OF_DEVICE:
            major, minor = torch.cuda.get_device_capability(index)
            _ARCH_OF_DEVICE[index] = normalize_arch(f"sm_{major}{minor}")
        return _ARCH_OF_DEVICE[index]
    except TilusError:
        raise
    except Exception:  # pragma: no cover - a broken driver is not our concern here
        return DEFAULT_ARCH
