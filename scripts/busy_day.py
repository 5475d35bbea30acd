"""Multiply one day of a local raw lake by FACTOR: a sale day or a replayed export, for the
"bad input at scale" measurements in docs/BENCHMARKS.md.

    python scripts/busy_day.py --lake-root var/lake --date 2026-11-27 --factor 10

Each extra copy of the day's events belongs to new users (`<user_id>~<k>`), so the copies are
distinct events, not duplicates that validation would set aside.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.lake import Lake
from recsys.schema import USER_ID


def multiply_day(lake_root: Path, day: dt.date, factor: int) -> int:
    """Writes factor - 1 copies of `day`'s raw events beside them; returns the day's new row count."""
    part = Lake(lake_root).events_partition(day)
    originals = sorted(part.glob("*.parquet"))
    if not originals:
        raise SystemExit(f"{part}: no raw event files")
    rows = 0
    for path in originals:
        table = pq.read_table(path)
        rows += table.num_rows * factor
        for k in range(1, factor):
            users = pc.binary_join_element_wise(table.column(USER_ID), pa.scalar(str(k)), "~")
            copy = table.set_column(table.schema.get_field_index(USER_ID), USER_ID, users)
            pq.write_table(copy, path.with_name(f"{path.stem}-copy{k}.parquet"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lake-root", type=Path, required=True)
    ap.add_argument("--date", type=dt.date.fromisoformat, required=True)
    ap.add_argument("--factor", type=int, default=10)
    args = ap.parse_args()
    print(f"{args.date}: {multiply_day(args.lake_root, args.date, args.factor):,} raw events")


if __name__ == "__main__":
    main()
