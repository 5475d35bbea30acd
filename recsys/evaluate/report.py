"""One self-contained HTML page per nightly evaluation: a person should rather look at it than read logs.

Plots are inline SVG, so the page opens anywhere with no network and no plotting library.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

COLUMNS = ("ndcg@10", "hr@10", "mrr@10", "recall@20", "coverage@10", "novelty@10", "popularity_bias@10",
           "purchase_ndcg@10", "short_history_ndcg@10", "new_items_hr@10")
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def _table(metrics: dict[str, dict]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    rows = []
    for name, m in metrics.items():
        cells = "".join(
            f"<td>{m[c]:.4f}</td>" if isinstance(m.get(c), (int, float)) else "<td>–</td>" for c in COLUMNS
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _bars(title: str, labels: list[str], series: dict[str, list[float]], width=640, height=220) -> str:
    """Grouped bar chart: one group per label, one bar per series."""
    if not labels or not series:
        return ""
    top = max((v for vs in series.values() for v in vs), default=0) or 1.0
    group_w = (width - 60) / len(labels)
    bar_w = group_w / (len(series) + 1)
    parts = [f'<svg width="{width}" height="{height + 40}" role="img"><title>{html.escape(title)}</title>']
    for g, label in enumerate(labels):
        x0 = 50 + g * group_w
        for s, (name, values) in enumerate(series.items()):
            v = values[g] if g < len(values) else 0.0
            h = height * v / top
            parts.append(
                f'<rect x="{x0 + s * bar_w:.1f}" y="{height - h + 10:.1f}" width="{bar_w * 0.9:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[s % len(COLOURS)]}"><title>{html.escape(name)} {label}: {v:.4f}</title></rect>'
            )
        parts.append(f'<text x="{x0 + group_w / 2 - 10:.1f}" y="{height + 28}" font-size="11">{html.escape(label)}</text>')
    parts.append(f'<text x="0" y="18" font-size="11">{top:.3f}</text><line x1="48" y1="10" x2="48" y2="{height + 10}" stroke="#999"/>')
    legend = " ".join(
        f'<span style="color:{COLOURS[i % len(COLOURS)]}">&#9632; {html.escape(n)}</span>' for i, n in enumerate(series)
    )
    return f"<h3>{html.escape(title)}</h3>" + "".join(parts) + "</svg><div>" + legend + "</div>"


def _history(lake_runs: Path, metric: str = "ndcg@10", nights: int = 30) -> tuple[list[str], dict[str, list[float]]]:
    """The metric of each role over the most recent nights that have an evaluation."""
    files = sorted(lake_runs.glob("ds=*/evaluate.json"))[-nights:]
    labels, series = [], {}
    for f in files:
        ev = json.loads(f.read_text())
        labels.append(f.parent.name.removeprefix("ds="))
        for role, m in ev.get("metrics", {}).items():
            series.setdefault(role, [0.0] * (len(labels) - 1)).append(float(m.get(metric, 0.0)))
        for values in series.values():
            values.extend([0.0] * (len(labels) - len(values)))
    return labels, series


def write_report(path: Path, ds: str, evaluation: dict, gate: dict | None, runs_root: Path) -> Path:
    metrics = evaluation["metrics"]
    curves = {name: m.get("curves", {}) for name, m in metrics.items()}
    any_curve = next(iter(curves.values()), {})
    buckets = [b["bucket"] for b in any_curve.get("ndcg_by_history", [])]
    by_len = {
        name: [next((b["ndcg@10"] for b in c.get("ndcg_by_history", []) if b["bucket"] == k), 0.0) for k in buckets]
        for name, c in curves.items()
    }
    deciles = [f"D{i + 1}" for i in range(10)]
    exposure = {name: c.get("exposure_by_decile", []) for name, c in curves.items()}
    if any_curve.get("interactions_by_decile"):
        exposure["(interactions)"] = any_curve["interactions_by_decile"]
    coverage = {"coverage@10": [float(m.get("coverage@10", 0.0)) for m in metrics.values()]}
    hist_labels, hist = _history(runs_root)
    decision = ""
    if gate:
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in gate.get("reasons", []))
        decision = f"<h2>Gate: {html.escape(gate['decision'])} — serving {html.escape(str(gate.get('serving_version')))}</h2><ul>{reasons}</ul>"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>recsys evaluation {html.escape(ds)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right;font-size:13px}} th{{background:#f4f4f4}}</style></head><body>
<h1>Offline evaluation for {html.escape(ds)}</h1>
<p>Challenger {html.escape(str(evaluation.get('model_version')))} vs champion {html.escape(str(evaluation.get('champion_version')))}
and baselines, {evaluation.get('users', 0)} users, full-catalogue ranking with seen items excluded.</p>
{decision}
<h2>Metrics</h2>{_table(metrics)}
{_bars("NDCG@10 over recent nights", hist_labels, hist)}
{_bars("NDCG@10 by history length", buckets, by_len)}
{_bars("Popularity bias: share of recommendations by item popularity decile (D1 = most popular)", deciles, exposure)}
{_bars("Catalogue coverage@10", list(metrics), {"coverage@10": coverage["coverage@10"]})}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
