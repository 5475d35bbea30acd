"""The lake layout: every path a stage reads or writes, keyed on the run date `ds`.

Stages exchange these paths, never DataFrames. Partition folders use Hive naming
(`date=YYYY-MM-DD`, `ds=YYYY-MM-DD`) so Spark, DuckDB and pyarrow all read them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import ConfigError, InputError

# The nightly stages in order (the DAG, `recsys run` and `recsys status` follow it); each
# leaves what it returned as runs/ds=<ds>/<stage>.json.
STAGES = ("validate", "features", "encode", "train", "evaluate", "gate", "score", "publish", "retention")


def parse_ds(ds: str | dt.date) -> dt.date:
    """`YYYY-MM-DD` -> date, with a message that names the bad value."""
    if isinstance(ds, dt.date):
        return ds
    try:
        return dt.date.fromisoformat(str(ds))
    except ValueError:
        raise ConfigError(f"run date {ds!r} is not a YYYY-MM-DD date") from None


@dataclass(frozen=True)
class Lake:
    root: Path

    # --- raw input (written by `recsys generate` / `recsys import` or upstream systems) ---
    @property
    def raw_events(self) -> Path:
        return self.root / "raw" / "events"

    @property
    def raw_items(self) -> Path:
        return self.root / "raw" / "items"

    def events_partition(self, day: dt.date) -> Path:
        return self.raw_events / f"date={day.isoformat()}"

    def items_partition(self, day: dt.date) -> Path:
        return self.raw_items / f"date={day.isoformat()}"

    # --- per-run outputs ---
    def run_dir(self, ds: dt.date) -> Path:
        """Manifests and summaries of one run."""
        return self.root / "runs" / f"ds={ds.isoformat()}"

    def stage_result(self, ds: dt.date, stage: str) -> Path:
        """`runs/ds=<ds>/<stage>.json`: what a stage returned, the one record of its run."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
        return self.run_dir(ds) / f"{stage}.json"

    def read_stage_result(self, ds: dt.date, stage: str) -> dict:
        """The saved result of `stage` for ds; InputError when that stage has not run."""
        path = self.stage_result(ds, stage)
        if not path.exists():
            raise InputError(f"{path}: stage {stage!r} has not run for {ds} yet")
        return json.loads(path.read_text())

    def quarantine(self, ds: dt.date) -> Path:
        return self.root / "quarantine" / f"ds={ds.isoformat()}"

    @property
    def import_quarantine(self) -> Path:
        """Rows `recsys import` set aside, one CSV per import (not per run date)."""
        return self.root / "quarantine" / "import"

    @property
    def validated_events(self) -> Path:
        """Clean events, one partition per event day, rewritten when that day is revalidated."""
        return self.root / "validated" / "events"

    def validated_events_partition(self, day: dt.date) -> Path:
        return self.validated_events / f"date={day.isoformat()}"

    def validated_items(self, ds: dt.date) -> Path:
        """The clean catalogue as known on ds (every item created up to ds)."""
        return self.root / "validated" / "items" / f"ds={ds.isoformat()}"

    def validation_report(self, ds: dt.date) -> Path:
        """The validation job's report is the validate stage's result (a job submitted to a Spark
        cluster writes it alone; the in-process stage adds its seconds)."""
        return self.stage_result(ds, "validate")

    def features(self, ds: dt.date) -> Path:
        return self.root / "features" / f"ds={ds.isoformat()}"

    @property
    def item_map_root(self) -> Path:
        """Item id -> dense index, one snapshot per night; new items are appended."""
        return self.root / "features" / "item_map"

    @property
    def text_cache(self) -> Path:
        """Item text embeddings keyed by a hash of (model, text); shared across nights."""
        return self.root / "embeddings" / "cache"

    def embeddings(self, ds: dt.date) -> Path:
        return self.root / "embeddings" / f"ds={ds.isoformat()}"

    @property
    def models_root(self) -> Path:
        return self.root / "models"

    def scores(self, ds: dt.date) -> Path:
        return self.root / "scores" / f"ds={ds.isoformat()}"


# One part file per raw partition, named as Spark names its own.
PART_FILE = "part-0.parquet"


def write_partition(folder: Path, table) -> None:
    """Replace a raw partition's data with one part file (written aside, then renamed), so a
    reader never sees a half-written partition and stale part files never linger."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("part-*"):
        if stale.name != PART_FILE:
            stale.unlink()
    tmp = folder / f".{PART_FILE}.tmp"
    pq.write_table(table, tmp, compression="snappy")
    tmp.replace(folder / PART_FILE)
