"""UniSRec / RecBole atomic files: interactions in `.inter`, item text in `.text`.

In the folder, for a dataset name N (found from the files):

- `N.train.inter`, `N.valid.inter`, `N.test.inter` (tab-separated, header
  `user_id:token  item_id_list:token_seq  item_id:token`): each line is a history (space-
  separated, oldest first, possibly cut to its last L items) and the next item. Each user's
  full sequence is rebuilt from its lines: start from the shortest history and repeatedly
  append the target of the line whose history is the sequence so far (or its last L items
  when histories were cut). Without cuts that is simply the test line's history + item.
  Or a single `N.inter` with `user_id:token`, `item_id:token` and optionally
  `timestamp:float` (Unix seconds), one interaction per line.
- `N.text` (required; header `item_id:token  text:token_seq`): the item's text, used as its
  title (items without one get the placeholder "item <id>": no text, no encoder pass).
- `N.item2index`, `N.user2index` (optional; `original_id<TAB>index`): when present, the
  index tokens of the `.inter` files are mapped back to the original ids (ASINs), which is
  also how `.text` is keyed.

Without timestamps (the split files) the timestamps are synthetic as for amazon-seq:
strictly increasing within a user, so the leave-one-out split reproduces valid and test.
Interactions are `purchase` events (reviews stand for purchases). Bad lines go to the
quarantine; so do all lines of a user whose sequence cannot be rebuilt from them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from recsys import schema as S
from recsys.errors import InputError
from recsys.importers import parse
from recsys.importers.amazon_seq import sequences_dataset
from recsys.importers.quarantine import BadRow, Quarantine
from recsys.importers.writer import Dataset, events_table, items_table

SPLITS = ("train", "valid", "test")


def find_name(path: Path) -> tuple[str, bool]:
    """(dataset name, True for train/valid/test files or False for one `.inter`)."""
    parse.require_dir(path, "a UniSRec folder with <name>.train/valid/test.inter and <name>.text")
    split_names = {f.name[: -len(".test.inter")] for f in path.glob("*.test.inter")}
    plain = {f.stem for f in path.glob("*.inter")} - {f"{n}.{s}" for n in split_names for s in SPLITS}
    names = sorted(split_names) or sorted(plain)
    if len(names) != 1:
        found = ", ".join(f.name for f in sorted(path.glob("*.inter"))) or "no .inter file"
        raise InputError(
            f"{path}: expected one dataset's <name>.train.inter, <name>.valid.inter, <name>.test.inter "
            f"(or one <name>.inter), found {found}"
        )
    return names[0], bool(split_names)


def _header(path: Path, required: tuple[str, ...]) -> dict[str, int]:
    """Column positions by field name (`user_id:token` -> `user_id`)."""
    fields = parse.check_header(path, [], "\t")
    names = {f.split(":", 1)[0]: k for k, f in enumerate(fields)}
    missing = [r for r in required if r not in names]
    if missing:
        raise parse.malformed(path, 1, f"header lacks {', '.join(missing)} (found {' '.join(fields)})")
    return names


def _index(path: Path, bad: Quarantine) -> dict[str, str]:
    """`original<TAB>index` lines -> {index token: original id}."""
    out = {}
    for no, line in bad.lines(path):
        try:
            original, idx = parse.split_fields(line, "\t", 2, "original id, index")
            out[parse.text_value(idx, "index")] = parse.text_value(original, "original id")
        except ValueError as err:
            bad.add(path, no, err, line)
    return out


def _fields(line: str, width: int) -> list[str]:
    fields = line.split("\t")
    if len(fields) < width:
        raise BadRow("field_count", f"{len(fields)} tab-separated fields where {width} were expected")
    return fields


def _read_split(path: Path, bad: Quarantine) -> list[tuple[str, tuple[str, ...], str, int, str]]:
    """(user, history, target, line number, line) of every good line."""
    cols = _header(path, ("user_id", "item_id_list", "item_id"))
    width = max(cols.values()) + 1
    rows = []
    for no, line in bad.lines(path, skip_header=True):
        try:
            fields = _fields(line, width)
            user, hist, target = (fields[cols[c]].strip() for c in ("user_id", "item_id_list", "item_id"))
            if not user or not target or not hist.split():
                raise BadRow("empty_field", "empty user_id, item_id_list or item_id")
        except ValueError as err:
            bad.add(path, no, err, line)
            continue
        rows.append((user, tuple(hist.split()), target, no, line))
    return rows


def rebuild(user: str, lines: list[tuple[tuple[str, ...], str, Path, int, str]]) -> list[str]:
    """A user's full sequence from its (history, target, file, line number, line) lines, in file order."""
    cap = max(len(h) for h, *_ in lines)
    waiting: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for k, (hist, *_rest) in enumerate(lines):
        waiting[hist].append(k)
    seq = list(min(lines, key=lambda line: len(line[0]))[0])
    for _ in range(len(lines)):
        nxt = waiting.get(tuple(seq[-cap:]))
        if not nxt:
            raise BadRow(
                "broken_sequence",
                f"cannot rebuild the sequence of user {user!r}: no line continues its first {len(seq)} items",
            )
        seq.append(lines[nxt.pop(0)][1])
    return seq


def load(path: Path, bad: Quarantine) -> Dataset:
    path = Path(path)
    name, split = find_name(path)
    text_file = parse.require_file(path, f"{name}.text", "item text: item_id:token<TAB>text:token_seq")
    items_of = _index(path / f"{name}.item2index", bad) if (path / f"{name}.item2index").is_file() else {}
    users_of = _index(path / f"{name}.user2index", bad) if (path / f"{name}.user2index").is_file() else {}

    if split:
        per_user: dict[str, list] = {}
        for s in SPLITS:
            file = parse.require_file(path, f"{name}.{s}.inter", f"the {s} split of {name}")
            for user, hist, target, no, line in _read_split(file, bad):
                per_user.setdefault(user, []).append((hist, target, file, no, line))
        users, seqs = [], []
        for u, lines in per_user.items():
            try:
                seq = rebuild(u, lines)
            except BadRow as err:
                for *_, file, no, line in lines:
                    bad.add(file, no, err, line)
                continue
            users.append(users_of.get(u, u))
            seqs.append([items_of.get(i, i) for i in seq])
        if not users:
            raise InputError(f"{path}: no user sequence could be rebuilt from the {name} split files")
        events = sequences_dataset(users, seqs, path).events
    else:
        events = _read_plain(path / f"{name}.inter", items_of, users_of, bad)

    texts = _texts(text_file, bad)
    ids = sorted(set(events.column("item_id").to_pylist()) | set(items_of.values()))
    titles = [texts.get(i) or S.PLACEHOLDER_TITLE.format(i) for i in ids]
    items = items_table(ids, titles)
    notes = {
        "source": str(path),
        "dataset": name,
        "timestamps": "synthetic" if split else "from the file",
        "items_without_text": sum(1 for i in ids if not texts.get(i)),
    }
    return Dataset(events, items, notes)


def _texts(path: Path, bad: Quarantine) -> dict[str, str]:
    cols = _header(path, ("item_id", "text"))
    out = {}
    for no, line in bad.lines(path, skip_header=True):
        fields = line.split("\t")
        # An item whose text is empty loses its trailing tab in some dumps: no text.
        if len(fields) == cols["text"] and cols["item_id"] < len(fields) and fields[cols["item_id"]].strip():
            continue
        try:
            item = parse.text_value(_fields(line, max(cols.values()) + 1)[cols["item_id"]], "item_id")
        except ValueError as err:
            bad.add(path, no, err, line)
            continue
        out[item] = " ".join(fields[cols["text"]].split())
    return out


def _read_plain(path: Path, items_of: dict[str, str], users_of: dict[str, str], bad: Quarantine):
    cols = _header(path, ("user_id", "item_id"))
    has_ts = "timestamp" in cols
    users, items, ts = [], [], []
    for no, line in bad.lines(path, skip_header=True):
        try:
            fields = _fields(line, max(cols.values()) + 1)
            user = users_of.get(u := parse.text_value(fields[cols["user_id"]], "user_id"), u)
            item = items_of.get(i := parse.text_value(fields[cols["item_id"]], "item_id"), i)
            t = parse.float_value(fields[cols["timestamp"]], "timestamp") if has_ts else None
        except ValueError as err:
            bad.add(path, no, err, line)
            continue
        users.append(user)
        items.append(item)
        ts.append(t)
    if not users:
        raise InputError(f"{path}: no interactions")
    if has_ts:
        return events_table(users, items, "purchase", (np.array(ts) * 1_000_000).astype(np.int64))
    # No timestamps: the file's order within each user, laid out like the sequence formats.
    per_user: dict[str, list[str]] = {}
    for user, item in zip(users, items):
        per_user.setdefault(user, []).append(item)
    return sequences_dataset(list(per_user), list(per_user.values()), path).events
