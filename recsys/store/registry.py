"""Models and evaluations in PostgreSQL: what was trained, what it scored, what the gate decided."""

from __future__ import annotations

import datetime as dt
import json

from recsys.store.db import connect


def register_model(url: str, *, version: str, ds: dt.date, kind: str, path: str, config: dict, fingerprint: str) -> None:
    """Insert (or refresh, when a date is re-run) a challenger row."""
    with connect(url) as conn:
        conn.execute(
            """
            INSERT INTO recsys.models (model_version, ds, kind, artifact_path, status, config, data_fingerprint)
            VALUES (%s, %s, %s, %s, 'challenger', %s, %s)
            ON CONFLICT (model_version) DO UPDATE
               SET artifact_path = EXCLUDED.artifact_path, config = EXCLUDED.config
            """,
            (version, ds, kind, path, json.dumps(config, default=str), fingerprint),
        )


def champion_as_of(url: str, ds: dt.date, exclude: str | None = None) -> dict | None:
    """The model serving on `ds`: the latest one promoted for a date up to ds.

    Keyed on the model's date, not on wall-clock time, so a backfill of an old date compares
    against the champion that served then.
    """
    with connect(url) as conn:
        row = conn.execute(
            """
            SELECT model_version, artifact_path, kind, ds FROM recsys.models
             WHERE promoted_at IS NOT NULL AND ds <= %s AND model_version IS DISTINCT FROM %s
             ORDER BY ds DESC, promoted_at DESC LIMIT 1
            """,
            (ds, exclude),
        ).fetchone()
    return None if row is None else {"model_version": row[0], "path": row[1], "kind": row[2], "ds": row[3]}


def record_decision(
    url: str, *, ds: dt.date, version: str, champion: str | None, metrics: dict, decision: str,
    reasons: list[str], forced_by: str | None = None,
) -> None:
    """Store the evaluation and move model statuses in one transaction."""
    with connect(url) as conn, conn.transaction():
        conn.execute(
            """
            INSERT INTO recsys.evaluations (ds, model_version, champion_version, metrics, decision, reasons, forced_by)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            """,
            (ds, version, champion, json.dumps(metrics), decision, json.dumps(reasons), forced_by),
        )
        conn.execute("UPDATE recsys.models SET metrics = %s WHERE model_version = %s", (json.dumps(metrics.get("challenger", {})), version))
        if decision in ("pass", "forced"):
            conn.execute(
                "UPDATE recsys.models SET status = 'retired' WHERE status = 'champion' AND model_version <> %s", (version,)
            )
            conn.execute(
                "UPDATE recsys.models SET status = 'champion', promoted_at = now() WHERE model_version = %s", (version,)
            )
        else:
            conn.execute(
                "UPDATE recsys.models SET status = 'rejected' WHERE model_version = %s AND promoted_at IS NULL", (version,)
            )


def promote_baseline(url: str, *, version: str, ds: dt.date, kind: str, path: str, fingerprint: str) -> None:
    """Register a baseline model and make it the champion (first night, no model passed yet)."""
    register_model(url, version=version, ds=ds, kind=kind, path=path, config={"model_kind": kind}, fingerprint=fingerprint)
    with connect(url) as conn, conn.transaction():
        conn.execute("UPDATE recsys.models SET status = 'retired' WHERE status = 'champion' AND model_version <> %s", (version,))
        conn.execute("UPDATE recsys.models SET status = 'champion', promoted_at = now() WHERE model_version = %s", (version,))
