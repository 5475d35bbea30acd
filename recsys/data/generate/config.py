"""What a synthetic log looks like: its size, window and seed (GenerateConfig), and time units."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from recsys.errors import ConfigError

DAY_US = 86_400 * 1_000_000
EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class GenerateConfig:
    # ~150k events: enough for every topic to have regulars, small enough for seconds.
    n_users: int = 2000
    # About 60 items per topic; a CPU text model embeds them in well under a minute.
    n_items: int = 1000
    # A month: training history, validation and holdout days, and a weekly cycle.
    days: int = 30
    # Last event day (inclusive); a fixed date, never today, so every run is reproducible.
    end_date: dt.date = dt.date(2026, 11, 27)
    # One seed drives everything; the same config writes byte-identical files.
    seed: int = 0
    # Emit `rating` events after some purchases; off gives a purely implicit log.
    ratings: bool = True
    # A quarter of the catalogue arrives during the window, so every night has new items.
    new_item_share: float = 0.25

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generate: {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.new_item_share < 1.0:
            raise ConfigError(
                f"generate: new_item_share must be in [0, 1), got {self.new_item_share}"
            )

    @property
    def start_date(self) -> dt.date:
        return self.end_date - dt.timedelta(days=self.days - 1)
