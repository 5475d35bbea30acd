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

One `numpy.random.Generator` made from `cfg.seed` is passed down, so the same config writes
byte-identical Parquet files. Usage:

    from recsys.data.generate import GenerateConfig, generate
    generate(Path("var/lake"), GenerateConfig(seed=1))
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from recsys import schema as S
from recsys.data.vocab import GENERIC_SENTENCES, TOPICS
from recsys.errors import ConfigError
from recsys.lake import Lake, write_partition

DAY_US = 86_400 * 1_000_000
EPOCH = dt.date(1970, 1, 1)

# --- catalogue ---
ZIPF_EXPONENT = 0.9  # item popularity ~ rank^-0.9: a long tail, as in retail logs
UNAVAILABLE_SHARE = 0.03  # delisted or out of stock items, flagged available=False
OLDEST_ITEM_DAYS = 730  # items from before the window were listed up to two years earlier
N_LINKS = 3  # "next" items per item
# How each link is chosen: the next noun of the same topic (tent -> sleeping bag), any item
# of the same topic, or an item of the paired topic (tent -> travel backpack).
LINK_KIND_P = np.array([0.55, 0.2, 0.25])
LINK_SLOT_P = np.array([0.5, 0.3, 0.2])  # the first link is followed most often
LINK_POP_POWER = 0.5  # links favour popular items, but less than the home page does

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
ITEM_QUALITY_STD = 0.5

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

EXPOSURE_FIELDS = ("user", "item", "day", "step", "stage", "affinity")
N_NOUNS = np.array([len(t.nouns) for t in TOPICS])


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

    user_ids = pa.array(_ids("u", cfg.n_users, 6), pa.string())
    n_events = 0
    for day_idx in range(cfg.days):
        day = cfg.start_date + dt.timedelta(days=day_idx)
        lo, hi = np.searchsorted(events["ts"], start_us + DAY_US * np.array([day_idx, day_idx + 1]))
        n_events += hi - lo
        table = _events_table(events, lo, hi, user_ids, cat.table.column(S.ITEM_ID))
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


# ------------------------------------------------------------------ sampling helper


class GroupSampler:
    """Draws items within groups (a topic, a topic's noun) in proportion to weights, vectorised.

    Items of zero weight (not yet created) are never drawn; a group with no weight gives -1.
    """

    def __init__(self, group: np.ndarray, weight: np.ndarray, n_groups: int):
        self._order = np.argsort(group, kind="stable")
        w = weight[self._order]
        self._cum = np.cumsum(w)
        # Float rounding can land a draw on a zero-weight neighbour: step back to a real one.
        idx = np.arange(len(w))
        self._last_positive = np.maximum.accumulate(np.where(w > 0, idx, -1))
        counts = np.bincount(group, minlength=n_groups)
        self._hi = np.cumsum(counts)
        self._lo = self._hi - counts
        cum0 = np.concatenate([[0.0], self._cum])
        self._base = cum0[self._lo]
        self._mass = cum0[self._hi] - self._base

    def draw(self, groups: np.ndarray, r: np.ndarray) -> np.ndarray:
        """One item per entry of `groups`, using uniforms `r` in [0, 1)."""
        target = self._base[groups] + r * self._mass[groups]
        pos = np.searchsorted(self._cum, target, side="right")
        pos = np.clip(pos, self._lo[groups], np.maximum(self._hi[groups] - 1, 0))
        pos = self._last_positive[np.minimum(pos, len(self._cum) - 1)]
        ok = (self._mass[groups] > 0) & (pos >= self._lo[groups])
        return np.where(ok, self._order[np.maximum(pos, 0)], -1)


# ------------------------------------------------------------------ catalogue


@dataclass(frozen=True)
class Catalogue:
    topic: np.ndarray  # (I,) topic index into TOPICS
    noun: np.ndarray  # (I,) noun index within the topic
    popularity: np.ndarray  # (I,) Zipf weight
    quality: np.ndarray  # (I,) latent appeal: more clicks, purchases and stars
    price_z: np.ndarray  # (I,) log price standardised within the topic: dear items sell less
    created_day: np.ndarray  # (I,) window day of created_at; negative before the window
    links: np.ndarray  # (I, N_LINKS) "next" items
    partition: np.ndarray  # (I,) window day whose items partition holds the row
    table: pa.Table  # rows in ITEMS_SCHEMA


def make_catalogue(cfg: GenerateConfig, start_us: int, rng: np.random.Generator) -> Catalogue:
    n, n_topics = cfg.n_items, len(TOPICS)
    created_us = _item_created_us(cfg, start_us, rng)
    created_day = (created_us - start_us) // DAY_US
    # Some categories are bigger than others.
    topic = rng.choice(n_topics, size=n, p=rng.dirichlet(np.full(n_topics, 5.0)))
    noun = (rng.random(n) * N_NOUNS[topic]).astype(np.int64)
    popularity = rng.permutation(np.arange(1, n + 1)) ** -ZIPF_EXPONENT
    quality = rng.normal(0.0, ITEM_QUALITY_STD, size=n)
    sigma = np.array([t.price_sigma for t in TOPICS])[topic]
    price_z = rng.normal(size=n)
    price = np.array([t.price_median for t in TOPICS])[topic] * np.exp(sigma * price_z)
    price = np.maximum(np.round(price), 1.0) - 0.01  # shelf prices end in .99
    available = rng.random(n) >= UNAVAILABLE_SHARE
    links = _item_links(topic, noun, popularity, rng)
    titles, descriptions, categories = _item_text(topic, noun, rng)

    ids = _ids("i", n, 5)
    table = pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(titles, pa.string()),
            pa.array(descriptions, pa.string()),
            pa.array(categories, pa.string()),
            pa.array(price, pa.float64()),
            pa.array(created_us, S.ITEMS_SCHEMA.field(S.CREATED_AT).type),
            pa.array(available, pa.bool_()),
        ],
        schema=S.ITEMS_SCHEMA,
    )
    return Catalogue(
        topic=topic,
        noun=noun,
        popularity=popularity,
        quality=quality,
        price_z=price_z,
        created_day=created_day,
        links=links,
        partition=np.maximum(created_day, 0),
        table=table,
    )


def _item_created_us(cfg: GenerateConfig, start_us: int, rng: np.random.Generator) -> np.ndarray:
    """created_at of every item, ascending, so item ids follow listing order.

    At least one item predates the window, so the first day has something to show.
    """
    n_new = min(round(cfg.new_item_share * cfg.n_items), cfg.n_items - 1)
    n_old = cfg.n_items - n_new
    old = start_us - rng.integers(1, OLDEST_ITEM_DAYS * DAY_US, size=n_old)
    # New items arrive after the first day (when the window has more than one day).
    new_day = rng.integers(min(1, cfg.days - 1), cfg.days, size=n_new)
    new = start_us + new_day * DAY_US + rng.integers(0, DAY_US, size=n_new)
    return np.sort(np.concatenate([old, new]))


def _item_links(
    topic: np.ndarray, noun: np.ndarray, popularity: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(I, N_LINKS) "next" items: the topic's next noun, the same topic, or the paired topic.

    Links are directed (a tent leads to a sleeping bag, not back), which co-occurrence
    counts cannot see but a sequence model can. They may point at items not created yet;
    those links are skipped until the item exists.
    """
    n, n_topics, n_nouns = len(topic), len(TOPICS), int(N_NOUNS.max())
    names = [t.name for t in TOPICS]
    paired = np.array([names.index(t.pair) for t in TOPICS])
    weight = popularity**LINK_POP_POWER
    by_noun = GroupSampler(topic * n_nouns + noun, weight, n_topics * n_nouns)
    by_topic = GroupSampler(topic, weight, n_topics)

    src = np.repeat(np.arange(n), N_LINKS)
    links = np.full(len(src), -1)
    todo = np.ones(len(src), dtype=bool)
    for _ in range(5):  # redraw links that point back at their own item
        idx = np.flatnonzero(todo)
        kind = rng.choice(3, size=len(idx), p=LINK_KIND_P)
        r = rng.random(len(idx))
        t, nn = topic[src[idx]], noun[src[idx]]
        drawn = np.where(
            kind == 0,
            by_noun.draw(t * n_nouns + (nn + 1) % N_NOUNS[t], r),
            by_topic.draw(np.where(kind == 2, paired[t], t), r),
        )
        drawn = np.where(drawn < 0, by_topic.draw(t, r), drawn)  # that noun has no items
        links[idx] = drawn
        todo = links == src
        if not todo.any():
            break
    return links.reshape(n, N_LINKS)


def _item_text(
    topic: np.ndarray, noun: np.ndarray, rng: np.random.Generator
) -> tuple[list[str], list[str], list[str]]:
    """Titles (brand adjective noun [, variant]), 1-2 sentence descriptions, categories."""
    n = len(topic)
    brand, adj, variant, p1, p2, generic = rng.random((6, n))
    has_variant, has_second, has_generic = rng.random((3, n)) < np.array([[0.4], [0.6], [0.3]])
    titles, descriptions, categories = [], [], []
    for i in range(n):
        t = TOPICS[topic[i]]
        noun_name, sub = t.nouns[noun[i]]
        adjective = _pick(t.adjectives, adj[i])
        title = f"{_pick(t.brands, brand[i])} {adjective} {noun_name}"
        if has_variant[i]:
            title += f", {_pick(t.variants, variant[i])}"
        first = int(p1[i] * len(t.phrases))
        # The second phrase is a different one of the same topic.
        second = t.phrases[(first + 1 + int(p2[i] * (len(t.phrases) - 1))) % len(t.phrases)]
        text = f"{adjective} {noun_name.lower()} - {t.phrases[first]}."
        if has_second[i]:
            text += f" {second[0].upper()}{second[1:]}."
        if has_generic[i]:
            text += f" {_pick(GENERIC_SENTENCES, generic[i])}"
        titles.append(title)
        descriptions.append(text)
        categories.append(f"{t.name} > {sub}")
    return titles, descriptions, categories


def _pick(options: tuple[str, ...], u: float) -> str:
    """The option a uniform draw u in [0, 1) falls on."""
    return options[int(u * len(options))]


# ------------------------------------------------------------------ users and behaviour


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


# ------------------------------------------------------------------ events and files


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


def _events_table(
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


def _ids(prefix: str, n: int, width: int) -> list[str]:
    """Zero-padded ids ("u000123", "i00042"), wider only when n needs it."""
    width = max(width, len(str(n - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]
