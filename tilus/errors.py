"""The exceptions Tilus raises: one base class, one subclass per kind of mistake.

Every error carries a message a user can act on: it names the offending thing (a type name, a
layout, an instruction, an argument) and, where it helps, what would have been accepted.
"""
from __future__ import annotations


class TilusError(Exception):
    """Base class of every error Tilus raises on purpose."""


class RegistryError(TilusError):
    """Two handlers (interpreter, layout rule, emitter, simulator intrinsic) registered for one key."""


class DataTypeError(TilusError, ValueError):
    """An unknown data type name, an unsupported bit width, or a value/code outside a type."""


class PackingError(TilusError, ValueError):
    """Bit packing or unpacking got a buffer of the wrong dtype, length or shape."""


class LayoutError(TilusError, ValueError):
    """A layout operation that is impossible for its operands (mismatched rank, no division, ...)."""


class IRError(TilusError):
    """A malformed IR construct (built by hand or by a front end)."""


class VerificationError(IRError):
    """The verifier found a shape, dtype, scope or layout inconsistency in a Program."""


class TilusParseError(IRError):
    """The IR text could not be parsed; the message gives line, column and what was expected."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)
        self.line = line
        self.column = column


class ScriptError(TilusError):
    """A mistake in a kernel written with the Python DSL, reported at the user's file and line."""

    def __init__(self, message: str, filename: str | None = None, lineno: int | None = None,
                 source_line: str | None = None):
        text = message
        if filename is not None:
            text = f"{filename}:{lineno}: {message}"
            if source_line:
                text += f"\n    {source_line.strip()}"
        super().__init__(text)
        self.filename = filename
        self.lineno = lineno


class ScriptVerificationError(ScriptError, VerificationError):
    """A DSL kernel that the verifier rejects, reported at the line of the user's script that made
    the offending statement (or gave the offending layout, grid or warps)."""


class InterpreterError(TilusError):
    """A program did something at run time in the CPU interpreter that has no meaning."""


class UninitializedMemoryError(InterpreterError):
    """The interpreter read shared memory that nothing wrote (on a GPU: whatever was there before);
    the message names the tensor and the first such index."""


class ArgumentError(TilusError, TypeError):
    """A kernel was called with an argument of the wrong count, dtype, shape, device or strides."""


class BlockTableError(ArgumentError, IndexError):
    """A paged KV cache's block table does not cover a sequence (too few columns) or names a page
    outside the cache's pool; the message gives the sequence, the table entry and the bound."""


class CompilationError(TilusError):
    """Lowering or building a kernel failed (a pass, TVM, nvcc); the message says which step."""


class ToolNotFoundError(TilusError, FileNotFoundError):
    """An external tool (nvcc, cuobjdump, nvdisasm) that an operation needs is not installed."""


class CacheError(TilusError):
    """The kernel cache could not be read or written."""


class CacheCorruptionError(CacheError):
    """A cache entry is damaged: a required file is missing, or a checksum or the metadata is wrong."""


class KernelNotFoundError(TilusError, LookupError):
    """A compiled kernel (a cache entry, or the entry function inside a library) does not exist."""


class RuntimeLibraryError(TilusError, OSError):
    """A shared library the runtime needs (TVM's runtime, the CUDA driver or runtime) cannot be loaded."""


class LayoutInferenceError(LayoutError):
    """Layout inference found no layout for a tensor, or two rules (or annotations) that require
    different layouts of one tensor; the message names the instruction and both layouts."""


# ----- tilus.ops, tilus.nn, tilus.autotune (kept at the end to merge cleanly) -----
class QuantizationError(TilusError, ValueError):
    """A weight cannot be quantized as asked: NaN/inf in it, a group size that does not divide K,
    an unsupported weight type or scale type, or a malformed/unknown packed-weight format."""


class DeviceMismatchError(ArgumentError):
    """The operands of an op live on different devices (e.g. CPU activations, a CUDA weight)."""


class AutotuneError(TilusError):
    """Autotuning failed: an empty or fully pruned search space, every build failed, or the tuning
    database could not be read or written."""


class NoDeviceError(TilusError, RuntimeError):
    """Something that runs on a GPU (timing a kernel, say) was asked for on a machine without a
    CUDA device."""



class UnsupportedLaunchError(TilusError, NotImplementedError):
    """A compiled kernel cannot run on the GPU at hand (its instructions need a newer
    architecture, e.g. e4m3 mma on sm_80): use the op's fallback engine or a newer GPU."""
