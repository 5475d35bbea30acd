"""Score several models on one split with one protocol, side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.data.interactions import Interactions, load_interactions
from recsys.evaluate.metrics import catalogue_coverage, ranking_report
from recsys.evaluate.protocol import EvalCases, temporal_cases
from recsys.models import build_model, load_model
from recsys.scoring import top_k

# Baselines refit on the challenger's exact training data in the same run.
BASELINES = {"popularity": "popularity", "itemknn": "cooc"}


def evaluate_model(model, cases: EvalCases, n_items: int, k: int = 20) -> dict[str, float]:
    items, scores = top_k(model, cases.histories, k, exclude=cases.exclude)
    report = ranking_report(items, cases.targets, ks=(10, 20))
    report["coverage@10"] = catalogue_coverage(items[:, :10], n_items)
    report["nan_scores"] = int(np.isnan(scores).sum())
    return report


def compare_models(features_dir: Path, challenger: Path, champion: str | None, k: int = 10) -> dict:
    data: Interactions = load_interactions(features_dir)
    cases = temporal_cases(data, holdout="test")
    fit_data = data.in_splits("train", "valid")
    models = {"challenger": load_model(challenger)}
    if champion:
        models["champion"] = load_model(Path(champion))
    for name, kind in BASELINES.items():
        models[name] = build_model(kind).fit(fit_data)
    metrics = {name: evaluate_model(m, cases, data.n_items) for name, m in models.items()}
    return {"metrics": metrics, "users": len(cases.users), "table": format_table(metrics)}


def format_table(metrics: dict[str, dict[str, float]], columns=("ndcg@10", "hr@10", "mrr@10", "recall@20", "coverage@10")) -> str:
    head = f"{'model':<12}" + "".join(f"{c:>13}" for c in columns)
    rows = [head, "-" * len(head)]
    for name, m in metrics.items():
        rows.append(f"{name:<12}" + "".join(f"{m.get(c, float('nan')):>13.4f}" for c in columns))
    return "\n".join(rows)
