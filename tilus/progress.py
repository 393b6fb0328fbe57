"""Progress of long work (autotune sweeps, bundles): a tqdm bar on a terminal, plain lines
otherwise (logs, CI), both with the counts of each outcome (built, pruned, failed, ...) and an ETA.

    with Progress(len(configs), "building QuantMatmul", counts={"pruned": 3}) as bar:
        for c in configs:
            bar.update("built" if ok else "failed")

Plain lines go to stderr at most every ``interval`` seconds and once at the end, so a 288-config
sweep logs a few dozen lines, not 288.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Counts outcomes of ``total`` steps and shows them (see module doc). ``enabled``: True,
    False (silent), or None: a bar when ``stream`` is a terminal and tqdm is installed, else
    plain lines."""

    def __init__(self, total: int, desc: str, counts: Optional[dict] = None,
                 stream: Optional[TextIO] = None, enabled: Optional[bool] = None,
                 interval: float = 10.0):
        self.total = total
        self.desc = desc
        self.counts: dict[str, int] = dict(counts or {})
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.start = time.perf_counter()
        self._last_line = self.start
        self._bar = None
        self.enabled = enabled is not False
        if self.enabled and enabled is None and _isatty(self.stream):
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, file=self.stream, leave=True,
                                 dynamic_ncols=True)
                self._bar.set_postfix(self.counts, refresh=False)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def eta(self) -> Optional[float]:
        """Seconds left at the rate so far (None before the first step)."""
        if not self.done:
            return None
        return (time.perf_counter() - self.start) / self.done * (self.total - self.done)

    def line(self) -> str:
        """``desc: done/total (built 3, failed 1), 0:12 elapsed, ETA 1:05``."""
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        eta = self.eta()
        return (f"{self.desc}: {self.done}/{self.total}" + (f" ({counts})" if counts else "")
                + f", {_format_seconds(time.perf_counter() - self.start)} elapsed"
                + (f", ETA {_format_seconds(eta)}" if eta is not None and self.done < self.total
                   else ""))

    def update(self, outcome: str, n: int = 1) -> None:
        """``n`` more steps ended with ``outcome`` (a count name: built, failed, ...)."""
        self.done += n
        self.counts[outcome] = self.counts.get(outcome, 0) + n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(self.counts, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.interval or self.done >= self.total:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def write(self, text: str, file: Optional[TextIO] = None) -> None:
        """A message (to ``file``, default the progress stream) that does not break the bar."""
        if self._bar is not None:
            self._bar.write(text, file=file or self.stream)
        else:
            print(text, file=file or self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
