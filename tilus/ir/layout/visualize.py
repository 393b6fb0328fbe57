"""Pictures of register layouts: a text table, and SVG/PNG drawings coloured by thread.

A tile of rank > 2 is shown with its leading dimensions flattened into rows. A cell reads
``thread:slot``; an element several threads hold (replication) reads ``t0/t1/...:slot``, with
``t0/t1/../tn`` when the threads step evenly.
"""
from __future__ import annotations

import math

from tilus.ir.layout.register import RegisterLayout


def _grid(layout: RegisterLayout) -> list[list[list[tuple[int, int]]]]:
    """The owners of each cell of the 2-D view (rows = leading dims flattened, cols = last dim)."""
    cols = layout.shape[-1] if layout.rank else 1
    rows = math.prod(layout.shape[:-1]) if layout.rank else 1
    grid: list[list[list[tuple[int, int]]]] = [[[] for _ in range(cols)] for _ in range(rows)]
    for t, row in enumerate(layout.index_table().tolist()):
        for s, flat in enumerate(row):
            grid[flat // cols][flat % cols].append((t, s))
    return grid


def _cell(owners: list[tuple[int, int]]) -> str:
    slots = {s for _, s in owners}
    if len(slots) > 1:
        return "/".join(f"{t}:{s}" for t, s in owners)
    threads = [t for t, _ in owners]
    steps = {b - a for a, b in zip(threads, threads[1:])}
    if len(threads) > 3 and len(steps) == 1:
        names = f"{threads[0]}/{threads[1]}/../{threads[-1]}"
    else:
        names = "/".join(map(str, threads))
    return f"{names}:{owners[0][1]}"


def visualize(layout: RegisterLayout) -> str:
    """The layout as a text table, one cell per element reading ``thread:slot``."""
    grid = _grid(layout)
    cells = [[_cell(c) for c in row] for row in grid]
    width = max(len(c) for row in cells for c in row)
    label = len(str(len(grid) - 1))
    lines = [f"{layout}: shape {list(layout.shape)}, {layout.num_threads} threads x "
             f"{layout.local_size} slots (cell = thread:slot)",
             " " * (label + 1) + " ".join(str(j).rjust(width) for j in range(len(grid[0])))]
    lines += [str(i).rjust(label) + " " + " ".join(c.rjust(width) for c in row)
              for i, row in enumerate(cells)]
    return "\n".join(lines)


def draw(layout: RegisterLayout, path: str, fmt: str) -> None:
    """Draw the table as an image (``fmt`` is "png" or "svg"), cells coloured by their first thread."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    grid = _grid(layout)
    rows, cols = len(grid), len(grid[0])
    colours = matplotlib.colormaps["tab20"]
    fig = Figure(figsize=(max(2.0, 0.7 * cols), max(1.5, 0.4 * rows + 0.6)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, row in enumerate(grid):
        for j, owners in enumerate(row):
            ax.add_patch(Rectangle((j, rows - 1 - i), 1, 1, facecolor=colours(owners[0][0] % 20),
                                   edgecolor="black", linewidth=0.5))
            ax.text(j + 0.5, rows - 0.5 - i, _cell(owners), ha="center", va="center", fontsize=6)
    ax.set_xlim(0, cols)
    ax.set_ylim(0, rows)
    ax.set_axis_off()
    ax.set_title(str(layout), fontsize=8)
    fig.savefig(path, format=fmt, dpi=120, bbox_inches="tight")
