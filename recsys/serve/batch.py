"""Tonight's top-K lists for every user, written as Parquet for the publisher."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recsys import schema as S
from recsys.data.interactions import EVENT_CODE, load_interactions
from recsys.lake import Lake
from recsys.models import load_model
from recsys.scoring import top_k


def score_all_users(lake: Lake, day: dt.date, model_path: Path, k: int) -> dict:
    data = load_interactions(lake.features(day))  # every split: lists use behaviour up to ds
    items = pads.dataset(lake.features(day) / "items", format="parquet").to_table(
        columns=[S.ITEM_IDX, S.ITEM_ID, S.AVAILABLE]
    ).sort_by(S.ITEM_IDX)
    n_items = int(items.column(S.ITEM_IDX).to_numpy().max()) + 1
    item_ids = np.empty(n_items, dtype=object)
    item_ids[items.column(S.ITEM_IDX).to_numpy()] = items.column(S.ITEM_ID).to_numpy(zero_copy_only=False)
    blocked = np.ones(n_items, dtype=bool)  # unknown indices are never recommended
    blocked[items.column(S.ITEM_IDX).to_numpy()] = ~items.column(S.AVAILABLE).to_numpy(zero_copy_only=False).astype(bool)

    histories = data.histories()
    users = np.array(sorted(histories), dtype=np.int64)
    seqs = [histories[u] for u in users]
    # Already-purchased items are not recommended again; viewed ones may be (people return to them).
    bought = data.select(data.event == EVENT_CODE["purchase"]).histories()
    exclude = [np.unique(bought.get(int(u), np.zeros(0, np.int32))) for u in users]

    model = load_model(model_path)
    top, scores = top_k(model, seqs, k, exclude=exclude, blocked=blocked)
    kk = top.shape[1]
    reasons = [r for u, s in enumerate(seqs) for r in model.explain(s, top[u])]
    reasons = [_name_reason(r, item_ids) for r in reasons]
    table = pa.table(
        {
            "user_id": np.repeat(data.user_ids[users], kk),
            "rank": np.tile(np.arange(1, kk + 1, dtype=np.int16), len(users)),
            "item_id": item_ids[top.ravel()].astype(str),
            "score": scores.ravel(),
            "reason": reasons,
        }
    )
    valid = np.isfinite(scores.ravel())  # fewer than k recommendable items: the list is shorter
    table = table.filter(pa.array(valid))
    out = lake.scores(day)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recommendations.parquet"
    pq.write_table(table, path)
    return {"path": str(path), "users": int(len(users)), "rows": int(table.num_rows), "k": kk}


def _name_reason(reason: str, item_ids: np.ndarray) -> str:
    """Models speak in item indices; people and apps read item ids."""
    prefix = "because of "
    if reason.startswith(prefix):
        return prefix + str(item_ids[int(reason[len(prefix):])])
    return reason
