"""Your own event log: CSV, Parquet or JSON Lines files with your column names.

    recsys import --format events --path logs/ --items catalogue.csv \\
        --map user=visitor_id,item=sku,ts=event_time,event=type --events pv=view,buy=purchase \\
        --text title,brand

- `path`: one file, or a folder whose `.csv`, `.parquet`, `.jsonl` and `.ndjson` files are
  read in name order (the format follows the extension).
- `columns` (`--map`): field -> column. `user`, `item`, `ts` are required, `event`,
  `rating`, `price` optional; a field not mapped is read from the column of its own name.
  A required column, or an optional one named in the map, that a file lacks stops the
  import (InputError naming the file and the column).
- `events` (`--events`): raw value -> behaviour (recsys.schema.EVENT_TYPES); the behaviour
  names themselves map to themselves. Without an event column a row is a `rating` when it
  has a rating, else a `view` (the base behaviour).
- `ts`: epoch seconds or milliseconds, told apart per value by magnitude (below 1e11 is
  seconds, up to the year 5138; from 1e11 to 1e14 milliseconds, from 1973), or ISO 8601
  text with a zone (`Z`, `+02:00`), converted to UTC. ISO text without a zone is a bad row:
  its instant is unknown. Parquet timestamps must carry a zone too.
- `price`: the catalogue price of an item is the latest one in the log.
- `items` (`--items`): a catalogue file keyed by the same column as the log's items;
  `text` (`--text`, default `title`) names its columns joined into the item's title. An
  item without any text gets the placeholder title (no text, no encoder pass).

Bad rows (empty id, unreadable or zone-less ts, unmapped event, rating outside 0..10 or a
rating event without one, negative price, a CSV line with the wrong number of fields, a
line that is not JSON) go to the quarantine with their line: the file's line for CSV and
JSON Lines (a quoted field spanning lines shifts it), the row number for Parquet.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from recsys import schema as S
from recsys.errors import ConfigError, InputError
from recsys.importers import parse
from recsys.importers.quarantine import BadRow, Quarantine
from recsys.importers.writer import Dataset, events_table, items_table

FIELDS = ("user", "item", "ts", "event", "rating", "price")
REQUIRED = ("user", "item", "ts")
KINDS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".ndjson": "json"}
MS_FROM, MS_UNTIL = 1e11, 1e14
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
UNIX = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def parse_pairs(text: str | None, flag: str) -> dict[str, str]:
    """`a=b,c=d` -> {a: b, c: d}."""
    out = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{flag} {text!r}: expected name=value pairs separated by commas")
        out[key.strip()] = value.strip()
    return out


def load(path: Path, bad: Quarantine, *, items=None, columns=None, events=None, text=None) -> Dataset:
    given = dict(columns or {})
    columns = _columns(given)
    mapping = _event_map(events or {})
    files = _files(Path(path))
    parts = [_events(f, columns, set(given), mapping, bad) for f in files]
    log = pa.concat_tables([p for p, _ in parts])
    prices = {k: v for _, p in parts for k, v in p.items()}
    catalogue = _catalogue(Path(items), columns["item"], text or ["title"], bad) if items else {}
    ids = list(catalogue) + sorted(set(prices) - set(catalogue))
    titles = [catalogue.get(i) or S.PLACEHOLDER_TITLE.format(i) for i in ids]
    table = items_table(ids, titles, prices=[prices.get(i) for i in ids])
    notes = {"source": str(path), "files": [f.name for f in files]}
    if items:
        notes["items_without_text"] = sum(not catalogue.get(i) for i in ids)
    return Dataset(log, table, notes)


def _columns(given: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ConfigError(f"--map: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(FIELDS)}")
    return {f: given.get(f, f) for f in FIELDS}


def _event_map(given: dict[str, str]) -> dict[str, str]:
    wrong = {k: v for k, v in given.items() if v not in S.EVENT_TYPES}
    if wrong:
        raise ConfigError(f"--events: {wrong} maps onto no behaviour; expected one of {', '.join(S.EVENT_TYPES)}")
    return {t: t for t in S.EVENT_TYPES} | given


def _files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in KINDS:
            raise InputError(f"{path}: not a .csv, .parquet, .jsonl or .ndjson file")
        return [path]
    parse.require_dir(path, "an event log file or a folder of them")
    found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in KINDS)
    if not found:
        raise InputError(f"{path}: no .csv, .parquet, .jsonl or .ndjson file")
    return found


# --- reading one file ------------------------------------------------------------------------

Where = Callable[[list[int]], list[tuple[int, str]]]


def read_any(
    path: Path, need: list[str], want: list[str], bad: Quarantine, text: list[str] = ()
) -> tuple[pa.Table, Where]:
    """The columns `need` (InputError naming the first one absent) and those of `want` present,
    plus a function from row indices to (line, raw text). CSV columns in `text` stay text
    (an id `007` is not the number 7)."""
    kind = KINDS[path.suffix.lower()]
    try:
        if kind == "parquet":
            table = pq.read_table(path)
        elif kind == "json":
            table = pajson.read_json(path)
        else:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(encoding=parse.encoding_of(path, "utf-8")),
                convert_options=pacsv.ConvertOptions(
                    strings_can_be_null=True, column_types={c: pa.string() for c in text}
                ),
            )
        where = _where(path, kind, table)
        bad.count(path, table.num_rows)
    except pa.ArrowInvalid as err:
        if kind == "parquet":
            raise InputError(f"{path}: not a Parquet file ({str(err).splitlines()[0][:200]})") from None
        table, where = _read_lines(path, kind, bad)
    for name in need:
        if name not in table.column_names:
            found = ", ".join(table.column_names) or "none"
            raise InputError(f"{path}: no column {name!r} (columns: {found})")
    return table.select([c for c in dict.fromkeys(need + want) if c in table.column_names]), where


def _where(path: Path, kind: str, table: pa.Table) -> Where:
    if kind == "parquet":
        return lambda idx: [(i + 1, json.dumps(table.slice(i, 1).to_pylist()[0], default=str)) for i in idx]

    def lookup(idx: list[int]) -> list[tuple[int, str]]:
        # Readers skip blank lines, so row k is the k-th non-blank line after any header.
        lines = list(parse.lines(path, skip_header=kind == "csv"))
        return [lines[i] for i in idx]

    return lookup


def _read_lines(path: Path, kind: str, bad: Quarantine) -> tuple[pa.Table, Where]:
    """Line by line, when the fast reader rejects the file; bad lines go to `bad`."""
    rows, where = [], []
    if kind == "json":
        for no, line in bad.lines(path):
            try:
                value = json.loads(line)
                if not isinstance(value, dict):
                    raise ValueError("not an object")
            except ValueError as err:
                bad.add(path, no, BadRow("bad_json", f"not a JSON object ({str(err)[:80]})"), line)
                continue
            rows.append({k: None if v is None else str(v) for k, v in value.items()})
            where.append((no, line))
    else:
        with open(path, encoding=parse.encoding_of(path, "utf-8"), newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for fields in reader:
                if not fields:
                    continue
                bad.count(path)
                raw = ",".join(fields)
                if len(fields) != len(header):
                    why = f"{len(fields)} fields where the header has {len(header)}"
                    bad.add(path, reader.line_num, BadRow("field_count", why), raw)
                    continue
                rows.append({h: v if v.strip() else None for h, v in zip(header, fields)})
                where.append((reader.line_num, raw))
    names = list(dict.fromkeys(k for r in rows for k in r))
    if kind == "csv":
        names = header
    table = pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names})
    return table, lambda idx: [where[i] for i in idx]


# --- one event file --------------------------------------------------------------------------


def _events(
    path: Path, columns: dict[str, str], given: set[str], mapping: dict[str, str], bad: Quarantine
) -> tuple[pa.Table, dict]:
    """(clean events, {item: latest price}) of one file; its bad rows go to `bad`."""
    need = [columns[f] for f in FIELDS if f in REQUIRED or f in given]
    ids = [columns[f] for f in ("user", "item", "event")]
    table, where = read_any(path, need, [columns[f] for f in ("event", "rating", "price")], bad, ids)
    n = table.num_rows
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)

    def flag(mask: np.ndarray, code: str, say: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask & np.equal(reason, None)):
            reason[i], detail[i] = code, say(i)

    users, items = (_ids(table.column(columns[f])) for f in ("user", "item"))
    flag(users == "", "empty_field", lambda i: f"empty user ({columns['user']})")
    flag(items == "", "empty_field", lambda i: f"empty item ({columns['item']})")
    ts, ts_bad = _timestamps(path, table.column(columns["ts"]), columns["ts"])
    for code, (mask, say) in ts_bad.items():
        flag(mask, code, say)
    rating = _numbers(table, columns["rating"], "rating", flag)
    lo, hi = S.RATING_RANGE
    outside = ~np.isnan(rating) & ((rating < lo) | (rating > hi))
    flag(outside, "bad_rating", lambda i: f"rating {rating[i]} outside {lo:g}..{hi:g}")
    if columns["event"] in table.column_names:
        raw_type = _ids(table.column(columns["event"]))
        types = np.array([mapping.get(t) for t in raw_type], dtype=object)
        known = ", ".join(sorted(mapping))
        unmapped = np.equal(types, None)
        flag(unmapped, "unmapped_event", lambda i: f"event {raw_type[i]!r} is not mapped (known: {known})")
    else:
        types = np.where(np.isnan(rating), "view", "rating").astype(object)
    flag((types == "rating") & np.isnan(rating), "bad_rating", lambda i: "a rating event without a rating")
    price = _numbers(table, columns["price"], "price", flag)
    flag(price < 0, "bad_price", lambda i: f"price {price[i]} is negative")

    ok = np.equal(reason, None)
    bad_idx = np.flatnonzero(~ok).tolist()
    for i, (line, raw) in zip(bad_idx, where(bad_idx)):
        bad.add(path, line, BadRow(reason[i], detail[i]), raw)
    events = events_table(users[ok], items[ok], types[ok].tolist(), ts[ok], rating[ok])
    # A stable order by time, so the last price of an item in the file wins among equal times.
    order = np.argsort(ts[ok], kind="stable")
    priced = ~np.isnan(price[ok][order])
    prices = dict(zip(items[ok][order][priced].tolist(), price[ok][order][priced].tolist()))
    return events, prices


def _ids(col: pa.ChunkedArray) -> np.ndarray:
    """Stripped text of every value; "" for null."""
    text = pc.utf8_trim_whitespace(pc.fill_null(col.cast(pa.string()), ""))
    return text.to_numpy(zero_copy_only=False).astype(object)


def _numbers(table: pa.Table, name: str, what: str, flag) -> np.ndarray:
    """float64 values, NaN where missing; unreadable or non-finite values are flagged."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(name)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        x = pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()
        flag(np.isinf(x) | (np.isnan(x) & ~pc.is_null(col, nan_is_null=False).to_numpy(zero_copy_only=False)),
             f"bad_{what}", lambda i: f"{what} {x[i]} is not a finite number")  # fmt: skip
        return x
    raw = _ids(col)
    x = np.array([float(v) if NUMBER.match(v) else np.nan for v in raw])
    flag((raw != "") & ~np.isfinite(x), f"bad_{what}", lambda i: f"{what} {raw[i][:40]!r} is not a number")
    return np.where(np.isfinite(x), x, np.nan)


def _timestamps(path: Path, col: pa.ChunkedArray, name: str) -> tuple[np.ndarray, dict]:
    """(µs since the epoch, {reason: (mask, message for row i)}) of a ts column."""
    n = len(col)
    t = col.type
    missing = pc.is_null(col).to_numpy(zero_copy_only=False)
    bad = {"empty_field": (missing, lambda i: f"empty ts ({name})")}
    if pa.types.is_timestamp(t):
        if t.tz is None:
            bad["timestamp_without_zone"] = (~missing, lambda i: f"{name} is a Parquet timestamp without a zone")
            return np.zeros(n, np.int64), bad
        us = pc.fill_null(col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()), 0)
        return us.to_numpy(), bad
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        x = pc.fill_null(col.cast(pa.float64()), 0.0).to_numpy()
        us, out = _epoch(x)
        bad["bad_timestamp"] = (out & ~missing, lambda i: f"ts {x[i]:g} is not epoch seconds or milliseconds")
        return us, bad
    if not pa.types.is_string(t) and not pa.types.is_large_string(t):
        raise InputError(f"{path}: column {name!r} is {t}; expected epoch seconds, milliseconds or ISO 8601 text")
    raw = _ids(col)
    us, code = np.zeros(n, np.int64), np.full(n, None, dtype=object)
    for i, v in enumerate(raw):
        if v:
            us[i], code[i] = _one_ts(v)
    unreadable = code == "bad_timestamp"
    bad["bad_timestamp"] = (unreadable, lambda i: f"ts {raw[i][:40]!r} is not epoch seconds, milliseconds or ISO 8601")
    bad["timestamp_without_zone"] = (code == "timestamp_without_zone", lambda i: f"ts {raw[i][:40]!r} has no time zone")
    return us, bad


def _epoch(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(µs, out of range) of epoch seconds or milliseconds, told apart by magnitude."""
    scale = np.where(x < MS_FROM, 1e6, 1e3)
    out = ~np.isfinite(x) | (x < 0) | (x >= MS_UNTIL)
    return np.where(out, 0, np.round(np.where(out, 0, x) * scale)).astype(np.int64), out


def _one_ts(v: str) -> tuple[int, str | None]:
    if NUMBER.match(v):
        us, out = _epoch(np.array([float(v)]))
        return int(us[0]), "bad_timestamp" if out[0] else None
    try:
        when = dt.datetime.fromisoformat(v)
    except ValueError:
        return 0, "bad_timestamp"
    if when.tzinfo is None:
        return 0, "timestamp_without_zone"
    return (when - UNIX) // dt.timedelta(microseconds=1), None


# --- the catalogue ---------------------------------------------------------------------------


def _catalogue(path: Path, key: str, text: list[str], bad: Quarantine) -> dict[str, str]:
    """item -> its text columns joined (empty when it has none); first row per item wins."""
    if not path.is_file():
        raise InputError(f"{path}: no such catalogue file (expected --items with a column {key!r})")
    table, where = read_any(path, [key, *text], [], bad, [key, *text])
    ids = _ids(table.column(key))
    parts = [_ids(table.column(c)) for c in text]
    blank = np.flatnonzero(ids == "").tolist()
    for i, (line, raw) in zip(blank, where(blank)):
        bad.add(path, line, BadRow("empty_field", f"empty item ({key})"), raw)
    out: dict[str, str] = {}
    for k, item in enumerate(ids):
        if item and item not in out:
            out[item] = ". ".join(p[k] for p in parts if p[k])
    return out
