"""The CUDA toolchain: find nvcc (or NVRTC), ptxas' resource report, cuobjdump/nvdisasm.

Everything here works on a machine without a GPU: it compiles CUDA C++ to PTX and a cubin for a
named architecture, parses what ptxas says about each kernel's resources, and disassembles cubins
to SASS. Temporary files live in a private directory that is removed afterwards. Every program
runs through :func:`tilus.backend.run_tool.run_tool`: time-limited (``TILUS_TOOLCHAIN_TIMEOUT``), in
its own process group, killed with its children on timeout or interrupt.

Lookup order for each tool: the environment variable ``TILUS_<TOOL>`` (a path), ``PATH``,
``$CUDA_HOME/bin`` / ``$CUDA_PATH/bin``, ``/usr/local/cuda/bin``; cuobjdump and nvdisasm also come
from the ``nvidia-cuda-cuobjdump`` / ``nvidia-cuda-nvdisasm`` wheels (``site-packages/nvidia/cu13/bin``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tilus.backend.run_tool import run_tool, tail
from tilus.errors import CompilationError, ToolNotFoundError
from tilus.runtime.arch import (  # noqa: F401  (the toolchain's names for them)
    DEFAULT_ARCH, SUPPORTED_ARCHES, default_arch, normalize_arch,
)

_INSTALL_HINTS = {
    "nvcc": "install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads) and put its bin/ "
            "on PATH or set CUDA_HOME; or `pip install nvidia-cuda-nvrtc` for the NVRTC fallback",
    "cuobjdump": "`pip install nvidia-cuda-cuobjdump` (or install the CUDA toolkit)",
    "nvdisasm": "`pip install nvidia-cuda-nvdisasm` (or install the CUDA toolkit)",
}


# ----------------------------------------------------------------------------------------------
# Finding tools
# ----------------------------------------------------------------------------------------------

def _cuda_homes() -> list[Path]:
    homes = [os.environ.get(v) for v in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT")]
    return [Path(h) for h in homes if h] + [Path("/usr/local/cuda")]


def _wheel_dirs(sub: str) -> list[Path]:
    """``site-packages/nvidia/*/<sub>`` directories of the NVIDIA pip wheels (cu13 layout first)."""
    out = []
    try:
        import nvidia  # namespace package of the nvidia-* wheels
        roots = list(getattr(nvidia, "__path__", []))
    except ImportError:
        roots = [str(Path(p) / "nvidia") for p in sys.path if (Path(p) / "nvidia").is_dir()]
    for root in roots:
        root = Path(root)
        for cand in [root / "cu13" / sub, *sorted(root.glob(f"*/{sub}"))]:
            if cand.is_dir() and cand not in out:
                out.append(cand)
    return out


def find_tool(name: str) -> Path | None:
    """Where ``name`` (nvcc, cuobjdump, nvdisasm, ptxas) is, or None."""
    env = os.environ.get(f"TILUS_{name.upper()}")
    if env and Path(env).is_file():
        return Path(env)
    found = shutil.which(name)
    if found:
        return Path(found)
    for home in _cuda_homes():
        cand = home / "bin" / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    for d in _wheel_dirs("bin"):
        cand = d / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def require_tool(name: str) -> Path:
    path = find_tool(name)
    if path is None:
        hint = _INSTALL_HINTS.get(name, "install the CUDA toolkit")
        raise ToolNotFoundError(f"{name} not found (looked in TILUS_{name.upper()}, PATH, CUDA_HOME, "
                                f"/usr/local/cuda and the nvidia-* pip wheels): {hint}")
    return path


def find_nvrtc() -> Path | None:
    """The NVRTC shared library (toolkit lib64 or the nvidia-cuda-nvrtc wheel), or None."""
    names = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
    dirs = [h / "lib64" for h in _cuda_homes()] + _wheel_dirs("lib")
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    found = ctypes.util.find_library("nvrtc")
    return Path(found) if found else None


def have_compiler() -> bool:
    return find_tool("nvcc") is not None or find_nvrtc() is not None


# ----------------------------------------------------------------------------------------------
# ptxas resource report
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    """What ptxas reports for one kernel (``-Xptxas -v``)."""

    registers: int = 0                  # per thread
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    stack_frame_bytes: int = 0
    shared_memory_bytes: int = 0        # static shared memory (dynamic comes at launch)
    constant_memory_bytes: int = 0      # all cmem banks together (bank 0 holds the parameters)
    barriers: int = 0
    constant_banks: dict = field(default_factory=dict, compare=False)

    @property
    def spills(self) -> bool:
        return bool(self.spill_store_bytes or self.spill_load_bytes)


_RE_ENTRY = re.compile(r"(?:Compiling entry function|Function properties for) '?([\w$.]+)'?")
_RE_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_RE_USED = re.compile(r"Used (\d+) registers")
_RE_BARRIERS = re.compile(r"used (\d+) barriers")
_RE_SMEM = re.compile(r"(\d+) bytes smem")
_RE_CMEM = re.compile(r"(\d+) bytes cmem\[(\d+)\]")


def parse_ptxas_log(log: str) -> dict[str, Resources]:
    """Resources per function from ptxas' verbose output (entry kernels and device functions)."""
    info: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        m = _RE_ENTRY.search(line)
        if m:
            current = m.group(1)
            info.setdefault(current, {})
            continue
        if current is None:
            continue
        d = info[current]
        m = _RE_FRAME.search(line)
        if m:
            d["stack_frame_bytes"], d["spill_store_bytes"], d["spill_load_bytes"] = map(int, m.groups())
        m = _RE_USED.search(line)
        if m:
            d["registers"] = int(m.group(1))
            m2 = _RE_BARRIERS.search(line)
            d["barriers"] = int(m2.group(1)) if m2 else 0
            m2 = _RE_SMEM.search(line)
            d["shared_memory_bytes"] = int(m2.group(1)) if m2 else 0
            banks = {int(b): int(n) for n, b in _RE_CMEM.findall(line)}
            d["constant_banks"] = banks
            d["constant_memory_bytes"] = sum(banks.values())
    return {name: Resources(**d) for name, d in info.items()}


# ----------------------------------------------------------------------------------------------
# Compiling
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CudaBuild:
    """The products of one compilation of a CUDA C++ translation unit."""

    arch: str
    cubin: bytes
    ptx: str
    resources: dict[str, Resources]  # per function name (mangled for C++ names)
    log: str                          # ptxas / compiler messages
    compiler: str                     # "nvcc" or "nvrtc"


_NVCC_FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo",
               "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
               "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
               "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__"]


def compile_cuda(source: str, arch: "str | int | None" = None, options: "list[str] | tuple" = (),
                 compiler: str | None = None) -> CudaBuild:
    """Compile CUDA C++ ``source`` for ``arch`` into a cubin, its PTX and ptxas' resource report.

    Uses nvcc when found, else NVRTC; ``compiler="nvcc"``/``"nvrtc"`` forces one. Raises
    ToolNotFoundError when neither exists and CompilationError (with the compiler's messages in
    ``.log``) when the source does not compile.
    """
    arch = normalize_arch(arch)
    if compiler is None:
        compiler = "nvcc" if find_tool("nvcc") is not None else (
            "nvrtc" if find_nvrtc() is not None else "nvcc")
    if compiler == "nvcc":
        return _compile_nvcc(source, arch, list(options))
    if compiler == "nvrtc":
        return _compile_nvrtc(source, arch, list(options))
    raise CompilationError(f"unknown CUDA compiler {compiler!r} (use 'nvcc' or 'nvrtc')")


def _fail(step: str, log: str) -> CompilationError:
    err = CompilationError(f"{step} failed:\n{tail(log.strip())}")
    err.log = log
    return err


def _compile_nvcc(source: str, arch: str, options: list[str]) -> CudaBuild:
    nvcc = require_tool("nvcc")
    with tempfile.TemporaryDirectory(prefix="tilus-nvcc-") as tmp:
        tmp = Path(tmp)
        src = tmp / "kernel.cu"
        src.write_text(source)
        keep = tmp / "keep"
        keep.mkdir()
        cmd = [str(nvcc), "-cubin", f"-arch={arch}", *_NVCC_FLAGS, "-Xptxas", "-v",
               "--keep", f"--keep-dir={keep}", *options, "-o", str(tmp / "kernel.cubin"), str(src)]
        proc = run_tool(cmd, cwd=tmp)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise _fail(f"nvcc ({' '.join(cmd[:3])} ...) for {arch}", log)
        cubin = (tmp / "kernel.cubin").read_bytes()
        ptx_files = sorted(keep.glob("*.ptx"))
        ptx = ptx_files[0].read_text() if ptx_files else ""
    return CudaBuild(arch, cubin, ptx, parse_ptxas_log(log), log, "nvcc")


# --- NVRTC through ctypes (no Python bindings needed) ------------------------------------------

def _compile_nvrtc(source: str, arch: str, options: list[str]) -> CudaBuild:
    lib_path = find_nvrtc()
    if lib_path is None:
        raise ToolNotFoundError("neither nvcc nor NVRTC found: " + _INSTALL_HINTS["nvcc"])
    lib = ctypes.CDLL(str(lib_path))
    prog = ctypes.c_void_p()

    def check(code, what, log=""):
        if code != 0:
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            msg = lib.nvrtcGetErrorString(code).decode()
            raise _fail(f"NVRTC {what} ({msg})", log)

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None),
          "nvrtcCreateProgram")
    try:
        include_dirs = [str(h / "include") for h in _cuda_homes() if (h / "include").is_dir()]
        include_dirs += [str(d) for d in _wheel_dirs("include")]
        opts = [f"--gpu-architecture={arch}", "-std=c++17", "--ptxas-options=-v", "-default-device",
                "-lineinfo", *[f"-I{d}" for d in include_dirs], *options]
        arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        check(rc, f"compilation for {arch}", log)
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return CudaBuild(arch, cubin.raw, ptx.value.decode(), parse_ptxas_log(log), log, "nvrtc")


# ----------------------------------------------------------------------------------------------
# Disassembling
# ----------------------------------------------------------------------------------------------

def disassemble(cubin: bytes, tool: str | None = None) -> str:
    """SASS text of a cubin, through cuobjdump -sass (or nvdisasm when that is all there is)."""
    order = [tool] if tool else ["cuobjdump", "nvdisasm"]
    path = None
    for name in order:
        path = find_tool(name)
        if path is not None:
            tool = name
            break
    if path is None:
        raise ToolNotFoundError(f"no SASS disassembler found: {_INSTALL_HINTS['cuobjdump']} or "
                                f"{_INSTALL_HINTS['nvdisasm']}")
    with tempfile.TemporaryDirectory(prefix="tilus-sass-") as tmp:
        f = Path(tmp) / "kernel.cubin"
        f.write_bytes(cubin)
        cmd = [str(path), "-sass", str(f)] if tool == "cuobjdump" else [str(path), "-c", str(f)]
        proc = run_tool(cmd)
    if proc.returncode != 0:
        raise _fail(f"{tool}", proc.stdout + proc.stderr)
    return proc.stdout
