"""The synthetic catalogue: topics, popularity, quality, prices, listing dates, links and text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys import schema as S
from recsys.data.generate.config import DAY_US, GenerateConfig
from recsys.data.generate.sampling import GroupSampler
from recsys.data.vocab import GENERIC_SENTENCES, TOPICS

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

ITEM_QUALITY_STD = 0.5
N_NOUNS = np.array([len(t.nouns) for t in TOPICS])


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

    item_ids = ids("i", n, 5)
    table = pa.Table.from_arrays(
        [
            pa.array(item_ids, pa.string()),
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


def ids(prefix: str, n: int, width: int) -> list[str]:
    """Zero-padded ids ("u000123", "i00042"), wider only when n needs it."""
    width = max(width, len(str(n - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]
