"""The run log in PostgreSQL: one structured summary per published batch, one row per failed run.

A nightly run leaves `runs/ds=<ds>/<stage>.json` in the lake (each read as its model of
`recsys.pipeline.results`); `collect_run_summary` folds them into one small document (rows in
and quarantined, features built, model metrics, gate decision, rows published, seconds per
stage) and `record_run_summary` stores it under the key `run` of the batch's
`recsys.batches.summary`, next to what the publisher wrote there. A task that fails for good
records its task id, try number and a one-line cause with `record_failure`, as a `failed` row
of `recsys.batches` for its date and run id. `recsys status` reads both back.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any, TypeVar

from psycopg.types.json import Jsonb

from recsys.errors import InputError
from recsys.lake import STAGES, Lake, parse_ds
from recsys.pipeline.results import (
    EncodeResult,
    EvaluateResult,
    FeaturesResult,
    GateResult,
    PublishResult,
    ScoreResult,
    StageResult,
    TrainResult,
    ValidateResult,
)
from recsys.store.db import connect, one_line
from recsys.tables import text_table

log = logging.getLogger(__name__)

# The headline metrics kept in the summary; the full table stays in recsys.evaluations.
HEADLINE_METRICS = ("ndcg@10", "hr@10", "recall@20", "coverage@10")
# A failure cause longer than this is cut: it must fit a table cell, the full text is in the task log.
MAX_CAUSE_CHARS = 500

R = TypeVar("R", bound=StageResult)


def _read(path: Path, model: type[R]) -> R | None:
    """The stage result at `path`, or None when there is none. A file that does not match its
    model is left out with a warning: the summary reports a run, it must not fail one."""
    if not path.is_file():
        return None
    try:
        return model.load(path)
    except InputError as err:
        log.warning("run summary leaves out %s", one_line(err))
        return None


def _headline(metrics: dict | None) -> dict | None:
    if not metrics:
        return None
    return {m: round(float(metrics[m]), 4) for m in HEADLINE_METRICS if metrics.get(m) is not None}


def collect_run_summary(lake_root: Path, ds, run_id: str | None = None) -> dict[str, Any]:
    """The run summary of `ds` from the stage results in the lake; stages that did not run are left out."""
    day = parse_ds(ds)
    lake = Lake(Path(lake_root))

    def result(model: type[R]) -> R | None:
        return _read(lake.stage_result(day, model.stage), model)

    v, e, t, ev = result(ValidateResult), result(EncodeResult), result(TrainResult), result(EvaluateResult)
    g, s, p = result(GateResult), result(ScoreResult), result(PublishResult)
    # Features submitted to a Spark cluster leave only the manifest of the features folder.
    f = result(FeaturesResult) or _read(lake.features(day) / "manifest.json", FeaturesResult)

    summary: dict[str, Any] = {"ds": day.isoformat()}
    if run_id:
        summary["run_id"] = run_id
    if v:
        summary["input"] = {
            "rows_in": v.rows_in,
            "rows_clean": v.rows_clean,
            "rows_quarantined": v.rows_quarantined,
            "quarantine_reasons": v.reasons,
            "rows_in_ds": v.today.rows_in if v.today else None,
            "days_validated": len(v.days_validated),
        }
    if f:
        summary["features"] = {
            "rows": {name: o.rows for name, o in f.outputs.items()},
            "splits": f.splits.model_dump(),
            "new_items": f.item_map.new_items,
            "window": {"start": f.window.start.isoformat(), "end": f.window.end.isoformat(),
                       "days_with_events": f.window.days_with_events},
        }
    if e:
        summary["text"] = {"texts": e.texts, "encoded": e.encoded, "cached": e.cached, "model": e.model}
    if t or ev:
        metrics = ev.metrics if ev else {}
        summary["model"] = {
            "version": (t or ev).model_version,
            "train_interactions": t.train_interactions if t else None,
            "train_budget_seconds": t.budget_seconds if t else None,
            "train_budget": t.budget_basis if t else None,
            "champion_version": ev.champion_version if ev else None,
            "eval_users": ev.users if ev else None,
            "metrics": {name: _headline(m) for name, m in metrics.items() if _headline(m)},
        }
    if g:
        summary["gate"] = {"decision": g.decision, "promote": g.promote, "serving_version": g.serving_version,
                           "reasons": g.reasons}
    if p:
        summary["published"] = {"batch_id": p.batch_id, "rows": p.rows, "users": p.users, "similar_rows": p.similar_rows}
    if s:
        summary["scored"] = {"users": s.users, "rows": s.rows, "k": s.k, "cold_start_users": s.cold_start_users,
                             "model_version": s.model_version}
    # The gate and retention do not time themselves.
    timed = (v, f, e, t, ev, s, p)
    seconds = {r.stage: r.seconds for r in timed if r is not None and r.seconds is not None}
    summary["seconds"] = seconds
    summary["seconds_total"] = round(sum(seconds.values()), 2)
    return summary


def record_run_summary(url: str, batch_id: int, summary: dict) -> None:
    """Store `summary` as `summary.run` of the batch, keeping what the publisher wrote."""
    with connect(url, autocommit=True) as conn:
        done = conn.execute(
            "UPDATE recsys.batches SET summary = coalesce(summary, '{}'::jsonb) || jsonb_build_object('run', %s::jsonb) "
            "WHERE batch_id = %s",
            (Jsonb(summary), batch_id),
        ).rowcount
    if done != 1:
        log.warning("run summary not recorded: no batch %s", batch_id)


def summarise_published_run(settings, ds, batch_id: int, run_id: str | None = None) -> dict:
    """collect + record for a batch just published (the DAG's publish task); returns the summary."""
    from recsys.objectstore import open_lake
    from recsys.store.db import resolve_url

    lake, day = open_lake(settings), parse_ds(ds)
    # A lake in a bucket: this task's copy may lack the other stages' results.
    lake.fetch(lake.run_dir(day))
    lake.fetch(lake.features(day) / "manifest.json")
    summary = collect_run_summary(lake.root, ds, run_id=run_id)
    record_run_summary(resolve_url(settings), batch_id, summary)
    return summary


def cause_of(exc: BaseException | None) -> str:
    """`ExceptionType: message` on one line, cut to MAX_CAUSE_CHARS."""
    if exc is None:
        return "no exception recorded (killed, timed out or marked failed by hand; see the task log)"
    text = f"{type(exc).__name__}: {one_line(exc)}"
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 3] + "..."


def record_failure(
    url: str, *, ds, run_id: str | None, task_id: str, try_number: int | None, cause: str, k: int | None = None,
) -> int:
    """Record a run's failure in `recsys.batches`; returns the batch id of the 'failed' row.

    One row per run: a 'failed' row of this date and run id (the publisher's own, if publish
    failed) gets the task and cause; otherwise a new 'failed' row is inserted.
    """
    day = parse_ds(ds)
    failure = {
        "task_id": task_id, "try_number": try_number, "cause": cause,
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    error = f"task {task_id} failed (try {try_number}): {cause}"
    with connect(url, autocommit=True) as conn, conn.transaction():
        row = conn.execute(
            "SELECT batch_id FROM recsys.batches WHERE ds = %s AND run_id IS NOT DISTINCT FROM %s AND status = 'failed' "
            "ORDER BY batch_id DESC LIMIT 1 FOR UPDATE",
            (day, run_id),
        ).fetchone()
        if row:
            conn.execute(
                "UPDATE recsys.batches SET error = %s, finished_at = now(), "
                "summary = coalesce(summary, '{}'::jsonb) || jsonb_build_object('failure', %s::jsonb) "
                "WHERE batch_id = %s",
                (error, Jsonb(failure), row[0]),
            )
            return row[0]
        return conn.execute(
            "INSERT INTO recsys.batches (ds, status, k, run_id, error, finished_at, summary) "
            "VALUES (%s, 'failed', %s, %s, %s, now(), %s) RETURNING batch_id",
            (day, k, run_id, error, Jsonb({"failure": failure})),
        ).fetchone()[0]


def record_task_failure(context) -> int | None:
    """An Airflow on_failure_callback body: record the failed task in recsys.batches; never raises.

    Reads ds, run_id, the task instance (task id, try number), the exception and the `top_k`
    Param from the task context; the database comes from the RECSYS_* settings. Returns the
    'failed' batch id, or None when the failure could not be recorded (logged instead).
    """
    try:
        from recsys.config import load_settings
        from recsys.store.db import resolve_url
        from recsys.store.migrate import migrate

        ti = context.get("ti") or context.get("task_instance")
        task_id = getattr(ti, "task_id", None) or "?"
        try_number = getattr(ti, "try_number", None)
        cause = cause_of(context.get("exception"))
        top_k = (context.get("params") or {}).get("top_k")
        k = top_k if isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0 else None
        url = resolve_url(load_settings())
        migrate(url)  # a first night that failed before any stage reached the database
        batch_id = record_failure(
            url, ds=context["ds"], run_id=context.get("run_id"), task_id=task_id, try_number=try_number,
            cause=cause, k=k,
        )
        log.error("run %s for %s failed in %s (try %s): %s; recorded as batch %s",
                  context.get("run_id"), context["ds"], task_id, try_number, cause, batch_id)
        return batch_id
    except Exception as err:
        log.error("could not record the failure in recsys.batches: %s", one_line(err))
        return None


def recent_runs(url: str, limit: int = 10) -> list[dict]:
    """The last `limit` batches, newest first, with their run summaries and whether each serves."""
    with connect(url) as conn:
        cur = conn.execute(
            """
            SELECT b.batch_id, b.ds, b.status, b.model_version, b.row_count, b.user_count, b.k, b.run_id,
                   b.started_at, b.published_at, b.finished_at, b.error, b.summary,
                   b.batch_id IS NOT DISTINCT FROM (SELECT c.batch_id FROM recsys.current_batch AS c) AS is_current
              FROM recsys.batches AS b
             ORDER BY b.batch_id DESC
             LIMIT %s
            """,
            (limit,),
        )
        cols = [c.name for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


def _short(value, width: int):
    text = None if value is None or value == "" else str(value)
    return text if text is None or len(text) <= width else text[: width - 1] + "…"


def _seconds(value) -> str | None:
    return None if value is None else f"{float(value):.1f}"


def format_runs(rows: list[dict]) -> str:
    """`recsys status`: one line per batch, then each batch's stage seconds, input and error."""
    table, details = [], []
    for r in rows:
        run = (r.get("summary") or {}).get("run") or {}
        gate = (run.get("gate") or {}).get("decision")
        challenger = ((run.get("model") or {}).get("metrics") or {}).get("challenger") or {}
        status = r["status"] + ("*" if r.get("is_current") else "")
        table.append([
            r["batch_id"], _short(r["ds"], 10), status, r["row_count"], r["user_count"], gate,
            challenger.get("ndcg@10"), _seconds(run.get("seconds_total")), _short(r["model_version"], 40),
        ])
        lines = []
        seconds = run.get("seconds") or {}
        if seconds:
            # jsonb does not keep key order: show the stages in pipeline order.
            order = sorted(seconds, key=lambda k: STAGES.index(k) if k in STAGES else len(STAGES))
            lines.append("  stages: " + ", ".join(f"{k} {seconds[k]}s" for k in order))
        inp = run.get("input") or {}
        if inp:
            lines.append(
                f"  input: {inp.get('rows_in')} rows, {inp.get('rows_quarantined')} quarantined"
                + (f" ({', '.join(f'{k}: {v}' for k, v in inp['quarantine_reasons'].items())})" if inp.get("quarantine_reasons") else "")
            )
        if r.get("error"):
            lines.append(f"  error: {_short(r['error'], 200)}")
        if lines:
            details += [f"batch {r['batch_id']} ({_short(r['ds'], 10)}):", *lines]
    out = [text_table(table, ("batch", "ds", "status", "rows", "users", "gate", "ndcg@10", "secs", "model"))]
    if any(r.get("is_current") for r in rows):
        out.append("* serving now (recsys.current_batch)")
    return "\n".join(out + ([""] + details if details else []))
