"""Bad rows of one import: set aside with file, line and reason instead of stopping it.

An import fails only when some file's share of bad rows exceeds `max_bad_row_share`, the
threshold the nightly validation applies to a day: a few broken lines in a public dump are
noise, a file that is mostly broken is the wrong file.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from recsys.tables import percent

# Columns of the quarantine file; `raw` is the line (or row) as it was read.
COLUMNS = ("file", "line", "reason", "detail", "raw")
# Bad rows quoted in a failure message; the quarantine file has them all.
SHOWN = 3


class BadRow(ValueError):
    """A row that cannot be imported: `reason` is a short code counted in the summary, the
    message says what is wrong with this row."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Quarantine:
    rows: Counter = field(default_factory=Counter)  # file -> rows read, good and bad
    bad: list[tuple[str, int, str, str, str]] = field(default_factory=list)

    def count(self, path: Path, n: int = 1) -> None:
        self.rows[str(path)] += n

    def add(self, path: Path, line: int, err: ValueError, raw: str) -> None:
        reason = err.reason if isinstance(err, BadRow) else "malformed"
        self.bad.append((str(path), line, reason, str(err), raw))

    def reasons(self) -> dict[str, int]:
        counts = Counter(r for _, _, r, _, _ in self.bad)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self, path: Path | None) -> dict:
        return {"rows_quarantined": len(self.bad), "quarantine_reasons": self.reasons(),
                "quarantine_path": str(path) if path else None}  # fmt: skip

    def failure(self, limit: float) -> str | None:
        """The message for the first file whose bad share exceeds `limit`, else None."""
        per_file = Counter(f for f, *_ in self.bad)
        for name, n_bad in per_file.items():
            n = max(self.rows[name], n_bad)
            if n_bad / n <= limit:
                continue
            rows = [b for b in self.bad if b[0] == name]
            reasons = Counter(b[2] for b in rows)
            listed = ", ".join(f"{r}: {k}" for r, k in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
            first = "; ".join(f"line {line}: {detail}" for _, line, _, detail, _ in rows[:SHOWN])
            share = f"{n_bad} of {n} rows bad ({percent(n_bad / n)} > max_bad_row_share {percent(limit)}; {listed})"
            return f"{name}: {share}; {first}"
        return None

    def write(self, path: Path) -> Path | None:
        if not self.bad:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            out = csv.writer(f)
            out.writerow(COLUMNS)
            out.writerows(self.bad)
        tmp.replace(path)
        return path

    def lines(self, path: Path, encoding: str = "utf-8", skip_header: bool = False) -> Iterator[tuple[int, str]]:
        """parse.lines, counting each line as a row read."""
        from recsys.importers.parse import lines

        for no, text in lines(path, encoding, skip_header):
            self.count(path)
            yield no, text
