"""Run the stages for one date in order, without Airflow (the CLI's `recsys run`)."""

from __future__ import annotations

import json
import logging
import time

from recsys.config import Settings
from recsys.errors import ConfigError
from recsys.lake import STAGES, Lake, parse_ds
from recsys.pipeline import stages as st

log = logging.getLogger(__name__)


def run_pipeline(ds, settings: Settings, stages: str | None = None, force_promote: bool = False) -> dict:
    """Run `stages` (comma-separated; default all) for `ds`; return the run summary."""
    day = parse_ds(ds)
    chosen = [s.strip() for s in stages.split(",")] if stages else list(STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; expected some of {list(STAGES)}")
    summary: dict = {"ds": day.isoformat(), "stages": {}}
    t0 = time.perf_counter()
    for name in STAGES:
        if name not in chosen:
            continue
        log.info("stage %s for %s", name, day)
        kwargs = {"force_promote": force_promote, "forced_by": "cli"} if name == "gate" and force_promote else {}
        result = getattr(st, name)(day, settings, **kwargs)
        summary["stages"][name] = result
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    path = Lake(settings.lake_root).run_dir(day) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    return summary
