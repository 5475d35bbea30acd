"""Reading dataset files for the importers: required files, line-numbered bad rows, fast reads.

Large delimited files go through pyarrow's CSV reader in batches; when it chokes or a value
is missing, the file is read again line by line, and each line the importer's parser
rejects is set aside in the import's Quarantine as `<file>, line <n>: <reason>`.
A UTF-8 byte-order mark is dropped (and makes the file UTF-8 whatever encoding the format
has); Windows line endings read like Unix ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recsys.errors import InputError
from recsys.importers.quarantine import BadRow, Quarantine

# Column name meaning "present in the file, not kept".
SKIP = "_"
BOM = b"\xef\xbb\xbf"
# Rows parsed line by line before they become one Arrow batch: bounds Python memory.
FALLBACK_BATCH = 65_536


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


def encoding_of(path: Path, encoding: str) -> str:
    """`utf-8-sig` for a file that starts with a UTF-8 byte-order mark, else `encoding`."""
    with open(path, "rb") as f:
        return "utf-8-sig" if f.read(3) == BOM else encoding


def lines(path: Path, encoding: str = "utf-8", skip_header: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line break) of every non-blank line."""
    with open(path, encoding=encoding_of(path, encoding), newline="") as f:
        for no, text in enumerate(f, start=1):
            if skip_header and no == 1:
                continue
            text = text.rstrip("\r\n")
            if text.strip():
                yield no, text


def check_header(path: Path, expected: Sequence[str], delimiter: str, encoding: str = "utf-8") -> list[str]:
    """The header line split on `delimiter`; InputError unless every expected name is in it."""
    with open(path, encoding=encoding_of(path, encoding), newline="") as f:
        first = f.readline().rstrip("\r\n")
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
        raise BadRow("empty_field", f"empty {name}")
    return s


def int_value(s: str, name: str) -> int:
    try:
        return int(s.strip())
    except ValueError:
        raise BadRow("not_a_number", f"{name} {s.strip()[:40]!r} is not an integer") from None


def float_value(s: str, name: str) -> float:
    try:
        x = float(s.strip())
    except ValueError:
        raise BadRow("not_a_number", f"{name} {s.strip()[:40]!r} is not a number") from None
    if not math.isfinite(x):
        raise BadRow("not_a_number", f"{name} {s.strip()!r} is not a finite number")
    return x


def split_fields(text: str, delimiter: str, n: int, names: str) -> list[str]:
    """Exactly `n` fields, or BadRow saying how many there were."""
    parts = text.split(delimiter)
    if len(parts) != n:
        raise BadRow("field_count", f"{len(parts)} fields where {n} were expected ({names})")
    return parts


# --- fast delimited reads ------------------------------------------------------------------


def read_delimited(
    path: Path,
    columns: Sequence[tuple[str, pa.DataType]],
    parse_line: Callable[[str], Sequence],
    bad: Quarantine,
    *,
    delimiter: str = ",",
    header: bool = True,
    encoding: str = "utf-8",
    keep: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
    accept: Callable[[pa.RecordBatch], bool] | None = None,
    quoted: bool = False,
) -> pa.Table:
    """The file's columns (those not named SKIP) as a table, read in batches.

    `columns` lists every field of a line in order. `parse_line(text)` returns the values of
    the kept columns or raises ValueError (BadRow) with a reason. It only runs, line by
    line, when the fast reader fails, finds an empty or non-finite value, or `accept`
    rejects a batch (e.g. an unknown event name); its bad lines go to `bad`. `keep` may
    filter each batch (e.g. the two properties of a 20M-row file that are used) before
    values are checked.
    """
    names = [name if name != SKIP else f"_{i}" for i, (name, _) in enumerate(columns)]
    wanted = [n for n, (name, _) in zip(names, columns) if name != SKIP]
    types = {n: t for n, (name, t) in zip(names, columns) if name != SKIP}
    schema = pa.schema([(n, types[n]) for n in wanted])
    encoding = encoding_of(path, encoding)
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
        batches, rows = [], 0
        for batch in reader:
            rows += batch.num_rows
            batch = keep(batch) if keep else batch
            if not _complete(batch) or (accept and not accept(batch)):
                raise ValueError("a value to look at line by line")
            batches.append(batch)
        bad.count(path, rows)
    except (pa.ArrowInvalid, ValueError):
        batches = list(_parse_lines(path, schema, parse_line, bad, header, encoding, keep))
    table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
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


def _parse_lines(path, schema, parse_line, bad, header, encoding, keep) -> Iterator[pa.RecordBatch]:
    """Batches of the lines `parse_line` accepts; the others go to `bad`."""
    rows: list[Sequence] = []
    try:
        for no, text in bad.lines(path, encoding, skip_header=header):
            try:
                rows.append(parse_line(text))
            except ValueError as err:
                bad.add(path, no, err, text)
            if len(rows) == FALLBACK_BATCH:
                yield _batch(rows, schema, keep)
                rows = []
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not {encoding} text ({err.reason} at byte {err.start})") from None
    if rows:
        yield _batch(rows, schema, keep)


def _batch(rows: list[Sequence], schema: pa.Schema, keep) -> pa.RecordBatch:
    arrays = [pa.array([r[k] for r in rows], f.type) for k, f in enumerate(schema)]
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    return keep(batch) if keep else batch
