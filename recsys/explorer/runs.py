"""One night's run and one model as the explorer shows them, read from the lake only."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TypeVar

from recsys.evaluate.plots import bar_chart, line_chart
from recsys.evaluate.report import coverage_by_model, exposure_by_decile, history_by_length, metric_history
from recsys.errors import InputError
from recsys.lake import Lake
from recsys.pipeline.results import EvaluateResult, GateResult, StageResult
from recsys.store.runlog import collect_run_summary

log = logging.getLogger(__name__)
R = TypeVar("R", bound=StageResult)

# Shown first, in this order; any other number an evaluation holds follows in its own order.
LEAD_METRICS = ("ndcg@10", "hr@10", "mrr@10", "recall@20", "coverage@10")
NIGHTS = 30  # the NDCG@10 chart spans a month of nights
SAFETENSORS_HEADER_BYTES = 8


def _stage(lake: Lake, ds: dt.date, model: type[R]) -> R | None:
    """What `model`'s stage returned for ds, or None when it has not run. A file that does not
    match its model is shown as missing (and logged), so one bad night leaves the others readable."""
    try:
        return model.find(lake, ds)
    except InputError as err:
        log.warning("explorer leaves out %s", err)
        return None


def run_dates(lake: Lake, limit: int = NIGHTS) -> list[str]:
    """The latest run dates that left any stage result, newest first."""
    return sorted((p.name.removeprefix("ds=") for p in (lake.root / "runs").glob("ds=*")), reverse=True)[:limit]


def metric_rows(metrics: dict[str, dict]) -> list[dict]:
    """One row per metric: {"metric", "values": {role: number or None}}, the lead metrics first."""
    names: list[str] = []
    for m in metrics.values():
        names += [k for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in names]
    names = [n for n in LEAD_METRICS if n in names] + [n for n in names if n not in LEAD_METRICS]
    return [{"metric": n, "values": {role: m.get(n) for role, m in metrics.items()}} for n in names]


def run_view(lake: Lake, ds: dt.date) -> dict | None:
    """Everything the run page shows for `ds`; None when no stage ran for it."""
    if not lake.run_dir(ds).is_dir():
        return None
    summary = collect_run_summary(lake.root, ds)
    evaluation = _stage(lake, ds, EvaluateResult)
    metrics = evaluation.metrics if evaluation else {}
    challenger = evaluation.model_version if evaluation else None
    report = lake.models_root / challenger / f"report-{ds.isoformat()}.html" if challenger else None
    return {
        "ds": ds.isoformat(),
        "gate": summary.get("gate"),
        "challenger": challenger,
        "champion": evaluation.champion_version if evaluation else None,
        "eval_users": evaluation.users if evaluation else None,
        "roles": list(metrics),
        "metrics": metric_rows(metrics),
        "input": summary.get("input"),
        "seconds": summary.get("seconds", {}),
        "seconds_total": summary.get("seconds_total"),
        "train_budget": {k: (summary.get("model") or {}).get(k) for k in ("train_budget_seconds", "train_budget")},
        "published": summary.get("published"),
        "report": bool(report and report.is_file()),
        "by_role": metrics,
    }


def run_charts(lake: Lake, view: dict) -> dict[str, str]:
    """The run page's SVG charts, by name; a chart without data is ""."""
    metrics = view["by_role"]
    labels, series = metric_history(lake.root / "runs", nights=NIGHTS, end=dt.date.fromisoformat(view["ds"]))
    seconds = view["seconds"]
    return {
        "history": line_chart(f"NDCG@10 over the {NIGHTS} nights to {view['ds']} (a gap: no evaluation)", labels, series),
        "by_length": bar_chart("NDCG@10 by history length (interactions)", *history_by_length(metrics)),
        "deciles": bar_chart("share of recommendations by item popularity decile (D1 = most popular)",
                             *exposure_by_decile(metrics)),
        "coverage": bar_chart("catalogue coverage@10", *coverage_by_model(metrics)),
        "stages": bar_chart("seconds per stage", list(seconds), {"seconds": list(seconds.values())}),
    }


def report_path(lake: Lake, ds: dt.date) -> Path | None:
    """The night's full HTML report, written by the gate beside the challenger's model."""
    evaluation = _stage(lake, ds, EvaluateResult)
    path = lake.models_root / evaluation.model_version / f"report-{ds.isoformat()}.html" if evaluation else None
    return path if path and path.is_file() else None


def checkpoint_meta(folder: Path) -> dict:
    """The training metadata an `mtrl` checkpoint carries in its safetensors header (key `mtrl`):
    config, history per epoch, served blend. Read from the header alone, without loading weights."""
    path = folder / "weights.safetensors"
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(SAFETENSORS_HEADER_BYTES), "little")
            header = json.loads(f.read(size))
        return json.loads(header.get("__metadata__", {}).get("mtrl", "{}"))
    except (OSError, ValueError):
        return {}


def champion_history(lake: Lake, limit: int = NIGHTS) -> list[dict]:
    """Night by night, newest first: the challenger, the gate's decision and the model that served."""
    rows = []
    for ds in run_dates(lake, limit):
        day = dt.date.fromisoformat(ds)
        gate = _stage(lake, day, GateResult)
        if gate is None:
            continue
        evaluation = _stage(lake, day, EvaluateResult)
        rows.append({"ds": ds, "challenger": evaluation.model_version if evaluation else None,
                     "decision": gate.decision, "serving": gate.serving_version,
                     "champion_before": evaluation.champion_version if evaluation else None})
    return rows


def model_view(lake: Lake, version: str) -> dict | None:
    """The model page: config, training history, served blend; None for an unknown version."""
    folder = (lake.models_root / version).resolve()
    # A version is a folder name: anything that leads elsewhere in the file system is unknown.
    if folder.parent != lake.models_root.resolve() or not (folder / "model.json").is_file():
        return None
    saved = json.loads((folder / "model.json").read_text())
    meta = checkpoint_meta(folder)
    history = meta.get("history") or []
    blend = meta.get("blend") or {}
    return {
        "version": version,
        "kind": saved.get("kind"),
        "params": saved.get("params") or {},
        "config": meta.get("config") or {},
        "epochs": history,
        "best_ndcg10": meta.get("best_ndcg10"),
        "blend": {k: v for k, v in blend.items() if k != "chosen_on"},
        "memory_weight": blend.get("memory"),
        # What training switched off or changed because the data could not train it (ablations
        # the data made for itself), and the warm start or refit it ran.
        "notes": list(meta.get("notes") or []),
        "champions": champion_history(lake),
    }


def model_charts(view: dict) -> dict[str, str]:
    epochs = view["epochs"]
    labels = [str(r.get("epoch")) for r in epochs]
    losses = sorted({k for r in epochs for k in r if k.startswith("loss_")})
    return {
        "ndcg": line_chart("validation NDCG@10 per epoch", labels, {"ndcg@10": [r.get("ndcg@10") for r in epochs]},
                           xlabel="epoch"),
        "loss": line_chart("training loss per task", labels, {k.removeprefix("loss_"): [r.get(k) for r in epochs] for k in losses},
                           xlabel="epoch"),
    }
