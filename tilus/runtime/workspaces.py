"""The ``global_tensor`` workspaces of a loaded kernel: allocated by the launcher and passed as the
kernel's hidden trailing pointer parameters.

The metadata (``extra["workspaces"]``, written by tilus.backend.artifact) gives each workspace's
parameter name, storage dtype, element count as an expression of the scalar parameters, and
``requires_clean``. A workspace is one flat buffer per launch, shared by every block.

Buffers are kept for the next launch, one per workspace, device and stream, grown when a launch
needs more: launches on one stream run one after another, so they never share a buffer at the
same time, and a launch on another stream gets its own. A ``requires_clean`` buffer is zeroed when
allocated and the kernel leaves it all zeros (the contract ``tilus.interpret`` checks), so it is
never cleared again; the others start with whatever the previous launch left. The buffers are
tensors of the arguments' framework (torch, else cupy, else numpy) on the arguments' device.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Optional

from tilus.errors import ArgumentError
from tilus.runtime import expr as _expr
from tilus.runtime.metadata import KernelMetadata

_TORCH_NAMES = {"float8_e4m3": "float8_e4m3fn"}


class Workspaces:
    """The workspaces of one kernel and the buffers kept for them."""

    def __init__(self, metadata: KernelMetadata):
        self.kernel = metadata.name
        self.specs = list(metadata.extra.get("workspaces", []))
        self._buffers: dict = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.specs)

    def buffers(self, scalars: dict, values, device_type: str, device_id: int,
                stream: Optional[int]) -> list:
        """One flat buffer of ``count`` storage elements per workspace, in parameter order, for a
        launch with these scalar arguments on this device and stream."""
        framework = _framework(values)
        out = []
        with self._lock:
            for spec in self.specs:
                count = _expr.evaluate(spec["count"], scalars)
                if count < 0:
                    raise ArgumentError(f"{self.kernel}: workspace {spec['name']} would have "
                                        f"{count} elements ({spec['count']} with "
                                        f"{', '.join(f'{k}={v}' for k, v in scalars.items())})")
                key = (spec["name"], framework, device_type, device_id, stream)
                buf = self._buffers.get(key)
                if buf is None or len(buf) < count:
                    buf = self._buffers[key] = _zeros(framework, max(count, 1), spec["storage"],
                                                      device_type, device_id)
                out.append(buf[:count])
        return out


def _framework(values) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and any(isinstance(v, torch.Tensor) for v in values):
        return "torch"
    if sys.modules.get("cupy") is not None and any(hasattr(v, "__cuda_array_interface__")
                                                   for v in values):
        return "cupy"
    return "numpy"


def _zeros(framework: str, count: int, storage: str, device_type: str, device_id: int) -> Any:
    if framework == "torch":
        import torch

        dtype = getattr(torch, _TORCH_NAMES.get(storage, storage))
        device = torch.device(device_type, device_id) if device_type == "cuda" else "cpu"
        return torch.zeros(count, dtype=dtype, device=device)
    if framework == "cupy":
        import cupy

        if storage == "bfloat16":
            raise ArgumentError("a bfloat16 workspace needs torch tensors (cupy has no bfloat16)")
        with cupy.cuda.Device(device_id):
            return cupy.zeros(count, dtype=storage)
    import numpy as np

    if storage == "bfloat16":
        import ml_dtypes

        return np.zeros(count, dtype=ml_dtypes.bfloat16)
    return np.zeros(count, dtype=storage)
