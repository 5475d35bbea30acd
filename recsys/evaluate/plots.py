"""Charts as inline SVG text, drawn with matplotlib: the evaluation report and the explorer show the same plots.

Figures are built with `matplotlib.figure.Figure` (no pyplot), so nothing needs a display and no
global figure state is shared between threads of a web server. Text stays text in the SVG
(`svg.fonttype: none`), which keeps the files small and lets a page search and tests read the
labels; the id salt is fixed so that the same data draws the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
# Read when a figure is saved; set once for the process rather than per call, because a
# temporary rc_context is not thread-safe and only SVG output reads these two keys.
_SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "recsys"}
_SIZE = (6.4, 2.6)  # inches: two charts fit a laptop screen's height

Series = dict[str, Sequence[float | None]]


def _svg(fig) -> str:
    import matplotlib

    matplotlib.rcParams.update(_SVG_RC)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline in HTML: no XML prolog or doctype


def _figure(title: str, ylabel: str | None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE)
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, loc="left", fontsize=10)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="#e5e5e5")
    ax.set_axisbelow(True)
    return fig, ax


def _values(values: Sequence[float | None], n: int) -> list[float]:
    """`n` floats, NaN where a value is missing: matplotlib leaves a gap there instead of a zero."""
    out = [math.nan if v is None else float(v) for v in list(values)[:n]]
    return out + [math.nan] * (n - len(out))


def bar_chart(title: str, labels: Sequence[str], series: Series, ylabel: str | None = None) -> str:
    """Grouped bars: one group per label, one bar per series; "" when there is nothing to draw."""
    if not labels or not series:
        return ""
    fig, ax = _figure(title, ylabel)
    width = 0.8 / len(series)
    for s, (name, values) in enumerate(series.items()):
        xs = [g + (s - (len(series) - 1) / 2) * width for g in range(len(labels))]
        ax.bar(xs, _values(values, len(labels)), width * 0.95, label=name, color=COLOURS[s % len(COLOURS)])
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 8 else 0, ha="right" if len(labels) > 8 else "center")
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=8, ncols=min(len(series), 4))
    return _svg(fig)


def line_chart(title: str, labels: Sequence[str], series: Series, ylabel: str | None = None,
               xlabel: str | None = None) -> str:
    """One line per series over `labels`; None values are gaps; "" when there is nothing to draw."""
    if not labels or not series:
        return ""
    fig, ax = _figure(title, ylabel)
    xs = range(len(labels))
    for s, (name, values) in enumerate(series.items()):
        ax.plot(xs, _values(values, len(labels)), marker="o", markersize=3, label=name, color=COLOURS[s % len(COLOURS)])
    step = max(1, len(labels) // 10)  # at most ~10 tick labels, however many nights
    ax.set_xticks(list(xs)[::step], list(labels)[::step], rotation=30 if len(labels) > 6 else 0,
                  ha="right" if len(labels) > 6 else "center")
    if xlabel:
        ax.set_xlabel(xlabel)
    if len(series) > 1:
        ax.legend(frameon=False, fontsize=8, ncols=min(len(series), 4))
    return _svg(fig)
