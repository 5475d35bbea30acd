"""What each nightly stage returns: one pydantic model per stage, also its `runs/ds=<ds>/<stage>.json`.

A stage builds its model, `save`s it (the file is `model_dump_json`) and returns it; the next
stage, the run log, the explorer and the DAG read it back through `read` (or `find`, which
says None for a stage that has not run), validated, so a misspelt or missing field fails where
it is written or read, naming the file, rather than as a KeyError two stages later.

Every model forbids keys it does not declare. Fields added after the first nights carry a
default, so the files of older runs still read (the explorer's history pages show them). Only
the evaluation's metrics per role stay free-form: every model and segment adds its own
figures, and readers pick the ones they know.

This module is core (layer 0) though it sits in the pipeline package: it holds data shapes
only, and the store's run log and the evaluation report below the pipeline read them too.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from recsys.errors import InputError
from recsys.lake import Lake

R = TypeVar("R", bound="StageResult")
# A mismatch lists at most this many fields; the first few say what is wrong with the file.
MAX_FIELD_ERRORS = 5


class Contract(BaseModel):
    """A part of a stage result: undeclared keys are refused, so a typo fails."""

    # A metric can be NaN (a segment without users); `constants` keeps it NaN in the file, as
    # json.dumps wrote it, where pydantic's default would write null.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class StageResult(Contract):
    """What one stage returned; `stage` names it in recsys.lake.STAGES."""

    stage: ClassVar[str]

    @classmethod
    def load(cls: type[R], path: Path) -> R:
        """The result file at `path`; InputError naming the file when it is missing or does not
        match this stage's contract."""
        try:
            text = Path(path).read_bytes()
        except OSError as err:
            raise InputError(f"{path}: no {cls.stage} result ({err.strerror})") from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            raise InputError(f"{path}: not a {cls.stage} result: {_describe(err)}") from None

    @classmethod
    def find(cls: type[R], lake: Lake, ds: dt.date) -> R | None:
        """The result of this stage for ds, or None when it has not run; InputError when its file
        does not match."""
        path = lake.stage_result(ds, cls.stage)
        return cls.load(path) if path.exists() else None

    @classmethod
    def read(cls: type[R], lake: Lake, ds: dt.date) -> R:
        """The result of this stage for ds; InputError when it has not run or its file does not match."""
        found = cls.find(lake, ds)
        if found is None:
            raise InputError(f"{lake.stage_result(ds, cls.stage)}: stage {cls.stage!r} has not run for {ds} yet")
        return found

    def save(self: R, lake: Lake, ds: dt.date) -> R:
        """Write this result as runs/ds=<ds>/<stage>.json (aside, then renamed, so a reader never
        sees half a file); returns it."""
        path = lake.stage_result(ds, self.stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)
        return self


def _describe(err: ValidationError) -> str:
    """A validation error on one line: `field.path: message` for the first few fields."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in err.errors()]
    more = f" (and {len(parts) - MAX_FIELD_ERRORS} more)" if len(parts) > MAX_FIELD_ERRORS else ""
    return "; ".join(parts[:MAX_FIELD_ERRORS]) + more


# --- 1. validate: the report of spark_jobs/validate.py, plus the stage's seconds ---------------
class RowCounts(Contract):
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    reasons: dict[str, int]  # quarantine reason -> rows


class DayCounts(RowCounts):
    bad_share: float | None  # None when the day has no rows


class FileCounts(RowCounts):
    day: dt.date


class VolumeCheck(Contract):
    today: int
    previous_day: dt.date | None
    previous: int | None
    change: float | None


class CatalogueCheck(RowCounts):
    catalogue_items: int
    partitions: list[dt.date]
    files: dict[str, FileCounts]


class ValidateThresholds(Contract):
    max_bad_row_share: float
    max_volume_drop: float
    # Absent from reports written before the rise had a limit.
    max_volume_rise: float | None = None


class ValidateOutputs(Contract):
    validated_events: list[str]
    validated_items: str | None
    quarantine: str


class ValidateResult(StageResult):
    stage: ClassVar[str] = "validate"

    ds: dt.date
    status: Literal["ok", "failed"]
    error: str | None = None
    # Input that could not be read at all leaves a report of ds, status and error alone.
    rows_in: int | None = None
    rows_clean: int | None = None
    rows_quarantined: int | None = None
    reasons: dict[str, int] = {}
    today: DayCounts | None = None
    volume: VolumeCheck | None = None
    days_validated: list[dt.date] = []
    days_already_validated: list[dt.date] = []
    gaps: list[dt.date] = []
    days: dict[dt.date, RowCounts] = {}
    files: dict[str, FileCounts] = {}  # by file, as the lake names it
    items: CatalogueCheck | None = None
    thresholds: ValidateThresholds | None = None
    outputs: ValidateOutputs | None = None
    # The job submitted to a Spark cluster writes the report alone; the in-process stage times it.
    seconds: float | None = None


# --- 2. features: the manifest of spark_jobs/features.py, plus the stage's seconds -------------
class FeatureWindow(Contract):
    start: dt.date
    end: dt.date
    days_with_events: int
    days_missing: list[dt.date]


class FeatureSettings(Contract):
    history_days: int
    holdout_days: int
    # Absent from manifests written before the validation window had its own length.
    valid_days: int | None = None
    max_seq_len: int


class FeatureOutput(Contract):
    path: str
    rows: int


class Splits(Contract):
    train: int
    valid: int
    test: int


class ItemMapSnapshot(Contract):
    snapshot: str
    previous: str | None  # None on the first night
    items: int
    new_items: int


class FeaturesResult(StageResult):
    stage: ClassVar[str] = "features"

    ds: dt.date
    split_mode: Literal["temporal", "loo"]
    window: FeatureWindow
    settings: FeatureSettings
    outputs: dict[str, FeatureOutput]  # item_map, items, events, sequences, item_stats, user_stats
    splits: Splits
    item_map: ItemMapSnapshot
    events_read: int
    events_without_item: int
    # A job submitted to a Spark cluster leaves features/ds=/manifest.json without it.
    seconds: float | None = None


# --- 3. encode ---------------------------------------------------------------------------------
class EncodeResult(StageResult):
    stage: ClassVar[str] = "encode"

    texts: int
    encoded: int
    cached: int
    blank: int = 0
    deferred: int = 0  # new texts left for a later night by the encode budget
    dim: int
    without_text: int = 0  # importer placeholders: no vector
    path: str
    model: str
    seconds: float


# --- 4. train ----------------------------------------------------------------------------------
class TrainResult(StageResult):
    stage: ClassVar[str] = "train"

    model_version: str
    path: str
    fingerprint: str
    train_interactions: int
    items: int
    processes: int = 1
    # What the stage was given (recsys.pipeline.budget): None = no limit, or a cooc model.
    budget_seconds: float | None = None
    budget_basis: str | None = None
    seconds: float


# --- 5. evaluate -------------------------------------------------------------------------------
class EvaluateResult(StageResult):
    stage: ClassVar[str] = "evaluate"

    # role (challenger, champion, popularity, itemknn) -> metric -> value, plus "curves"
    metrics: dict[str, dict[str, Any]]
    users: int
    table: str
    model_version: str
    champion_version: str | None  # None until a model has been promoted
    seconds: float


# --- 6. gate -----------------------------------------------------------------------------------
class GateResult(StageResult):
    stage: ClassVar[str] = "gate"

    decision: Literal["pass", "fail", "forced"]
    promote: bool
    reasons: list[str]
    serving_version: str
    report: str | None = None  # the night's HTML report


# --- 7. score ----------------------------------------------------------------------------------
class ScoreResult(StageResult):
    stage: ClassVar[str] = "score"

    path: str
    users: int
    rows: int
    expected_rows: int | None = None
    k: int
    cold_start_users: int | None = None
    fast_path: bool | None = None
    exclude: str | None = None
    diversity_lambda: float = 0.0
    engine: str = "local"  # where the users were ranked: local or spark
    fallback_path: str | None = None
    fallback_rows: int | None = None
    # None when similar items are off or the model has no item vectors to find them with.
    similar_path: str | None = None
    similar_rows: int | None = None
    similar_items: int | None = None
    similar_source: str | None = None
    model_version: str
    seconds: float


# --- 8. publish --------------------------------------------------------------------------------
class PublishResult(StageResult):
    stage: ClassVar[str] = "publish"

    batch_id: int
    rows: int
    users: int
    seconds: float
    replaced_batch_ids: list[int]
    similar_rows: int = 0
    fallback_rows: int = 0


# --- 9. retention ------------------------------------------------------------------------------
class RetentionResult(StageResult):
    stage: ClassVar[str] = "retention"

    dropped_batch_ids: list[int]


# Stage name -> its result, in the order of recsys.lake.STAGES (tests/test_stage_results.py holds them equal).
STAGE_RESULTS: dict[str, type[StageResult]] = {
    model.stage: model
    for model in (ValidateResult, FeaturesResult, EncodeResult, TrainResult, EvaluateResult, GateResult,
                  ScoreResult, PublishResult, RetentionResult)
}


def read_result(lake: Lake, ds: dt.date, stage: str) -> StageResult:
    """The saved result of `stage` for ds, as its model; InputError naming the file when the
    stage has not run or its file does not match."""
    if stage not in STAGE_RESULTS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_RESULTS)}")
    return STAGE_RESULTS[stage].read(lake, ds)
