"""Loss plots as PNG files (matplotlib, imported when a plot is drawn: it is an optional, slow import)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from core.files import write_atomically


def plot_curves(
    curves: dict[str, list[float]],
    file: str | os.PathLike,
    title: str,
    xlabel: str,
    ylabel: str,
    steps: list[float] | None = None,
) -> Path:
    """Draw each named curve of ``curves`` as a line in one PNG plot at ``file``; return the path.

    The x value of point ``i`` is ``steps[i]`` if given, else ``i``. ``None`` and NaN values
    leave gaps. With no data at all the plot says so instead of failing, so a report for a bake
    of zero steps still renders. The file is replaced atomically.
    """
    # Figure + the Agg canvas directly rather than pyplot: no global backend switch and no
    # global figure state, so this is safe beside an interactive session or in a thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    drawn = 0
    for name, values in curves.items():
        ys = [math.nan if value is None else float(value) for value in values]
        if not ys:
            continue
        xs = list(steps[: len(ys)]) if steps is not None and len(steps) >= len(ys) else list(range(len(ys)))
        # A single point draws no line; a marker keeps it visible.
        axes.plot(xs, ys, label=name, marker="o" if len(ys) == 1 else None)
        drawn += 1
    if drawn == 0:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.legend()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    return write_atomically(file, lambda handle: figure.savefig(handle, format="png"))


def curve_mean(value) -> float | None:
    """The mean of a curve value: a float, or a list of floats (one per prompt of a batch)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        numbers = [float(v) for v in value if v is not None]
        return sum(numbers) / len(numbers) if numbers else None
    return float(value)
