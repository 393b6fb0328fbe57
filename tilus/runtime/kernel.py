"""A loaded kernel: a library's entry function plus its metadata; calling it checks the arguments
and then launches (CUDA: on the current torch stream) or runs (CPU)."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, Optional

from tilus.errors import ArgumentError, KernelNotFoundError
from tilus.runtime import expr as _expr
from tilus.runtime.arguments import BoundArguments, check_arguments
from tilus.runtime.cache import CacheEntry
from tilus.runtime.libraries import load_module
from tilus.runtime.metadata import KernelMetadata
from tilus.runtime.workspaces import Workspaces

logger = logging.getLogger(__name__)

GRID_LIMITS = (2**31 - 1, 65535, 65535)


def launch_dims(meta: KernelMetadata, scalars) -> Optional[dict]:
    """Evaluate ``meta.launch`` (grid/block expressions) for the given scalar values; None when the
    metadata has no launch expressions (CPU kernels)."""
    if not meta.launch:
        return None
    out: dict[str, Any] = {}
    for key, value in meta.launch.items():
        if isinstance(value, list):
            out[key] = [_expr.evaluate(v, scalars) for v in value]
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            out[key] = _expr.evaluate(value, scalars)
    return out


class LoadedKernel:
    """Call with the kernel's arguments. ``function`` is the callable that runs it (the library's
    entry, or anything with the same signature: tests pass a counter)."""

    def __init__(self, metadata: KernelMetadata, function: Any, module: Any = None,
                 entry: Optional[CacheEntry] = None):
        self.metadata = metadata
        self.function = function
        self.module = module
        self.entry = entry
        self.launches = 0
        self.driver: Any = None   # a tilus.runtime.driver.DriverFunction with TILUS_LAUNCHER=driver
        self.workspaces = Workspaces(metadata)   # global_tensor buffers, hidden trailing arguments
        storage = metadata.extra.get("pointer_storage") if metadata.is_cuda else None
        # CUDA libraries take every pointer as a 1-D tensor of its storage dtype (TVM checks ndim
        # and dtype): (position, storage dtype) of each pointer parameter
        self._flatten = [(i, storage[p.name]) for i, p in enumerate(metadata.params)
                         if p.is_pointer and p.name in storage] if storage else []

    @classmethod
    def load(cls, entry: CacheEntry, launcher: Optional[str] = None) -> "LoadedKernel":
        """``launcher``: ``tvm`` (TVM's host library, the default) or ``driver`` (the cubin through
        the CUDA driver API, see tilus.runtime.driver); default ``$TILUS_LAUNCHER`` or tvm. Loads
        only bytes checked against the entry's checksums (CacheCorruptionError if they changed)."""
        meta = entry.metadata
        launcher = launcher or os.environ.get("TILUS_LAUNCHER", "tvm")
        if launcher not in ("tvm", "driver"):
            raise ArgumentError(f"TILUS_LAUNCHER={launcher!r}: expected 'tvm' or 'driver'")
        if meta.is_cuda and launcher == "driver":
            from tilus.runtime.driver import DriverFunction

            driver = DriverFunction(meta, entry.read(meta.extra["cubin"]))
            kernel = cls(meta, driver, None, entry)
            kernel.driver = driver
            return kernel
        if meta.is_cuda and meta.extra.get("cubin"):
            register_cubin(entry)
        with entry.private_copy(meta.library) as library:   # the checked bytes, not the path
            module = load_module(library, cuda=meta.is_cuda)
        try:
            function = module[meta.entry]
        except Exception:
            raise KernelNotFoundError(f"{entry.library_path} has no function {meta.entry!r} "
                                      f"(kernel {meta.name})") from None
        return cls(meta, function, module, entry)

    def __repr__(self) -> str:
        params = ", ".join(f"{p.name}: {'~' if p.is_pointer else ''}{p.dtype}"
                           for p in self.metadata.params)
        return f"<tilus kernel {self.metadata.name}({params}) on {self.metadata.target}>"

    def check(self, *args, **kwargs) -> BoundArguments:
        return check_arguments(self.metadata, args, kwargs)

    def __call__(self, *args, **kwargs):
        bound = check_arguments(self.metadata, args, kwargs)
        dims = launch_dims(self.metadata, bound.scalars)
        if dims is not None and "grid" in dims:
            grid = dims["grid"]
            for axis, (n, limit) in enumerate(zip(grid, GRID_LIMITS)):
                if n < 0 or n > limit:
                    raise ArgumentError(
                        f"{self.metadata.name}: grid dimension {'xyz'[axis]} = {n} "
                        f"({self.metadata.launch['grid'][axis]} with "
                        f"{', '.join(f'{k}={v}' for k, v in bound.scalars.items())}) is outside "
                        f"[0, {limit}]")
            if 0 in grid:
                logger.debug("%s: empty grid %s, nothing to launch", self.metadata.name, grid)
                return None
        values = bound.values
        if self._flatten:
            values = list(values)
            for i, storage in self._flatten:
                values[i] = flat_view(values[i], storage)
        device = bound.device_id or 0
        stream = current_stream(bound.values, device) if bound.device_type == "cuda" else None
        if self.workspaces:
            values = [*values, *self.workspaces.buffers(bound.scalars, bound.values,
                                                        bound.device_type, device, stream)]
        if self.driver is not None:
            self.driver.launch(values, dims["grid"], stream or 0, device)
            self.launches += 1
            return None
        with self._stream_context(device, stream):
            result = self.function(*values)
        self.launches += 1
        return result

    @staticmethod
    def _stream_context(device: int, stream: Optional[int]):
        """CUDA kernels launch on the current stream of the framework the tensors come from (torch,
        else cupy), on the tensors' device; without either, on the default stream."""
        if stream is None:
            return contextlib.nullcontext()
        import tvm_ffi

        return tvm_ffi.use_raw_stream(tvm_ffi.device("cuda", device), stream)


def current_stream(values, device_id: int) -> Optional[int]:
    """The raw ``cudaStream_t`` to launch on: torch's current stream on ``device_id`` when a torch
    tensor is among ``values``, else cupy's when a CUDA array is and cupy is imported; else None.
    Neither framework is imported here."""
    torch = sys.modules.get("torch")
    if torch is not None and any(isinstance(v, torch.Tensor) for v in values):
        return torch.cuda.current_stream(device_id).cuda_stream
    cupy = sys.modules.get("cupy")
    if cupy is not None and any(hasattr(v, "__cuda_array_interface__") for v in values):
        with cupy.cuda.Device(device_id):
            return cupy.cuda.get_current_stream().ptr
    return None


def register_cubin(entry: CacheEntry) -> None:
    """File the entry's prebuilt cubin as the answer to TVM's CUDA compile callback for the entry's
    CUDA source (see tilus.runtime.cubins), checking that the two belong together."""
    from tilus.runtime import cubins

    meta = entry.metadata
    digest = meta.extra.get("cuda_source_sha256")
    if not isinstance(digest, str):
        raise KernelNotFoundError(f"{entry.path}: metadata of {meta.name} has no "
                                  f"cuda_source_sha256; rebuild the entry")
    cubins.register(digest, entry.read(meta.extra["cubin"]))


_TORCH_DTYPES: dict = {}
_TORCH_NAMES = {"float8_e4m3": "float8_e4m3fn"}


def flat_view(x, storage: str):
    """``x`` (contiguous, checked) as a 1-D tensor/array of dtype ``storage`` (no copy)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        dt = _TORCH_DTYPES.get(storage)
        if dt is None:
            dt = _TORCH_DTYPES[storage] = getattr(torch, _TORCH_NAMES.get(storage, storage))
        if x.dim() != 1:
            x = x.reshape(-1)
        return x if x.dtype == dt else x.view(dt)
    # numpy / cupy (and anything with their API)
    if getattr(x, "ndim", 1) != 1:
        x = x.reshape(-1)
    if str(x.dtype) != storage:
        x = x.view(storage if storage != "bfloat16" else _np_bfloat16())
    return x


def _np_bfloat16():
    import ml_dtypes

    return ml_dtypes.bfloat16


def load_kernel(entry: CacheEntry) -> LoadedKernel:
    return LoadedKernel.load(entry)
