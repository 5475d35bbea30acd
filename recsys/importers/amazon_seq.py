"""Amazon 5-core sequences in the S3-Rec preprocessing: one line per user,
`user item item ...`, space-separated, items already in time order.

The file has no timestamps and no item text. Timestamps are synthetic (see
writer.sequence_timestamps): strictly increasing within a user, so ordering by ts gives
back the file's order exactly and the leave-one-out split holds out the last item of each
line (test) and the one before it (valid). Interactions are `purchase` events (a 5-core
review stands for a purchase). Items get the placeholder title "item <id>"
(recsys.schema.PLACEHOLDER_TITLE), no category and no description: they have no text, so
the encoder gives them no vector and text-based models learn nothing from this format.
A line without items, or a second line for a user, goes to the quarantine.

`path` is the data file, or a folder holding exactly one `.txt` data file (license and
readme files are ignored).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys import schema as S
from recsys.errors import InputError
from recsys.importers import parse
from recsys.importers.quarantine import BadRow, Quarantine
from recsys.importers.writer import Dataset, events_table, items_table, sequence_timestamps

NOT_DATA = ("license", "readme", "notice", "copying")


def find_file(path: Path) -> Path:
    if path.is_file():
        return path
    parse.require_dir(path, "an Amazon sequence file or a folder with one")
    found = sorted(
        f for f in path.glob("*.txt") if not f.stem.lower().startswith(NOT_DATA) and "license" not in f.name.lower()
    )
    if len(found) != 1:
        listed = ", ".join(f.name for f in found) or "none"
        raise InputError(
            f"{path}: expected exactly one .txt sequence file (lines `user item item ...`), found {listed}; "
            "pass the file itself as --path"
        )
    return found[0]


def read_sequences(path: Path, bad: Quarantine) -> tuple[list[str], list[list[str]]]:
    """(users, item sequences) in file order; a line without items or a repeated user is quarantined."""
    users, seqs, where = [], [], {}
    for no, line in bad.lines(path):
        tokens = line.split()
        if len(tokens) < 2:
            why = "a user id and at least one item id expected (`user item item ...`)"
            bad.add(path, no, BadRow("no_items", why), line)
            continue
        if tokens[0] in where:
            why = f"user {tokens[0]!r} already has a line (line {where[tokens[0]]})"
            bad.add(path, no, BadRow("duplicate_user", why), line)
            continue
        where[tokens[0]] = no
        users.append(tokens[0])
        seqs.append(tokens[1:])
    if not users:
        raise InputError(f"{path}: no sequences (expected lines `user item item ...`)")
    return users, seqs


def sequences_dataset(users: list[str], seqs: list[list[str]], source: Path, **notes) -> Dataset:
    """Events with synthetic timestamps (file order kept) and placeholder-titled items."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ts = sequence_timestamps(lengths)
    flat_items = [i for s in seqs for i in s]
    events = events_table(np.repeat(np.array(users, dtype=object), lengths), flat_items, "purchase", ts)
    ids = sorted(set(flat_items))
    items = items_table(ids, [S.PLACEHOLDER_TITLE.format(i) for i in ids])
    return Dataset(events, items, {"source": str(source), "timestamps": "synthetic", **notes})


def load(path: Path, bad: Quarantine) -> Dataset:
    file = find_file(Path(path))
    users, seqs = read_sequences(file, bad)
    return sequences_dataset(users, seqs, file, text="absent: titles are 'item <id>'")
