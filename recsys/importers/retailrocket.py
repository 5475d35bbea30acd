"""RetailRocket e-commerce logs (Kaggle "Retailrocket recommender system dataset").

- `events.csv` (required): `timestamp,visitorid,event,itemid,transactionid`, timestamp in
  Unix milliseconds; event `view` -> view, `addtocart` -> cart, `transaction` -> purchase.
- `item_properties*.csv` (optional, the dataset ships part1 and part2):
  `timestamp,itemid,property,value`. Property values are hashed except `categoryid` and
  `available`; the latest value of each (by timestamp) is used: category = the category
  id, available = value "1" (items never flagged are available).
- `category_tree.csv` (optional): `categoryid,parentid`, used to spell out the category
  path in the description.

Titles are synthetic since the real ones are hashed: "item <id> category <cat>" ("item <id>"
without a category); the description is "category path: <root> > ... > <cat>".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.importers import parse
from recsys.importers.parse import SKIP, int_value, split_fields, text_value
from recsys.importers.writer import Dataset, events_table, items_table

EVENT_MAP = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
EVENT_COLUMNS = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
PROPERTY_COLUMNS = ["timestamp", "itemid", "property", "value"]
USED_PROPERTIES = ("categoryid", "available")


def load(path: Path) -> Dataset:
    path = Path(path)
    parse.require_dir(path, "a RetailRocket folder with events.csv")
    events_file = parse.require_file(path, "events.csv", "RetailRocket events: " + ",".join(EVENT_COLUMNS))
    events = _events(events_file)
    category, available = _properties(sorted(path.glob("item_properties*.csv")))
    parents = _tree(path / "category_tree.csv") if (path / "category_tree.csv").is_file() else {}

    ids = sorted(set(pc.unique(events.column("item_id")).to_pylist()) | set(category) | set(available))
    titles, descriptions, categories = [], [], []
    for item in ids:
        cat = category.get(item)
        categories.append(cat)
        titles.append(f"item {item} category {cat}" if cat else f"item {item}")
        descriptions.append("category path: " + " > ".join(_path(cat, parents)) if cat else None)
    items = items_table(ids, titles, descriptions, categories, [available.get(i, True) for i in ids])
    notes = {
        "source": str(path),
        "item_properties": [f.name for f in sorted(path.glob("item_properties*.csv"))],
        "items_with_category": sum(c is not None for c in categories),
    }
    return Dataset(events, items, notes)


def _event_line(line: str) -> None:
    ts, visitor, event, item, _ = split_fields(line, ",", 5, ",".join(EVENT_COLUMNS))
    int_value(ts, "timestamp")
    text_value(visitor, "visitorid")
    text_value(item, "itemid")
    if event.strip() not in EVENT_MAP:
        raise ValueError(f"event {event.strip()!r} is not one of {', '.join(EVENT_MAP)}")


def _events(path: Path) -> pa.Table:
    parse.check_header(path, EVENT_COLUMNS, ",")
    table = parse.read_delimited(
        path,
        [("ts", pa.int64()), ("user", pa.string()), ("event", pa.string()), ("item", pa.string()), (SKIP, pa.string())],
        _event_line,
    )
    event = table.column("event")
    if not pc.all(pc.is_in(event, pa.array(list(EVENT_MAP)))).as_py():
        parse.locate(path, _event_line, True, "utf-8", "unknown event type")
    mapped = pc.replace_substring_regex(event, "^addtocart$", "cart")
    mapped = pc.replace_substring_regex(mapped, "^transaction$", "purchase")
    return events_table(
        table.column("user"), table.column("item"), mapped, pc.multiply(table.column("ts"), 1000).to_numpy()
    )


def _property_line(line: str) -> None:
    ts, item, prop, value = split_fields(line, ",", 4, ",".join(PROPERTY_COLUMNS))
    int_value(ts, "timestamp")
    text_value(item, "itemid")
    if text_value(prop, "property") in USED_PROPERTIES:
        text_value(value, f"{prop.strip()} value")


def _properties(files: list[Path]) -> tuple[dict[str, str], dict[str, bool]]:
    """Latest categoryid and available per item over every properties file."""
    if not files:
        return {}, {}
    wanted = pa.array(USED_PROPERTIES)

    def keep(batch: pa.RecordBatch) -> pa.RecordBatch:
        return batch.filter(pc.is_in(batch.column(2), wanted))

    parts = []
    for f in files:
        parse.check_header(f, PROPERTY_COLUMNS, ",")
        # Hashed values hold spaces, never commas. Only rows of the used properties are
        # checked: a blank hashed value is not worth failing the import for.
        parts.append(
            parse.read_delimited(
                f,
                [("ts", pa.int64()), ("item", pa.string()), ("property", pa.string()), ("value", pa.string())],
                _property_line,
                keep=keep,
            )
        )
    props = pa.concat_tables(parts).sort_by([("property", "ascending"), ("item", "ascending"), ("ts", "ascending")])
    out: dict[str, dict] = {p: {} for p in USED_PROPERTIES}
    prop, item, value = (props.column(c).to_numpy(zero_copy_only=False) for c in ("property", "item", "value"))
    # The last row of each (property, item) run is the latest value.
    last = np.ones(len(item), dtype=bool)
    if len(item):
        last[:-1] = (prop[1:] != prop[:-1]) | (item[1:] != item[:-1])
    for p, i, v in zip(prop[last], item[last], value[last]):
        out[p][i] = v.strip()
    category = {i: v for i, v in out["categoryid"].items() if v}
    available = {i: v != "0" for i, v in out["available"].items()}
    return category, available


def _tree(path: Path) -> dict[str, str]:
    parse.check_header(path, ["categoryid", "parentid"], ",")
    parents = {}
    for no, line in parse.lines(path, skip_header=True):
        try:
            cat, parent = split_fields(line, ",", 2, "categoryid,parentid")
            parents[text_value(cat, "categoryid")] = parent.strip()
        except ValueError as err:
            raise parse.malformed(path, no, str(err)) from None
    return parents


def _path(cat: str, parents: dict[str, str]) -> list[str]:
    """Root-first category ids down to `cat` (cycles and unknown parents end the walk)."""
    chain = [cat]
    while parents.get(chain[-1]) and parents[chain[-1]] not in chain:
        chain.append(parents[chain[-1]])
    return chain[::-1]
