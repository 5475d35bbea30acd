"""The lake layout: every path a stage reads or writes, keyed on the run date `ds`.

Stages exchange these paths, never DataFrames. Partition folders use Hive naming
(`date=YYYY-MM-DD`, `ds=YYYY-MM-DD`) so Spark, DuckDB and pyarrow all read them.

The lake is a local folder, or a prefix of an S3 bucket (`s3://bucket/prefix`) that stages
work on through a local copy (recsys.objectstore); `STAGE_IO` below says which paths each
stage reads and writes, so that the copy holds what the stage needs and the bucket gets what
it made.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from recsys.errors import ConfigError

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.objectstore import Bucket

# The nightly stages in order (the DAG, `recsys run` and `recsys status` follow it); each
# leaves what it returned as runs/ds=<ds>/<stage>.json, shaped by its model in
# recsys.pipeline.results.
STAGES = ("validate", "features", "encode", "train", "evaluate", "gate", "score", "publish", "retention")

# The stages on either side of training, and the nights back the train stage looks for the
# seconds of those after it: its budget is what the night's window leaves (recsys.pipeline.budget).
BEFORE_TRAIN = STAGES[: STAGES.index("train")]
AFTER_TRAIN = STAGES[STAGES.index("train") + 1 : STAGES.index("retention")]
BUDGET_LOOKBACK_NIGHTS = 7

# Nights of evaluations the gate's report charts (its NDCG@10 history), so the gate reads them.
REPORT_NIGHTS = 30

# A lake root with a scheme is a URL; `s3a://` (Hadoop's name for S3) is the same bucket as `s3://`.
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
LAKE_SCHEMES = ("s3", "s3a")


def parse_ds(ds: str | dt.date) -> dt.date:
    """`YYYY-MM-DD` -> date, with a message that names the bad value."""
    if isinstance(ds, dt.date):
        return ds
    try:
        return dt.date.fromisoformat(str(ds))
    except ValueError:
        raise ConfigError(f"run date {ds!r} is not a YYYY-MM-DD date") from None


def lake_url(root: str | Path) -> str | None:
    """`s3://bucket/prefix` for a lake root in S3 (given as `s3://` or `s3a://`, trailing
    slashes dropped); None for a local folder. ValueError for a URL of another scheme."""
    m = _URL.match(str(root))
    if m is None:
        return None
    scheme, rest = m.group(1).lower(), m.group(2).strip("/")
    if scheme not in LAKE_SCHEMES or not rest:
        raise ValueError(f"{root}: a lake URL must be s3://bucket[/prefix] (or s3a://)")
    return f"s3://{rest}"


def hadoop_root(root: str | Path) -> Path:
    """The lake root as the Spark jobs' Hadoop filesystem reads it when they are submitted to a
    cluster: a bucket through Hadoop's S3 connector (`s3a://`; spark_jobs.io.uri repairs the
    slash that Path drops), a local folder as is."""
    url = lake_url(root)
    return Path(root) if url is None else Path("s3a://" + url[len("s3://"):])


@dataclass(frozen=True)
class Lake:
    """The lake's layout under `root`. For a lake in a bucket, `root` is this machine's local copy
    of it and `bucket` the lake of record (recsys.objectstore.Bucket); records (stage results,
    the model registry) then name paths by URL (`ref`), since the copy's folder differs from
    machine to machine."""

    root: Path
    bucket: Bucket | None = field(default=None, compare=False, repr=False)

    # --- paths in records, and the bucket ---
    def ref(self, path: str | Path) -> str:
        """How a record names a lake path: the path itself on a local lake, its URL
        (`s3://bucket/prefix/models/...`) on a lake in a bucket."""
        if self.bucket is None:
            return str(path)
        rel = _relative(Path(path), self.root)
        return str(path) if rel is None else f"{self.bucket.url}/{rel}" if rel else self.bucket.url

    def resolve(self, ref: str | Path) -> Path:
        """The local path of what a record names (see `ref`)."""
        text = str(ref)
        try:
            url = lake_url(text)
        except ValueError:  # a URL of another kind names nothing in this lake
            url = None
        if self.bucket is not None and url is not None and (url + "/").startswith(self.bucket.url + "/"):
            return self.root / url[len(self.bucket.url) :].lstrip("/")
        return Path(text)

    def fetch(self, path: Path) -> Path:
        """`path` (a file or folder of this lake), made present in the local copy of a lake in a
        bucket (pulled, as the bucket holds it now); a local lake's path as is. For what a stage
        reads only sometimes, or what a record or the database names (a model folder): what a
        stage always reads is pulled before it runs (STAGE_IO)."""
        if self.bucket is not None:
            self.bucket.pull(self.root, path)
        return path

    def put(self, path: Path) -> None:
        """Upload a file written in the local copy of a lake in a bucket; nothing for a local lake."""
        if self.bucket is not None:
            self.bucket.push(self.root, [Output(path, "add")], before={})

    def partition_days(self, folder: Path) -> list[dt.date]:
        """The days of `folder`'s `date=`/`ds=` sub-folders in the lake of record (the bucket, for a
        lake in one), sorted."""
        if self.bucket is not None:
            names = self.bucket.folders(self.root, folder)
        else:
            names = [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
        days = []
        for name in names:
            key, _, value = name.partition("=")
            if key in ("date", "ds"):
                try:
                    days.append(dt.date.fromisoformat(value))
                except ValueError:
                    continue
        return sorted(days)

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

    def item_map_snapshot(self, ds: dt.date) -> Path:
        return self.item_map_root / f"ds={ds.isoformat()}"

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


def _relative(path: Path, root: Path) -> str | None:
    """`path` relative to `root` in POSIX form ("" for root itself), or None when outside it."""
    for p, r in ((path, root), (path.absolute(), root.absolute())):
        try:
            rel = p.relative_to(r).as_posix()
        except ValueError:
            continue
        return "" if rel == "." else rel
    return None


# --- what each stage reads and writes ----------------------------------------------------------
# For a lake in a bucket (recsys.objectstore.working_copy): before a step runs, the paths it
# reads are pulled into the local copy; after it succeeds, the paths it writes are pushed, the
# stage's result file last. A path that does not exist in the bucket is simply absent locally.
# What only a stage result or the database names (the challenger, champion or serving model
# folder), or what a stage reads only sometimes, is not listed here: the stage fetches it
# (`Lake.fetch`) where it reads it.


@dataclass(frozen=True)
class Output:
    """A lake path a step writes, and how the bucket's copy of it is brought up to date."""

    path: Path
    # replace: the step rewrites the folder whole (a Spark output, a day's scores), so the
    #   bucket's copy becomes the local one, stale objects deleted; left alone when the step did
    #   not touch it.
    # partitions: the same for each sub-folder (`date=...`) the step touched; others stay as they are.
    # add: new and changed files are uploaded, nothing is deleted (the text cache, model folders).
    mode: Literal["replace", "partitions", "add"] = "replace"
    # Pushed when the step fails too: what a failure leaves for a person to read.
    on_failure: bool = False


def _nothing(lake: Lake, day: dt.date | None, settings: Settings) -> list:
    return []


@dataclass(frozen=True)
class LakeIO:
    """The lake paths one step reads and writes, as functions of the lake, the run date and the settings."""

    reads: Callable[[Lake, Any, Settings], list[Path]] = _nothing
    writes: Callable[[Lake, Any, Settings], list[Output]] = _nothing


def _window(day: dt.date, settings: Settings) -> list[dt.date]:
    """The days of the history window the Spark jobs read, oldest first."""
    return [day - dt.timedelta(days=k) for k in range(settings.history_days - 1, -1, -1)]


def _latest_item_map(lake: Lake, day: dt.date) -> list[Path]:
    """The item map snapshot before `day` that the features job extends (none on a first night)."""
    return [lake.item_map_snapshot(d) for d in lake.partition_days(lake.item_map_root) if d < day][-1:]


STAGE_IO: dict[str, LakeIO] = {
    "validate": LakeIO(
        reads=lambda lake, day, s: [
            *(lake.events_partition(d) for d in _window(day, s)),
            # which days are validated already, and the previous day's clean volume
            *(lake.validated_events_partition(d) for d in _window(day, s)),
            *(lake.items_partition(d) for d in lake.partition_days(lake.raw_items) if d <= day),
        ],
        writes=lambda lake, day, s: [
            Output(lake.validated_events, "partitions"), Output(lake.validated_items(day)), Output(lake.quarantine(day)),
        ],
    ),
    "features": LakeIO(
        reads=lambda lake, day, s: [
            *(lake.validated_events_partition(d) for d in _window(day, s)),
            lake.validated_items(day),
            *_latest_item_map(lake, day),
        ],
        writes=lambda lake, day, s: [Output(lake.features(day)), Output(lake.item_map_snapshot(day))],
    ),
    "encode": LakeIO(
        reads=lambda lake, day, s: [lake.features(day) / "items", lake.features(day) / "item_stats", lake.text_cache],
        writes=lambda lake, day, s: [Output(lake.embeddings(day)), Output(lake.text_cache, "add")],
    ),
    # and fetched: the champion it warm-starts from; the stage results its budget is sized by
    # (recsys.pipeline.budget): tonight's stages before it, the last week's after it
    "train": LakeIO(
        reads=lambda lake, day, s: [
            lake.features(day), lake.embeddings(day),
            *(lake.stage_result(day, stage) for stage in BEFORE_TRAIN),
            *(lake.stage_result(day - dt.timedelta(days=n), stage)
              for n in range(1, BUDGET_LOOKBACK_NIGHTS + 1) for stage in AFTER_TRAIN),
        ],
        writes=lambda lake, day, s: [Output(lake.models_root, "add")],
    ),
    # and fetched: the challenger and the champion
    "evaluate": LakeIO(reads=lambda lake, day, s: [lake.stage_result(day, "train"), lake.features(day)]),
    # reads tonight's evaluation and the report's history; writes the report and, on a first
    # night, the baseline that serves (and fetches tonight's features to fit it)
    "gate": LakeIO(
        reads=lambda lake, day, s: [
            lake.stage_result(day - dt.timedelta(days=n), "evaluate") for n in range(REPORT_NIGHTS)
        ],
        writes=lambda lake, day, s: [Output(lake.models_root, "add")],
    ),
    # and fetched: the serving model
    "score": LakeIO(
        reads=lambda lake, day, s: [
            lake.stage_result(day, "gate"), lake.features(day), lake.embeddings(day),
            # tonight's validated events name the active users the feature window does not know
            lake.validated_events_partition(day),
        ],
        writes=lambda lake, day, s: [Output(lake.scores(day))],
    ),
    "publish": LakeIO(
        reads=lambda lake, day, s: [lake.stage_result(day, "score"), lake.scores(day), lake.features(day) / "items"],
    ),
    "retention": LakeIO(),  # the database only
}

# Raw input, written by `recsys generate` and `recsys import`: each partition whole.
RAW_IO = LakeIO(
    writes=lambda lake, day, s: [
        Output(lake.raw_events, "partitions"), Output(lake.raw_items, "partitions"),
        Output(lake.import_quarantine, "add", on_failure=True),  # an import stopped by its bad rows lists them
    ],
)
