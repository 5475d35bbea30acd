"""The one plain-text table printer (tabulate): benchmarks, `recsys status`, `recsys query`.

Columns of numbers are aligned right, the rest left. Floats get `floatfmt`, a missing value
shows as "-", and strings are printed as given, so a caller that wants thousands separators
or fewer decimals formats the cell itself (such a string still counts as a number).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Sequence

from tabulate import tabulate


NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?[x%s]?$")


def _numeric(value) -> bool:
    return isinstance(value, numbers.Number) or (isinstance(value, str) and bool(NUMBER.match(value)))


def _cell(value, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value)


def percent(share: float) -> str:
    """0.0512 -> "5.1%", 0.05 -> "5%": a share as people write it in a message."""
    return f"{share * 100:.1f}".rstrip("0").rstrip(".") + "%"


def text_table(rows: Iterable[Sequence], headers: Sequence[str], floatfmt: str = ".4f") -> str:
    rows = [list(row) for row in rows]
    cells = [[_cell(v, floatfmt) for v in row] for row in rows]
    align = [
        "right" if any(v is not None for v in col) and all(_numeric(v) for v in col if v is not None) else "left"
        for col in (zip(*rows) if rows else [[]] * len(headers))
    ]
    return tabulate(cells, headers=list(headers), tablefmt="simple", disable_numparse=True, colalign=align)


def metric_table(metrics: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """One row per model, one column per metric; a metric a model lacks shows as "-"."""
    return text_table(([name, *(m.get(c) for c in columns)] for name, m in metrics.items()), ["model", *columns])
