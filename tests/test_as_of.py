"""As-of correctness: a run for date D uses only what was known on D.

So a backfill of last week reproduces last week's lists, whatever arrived since. The test
runs D, then adds a day D+1 built to change everything it could touch (a burst of purchases of
a brand-new item and of a rarely seen one, every user active), runs D+1 (a later item map, a
later model and champion), reruns D, and requires D's lists, counts and manifests to be the
same as the first time.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from recsys import schema as S
from recsys.config import load_settings
from recsys.data.generate import GenerateConfig, generate
from recsys.lake import Lake
from recsys.pipeline.run import run_pipeline
from tests.helpers import TINY, fresh_database

pytestmark = pytest.mark.slow
D = TINY["end_date"]
NEXT = D + dt.timedelta(days=1)
NEW_ITEM = "i_after_d"
K = 5


def _seq(value) -> tuple:
    """A stored list as a tuple, whether the column is an array or text joined by U+001F."""
    if value is None:
        return ()
    return tuple(value.split("\x1f")) if isinstance(value, str) else tuple(value)


def lists_of(url: str, ds: dt.date) -> dict[str, tuple]:
    """user -> (item ids, scores, reasons) of the published batch of `ds` (current or not; the
    views only show the current one)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT l.user_id, l.item_ids, l.scores, l.reasons FROM recsys.recommendation_lists AS l "
            "JOIN recsys.batches AS b ON b.batch_id = l.batch_id WHERE b.ds = %s AND b.status = 'published'",
            (ds,),
        ).fetchall()
    assert rows, f"no published lists for {ds}"
    return {u: (_seq(items), _seq(scores), _seq(reasons)) for u, items, scores, reasons in rows}


def similar_of(url: str, ds: dt.date) -> dict[str, tuple]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT s.item_id, s.similar_item_ids FROM recsys.similar_item_lists AS s "
            "JOIN recsys.batches AS b ON b.batch_id = s.batch_id WHERE b.ds = %s AND b.status = 'published'",
            (ds,),
        ).fetchall()
    return {i: _seq(sims) for i, sims in rows}


def add_day_after(lake: Lake) -> tuple[int, str]:
    """Write raw events and a catalogue partition dated NEXT; returns (events written, the boosted old item)."""
    events = pads.dataset(lake.events_partition(D), format="parquet").to_table()
    items = pads.dataset(lake.raw_items, format="parquet", partitioning="hive").to_table()
    # The least-seen catalogue item, to be made the most bought one after D.
    counts = pc.value_counts(events.column(S.ITEM_ID)).to_pylist()
    seen = {c["values"]: c["counts"] for c in counts}
    ids = items.column(S.ITEM_ID).to_pylist()
    rare = min(ids, key=lambda i: (seen.get(i, 0), i))

    # A new item created on NEXT (the catalogue feed's partition of that day).
    template = items.select(S.ITEMS_SCHEMA.names).slice(0, 1).to_pylist()[0]
    noon = dt.datetime(NEXT.year, NEXT.month, NEXT.day, 12, tzinfo=dt.timezone.utc)
    template.update({S.ITEM_ID: NEW_ITEM, S.TITLE: "brand new after the run date", S.CREATED_AT: noon - dt.timedelta(hours=6)})
    folder = lake.items_partition(NEXT)
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([template], schema=S.ITEMS_SCHEMA), folder / "part-0.parquet")

    # D's behaviour again one day later, plus every user buying the new item and the rare one.
    shifted = events.set_column(
        events.schema.get_field_index(S.TS), S.TS, pc.add(events.column(S.TS), pa.scalar(dt.timedelta(days=1)))
    )
    users = sorted(set(pads.dataset(lake.raw_events, format="parquet", partitioning="hive").to_table(
        columns=[S.USER_ID]).column(S.USER_ID).to_pylist()))
    burst = []
    for n, user in enumerate(users):
        for item in (NEW_ITEM, rare):
            for k, kind in enumerate(("view", "click", "cart", "purchase")):
                ts = noon + dt.timedelta(seconds=60 * n + 10 * k)
                burst.append({S.USER_ID: user, S.ITEM_ID: item, S.EVENT_TYPE: kind, S.TS: ts, S.RATING: None})
    table = pa.concat_tables([shifted.select(S.EVENTS_SCHEMA.names).cast(S.EVENTS_SCHEMA),
                              pa.Table.from_pylist(burst, schema=S.EVENTS_SCHEMA)])
    folder = lake.events_partition(NEXT)
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    return table.num_rows, rare


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_run_for_d_ignores_everything_after_d(tmp_path, pg_url, spark):
    lake = Lake(tmp_path / "lake")
    generate(lake.root, GenerateConfig(**TINY))
    url = fresh_database(pg_url)
    # The co-occurrence model keeps this three-run test short; what it checks is the data, not the model.
    settings = load_settings(lake_root=lake.root, database_url=url, top_k=K, spark_master="local[2]", model_kind="cooc")

    first = run_pipeline(D, settings)
    lists = lists_of(url, D)
    similar = similar_of(url, D)
    manifest = _read(lake.features(D) / "manifest.json")
    item_map = pads.dataset(lake.item_map_root / f"ds={D}", format="parquet").to_table().sort_by(S.ITEM_ID)

    written, rare = add_day_after(lake)
    later = run_pipeline(NEXT, settings)
    # The day after really is different: its run saw the new day, the new item and the burst.
    assert later["stages"]["validate"].today.rows_in == written
    assert NEW_ITEM in pads.dataset(lake.item_map_root / f"ds={NEXT}", format="parquet").to_table().column(
        S.ITEM_ID).to_pylist()
    assert lists_of(url, NEXT) != lists

    again = run_pipeline(D, settings)  # what a backfill of D does today
    assert again["stages"]["publish"].batch_id != first["stages"]["publish"].batch_id

    # Inputs: validation and features of D read nothing dated after D.
    report = again["stages"]["validate"]
    assert max(report.days_validated + report.days_already_validated) == D
    assert all(p <= D for p in report.items.partitions)
    assert not any(f"date={NEXT}" in name for name in report.files)
    assert list(report.days) == [D]  # earlier days were validated by the first run
    assert report.rows_in == first["stages"]["validate"].days[D].rows_in
    again_manifest = _read(lake.features(D) / "manifest.json")
    assert again_manifest["window"]["end"] == D.isoformat()
    for key in ("window", "outputs", "splits", "events_read", "item_map"):
        assert again_manifest[key] == manifest[key], key
    again_map = pads.dataset(lake.item_map_root / f"ds={D}", format="parquet").to_table().sort_by(S.ITEM_ID)
    assert again_map.equals(item_map)
    assert NEW_ITEM not in again_map.column(S.ITEM_ID).to_pylist()

    # Decisions and outputs: same serving model, same lists, same scores.
    assert again["stages"]["gate"].serving_version == first["stages"]["gate"].serving_version
    assert again["stages"]["score"].rows == first["stages"]["score"].rows
    again_lists = lists_of(url, D)
    assert again_lists.keys() == lists.keys()
    for user, (items, scores, reasons) in lists.items():
        items2, scores2, reasons2 = again_lists[user]
        assert items2 == items and reasons2 == reasons, user
        np.testing.assert_allclose(scores2, scores, rtol=1e-6, err_msg=user)
        assert NEW_ITEM not in items2
    assert similar_of(url, D) == similar
