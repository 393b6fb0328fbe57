"""What ``tilus tune`` shows at the end: a table of the best config per shape bucket and a PNG
(per bucket, every timed config's time with the best marked; a dry run, which times nothing,
plots the built, pruned and failed counts instead)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass
class BucketResult:
    """One bucket of a tuning run: the best config and its time (None for a dry run), counts,
    every timed (config, ms), and where the answer came from (timed, database, dry run)."""

    bucket: str
    config: Optional[dict]
    time_ms: Optional[float]
    built: int
    pruned: int
    failed: int
    source: str
    timings: list = field(default_factory=list)


def _config_text(config: Optional[dict]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items()) if config else "-"


def table(rows: list[BucketResult]) -> str:
    """A fixed-width table, one line per bucket."""
    head = ["bucket", "best config", "ms", "built", "pruned", "failed", "source"]
    body = [[r.bucket, _config_text(r.config), "-" if r.time_ms is None else f"{r.time_ms:.4f}",
             str(r.built), str(r.pruned), str(r.failed), r.source] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    numeric = {2, 3, 4, 5}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def plot(rows: list[BucketResult], path: "str | Path", title: str) -> Path:
    """Writes the PNG (needs matplotlib) and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    timed = [r for r in rows if r.timings]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 4.5))
    if timed:
        for x, r in enumerate(timed):
            ms = sorted(t for _, t in r.timings)
            ax.scatter([x] * len(ms), ms, s=12, alpha=0.5, color="tab:blue")
            ax.scatter([x], [min(ms)], s=60, marker="*", color="tab:red",
                       label="best" if x == 0 else None)
            ax.annotate(_config_text(r.config), (x, min(ms)), textcoords="offset points",
                        xytext=(6, -4), fontsize=7)
        ax.set_xticks(range(len(timed)), [r.bucket for r in timed], rotation=20, fontsize=8)
        ax.set_ylabel("time per launch (ms)")
        ax.legend()
    else:
        xs = range(len(rows))
        bottom = [0] * len(rows)
        for name, color in (("built", "tab:green"), ("pruned", "tab:gray"), ("failed", "tab:red")):
            values = [getattr(r, name) for r in rows]
            ax.bar(xs, values, bottom=bottom, color=color, label=name)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(list(xs), [r.bucket for r in rows], rotation=20, fontsize=8)
        ax.set_ylabel("configs (dry run: nothing timed)")
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
