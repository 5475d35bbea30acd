"""Datasets into the raw lake layout, so the nightly jobs run on them unchanged.

    recsys import --format movielens --path ../data/ml-1m
    from recsys.importers import import_dataset
    import_dataset("movielens", Path("../data/ml-1m"), Path("var/lake"))

Formats (one module each, registered in FORMATS):

- `movielens`: 100K (`u.data` + `u.item`), 1M (`ratings.dat` + `movies.dat`) or the
  latest/20M/25M layout (`ratings.csv` + `movies.csv`), detected from the files present;
- `retailrocket`: `events.csv` (view / addtocart / transaction), plus
  `item_properties*.csv` and `category_tree.csv` when present;
- `amazon-seq`: one line per user, `user item item ...` in time order (S3-Rec 5-core);
- `unisrec`: RecBole/UniSRec atomic files, `<name>.{train,valid,test}.inter` (or one
  `<name>.inter`) plus `<name>.text`, with `.item2index`/`.user2index` when present;
- `events`: your own log in CSV, Parquet or JSON Lines, with column and event mappings
  (see recsys/importers/events.py; its options are passed through as keywords).

Every importer writes what `recsys generate` writes (see recsys/importers/writer.py) and
returns a summary with at least events, users, items, start_date and end_date. A missing
file or an unknown format raises InputError naming the path and what was expected.

A malformed row does not stop the import: it is quarantined with its file, line, reason
and raw text in `<lake>/quarantine/import/<format>-<UTC time>.csv`, and the summary counts
`rows_quarantined` and `quarantine_reasons`. Only when some file's share of bad rows exceeds
`max_bad_row_share` (the nightly validation's threshold) does the import fail, with an
InputError naming that file and its first bad lines; nothing is written to raw/ then (the
quarantine file is, for the full list). With `check`, the dataset is read and summarised and
nothing at all is written.
"""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

from recsys.config import Settings
from recsys.errors import ConfigError, InputError

# Format name -> module with `load(path, quarantine, **options) -> writer.Dataset`. Imported
# on use: the CLI lists the names without loading pyarrow.
FORMATS = {
    "movielens": "recsys.importers.movielens",
    "retailrocket": "recsys.importers.retailrocket",
    "amazon-seq": "recsys.importers.amazon_seq",
    "unisrec": "recsys.importers.unisrec",
    "events": "recsys.importers.events",
}
DEFAULT_MAX_BAD_ROW_SHARE = Settings.model_fields["max_bad_row_share"].default


def import_dataset(
    fmt: str,
    path: Path,
    lake_root: Path,
    *,
    max_bad_row_share: float = DEFAULT_MAX_BAD_ROW_SHARE,
    check: bool = False,
    now: dt.datetime | None = None,
    **options,
) -> dict:
    """Read the dataset at `path` in format `fmt` and write it under `lake_root/raw/`.

    Returns the writer's summary plus `format`, `path` and the quarantine counts; `check`
    only reads and summarises. `now` names the quarantine file (default: the current UTC time).
    """
    if fmt not in FORMATS:
        raise InputError(f"{path}: unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if options and fmt != "events":
        raise ConfigError(f"{', '.join(sorted(options))}: only for --format events, not {fmt}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder (expected a {fmt} dataset)")
    from recsys.importers.quarantine import Quarantine
    from recsys.importers.writer import write_raw
    from recsys.lake import Lake

    bad = Quarantine()
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    where = None if check else Lake(Path(lake_root)).import_quarantine / f"{fmt}-{stamp}.csv"
    try:
        dataset = importlib.import_module(FORMATS[fmt]).load(path, bad, **options)
    except InputError:
        # A file with nothing usable left says more through its bad rows than "no events".
        _fail_if_too_bad(bad, max_bad_row_share, where)
        raise
    _fail_if_too_bad(bad, max_bad_row_share, where)
    summary = write_raw(Path(lake_root), dataset, dry_run=check)
    written = None if check else bad.write(where)
    return {"format": fmt, "path": str(path), **({"check": True} if check else {}), **summary, **bad.summary(written)}


def _fail_if_too_bad(bad, limit: float, where: Path | None) -> None:
    message = bad.failure(limit)
    if message:
        written = bad.write(where) if where else None
        raise InputError(message + (f" (all bad rows: {written})" if written else ""))
