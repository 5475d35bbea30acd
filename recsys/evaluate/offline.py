"""Score several models on one split with one protocol, side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys import schema as S
from recsys.data.interactions import EVENT_CODE, Interactions, load_interactions
from recsys.evaluate import metrics as M
from recsys.evaluate.protocol import EvalCases, temporal_cases
from recsys.models import build_model, load_model
from recsys.scoring import top_k
from recsys.tables import metric_table

# Baselines refit on the challenger's exact training data in the same run.
BASELINES = {"popularity": "popularity", "itemknn": "cooc"}
# The nightly report's table: accuracy, then breadth, then what the business counts.
TABLE_COLUMNS = ("ndcg@10", "hr@10", "mrr@10", "recall@20", "coverage@10", "purchase_ndcg@10")
# A user with at most this many past interactions is a "short history" user (cold-ish).
SHORT_HISTORY = 5
# Finer segments of short histories, reported on their own: (name, fewest, most interactions).
SEGMENTS = (("history_1_2", 1, 2), ("history_3_5", 3, 5))


@dataclass(frozen=True)
class EvalContext:
    n_items: int
    item_popularity: np.ndarray  # (I,) distinct users per item in the fit data
    item_category: np.ndarray | None = None  # (I,) int category code, -1 unknown
    new_items: np.ndarray | None = None  # (I,) bool: created recently (the "new this week" segment)


def context_for(fit: Interactions, category: np.ndarray | None = None, new_items: np.ndarray | None = None) -> EvalContext:
    """The catalogue a ranking is judged on: every item of the item map, also those without any
    interaction yet (a model that reads item text can recommend them)."""
    n_items = max([fit.n_items, *(len(x) for x in (category, new_items) if x is not None)])
    pairs = np.unique(np.stack([fit.item, fit.user]), axis=1) if len(fit.item) else np.zeros((2, 0), np.int64)
    pop = np.bincount(pairs[0], minlength=n_items).astype(np.float64)
    return EvalContext(n_items, pop, category, new_items)


def evaluate_model(model, cases: EvalCases, ctx: EvalContext, k: int = 20, per_user: bool = False) -> dict[str, float]:
    """Accuracy at 10 and 20, beyond-accuracy at 10, reward-aware and segment NDCG@10, and the
    standard error of each NDCG@10. `per_user` adds each user's NDCG@10 (arrays, under
    "per_user"), for paired comparisons of models ranked on the same cases."""
    items, scores = top_k(model, cases.histories, k, exclude=cases.exclude, events=cases.history_events)
    report = M.ranking_report(items, cases.targets, ks=(10, 20))
    users_ndcg = {"ndcg@10": M.ndcg_per_user(*M.hit_matrix(items[:, :10], cases.targets))}
    top10 = items[:, :10]
    report["coverage@10"] = M.catalogue_coverage(top10, ctx.n_items)
    report["novelty@10"] = M.novelty(top10, ctx.item_popularity)
    report["popularity_bias@10"] = M.popularity_bias(top10, ctx.item_popularity)
    if ctx.item_category is not None and len(top10):
        onehot = np.eye(int(ctx.item_category.max()) + 2)[ctx.item_category]
        report["diversity_category@10"] = M.intra_list_diversity(top10, onehot)
    report["nan_scores"] = int(np.isnan(scores).sum())
    report["users"] = len(cases.users)
    for name, code in (("click", EVENT_CODE["click"]), ("purchase", EVENT_CODE["purchase"])):
        sub = cases.with_targets(code)
        if len(sub.users):
            keep = np.isin(cases.users, sub.users)
            r = M.ranking_report(items[keep], sub.targets, ks=(10,))
            report[f"{name}_ndcg@10"], report[f"{name}_hr@10"] = r["ndcg@10"], r["hr@10"]
            report[f"{name}_users"] = len(sub.users)
            users_ndcg[f"{name}_ndcg@10"] = M.ndcg_per_user(*M.hit_matrix(items[keep, :10], sub.targets))
    for metric, values in users_ndcg.items():
        if len(values) > 1:  # one user has no spread to speak of (and NaN is not JSON)
            report[f"{metric}_se"] = M.standard_error(values)
    if per_user:
        report["per_user"] = users_ndcg
    lengths = np.array([len(h) for h in cases.histories])
    for key, lo, hi in (("short_history", 1, SHORT_HISTORY), *SEGMENTS):
        seg = (lengths >= lo) & (lengths <= hi)
        if seg.any():
            report[f"{key}_ndcg@10"] = M.ranking_report(items[seg], [cases.targets[i] for i in np.flatnonzero(seg)], ks=(10,))["ndcg@10"]
            report[f"{key}_users"] = int(seg.sum())
    report["curves"] = _curves(items[:, :10], cases, ctx)
    if ctx.new_items is not None:
        new_t = [t[ctx.new_items[t]] for t in cases.targets]
        keep = np.array([len(t) > 0 for t in new_t], dtype=bool)
        if keep.any():
            report["new_items_hr@10"] = M.ranking_report(items[keep], [new_t[i] for i in np.flatnonzero(keep)], ks=(10,))["hr@10"]
    # targets without any interaction in the fit data: only item text can rank them
    report.update(cold_recall(items, cases.targets, np.flatnonzero(ctx.item_popularity == 0)))
    return report


def cold_recall(items: np.ndarray, targets: list[np.ndarray], cold_items: np.ndarray) -> dict:
    """Recall@10 of the ranked `items` (U, K) on the targets among `cold_items`, over the cases
    that have any; {} when none has. Counted per case, ranked against the whole catalogue."""
    cold_t = [t[np.isin(t, cold_items)] for t in targets]
    keep = np.array([len(t) > 0 for t in cold_t], dtype=bool)
    if not keep.any():
        return {}
    picked = [cold_t[i] for i in np.flatnonzero(keep)]
    return {"cold_recall@10": M.ranking_report(items[keep], picked, ks=(10,))["recall@10"], "cold_cases": int(keep.sum())}


HISTORY_BUCKETS = (1, 3, 6, 11, 21, 51)


def _curves(top10: np.ndarray, cases: EvalCases, ctx: EvalContext) -> dict:
    """Data behind the report's plots: NDCG@10 by history length, exposure by popularity decile."""
    lengths = np.array([len(h) for h in cases.histories])
    hits, n = M.hit_matrix(top10, cases.targets)
    by_len = []
    edges = (*HISTORY_BUCKETS, np.inf)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (lengths >= lo) & (lengths < hi)
        if m.any():
            label = f"{lo}-{int(hi) - 1}" if np.isfinite(hi) else f"{lo}+"
            by_len.append({"bucket": label, "users": int(m.sum()), "ndcg@10": M.ndcg(hits[m], n[m])})
    # Items sorted by popularity into ten equal groups: how much exposure does each group get?
    order = np.argsort(-ctx.item_popularity, kind="stable")
    decile = np.empty(len(order), dtype=np.int64)
    decile[order] = np.arange(len(order)) * 10 // max(len(order), 1)
    exposure = np.bincount(decile[top10.ravel()], minlength=10) / max(top10.size, 1)
    interactions = np.bincount(decile, weights=ctx.item_popularity, minlength=10) / max(ctx.item_popularity.sum(), 1)
    return {"ndcg_by_history": by_len, "exposure_by_decile": exposure.tolist(), "interactions_by_decile": interactions.tolist()}


def compare_models(features_dir: Path, challenger: Path, champion: str | None, k: int = 10) -> dict:
    """The nightly comparison: challenger, champion and baselines on tonight's holdout."""
    data: Interactions = load_interactions(features_dir)
    cases = temporal_cases(data, holdout="test")
    fit_data = data.in_splits("train", "valid")
    category, new_items = item_side_info(features_dir, data.n_items)
    ctx = context_for(fit_data, category, new_items)
    models = {"challenger": load_model(challenger)}
    if champion:
        models["champion"] = load_model(Path(champion))
    for name, kind in BASELINES.items():
        models[name] = build_model(kind).fit(fit_data)
    metrics = {name: evaluate_model(m, cases, ctx) for name, m in models.items()}
    return {"metrics": metrics, "users": len(cases.users), "table": metric_table(metrics, TABLE_COLUMNS)}


def item_side_info(features_dir: Path, n_items: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Category codes and the new-this-week mask from the feature job's item outputs, for every
    item of the item map (at least `n_items`)."""
    import pyarrow.dataset as pads

    items_path = Path(features_dir) / "items"
    if not items_path.exists():
        return None, None
    t = pads.dataset(items_path, format="parquet").to_table(columns=[S.ITEM_IDX, S.CATEGORY])
    idx = t.column(S.ITEM_IDX).to_numpy()
    size = max(n_items, int(idx.max()) + 1 if len(idx) else 0)
    cats = np.array([c or "" for c in t.column(S.CATEGORY).to_pylist()], dtype=object)
    _, codes = np.unique(cats, return_inverse=True)
    category = np.full(size, -1, dtype=np.int64)
    category[idx] = codes
    new_items = None
    stats = Path(features_dir) / "item_stats"
    if stats.exists():
        s = pads.dataset(stats, format="parquet").to_table(columns=[S.ITEM_IDX, S.AGE_DAYS])
        new_items = np.zeros(size, dtype=bool)
        age = s.column(S.AGE_DAYS).to_numpy(zero_copy_only=False)
        new_items[s.column(S.ITEM_IDX).to_numpy()[np.nan_to_num(age.astype(float), nan=1e9) < S.NEW_ITEM_DAYS]] = True
    return category, new_items
