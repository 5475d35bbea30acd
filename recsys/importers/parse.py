"""Reading dataset files for the importers: required files, line-numbered errors, fast reads.

Large delimited files go through pyarrow's CSV reader in batches; when it chokes or a value
is missing, the file is scanned line by line to name the first bad line and why, so a
malformed row always stops the import as `<file>, line <n>: <reason>`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys.errors import InputError

# Column name meaning "present in the file, not kept".
SKIP = "_"


def malformed(path: Path, line_no: int, reason: str) -> InputError:
    return InputError(f"{path}, line {line_no}: {reason}")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{path}: not a folder (expected {what})")
    return path


def require_file(folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise InputError(f"{path}: missing (expected {what})")
    return path


def lines(path: Path, encoding: str = "utf-8", skip_header: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line break) of every non-blank line."""
    with open(path, encoding=encoding, newline="") as f:
        for no, text in enumerate(f, start=1):
            if skip_header and no == 1:
                continue
            text = text.rstrip("\r\n")
            if text.strip():
                yield no, text


def check_header(path: Path, expected: Sequence[str], delimiter: str, encoding: str = "utf-8") -> list[str]:
    """The header line split on `delimiter`; InputError unless every expected name is in it."""
    with open(path, encoding=encoding, newline="") as f:
        first = f.readline().rstrip("\r\n").lstrip("\ufeff")
    found = [c.strip().strip('"') for c in first.split(delimiter)]
    missing = [c for c in expected if c not in found]
    if missing:
        raise malformed(
            path, 1, f"header {first[:200]!r} lacks {', '.join(missing)} (expected {delimiter.join(expected)})"
        )
    return found


# --- values --------------------------------------------------------------------------------


def text_value(s: str, name: str) -> str:
    s = s.strip()
    if not s:
        raise ValueError(f"empty {name}")
    return s


def int_value(s: str, name: str) -> int:
    try:
        return int(s.strip())
    except ValueError:
        raise ValueError(f"{name} {s.strip()[:40]!r} is not an integer") from None


def float_value(s: str, name: str) -> float:
    try:
        x = float(s.strip())
    except ValueError:
        raise ValueError(f"{name} {s.strip()[:40]!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} {s.strip()!r} is not a finite number")
    return x


def split_fields(text: str, delimiter: str, n: int, names: str) -> list[str]:
    """Exactly `n` fields, or ValueError saying how many there were."""
    parts = text.split(delimiter)
    if len(parts) != n:
        raise ValueError(f"{len(parts)} fields where {n} were expected ({names})")
    return parts


# --- fast delimited reads ------------------------------------------------------------------


def read_delimited(
    path: Path,
    columns: Sequence[tuple[str, pa.DataType]],
    check_line: Callable[[str], None],
    *,
    delimiter: str = ",",
    header: bool = True,
    encoding: str = "utf-8",
    keep: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    quoted: bool = False,
) -> pa.Table:
    """The file's columns (those not named SKIP) as a table, read in batches.

    `columns` lists every field of a line in order. `check_line(text)` raises ValueError
    with a reason for a bad line; it is only run (line by line) when the fast reader fails
    or finds an empty or non-finite value, to say where. `keep` may filter each batch
    (e.g. the two properties of a 20M-row file that are used) before values are checked.
    """
    names = [name if name != SKIP else f"_{i}" for i, (name, _) in enumerate(columns)]
    wanted = [n for n, (name, _) in zip(names, columns) if name != SKIP]
    types = {n: t for n, (name, t) in zip(names, columns) if name != SKIP}
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=1 if header else 0, encoding=encoding, block_size=16 << 20
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=wanted, strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
        batches = []
        for batch in reader:
            batch = keep(batch) if keep else batch
            if not _complete(batch):
                raise ValueError("empty or non-finite value")
            batches.append(batch)
        schema = pa.schema([(n, types[n]) for n in wanted])
        table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    except (pa.ArrowInvalid, ValueError) as err:
        locate(path, check_line, header, encoding, f"unreadable ({str(err).splitlines()[0][:300]})")
    return table.rename_columns([name for name, _ in columns if name != SKIP])


def _complete(batch: pa.RecordBatch) -> bool:
    for col in batch.columns:
        if col.null_count:
            return False
        if pa.types.is_string(col.type) and pc.any(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)).as_py():
            return False
        if pa.types.is_floating(col.type) and not pc.all(pc.is_finite(col)).as_py():
            return False
    return True


def locate(path: Path, check_line: Callable[[str], None], header: bool, encoding: str, otherwise: str) -> NoReturn:
    """Raise InputError at the first line `check_line` rejects, or `<path>: <otherwise>`."""
    try:
        for no, text in lines(path, encoding, skip_header=header):
            try:
                check_line(text)
            except ValueError as err:
                raise malformed(path, no, str(err)) from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not {encoding} text ({err.reason} at byte {err.start})") from None
    raise InputError(f"{path}: {otherwise}")
