"""Item text and user histories from the night's feature tables in the lake, as scoring read them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pyarrow.compute as pc
import pyarrow.dataset as pads

from recsys import schema as S
from recsys.lake import Lake

ITEM_COLUMNS = (S.ITEM_ID, S.TITLE, S.CATEGORY, S.DESCRIPTION, S.PRICE, S.AVAILABLE)
HISTORY_LIMIT = 30  # a page, not an export: the latest interactions say most about the list


def _dataset(lake: Lake, ds: dt.date, table: str):
    path = lake.features(ds) / table
    return pads.dataset(path, format="parquet") if path.exists() else None


def items(lake: Lake, ds: dt.date, item_ids: Iterable[str]) -> dict[str, dict]:
    """item_id -> {title, category, description, price, available} for the ids the catalogue of ds knows."""
    ids = sorted(set(item_ids))
    data = _dataset(lake, ds, "items")
    if data is None or not ids:
        return {}
    columns = [c for c in ITEM_COLUMNS if c in data.schema.names]
    table = data.to_table(columns=columns, filter=pc.field(S.ITEM_ID).isin(ids))
    return {row[S.ITEM_ID]: row for row in table.to_pylist()}


def history(lake: Lake, ds: dt.date, user_id: str, limit: int = HISTORY_LIMIT) -> list[dict]:
    """The user's latest interactions up to ds, newest first: ts, item, behaviour, title, category."""
    data = _dataset(lake, ds, "events")
    if data is None:
        return []
    table = data.to_table(columns=[S.ITEM_ID, S.EVENT_TYPE, S.TS], filter=pc.field(S.USER_ID) == user_id)
    rows = table.sort_by([(S.TS, "descending")]).slice(0, limit).to_pylist()
    known = items(lake, ds, (r[S.ITEM_ID] for r in rows))
    for r in rows:
        r.update({k: known.get(r[S.ITEM_ID], {}).get(k) for k in (S.TITLE, S.CATEGORY)})
    return rows

