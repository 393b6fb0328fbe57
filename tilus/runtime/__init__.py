"""Compiled-kernel artefacts, the on-disk cache, loading and launching, argument checks.

Imports neither TVM's compiler (``tvm``) nor lark, and not torch or cupy either: kernels built
elsewhere run where only ``tvm_ffi`` and TVM's runtime libraries are installed.
"""
from tilus.runtime.arguments import BoundArguments, BufferInfo, check_arguments, describe  # noqa
from tilus.runtime.cache import (  # noqa: F401
    Artifact, CacheEntry, EntryInfo, KernelCache, default_cache, default_root,
)
from tilus.runtime.keys import cache_key, key_versions  # noqa: F401
from tilus.runtime.kernel import LoadedKernel, launch_dims, load_kernel  # noqa: F401
from tilus.runtime.libraries import (  # noqa: F401
    load_cuda_runtime, load_module, load_tvm_runtime, tvm_runtime_dir,
)
from tilus.runtime.metadata import KernelMetadata, Param  # noqa: F401
