"""RetailRocket e-commerce logs (Kaggle "Retailrocket recommender system dataset").

- `events.csv` (required): `timestamp,visitorid,event,itemid,transactionid`, timestamp in
  Unix milliseconds; event `view` -> view, `addtocart` -> cart, `transaction` -> purchase.
- `item_properties*.csv` (optional, the dataset ships part1 and part2):
  `timestamp,itemid,property,value`. Property values are hashed except `categoryid` and
  `available`; the latest value of each (by timestamp) is used: category = the category
  id, available = value "1" (items never flagged are available).
- `category_tree.csv` (optional): `categoryid,parentid`, used to spell out the category
  path in the description.

The real names are hashed, so an item's only text is its category: title "category <root> >
... > <cat>" (the path from the tree), no description. It names no item id, so the items of a
category share one text and the encoder runs once per category, not once per item; items
without a category get the placeholder "item <id>" (no text). Bad lines (an unknown event
name, an empty id) go to the quarantine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.importers import parse
from recsys import schema as S
from recsys.importers.parse import SKIP, int_value, split_fields, text_value
from recsys.importers.quarantine import BadRow, Quarantine
from recsys.importers.writer import Dataset, events_table, items_table

EVENT_MAP = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
EVENT_COLUMNS = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
PROPERTY_COLUMNS = ["timestamp", "itemid", "property", "value"]
USED_PROPERTIES = ("categoryid", "available")


def load(path: Path, bad: Quarantine) -> Dataset:
    path = Path(path)
    parse.require_dir(path, "a RetailRocket folder with events.csv")
    events_file = parse.require_file(path, "events.csv", "RetailRocket events: " + ",".join(EVENT_COLUMNS))
    events = _events(events_file, bad)
    category, available = _properties(sorted(path.glob("item_properties*.csv")), bad)
    parents = _tree(path / "category_tree.csv", bad) if (path / "category_tree.csv").is_file() else {}

    ids = sorted(set(pc.unique(events.column(S.ITEM_ID)).to_pylist()) | set(category) | set(available))
    categories = [category.get(i) for i in ids]
    titles = [
        "category " + " > ".join(_path(cat, parents)) if cat else S.PLACEHOLDER_TITLE.format(i)
        for i, cat in zip(ids, categories)
    ]
    items = items_table(ids, titles, None, categories, [available.get(i, True) for i in ids])
    notes = {
        "source": str(path),
        "item_properties": [f.name for f in sorted(path.glob("item_properties*.csv"))],
        "items_with_category": sum(c is not None for c in categories),
    }
    return Dataset(events, items, notes)


def _event_line(line: str) -> tuple[int, str, str, str]:
    ts, visitor, event, item, _ = split_fields(line, ",", 5, ",".join(EVENT_COLUMNS))
    row = int_value(ts, "timestamp"), text_value(visitor, "visitorid"), event.strip(), text_value(item, "itemid")
    if row[2] not in EVENT_MAP:
        raise BadRow("unknown_event", f"event {row[2]!r} is not one of {', '.join(EVENT_MAP)}")
    return row


def _known_events(batch: pa.RecordBatch) -> bool:
    return pc.all(pc.is_in(batch.column("event"), pa.array(list(EVENT_MAP)))).as_py()


def _events(path: Path, bad: Quarantine) -> pa.Table:
    parse.check_header(path, EVENT_COLUMNS, ",")
    table = parse.read_delimited(
        path,
        [("ts", pa.int64()), ("user", pa.string()), ("event", pa.string()), ("item", pa.string()), (SKIP, pa.string())],
        _event_line,
        bad,
        accept=_known_events,
    )
    event = table.column("event")
    mapped = pc.replace_substring_regex(event, "^addtocart$", "cart")
    mapped = pc.replace_substring_regex(mapped, "^transaction$", "purchase")
    return events_table(
        table.column("user"), table.column("item"), mapped, pc.multiply(table.column("ts"), 1000).to_numpy()
    )


def _property_line(line: str) -> tuple[int, str, str, str]:
    ts, item, prop, value = split_fields(line, ",", 4, ",".join(PROPERTY_COLUMNS))
    prop = text_value(prop, "property")
    if prop in USED_PROPERTIES:
        text_value(value, f"{prop} value")
    return int_value(ts, "timestamp"), text_value(item, "itemid"), prop, value


def _properties(files: list[Path], bad: Quarantine) -> tuple[dict[str, str], dict[str, bool]]:
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
                bad,
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


def _tree(path: Path, bad: Quarantine) -> dict[str, str]:
    parse.check_header(path, ["categoryid", "parentid"], ",")
    parents = {}
    for no, line in bad.lines(path, skip_header=True):
        try:
            cat, parent = split_fields(line, ",", 2, "categoryid,parentid")
            parents[text_value(cat, "categoryid")] = parent.strip()
        except ValueError as err:
            bad.add(path, no, err, line)
    return parents


def _path(cat: str, parents: dict[str, str]) -> list[str]:
    """Root-first category ids down to `cat` (cycles and unknown parents end the walk)."""
    chain = [cat]
    while parents.get(chain[-1]) and parents[chain[-1]] not in chain:
        chain.append(parents[chain[-1]])
    return chain[::-1]
