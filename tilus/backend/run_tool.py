"""Running a toolchain program (nvcc and the cicc/ptxas it starts, cuobjdump, nvdisasm, pip) with a
time limit, so that no compiler hangs a build or outlives it.

The program runs in its own session (process group). On timeout, or when the caller is interrupted
(KeyboardInterrupt, or any other exception while waiting), the whole group is killed and reaped.
The limit is ``$TILUS_TOOLCHAIN_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT`).
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence, Union

from tilus.errors import CompilationError

DEFAULT_TIMEOUT = 600.0
TAIL_CHARS = 4000
_REAP_SECONDS = 10.0
# The longest the caller waits in one call: a Ctrl-C (SIGINT) that the kernel delivers to another
# thread of the process (a progress bar's monitor, a library's pool) only raises
# KeyboardInterrupt when the main thread is back in the interpreter.
_POLL_SECONDS = 0.2


def toolchain_timeout() -> float:
    """Seconds a toolchain program may run: ``$TILUS_TOOLCHAIN_TIMEOUT`` or the default."""
    env = os.environ.get("TILUS_TOOLCHAIN_TIMEOUT", "").strip()
    if not env:
        return DEFAULT_TIMEOUT
    try:
        value = float(env)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise CompilationError(f"TILUS_TOOLCHAIN_TIMEOUT={env!r}: expected a positive number of "
                               f"seconds")
    return value


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    """The last ``limit`` characters of ``text`` (what a tool said last matters most)."""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _communicate(proc: subprocess.Popen, limit: float) -> tuple[str, str]:
    """``proc.communicate(timeout=limit)`` in slices of :data:`_POLL_SECONDS` (retrying loses no
    output), so that an interrupt is seen while the tool runs."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return proc.communicate(timeout=max(0.0, min(_POLL_SECONDS, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise


def run_tool(cmd: Sequence[Union[str, os.PathLike]], cwd: Optional[Union[str, os.PathLike]] = None,
             timeout: Optional[float] = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` and return its exit status and output (text); CompilationError, with the tail
    of its output, when it runs past ``timeout`` (default :func:`toolchain_timeout`) seconds."""
    limit = toolchain_timeout() if timeout is None else timeout
    args = [str(c) for c in cmd]
    proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True)
    try:
        out, err = _communicate(proc, limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=_REAP_SECONDS)
        except subprocess.TimeoutExpired:   # a child left the group and holds the pipes
            out, err = "", "(its output could not be collected)"
        raise CompilationError(
            f"{Path(args[0]).name} did not finish within {limit:g} s and was killed with its "
            f"child processes (set TILUS_TOOLCHAIN_TIMEOUT to allow longer); its last output:\n"
            f"{tail((out or '') + (err or ''))}") from None
    except BaseException:
        _kill_group(proc)
        try:
            proc.wait(timeout=_REAP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
