"""Run the stages for one date in order, without Airflow (the CLI's `recsys run`)."""

from __future__ import annotations

import json
import logging
import time

from recsys.config import Settings
from recsys.errors import ConfigError
from recsys.lake import STAGES, parse_ds
from recsys.objectstore import open_lake
from recsys.pipeline import stages as st
from recsys.pipeline.results import StageResult

log = logging.getLogger(__name__)


def run_pipeline(ds, settings: Settings, stages: str | None = None, force_promote: bool = False) -> dict:
    """Run `stages` (comma-separated; default all) for `ds`; return the run summary: ds, seconds
    and `stages`, each stage's result model by name (saved as runs/ds=/summary.json)."""
    day = parse_ds(ds)
    chosen = [s.strip() for s in stages.split(",")] if stages else list(STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; expected some of {list(STAGES)}")
    summary: dict = {"ds": day.isoformat(), "stages": {}}
    results: dict[str, StageResult] = summary["stages"]
    t0 = time.perf_counter()
    for name in STAGES:
        if name not in chosen:
            continue
        log.info("stage %s for %s", name, day)
        kwargs = {"force_promote": force_promote, "forced_by": "cli"} if name == "gate" and force_promote else {}
        result = getattr(st, name)(day, settings, **kwargs)
        results[name] = result
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    lake = open_lake(settings)
    path = lake.run_dir(day) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_json(summary, indent=2))
    lake.put(path)
    return summary


def summary_json(summary: dict, indent: int | None = None) -> str:
    """A run summary as JSON, each stage's result as its file holds it."""
    stages = {name: result.model_dump(mode="json") for name, result in summary["stages"].items()}
    return json.dumps({**summary, "stages": stages}, indent=indent)
