"""The nightly stages as plain functions keyed on the run date `ds`.

Each takes `ds` (and the settings), reads its inputs from the lake or the database by that key,
writes its outputs the same way, and returns its result (ids, paths and counts), a model of
`recsys.pipeline.results` also saved as `runs/ds=.../<stage>.json`. The next stage reads that
file back through the model. The CLI, tests and Airflow tasks call them alike.

With the lake in a bucket (`lake_root` = `s3://bucket/prefix`) each stage runs on a local copy:
what it reads is pulled first (recsys.lake.STAGE_IO), what it wrote is pushed once it has
succeeded, its result last (`_staged`). Paths in results and in the model registry are then
URLs, which any machine resolves to its own copy (`Lake.ref`, `Lake.resolve`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from recsys import schema as S
from recsys.config import Settings, get_settings
from recsys.errors import ConfigError, InputError
from recsys.evaluate.gate import GATE_METRIC
from recsys.lake import STAGE_IO, Lake, lake_url, parse_ds
from recsys.objectstore import open_lake, working_copy
from recsys.pipeline.budget import TrainBudget, train_budget
from recsys.pipeline.results import (
    EncodeResult,
    EvaluateResult,
    FeaturesResult,
    GateResult,
    PublishResult,
    RetentionResult,
    ScoreResult,
    TrainResult,
    ValidateResult,
)

log = logging.getLogger(__name__)

# The gate reason that opens with this names the baseline serving a first night and why.
FIRST_NIGHT = "no champion yet and the challenger failed: "

def _ctx(ds, settings: Settings | None) -> tuple[dt.date, Settings, Lake]:
    settings = settings or get_settings()
    return parse_ds(ds), settings, open_lake(settings)


def _staged(stage):
    """The stage on the lake the settings name; for a lake in a bucket, on this machine's copy of
    it, which first gets what the stage reads and from which what the stage wrote goes to the
    bucket once it has succeeded (recsys.objectstore.working_copy)."""

    @functools.wraps(stage)
    def run(ds, settings: Settings | None = None, *args, **kwargs):
        settings = settings or get_settings()
        with working_copy(settings, STAGE_IO[stage.__name__], parse_ds(ds), result=stage.__name__):
            return stage(ds, settings, *args, **kwargs)

    return run


def _refs(lake: Lake, result: dict, *keys: str) -> dict:
    """The path fields `keys` of a result as records name them (`Lake.ref`)."""
    return {k: lake.ref(result[k]) for k in keys if result.get(k)}


def _spark(settings: Settings):
    from spark_jobs.session import get_spark

    if lake_url(settings.lake_root) and not settings.spark_master.startswith("local"):
        # The stage's copy of the lake is on this machine: a cluster's executors cannot read it.
        raise ConfigError(
            f"spark_master {settings.spark_master} with the lake in a bucket: in-process Spark stages work on this "
            "machine's copy of the lake; submit validate and features with spark-submit (they read s3a://) and "
            "score with RECSYS_SCORE_ENGINE=local"
        )
    return get_spark(settings.spark_master, driver_memory=settings.spark_driver_memory)


def _db(settings: Settings) -> str:
    from recsys.store.db import resolve_url
    from recsys.store.migrate import migrate

    url = resolve_url(settings)
    migrate(url)  # idempotent and cheap; a fresh database works on the first night
    return url


# --- 1. validate -----------------------------------------------------------------------------
@_staged
def validate(ds, settings: Settings | None = None) -> ValidateResult:
    """Check raw events and catalogue; quarantine bad rows; fail on broken input."""
    from spark_jobs.validate import run_validation

    day, settings, lake = _ctx(ds, settings)
    t0 = time.perf_counter()
    report = run_validation(_spark(settings), lake, day, settings)
    out = report["outputs"]
    report["outputs"] = {**out, "validated_events": [lake.ref(p) for p in out["validated_events"]],
                         **_refs(lake, out, "validated_items", "quarantine")}
    return ValidateResult.model_validate({**report, "seconds": round(time.perf_counter() - t0, 2)}).save(lake, day)


# --- 2. features -----------------------------------------------------------------------------
@_staged
def features(ds, settings: Settings | None = None, split_mode: str = "temporal") -> FeaturesResult:
    """Sequences, item/user stats, stable item ids and the split (Spark): `temporal` for the
    nightly run, `loo` (leave-one-out per user) for public benchmarks."""
    from spark_jobs.features import run_features

    day, settings, lake = _ctx(ds, settings)
    t0 = time.perf_counter()
    manifest = run_features(_spark(settings), lake, day, settings, split_mode=split_mode)
    manifest["outputs"] = {name: {**o, "path": lake.ref(o["path"])} for name, o in manifest["outputs"].items()}
    manifest["item_map"].update(_refs(lake, manifest["item_map"], "snapshot", "previous"))
    return FeaturesResult.model_validate({**manifest, "seconds": round(time.perf_counter() - t0, 2)}).save(lake, day)


def _items(lake: Lake, day: dt.date):
    import pyarrow.dataset as pads

    path = lake.features(day) / "items"
    if not path.exists():
        raise InputError(f"{path}: no catalogue features (run the features stage for {day} first)")
    return pads.dataset(path, format="parquet").to_table().sort_by(S.ITEM_IDX)


# --- 3. encode item text ---------------------------------------------------------------------
def _text_priority(lake: Lake, day: dt.date, idx: np.ndarray) -> np.ndarray:
    """Positions into `idx` (item_idx of the texts), most worth a vector first: new items (text
    is all a cold item has), then by users who touched the item in the window."""
    import pyarrow.dataset as pads

    stats = pads.dataset(lake.features(day) / "item_stats", format="parquet").to_table(
        columns=[S.ITEM_IDX, S.AGE_DAYS, S.N_USERS])
    at = stats.column(S.ITEM_IDX).to_numpy()
    size = int(max(idx.max(initial=-1), at.max(initial=-1))) + 1
    users, age = np.zeros(size), np.full(size, np.inf)
    users[at] = np.nan_to_num(stats.column(S.N_USERS).to_numpy(zero_copy_only=False).astype(float))
    age[at] = np.nan_to_num(stats.column(S.AGE_DAYS).to_numpy(zero_copy_only=False).astype(float), nan=np.inf)
    new = age[idx] < S.NEW_ITEM_DAYS
    return np.lexsort((-users[idx], ~new))


@_staged
def encode(ds, settings: Settings | None = None) -> EncodeResult:
    """Language-model vectors for every catalogue item, reusing the text-hash cache."""
    from recsys.text.encoder import TextEncoder, encode_with_cache, item_text

    day, settings, lake = _ctx(ds, settings)
    t0 = time.perf_counter()
    items = _items(lake, day)
    rows = list(
        zip(
            items.column(S.ITEM_ID).to_pylist(), items.column(S.TITLE).to_pylist(),
            items.column(S.CATEGORY).to_pylist(), items.column(S.DESCRIPTION).to_pylist(),
        )
    )  # fmt: skip
    # An importer's placeholder ("item B000123") says nothing about the item: no vector, so a
    # model treats the item as one without text rather than learning from its id's spelling.
    described = np.array([not S.is_placeholder(*r) for r in rows], dtype=bool)
    all_idx = items.column(S.ITEM_IDX).to_numpy()
    idx = all_idx[described]
    texts = [item_text(t, c, d) for (_, t, c, d), keep in zip(rows, described) if keep]
    vectors, stats = encode_with_cache(
        texts,
        lake.text_cache,
        settings.text_model,
        lambda: TextEncoder(settings.text_model, settings.text_batch_size, settings.text_max_length, settings.device),
        budget_seconds=settings.encode_budget_minutes * 60,
        priority=_text_priority(lake, day, idx),
    )
    # Row i of the matrix is item_idx i; items missing from the catalogue or without text stay zero.
    n = int(all_idx.max()) + 1 if len(all_idx) else 0
    matrix = np.zeros((n, stats["dim"]), dtype=np.float32)
    matrix[idx] = vectors
    out = lake.embeddings(day)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "item_text.npy", matrix)
    result = EncodeResult(
        **stats, without_text=int((~described).sum()), path=lake.ref(out / "item_text.npy"), model=settings.text_model,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return result.save(lake, day)


# --- 4. train --------------------------------------------------------------------------------
def _fingerprint(path: Path) -> str:
    """Hash of the training files' contents, independent of the random names Spark gives them."""
    digests = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in path.rglob("*.parquet"))
    return hashlib.sha256("".join(digests).encode()).hexdigest()[:12]


def _champion_path(settings: Settings, lake: Lake, day: dt.date) -> str | None:
    """Warm start from the serving neural model, if there is one."""
    from recsys.store.registry import champion_as_of

    champion = champion_as_of(_db(settings), day)
    return str(lake.fetch(lake.resolve(champion["path"]))) if champion and champion["kind"] == "mtrl" else None


@_staged
def train(ds, settings: Settings | None = None) -> TrainResult:
    """Fit tonight's challenger on everything before the holdout window; register it."""
    from recsys.data.interactions import load_interactions
    from recsys.evaluate.protocol import validation_cases
    from recsys.models import build_model
    from recsys.models.mtrl.launch import fit_distributed, train_processes
    from recsys.store.registry import register_model

    day, settings, lake = _ctx(ds, settings)
    t0 = time.perf_counter()
    data = load_interactions(lake.features(day), n_items=_items(lake, day).num_rows)
    if settings.model_kind == "mtrl":
        # A neural model stops early on `valid`, so it must not train on it until it has stopped;
        # then it refits on train + valid, which is what the baselines it is judged against learn from.
        fit_data, valid = data.in_splits("train"), validation_cases(data)
        fit_extra = {"refit_data": data.in_splits("train", "valid")}
        text = lake.embeddings(day) / "item_text.npy"
        params = {"preset": settings.model_preset, "text_path": str(text) if text.exists() else None,
                  "seed": settings.seed, "device": settings.device, "max_len": settings.max_seq_len}
        if settings.model_epochs:
            params["max_epochs"] = settings.model_epochs
        budget = train_budget(settings, lake, day)
        log.info("training budget: %s", budget.basis)
        if budget.seconds:
            # The stage's budget: reading tonight's features (tens of seconds at 10M events) counts.
            params["budget_seconds"] = round(max(budget.seconds - (time.perf_counter() - t0), 1.0), 1)
        warm = _champion_path(settings, lake, day) if settings.warm_start else None
        if warm:
            params["init_from"] = warm
    else:
        fit_data, valid, params, fit_extra = data.in_splits("train", "valid"), None, {}, {}
        budget = TrainBudget(None, "no budget: item co-occurrence trains in one pass")
    if len(fit_data.item) == 0:
        raise InputError(f"{lake.features(day)}: no training interactions before the holdout window")
    fingerprint = _fingerprint(lake.features(day) / "events")
    version = f"{settings.model_kind}-{day.isoformat()}-{fingerprint[:8]}"
    path = lake.models_root / version
    procs = train_processes(settings.train_procs) if settings.model_kind == "mtrl" else 1
    if procs > 1:
        # torchrun's rank 0 saves the same folder the in-process fit would; the rest is alike.
        fit_distributed(procs, lake.features(day), path, params, n_items=data.n_items, refit=True)
    else:
        model = build_model(settings.model_kind, **params)
        model.fit(fit_data, valid, **fit_extra)
        model.save(path)
    config = {"model_kind": settings.model_kind, "seed": settings.seed, "text_model": settings.text_model, **{
        k: v for k, v in params.items() if isinstance(v, (int, float, str, type(None)))}}
    register_model(_db(settings), version=version, ds=day, kind=settings.model_kind, path=lake.ref(path), config=config, fingerprint=fingerprint)
    result = TrainResult(
        model_version=version, path=lake.ref(path), fingerprint=fingerprint, train_interactions=int(len(fit_data.item)),
        items=int(data.n_items), processes=procs, budget_seconds=budget.seconds, budget_basis=budget.basis,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return result.save(lake, day)


# --- 5. evaluate -----------------------------------------------------------------------------
@_staged
def evaluate(ds, settings: Settings | None = None) -> EvaluateResult:
    """Challenger vs popularity vs the serving champion on the same holdout, full catalogue."""
    from recsys.evaluate.offline import compare_models

    day, settings, lake = _ctx(ds, settings)
    t0 = time.perf_counter()
    trained = TrainResult.read(lake, day)
    from recsys.store.registry import champion_as_of

    champion = champion_as_of(_db(settings), day, exclude=trained.model_version)
    champion_path = str(lake.fetch(lake.resolve(champion["path"]))) if champion else None
    compared = compare_models(lake.features(day), lake.fetch(lake.resolve(trained.path)), champion_path, k=10)
    result = EvaluateResult(
        **compared,
        model_version=trained.model_version,
        champion_version=champion["model_version"] if champion else None,
        seconds=round(time.perf_counter() - t0, 2),
    )
    log.info("offline evaluation for %s\n%s", day, result.table)
    return result.save(lake, day)


# --- 6. gate ---------------------------------------------------------------------------------
@_staged
def gate(
    ds, settings: Settings | None = None, force_promote: bool = False, forced_by: str | None = None
) -> GateResult:
    """Decide whether the challenger serves; record the decision and its reasons."""
    from recsys.evaluate.gate import GateRules, decide
    from recsys.store.registry import record_decision

    day, settings, lake = _ctx(ds, settings)
    ev = EvaluateResult.read(lake, day)
    rules = GateRules.from_settings(settings)
    decision = decide(ev.metrics, rules, force=force_promote)
    record_decision(
        _db(settings), ds=day, version=ev.model_version, champion=ev.champion_version, metrics=ev.metrics,
        decision=decision.decision, reasons=decision.reasons, forced_by=forced_by if decision.decision == "forced" else None,
    )
    serving = ev.model_version if decision.promote else ev.champion_version
    reasons = list(decision.reasons)
    if serving is None:
        serving, why = _first_night_fallback(day, settings, lake, ev)
        reasons.append(f"{FIRST_NIGHT}{why}, until a model passes the gate")
    result = GateResult(decision=decision.decision, promote=decision.promote, reasons=reasons, serving_version=serving)
    from recsys.evaluate.report import write_report

    report = lake.models_root / ev.model_version / f"report-{day.isoformat()}.html"
    result.report = lake.ref(write_report(report, day.isoformat(), ev, result, lake.root / "runs"))
    log.info("gate %s for %s: %s", decision.decision, day, "; ".join(decision.reasons))
    return result.save(lake, day)


def _ndcg(metrics: dict, role: str) -> float:
    return metrics.get(role, {}).get(GATE_METRIC, float("nan"))


def fallback_kind(metrics: dict) -> str:
    """The baseline that serves a first night whose challenger failed: item co-occurrence when it
    ranked at least as well as popularity on tonight's holdout (a missing or NaN figure counts
    against it), else popularity."""
    return "cooc" if _ndcg(metrics, "itemknn") >= _ndcg(metrics, "popularity") else "popularity"


def _first_night_fallback(day: dt.date, settings: Settings, lake: Lake, ev: EvaluateResult) -> tuple[str, str]:
    """Fit, save and promote the fallback baseline so apps get lists, and it becomes the champion
    the next challenger must beat; returns its version and why it serves."""
    from recsys.data.interactions import load_interactions
    from recsys.models import build_model
    from recsys.store.registry import promote_baseline

    lake.fetch(lake.features(day))
    knn, pop = _ndcg(ev.metrics, "itemknn"), _ndcg(ev.metrics, "popularity")
    # A co-occurrence challenger (train names versions by kind) that just failed is the itemknn
    # baseline itself, so it cannot stand in for itself.
    if ev.model_version.startswith("cooc-"):
        kind, why = "popularity", "the challenger is item co-occurrence itself"
    elif (kind := fallback_kind(ev.metrics)) == "cooc":
        why = f"{GATE_METRIC} {knn:.4f} >= popularity {pop:.4f}"
    else:
        why = f"item co-occurrence {GATE_METRIC} {knn:.4f} < popularity {pop:.4f}"
    fingerprint = _fingerprint(lake.features(day) / "events")
    version = f"{kind}-{day.isoformat()}-{fingerprint[:8]}"
    path = lake.models_root / version
    # Fit on train + valid, as the baseline was in tonight's evaluation, so it serves what was measured.
    build_model(kind).fit(load_interactions(lake.features(day)).in_splits("train", "valid")).save(path)
    promote_baseline(_db(settings), version=version, ds=day, kind=kind, path=lake.ref(path), fingerprint=fingerprint)
    name = "item co-occurrence" if kind == "cooc" else "popularity"
    return version, f"{name} ({version}) serves, {why}"


# --- 7. score --------------------------------------------------------------------------------
@_staged
def score(ds, settings: Settings | None = None) -> ScoreResult:
    """Top-K for every active user and similar items, with the serving model."""
    from recsys.serve.batch import score_all_users

    day, settings, lake = _ctx(ds, settings)
    t0 = time.perf_counter()
    serving = GateResult.read(lake, day).serving_version
    engine = None  # in this process
    if settings.score_engine == "spark":
        from spark_jobs.score import SparkEngine

        engine = SparkEngine(_spark(settings))
    result = score_all_users(
        lake, day, lake.fetch(lake.models_root / serving), k=settings.top_k, exclude=settings.exclude,
        block_users=settings.score_block_users, device=settings.device,
        diversity_lambda=settings.diversity_lambda, similar_k=settings.similar_k,
        text_vectors_path=lake.embeddings(day) / "item_text.npy", engine=engine,
    )
    result.update(model_version=serving, seconds=round(time.perf_counter() - t0, 2),
                  **_refs(lake, result, "path", "fallback_path", "similar_path"))
    return ScoreResult.model_validate(result).save(lake, day)


# --- 8. publish ------------------------------------------------------------------------------
@_staged
def publish(ds, settings: Settings | None = None, run_id: str | None = None) -> PublishResult:
    """COPY tonight's lists into side partitions, validate, switch atomically (with the fallback list)."""
    from recsys.store.publish import publish_batch

    day, settings, lake = _ctx(ds, settings)
    scored = ScoreResult.read(lake, day)
    known = _items(lake, day).column(S.ITEM_ID)
    similar, fallback = scored.similar_path, scored.fallback_path
    res = publish_batch(
        _db(settings), ds=day, model_version=scored.model_version, recs_path=lake.resolve(scored.path),
        k=settings.top_k, run_id=run_id, expected_users=scored.users, expected_rows=scored.expected_rows,
        known_items=known, similar_path=lake.resolve(similar) if similar else None, similar_k=settings.similar_k,
        fallback_path=lake.resolve(fallback) if fallback else None,
    )
    result = PublishResult(
        batch_id=res.batch_id, rows=res.rows, users=res.users, seconds=round(res.seconds, 2),
        replaced_batch_ids=list(res.replaced_batch_ids), similar_rows=res.similar_rows, fallback_rows=res.fallback_rows,
    )
    return result.save(lake, day)


# --- 9. retention ----------------------------------------------------------------------------
@_staged
def retention(ds, settings: Settings | None = None) -> RetentionResult:
    """Drop batches older than retention_days and replaced or failed ones; never the current one."""
    from recsys.store.retention import apply_retention

    day, settings, lake = _ctx(ds, settings)
    dropped = apply_retention(_db(settings), today=day, keep_days=settings.retention_days)
    return RetentionResult(dropped_batch_ids=list(dropped)).save(lake, day)
