"""Synthetic e-commerce logs for the raw lake: a catalogue and a month of shopper behaviour.

The data is built to carry the signals a recommender should find, and to be honest about
what each one is:

- text: every item belongs to a latent topic whose own brands, nouns and phrases make up
  its title and description, so a language model can tell which items go together;
- taste: users hold a Dirichlet mixture over topics that drifts a little every day;
- sequence: each item links to a few "next" items (tent -> sleeping bag -> stove, or a
  paired topic), and a user's next exposure follows those links with a probability that
  rises with how far down the funnel the previous item went;
- funnel: view -> click -> cart -> purchase, each step likelier with user-item affinity,
  plus 0.5-5 star ratings a few days after some purchases;
- cold start: a share of items is created during the window and gets an exposure boost
  while new; nobody sees an item before the day after its created_at.

Modules: `config` (GenerateConfig), `catalogue` (items, links, text), `behaviour` (users,
visits, the funnel), `events` (timestamps and rows), `sampling` (grouped weighted draws).
One `numpy.random.Generator` made from `cfg.seed` is passed down, so the same config writes
byte-identical Parquet files. Usage:

    from recsys.data.generate import GenerateConfig, generate
    generate(Path("var/lake"), GenerateConfig(seed=1))
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from recsys import schema as S
from recsys.data.generate.behaviour import make_users, simulate_exposures
from recsys.data.generate.catalogue import ids, make_catalogue
from recsys.data.generate.config import DAY_US, EPOCH, GenerateConfig
from recsys.data.generate.events import events_table, exposure_events
from recsys.lake import Lake, write_partition

__all__ = ["DAY_US", "EPOCH", "GenerateConfig", "generate"]


def generate(lake_root: Path, cfg: GenerateConfig) -> dict:
    """Write raw event and item partitions for the window; return a summary.

    Summary keys: events (rows written), users (n_users), items (n_items), days,
    start_date and end_date (ISO), events_path and items_path (raw folders).
    Existing partitions of the window's days are overwritten, stale part files removed.
    """
    rng = np.random.default_rng(cfg.seed)
    lake = Lake(Path(lake_root))
    start_us = (cfg.start_date - EPOCH).days * DAY_US

    cat = make_catalogue(cfg, start_us, rng)
    users = make_users(cfg, rng)
    exposures = simulate_exposures(cat, users, cfg, rng)
    events = exposure_events(exposures, cat, cfg, start_us, rng)

    user_ids = pa.array(ids("u", cfg.n_users, 6), pa.string())
    n_events = 0
    for day_idx in range(cfg.days):
        day = cfg.start_date + dt.timedelta(days=day_idx)
        lo, hi = np.searchsorted(events["ts"], start_us + DAY_US * np.array([day_idx, day_idx + 1]))
        n_events += hi - lo
        table = events_table(events, lo, hi, user_ids, cat.table.column(S.ITEM_ID))
        write_partition(lake.events_partition(day), table)
        write_partition(lake.items_partition(day), cat.table.filter(cat.partition == day_idx))
    return {
        "events": int(n_events),
        "users": cfg.n_users,
        "items": cfg.n_items,
        "days": cfg.days,
        "start_date": cfg.start_date.isoformat(),
        "end_date": cfg.end_date.isoformat(),
        "events_path": str(lake.raw_events),
        "items_path": str(lake.raw_items),
    }
