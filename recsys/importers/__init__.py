"""Public datasets into the raw lake layout, so the nightly jobs run on them unchanged.

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
  `<name>.inter`) plus `<name>.text`, with `.item2index`/`.user2index` when present.

Every importer writes what `recsys generate` writes (see recsys/importers/writer.py) and
returns a summary with at least events, users, items, start_date and end_date. A missing
file or an unknown format raises InputError naming the path and what was expected; the
first malformed row stops the import with an InputError naming the file, the line number
and the reason (nothing is skipped silently: a public dataset with a bad line is a
different file from the one the importer was written for).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from recsys.errors import InputError

# Format name -> module with `load(path) -> writer.Dataset`. Imported on use: the CLI lists
# the names without loading pyarrow.
FORMATS = {
    "movielens": "recsys.importers.movielens",
    "retailrocket": "recsys.importers.retailrocket",
    "amazon-seq": "recsys.importers.amazon_seq",
    "unisrec": "recsys.importers.unisrec",
}


def import_dataset(fmt: str, path: Path, lake_root: Path) -> dict:
    """Read the dataset at `path` in format `fmt` and write it under `lake_root/raw/`.

    Returns the writer's summary plus `format` and `path`.
    """
    if fmt not in FORMATS:
        raise InputError(f"{path}: unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder (expected a {fmt} dataset)")
    from recsys.importers.writer import write_raw

    dataset = importlib.import_module(FORMATS[fmt]).load(path)
    summary = write_raw(Path(lake_root), dataset)
    return {"format": fmt, "path": str(path), **summary}
