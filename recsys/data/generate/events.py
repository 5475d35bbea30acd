"""Exposures into timestamped events (view, click, cart, purchase, later ratings) and Arrow rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recsys import schema as S
from recsys.data.generate.catalogue import Catalogue
from recsys.data.generate.config import DAY_US, GenerateConfig

# --- ratings ---
RATING_SHARE = 0.3  # share of purchases rated later
RATING_DELAY_DAYS = (1, 8)  # ratings arrive 1..7 days after the purchase
RATING_MEAN = (2.6, 1.6, 0.8)  # stars ~ base + affinity + quality, before noise and rounding
RATING_NOISE = 0.6

# --- timing (seconds); caps keep 40 exposures under 22 hours ---
DWELL_S = (40.0, 2.0, 300.0)  # mean, min, max time before the next view
CLICK_DELAY_S = (2.0, 20.0)  # uniform range from view to click
CART_DELAY_S = (60.0, 5.0, 600.0)
BUY_DELAY_S = (180.0, 10.0, 900.0)
VISIT_START_BETA = (2.2, 1.5)  # visits start through the day, peaking in the evening


def exposure_events(
    exp: dict[str, np.ndarray],
    cat: Catalogue,
    cfg: GenerateConfig,
    start_us: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Timestamped events (user, item, type index, ts in µs, rating), sorted by ts.

    Each exposure is a view, then a click, cart and purchase a little later as far as its
    stage goes; the next view follows after a dwell. Visits are placed in the day so that
    they end before midnight. Ratings land 1-7 days after a purchase, inside the window.
    """
    order = np.lexsort((exp["step"], exp["user"], exp["day"]))
    user, item, day, stage, affinity = (
        exp[k][order] for k in ("user", "item", "day", "stage", "affinity")
    )
    n = len(user)

    dwell = np.clip(rng.exponential(DWELL_S[0], n), *DWELL_S[1:])
    click_s = rng.uniform(*CLICK_DELAY_S, n)
    cart_s = np.clip(rng.exponential(CART_DELAY_S[0], n), *CART_DELAY_S[1:])
    buy_s = np.clip(rng.exponential(BUY_DELAY_S[0], n), *BUY_DELAY_S[1:])
    spent = (stage >= 1) * click_s + (stage >= 2) * cart_s + (stage >= 3) * buy_s + dwell

    # Offsets of each exposure within its visit (a visit is one user's day).
    first = np.ones(n, dtype=bool)
    first[1:] = (user[1:] != user[:-1]) | (day[1:] != day[:-1])
    visit = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    before = np.cumsum(spent) - spent
    offset = before - before[starts][visit]
    total = np.add.reduceat(spent, starts) if n else np.zeros(0)
    visit_start = rng.beta(*VISIT_START_BETA, size=len(starts)) * (86_400 - total - 1)
    view_s = visit_start[visit] + offset

    base = start_us + day * DAY_US
    t_view = base + (view_s * 1e6).astype(np.int64)
    t_click = t_view + (click_s * 1e6).astype(np.int64)
    t_cart = t_click + (cart_s * 1e6).astype(np.int64)
    t_buy = t_cart + (buy_s * 1e6).astype(np.int64)

    # Ratings: drawn for every purchase so switching them off changes nothing else.
    rated = (stage == 3) & (rng.random(n) < RATING_SHARE)
    delay = rng.integers(*RATING_DELAY_DAYS, size=n) * DAY_US + rng.integers(0, DAY_US, size=n)
    t_rate = t_buy + delay
    mean = RATING_MEAN[0] + RATING_MEAN[1] * affinity + RATING_MEAN[2] * cat.quality[item]
    stars = np.clip(np.round(2 * rng.normal(mean, RATING_NOISE)) / 2, 0.5, 5.0)
    rated &= cfg.ratings & (t_rate < start_us + cfg.days * DAY_US)

    masks = [np.ones(n, dtype=bool), stage >= 1, stage >= 2, stage >= 3, rated]
    times = [t_view, t_click, t_cart, t_buy, t_rate]
    ev = {
        "user": np.concatenate([user[m] for m in masks]),
        "item": np.concatenate([item[m] for m in masks]),
        "type": np.concatenate([np.full(m.sum(), k) for k, m in enumerate(masks)]),
        "ts": np.concatenate([t[m] for t, m in zip(times, masks)]),
        "rating": np.concatenate([np.full(m.sum(), np.nan) for m in masks[:-1]] + [stars[rated]]),
    }
    by_time = np.lexsort((ev["type"], ev["item"], ev["user"], ev["ts"]))
    return {k: v[by_time] for k, v in ev.items()}


def events_table(
    ev: dict[str, np.ndarray], lo: int, hi: int, user_ids: pa.Array, item_ids: pa.ChunkedArray
) -> pa.Table:
    """Rows lo:hi of the events as an EVENTS_SCHEMA table; ids are looked up by index."""
    types = pa.array(S.EVENT_TYPES, pa.string())
    rating = ev["rating"][lo:hi]
    return pa.Table.from_arrays(
        [
            user_ids.take(pa.array(ev["user"][lo:hi])),
            item_ids.take(pa.array(ev["item"][lo:hi])),
            types.take(pa.array(ev["type"][lo:hi])),
            pa.array(ev["ts"][lo:hi], S.EVENTS_SCHEMA.field(S.TS).type),
            pa.array(rating, pa.float64(), mask=np.isnan(rating)),
        ],
        schema=S.EVENTS_SCHEMA,
    )
