"""Binary COPY encoding of whole ranked lists, and the row-level checks each chunk passes first.

One tuple per list: (batch_id, key, then per list column one text joined by SEPARATOR or a real[]).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.errors import DatabaseError
from recsys.schema import RANK, SCORE
from recsys.store.publish.lists import (
    RECOMMENDATIONS,
    SEPARATOR,
    SIMILAR_ITEMS,
    BatchValidationError,
    ListSpec,
    row_text,
)

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
COPY_TRAILER = b"\xff\xff"
_FLOAT4_OID = 700
# Fixed-width parts of one binary COPY tuple, big-endian: [nfields, len 8, batch_id, len key] key,
# then per list column either [len] joined-text, or [len, ndim, flags, oid, dim, lbound] float4 elements
_HEAD = np.dtype([("nfields", ">i2"), ("len_batch", ">i4"), ("batch_id", ">i8"), ("len_key", ">i4")])
_ARRAY = np.dtype(
    [("len", ">i4"), ("ndim", ">i4"), ("flags", ">i4"), ("oid", ">i4"), ("dim", ">i4"), ("lbound", ">i4")]
)
_ARRAY_HEADER_BYTES = _ARRAY.itemsize - 4  # the array's own header, after its length word


def _fixed(parts: np.ndarray) -> pa.Array:
    """A numpy structured array as an Arrow binary array of its records (one value per row)."""
    width = parts.dtype.itemsize
    raw = pa.py_buffer(parts.view(np.uint8))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(parts), [None, raw]).cast(pa.binary())


def _offsets(arr: pa.Array) -> np.ndarray:
    return np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)


def _joined(col: pa.Array, bounds: np.ndarray) -> pa.Array:
    """Each list's strings joined by SEPARATOR (null strings as empty ones): one binary per list."""
    values = pc.fill_null(col, "").cast(pa.binary())
    lists = pa.ListArray.from_arrays(pa.array(bounds.astype(np.int32)), values)
    return pc.binary_join(lists, SEPARATOR.encode())


def _float_arrays(col: pa.Array, bounds: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """Each list's floats as a binary COPY float4[] (array header, binary), one per list."""
    elements = np.empty(len(col), [("len", ">i4"), ("value", ">f4")])
    elements["len"] = 4
    elements["value"] = col.to_numpy(zero_copy_only=False)
    lists = len(bounds) - 1
    cuts = (bounds * 8).astype(np.int32)
    data = pa.py_buffer(elements.view(np.uint8))
    payload = pa.BinaryArray.from_buffers(pa.binary(), lists, [None, pa.py_buffer(cuts), data])
    header = np.empty(lists, _ARRAY)
    header["len"] = _ARRAY_HEADER_BYTES + np.diff(cuts)
    header["ndim"] = 1
    header["flags"] = 0
    header["oid"] = _FLOAT4_OID
    header["dim"] = np.diff(bounds)
    header["lbound"] = 1
    return _fixed(header), payload


def _any_byte(col: pa.Array, byte: int) -> bool:
    """Whether `byte` occurs in the string data of `col` (null slots hold no data)."""
    data = col.buffers()[2]
    if data is None or col.null_count == len(col):
        return False
    offsets = _offsets(col)
    return bool((np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]] == byte).any())


def check_lists(chunk: pa.RecordBatch, spec: ListSpec, k: int, starts: np.ndarray, counts: np.ndarray,
           known: pa.Array | None) -> None:
    """The row-level checks of one chunk of whole lists; raises BatchValidationError naming a row."""
    n = chunk.num_rows
    ranks = chunk.column(RANK).to_numpy()
    bad = np.flatnonzero((ranks < 1) | (ranks > k))
    if len(bad):
        raise BatchValidationError(f"rank in 1..{k}", row_text(chunk, bad[0]))
    position = np.arange(1, n + 1) - np.repeat(starts, counts)
    bad = np.flatnonzero(ranks != position)
    if len(bad):
        g = int(np.searchsorted(starts, bad[0], side="right") - 1)
        lo = int(starts[g])
        key = chunk.column(spec.key)[lo].as_py()
        raise BatchValidationError(
            f"ranks run 1..n per {spec.key_label}",
            f"{spec.key}={key!r} has ranks {ranks[lo:lo + int(counts[g])][:20].tolist()}",
        )
    scores = chunk.column(SCORE).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise BatchValidationError("score is finite", row_text(chunk, bad[0]))
    for column, _ in spec.arrays:
        col = chunk.column(column)
        # One byte scan of the column's data buffer; only a hit pays for the per-string search.
        if col.type == pa.string() and _any_byte(col, ord(SEPARATOR)):
            hit = pc.match_substring(col, SEPARATOR)
            if pc.any(hit).as_py():
                raise BatchValidationError(
                    f"{column} has no U+001F (unit separator)", row_text(chunk, pc.index(hit, True).as_py())
                )
    items = chunk.column(spec.item)
    empty = np.flatnonzero(np.diff(_offsets(items)) == 0)
    if len(empty):
        raise BatchValidationError(f"{spec.item} is not empty", row_text(chunk, empty[0]))
    if known is not None:
        for column in spec.known:
            # One hash probe per row, and the catalogue index doubles as the item code below.
            where = pc.index_in(chunk.column(column), value_set=known)
            if where.null_count:
                first = pc.index(pc.is_null(where), True).as_py()
                raise BatchValidationError(f"{column} is a known item", row_text(chunk, first))
            if column == spec.item:
                codes = where.to_numpy().astype(np.int64)
    else:
        codes = pc.dictionary_encode(items).indices.to_numpy().astype(np.int64)
    # Lists are whole and in key order, so (list number, item code) pairs are nearly sorted already.
    pairs = np.repeat(np.arange(len(starts), dtype=np.int64), counts) * (int(codes.max()) + 1) + codes
    ordered = np.sort(pairs)
    twins = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(twins):
        twin = int(np.flatnonzero(pairs == ordered[twins[0]])[1])
        copies = int(np.count_nonzero(pairs == pairs[twin]))
        raise BatchValidationError(
            f"unique ({spec.key}, {spec.item})",
            f"{spec.key}={chunk.column(spec.key)[twin].as_py()!r}, {spec.item}={items[twin].as_py()!r}, "
            f"copies={copies}",
        )
    if spec is SIMILAR_ITEMS:
        bad = np.flatnonzero(pc.equal(items, chunk.column(spec.key)).to_numpy(zero_copy_only=False))
        if len(bad):
            raise BatchValidationError(f"{spec.item} is not the item itself", row_text(chunk, bad[0]))


def encode_lists(chunk: pa.RecordBatch, batch_id: int, spec: ListSpec = RECOMMENDATIONS,
                 starts: np.ndarray | None = None) -> memoryview:
    """Whole lists of a (key, rank)-sorted chunk as binary COPY tuples, one per key (no header/trailer).

    Vectorised: the fixed-width parts are filled column-wise in numpy, Arrow joins each list's
    strings in C++, the float arrays are slices of one big-endian buffer (no copy), and
    `binary_join_element_wise` interleaves the parts into tuples; no Python per row or per list.
    """
    n = chunk.num_rows
    keys = chunk.column(spec.key)
    if starts is None:
        change = pc.not_equal(keys.slice(1), keys.slice(0, n - 1)).to_numpy(zero_copy_only=False) if n > 1 else []
        starts = np.flatnonzero(np.concatenate(([True], change))) if n else np.zeros(0, np.int64)
    bounds = np.append(starts, n)
    lists = len(starts)
    key_bytes = keys.take(pa.array(starts)).cast(pa.binary())

    head = np.empty(lists, _HEAD)
    head["nfields"] = 2 + len(spec.arrays)
    head["len_batch"] = 8
    head["batch_id"] = batch_id
    head["len_key"] = pc.binary_length(key_bytes).to_numpy(zero_copy_only=False)
    parts = [_fixed(head), key_bytes]
    for column, _ in spec.arrays:
        col = chunk.column(column)
        if col.type == pa.float32():
            parts += _float_arrays(col, bounds)
            continue
        length = np.empty(lists, ">i4")
        if col.null_count == n:  # no reasons at all: store NULL, not a string of separators
            length[:] = -1
            parts += [_fixed(length), pa.nulls(lists, pa.binary()).fill_null(b"")]
            continue
        joined = _joined(col, bounds)
        length[:] = pc.binary_length(joined).to_numpy(zero_copy_only=False)
        parts += [_fixed(length), joined]
    tuples = pc.binary_join_element_wise(*parts, b"")
    offsets = _offsets(tuples)
    if offsets[-1] >= 2**31 - 1:
        raise DatabaseError(f"a chunk of {spec.label} encodes to over 2 GiB; lower CHUNK_ROWS")
    return memoryview(tuples.buffers()[2])[offsets[0] : offsets[-1]]
