"""One self-contained HTML page per nightly evaluation: a person should rather look at it than read logs.

Plots are inline SVG drawn by `recsys.evaluate.plots` (the explorer shows the same charts), so
the page opens anywhere with no network.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from pathlib import Path

from recsys.errors import InputError
from recsys.evaluate.plots import bar_chart, line_chart
from recsys.lake import REPORT_NIGHTS
from recsys.pipeline.results import EvaluateResult, GateResult

log = logging.getLogger(__name__)

COLUMNS = ("ndcg@10", "hr@10", "mrr@10", "recall@20", "coverage@10", "novelty@10", "popularity_bias@10",
           "purchase_ndcg@10", "short_history_ndcg@10", "new_items_hr@10")
DECILES = tuple(f"D{i + 1}" for i in range(10))


def _table(metrics: dict[str, dict]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    rows = []
    for name, m in metrics.items():
        cells = "".join(
            f"<td>{m[c]:.4f}</td>" if isinstance(m.get(c), (int, float)) else "<td>–</td>" for c in COLUMNS
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _section(title: str, svg: str) -> str:
    return f"<h3>{html.escape(title)}</h3>{svg}" if svg else ""


def metric_history(runs_root: Path, metric: str = "ndcg@10", nights: int = REPORT_NIGHTS,
                   end: dt.date | None = None) -> tuple[list[str], dict[str, list[float | None]]]:
    """`metric` of each role on every one of the `nights` days up to `end` (default: the latest
    night with an evaluation). A night without an evaluation (or whose evaluate.json does not
    read: the chart must not fail tonight's report), or a role missing that night, is None: a gap
    in the chart, never a zero."""
    found = {f.parent.name.removeprefix("ds="): f for f in Path(runs_root).glob("ds=*/evaluate.json")}
    if not found:
        return [], {}
    last = end or max(dt.date.fromisoformat(d) for d in found)
    labels = [(last - dt.timedelta(days=n)).isoformat() for n in range(nights - 1, -1, -1)]
    series: dict[str, list[float | None]] = {}
    for i, day in enumerate(labels):
        if day not in found:
            continue
        try:
            metrics = EvaluateResult.load(found[day]).metrics
        except InputError as err:
            log.warning("metric history leaves out %s", err)
            continue
        for role, m in metrics.items():
            if isinstance(m.get(metric), (int, float)):
                series.setdefault(role, [None] * len(labels))[i] = float(m[metric])
    return labels, series


def history_by_length(metrics: dict[str, dict]) -> tuple[list[str], dict[str, list[float | None]]]:
    """NDCG@10 per history-length bucket of each model that has the curve (the first one's buckets)."""
    curves = {name: m.get("curves", {}).get("ndcg_by_history", []) for name, m in metrics.items()}
    buckets = [b["bucket"] for b in next((c for c in curves.values() if c), [])]
    by_len = {
        name: [next((b["ndcg@10"] for b in c if b["bucket"] == k), None) for k in buckets]
        for name, c in curves.items() if c
    }
    return buckets, by_len


def exposure_by_decile(metrics: dict[str, dict]) -> tuple[list[str], dict[str, list[float]]]:
    """Share of each model's top 10s by item popularity decile (D1 = most popular), beside the
    share of the interactions themselves: how far each model leans on the head of the catalogue."""
    curves = {name: m.get("curves", {}) for name, m in metrics.items()}
    exposure = {name: c["exposure_by_decile"] for name, c in curves.items() if c.get("exposure_by_decile")}
    interactions = next((c["interactions_by_decile"] for c in curves.values() if c.get("interactions_by_decile")), None)
    if interactions:
        exposure["(interactions)"] = interactions
    return list(DECILES), exposure


def coverage_by_model(metrics: dict[str, dict]) -> tuple[list[str], dict[str, list[float | None]]]:
    return list(metrics), {"coverage@10": [m.get("coverage@10") for m in metrics.values()]}


def write_report(path: Path, ds: str, evaluation: EvaluateResult, gate: GateResult | None, runs_root: Path) -> Path:
    metrics = evaluation.metrics
    hist_labels, hist = metric_history(runs_root, end=dt.date.fromisoformat(ds))
    decision = ""
    if gate:
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in gate.reasons)
        decision = f"<h2>Gate: {html.escape(gate.decision)} — serving {html.escape(gate.serving_version)}</h2><ul>{reasons}</ul>"
    charts = "\n".join(
        _section(title, svg) for title, svg in (
            ("NDCG@10 over recent nights", line_chart("NDCG@10 per night", hist_labels, hist)),
            ("NDCG@10 by history length", bar_chart("NDCG@10 by history length", *history_by_length(metrics))),
            ("Popularity bias: share of recommendations by item popularity decile (D1 = most popular)",
             bar_chart("share of recommendations by popularity decile", *exposure_by_decile(metrics))),
            ("Catalogue coverage@10", bar_chart("coverage@10", *coverage_by_model(metrics))),
        )
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>recsys evaluation {html.escape(ds)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right;font-size:13px}} th{{background:#f4f4f4}}</style></head><body>
<h1>Offline evaluation for {html.escape(ds)}</h1>
<p>Challenger {html.escape(evaluation.model_version)} vs champion {html.escape(str(evaluation.champion_version))}
and baselines, {evaluation.users} users, full-catalogue ranking with seen items excluded.</p>
{decision}
<h2>Metrics</h2>{_table(metrics)}
{charts}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
