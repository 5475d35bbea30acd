"""Shoppers and what they do: drifting tastes, visits, the next exposure, and the funnel."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from recsys.data.generate.catalogue import LINK_SLOT_P, N_LINKS, Catalogue
from recsys.data.generate.config import GenerateConfig
from recsys.data.generate.sampling import GroupSampler
from recsys.data.vocab import TOPICS

# --- users ---
TASTE_CONCENTRATION = 0.3  # Dirichlet alpha: most users care about two or three topics
TASTE_DRIFT = 0.08  # daily std of the random walk on log-taste: noticeable over a month
NEW_USER_SHARE = 0.15  # users who sign up during the window (cold-start users)
ACTIVITY_BETA = (1.3, 3.5)  # daily visit probability per user: mean ~0.27, a few heavy users
SESSION_MEAN_LOGNORMAL = (1.8, 0.5)  # mean exposures per visit: median ~6, some browse long
MAX_SESSION = 40  # caps a visit so its events always fit inside one day
WEEKDAY_ACTIVITY = np.array([1.0, 0.95, 0.95, 1.0, 1.05, 1.2, 1.15])  # Mon..Sun

# --- what the next exposure is ---
# Probability of following the previous item's links, by how far its funnel went
# (view, click, cart, purchase): engagement says the user is on a shopping journey.
FOLLOW_P = np.array([0.35, 0.5, 0.55, 0.65])
RETURN_FOLLOW_DAMP = 0.5  # a new visit picks up the last journey less often
TASTE_SHARE = 0.85  # otherwise: a popular item of a topic the user likes, else the home page
NEW_ITEM_BOOST = 3.0  # extra exposure weight of a brand-new item (new arrivals shelf) ...
NEW_ITEM_BOOST_DAYS = 3.0  # ... decaying with this time constant in days

# --- funnel: logit = bias + affinity weight * affinity + quality weight * quality - price ---
# Biases set overall rates near retail norms: click ~25% of views, cart ~15% of clicks,
# purchase ~40% of carts; affinity is the user's taste for the item's topic relative to
# their favourite topic (0..1).
CLICK_LOGIT = (-2.4, 2.0, 1.0, 0.0)
CART_LOGIT = (-3.2, 1.6, 0.5, 0.3)
BUY_LOGIT = (-1.6, 1.2, 0.5, 0.4)

EXPOSURE_FIELDS = ("user", "item", "day", "step", "stage", "affinity")


@dataclass(frozen=True)
class Users:
    log_taste: np.ndarray  # (U, T) drifts daily; softmax gives the topic mixture
    activity: np.ndarray  # (U,) probability of a visit on an ordinary day
    session_mean: np.ndarray  # (U,) mean exposures per visit
    join_day: np.ndarray  # (U,) first window day the user can visit


def make_users(cfg: GenerateConfig, rng: np.random.Generator) -> Users:
    n = cfg.n_users
    taste = rng.dirichlet(np.full(len(TOPICS), TASTE_CONCENTRATION), size=n)
    # The floor lets drift wake up a topic the user never cared about.
    log_taste = np.log(np.maximum(taste, 1e-3))
    joins_later = rng.random(n) < NEW_USER_SHARE
    join_day = np.where(joins_later, rng.integers(0, cfg.days, size=n), 0)
    return Users(
        log_taste=log_taste,
        activity=rng.beta(*ACTIVITY_BETA, size=n),
        session_mean=rng.lognormal(*SESSION_MEAN_LOGNORMAL, size=n),
        join_day=join_day,
    )


def simulate_exposures(
    cat: Catalogue, users: Users, cfg: GenerateConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Every visit's item exposures and how far each went down the funnel.

    All visitors of a day advance in lockstep, one exposure per step, so the work is a
    few numpy calls per step rather than per user. Returns parallel arrays
    user, item, day, step, stage (0 view, 1 click, 2 cart, 3 purchase), affinity.
    """
    n_topics = len(TOPICS)
    log_taste = users.log_taste.copy()
    last_item = np.full(cfg.n_users, -1)  # the journey a user's next visit may resume
    last_stage = np.zeros(cfg.n_users, dtype=np.int64)
    out: dict[str, list[np.ndarray]] = {k: [] for k in EXPOSURE_FIELDS}

    for day in range(cfg.days):
        log_taste += rng.normal(0.0, TASTE_DRIFT, size=log_taste.shape)
        taste = np.exp(log_taste - log_taste.max(axis=1, keepdims=True))
        taste /= taste.sum(axis=1, keepdims=True)

        weight = _exposure_weight(cat, day)
        by_topic = GroupSampler(cat.topic, weight, n_topics)
        anywhere = GroupSampler(np.zeros_like(cat.topic), weight, 1)
        live = weight > 0

        weekday = (cfg.start_date + dt.timedelta(days=day)).weekday()
        visit_p = users.activity * WEEKDAY_ACTIVITY[weekday]
        visitors = np.flatnonzero((users.join_day <= day) & (rng.random(cfg.n_users) < visit_p))
        extra = rng.poisson(np.maximum(users.session_mean[visitors] - 1, 0))
        length = np.minimum(1 + extra, MAX_SESSION)
        follow_p = FOLLOW_P[last_stage[visitors]] * RETURN_FOLLOW_DAMP

        for step in range(int(length.max(initial=0))):
            in_visit = length > step
            u = visitors[in_visit]
            item = _next_items(
                last_item[u], follow_p[in_visit], taste[u], cat, live, by_topic, anywhere, rng
            )
            affinity = taste[u, cat.topic[item]] / taste[u].max(axis=1)
            stage = _funnel(affinity, cat, item, rng)
            columns = (u, item, np.full(len(u), day), np.full(len(u), step), stage, affinity)
            for key, value in zip(EXPOSURE_FIELDS, columns):
                out[key].append(value)
            last_item[u], last_stage[u] = item, stage
            follow_p[in_visit] = FOLLOW_P[stage]
    return {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in out.items()}


def _exposure_weight(cat: Catalogue, day: int) -> np.ndarray:
    """(I,) how often each item is shown today: popularity, boosted while new; 0 if unlisted.

    An item is shown from the day after its created_at, as a nightly catalogue feed would.
    """
    age = day - cat.created_day
    boost = 1 + NEW_ITEM_BOOST * np.exp(-np.maximum(age, 0) / NEW_ITEM_BOOST_DAYS)
    return np.where(age > 0, cat.popularity * boost, 0.0)


def _next_items(
    prev: np.ndarray,
    follow_p: np.ndarray,
    taste: np.ndarray,
    cat: Catalogue,
    live: np.ndarray,
    by_topic: GroupSampler,
    anywhere: GroupSampler,
    rng: np.random.Generator,
) -> np.ndarray:
    """Next item per user: a link of the previous item, else taste, else the home page."""
    n = len(prev)
    r_follow, r_slot, r_taste, r_topic, r_item = rng.random((5, n))
    slot = np.minimum(np.searchsorted(np.cumsum(LINK_SLOT_P), r_slot, side="right"), N_LINKS - 1)
    linked = cat.links[np.maximum(prev, 0), slot]
    follows = (prev >= 0) & (r_follow < follow_p) & live[linked]
    item = np.where(follows, linked, -1)

    # Pick a topic from the user's mixture, then an item of it by popularity.
    by_taste = (item < 0) & (r_taste < TASTE_SHARE)
    topic = np.minimum((taste.cumsum(axis=1) < r_topic[:, None]).sum(axis=1), len(TOPICS) - 1)
    item = np.where(by_taste, by_topic.draw(topic, r_item), item)

    # The home page: global popularity (also when the topic has nothing listed yet).
    rest = item < 0
    item[rest] = anywhere.draw(np.zeros(rest.sum(), dtype=np.int64), r_item[rest])
    return item


def _funnel(
    affinity: np.ndarray, cat: Catalogue, item: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Stage reached per exposure: 0 view, 1 click, 2 cart, 3 purchase (each implies the last)."""

    def p(coef: tuple[float, float, float, float]) -> np.ndarray:
        bias, w_aff, w_quality, w_price = coef
        logit = (
            bias + w_aff * affinity + w_quality * cat.quality[item] - w_price * cat.price_z[item]
        )
        return 1.0 / (1.0 + np.exp(-logit))

    r_click, r_cart, r_buy = rng.random((3, len(item)))
    click = r_click < p(CLICK_LOGIT)
    cart = click & (r_cart < p(CART_LOGIT))
    buy = cart & (r_buy < p(BUY_LOGIT))
    return click.astype(np.int64) + cart + buy
