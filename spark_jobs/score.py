"""Score users in Spark partitions with the saved model: the score stage's `RECSYS_SCORE_ENGINE=spark`.

The score stage (`recsys.serve.batch.score_all_users`) decides who is active, which users the
model knows, and their exclusions, on the driver; this job ranks those users. Their histories
(item_idx and behaviour sequences, exclusions) go into a DataFrame, one group of rows per block
of `score_block_users` users in the order the in-process engine walks them; each partition
holds a range of whole blocks. `mapInArrow` hands a partition's Arrow batches to
`recsys.serve.batch.score_users`, the function the in-process engine calls, one block at a time,
so both engines rank, explain and mark the same blocks with the same code. The model is loaded
once per executor Python process (Spark reuses its Python workers across tasks).

Both ways go through Parquet in a scratch folder under the night's scores folder, not through
the driver's JVM: the users the driver writes are read by the executors, and the lists (U x K
item indices, scores, reasons, each user's candidate count) they write are read back by the
driver, which writes the one `recommendations.parquet` the publisher reads, exactly as after
the in-process engine. So nothing scales with users in Spark's driver (a collect would meet
`spark.driver.maxResultSize`), while the Python driver holds the U x K lists, as with the
in-process engine. Executors read the model and the scratch folder: the lake must be a path
they all see (docs/DEPLOY.md).
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from recsys.models import load_model
from recsys.models.base import META_FILE
from recsys.serve.batch import Catalogue, Lists, ScoreOptions, Users, score_users
from spark_jobs import io

log = logging.getLogger(__name__)

BLOCK, POS, ITEMS, EVENTS, EXCLUDE = "block", "pos", "items", "events", "exclude"
SCORES, REASONS, CANDIDATES = "scores", "reasons", "candidates"
# Partitions per core of the cluster: a few, so a slow partition does not hold up the rest.
PARTITIONS_PER_CORE = 2

# The job's output, one row per user: its position, K items, scores and reasons, and how many
# items could have been recommended to it.
OUTPUT = T.StructType([
    T.StructField(POS, T.LongType()),
    T.StructField(ITEMS, T.ArrayType(T.LongType())),
    T.StructField(SCORES, T.ArrayType(T.FloatType())),
    T.StructField(REASONS, T.ArrayType(T.StringType())),
    T.StructField(CANDIDATES, T.LongType()),
])
LISTS_SCHEMA = pa.schema([
    (POS, pa.int64()), (ITEMS, pa.list_(pa.int64())), (SCORES, pa.list_(pa.float32())),
    (REASONS, pa.list_(pa.string())), (CANDIDATES, pa.int64()),
])

# Per executor Python process: (model folder, model.json's mtime) -> the loaded model.
_MODELS: dict[tuple[str, int], object] = {}


def cached_model(path: str):
    """The saved model at `path`, loaded once per process (again only if the folder is rewritten)."""
    key = (path, (Path(path) / META_FILE).stat().st_mtime_ns)
    if key not in _MODELS:
        _MODELS.clear()  # a night serves one model: do not keep the last one's in memory too
        _MODELS[key] = load_model(Path(path))
    return _MODELS[key]


def _list_array(values: list[np.ndarray], dtype) -> pa.ListArray:
    lengths = np.fromiter((len(v) for v in values), dtype=np.int32, count=len(values))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate(values).astype(dtype, copy=False) if len(values) else np.zeros(0, dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def _arrays(column) -> list[np.ndarray]:
    """A list column back to one numpy array per row."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = lists.offsets.to_numpy()
    return np.split(lists.flatten().to_numpy(zero_copy_only=False), offsets[1:-1] - offsets[0])


def user_batches(users: Users, block_users: int) -> Iterator[pa.RecordBatch]:
    """One Arrow batch per block of users (block number, position, histories, behaviours, exclusions)."""
    for lo in range(0, len(users.seqs), block_users):
        hi = min(lo + block_users, len(users.seqs))
        cols = {
            BLOCK: pa.array(np.full(hi - lo, lo // block_users, np.int64)),
            POS: pa.array(np.arange(lo, hi, dtype=np.int64)),
            ITEMS: _list_array(users.seqs[lo:hi], np.int32),
            EVENTS: _list_array(users.events[lo:hi], np.int8),
        }
        if users.exclude is not None:
            cols[EXCLUDE] = _list_array(users.exclude[lo:hi], np.int32)
        yield pa.RecordBatch.from_pydict(cols)


def _whole_blocks(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
    """A partition's batches (sorted by block, position) regrouped into whole blocks: Arrow may cut
    a block across batches, and scoring a block in pieces could reorder near-ties."""
    pending: list[pa.RecordBatch] = []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        ids = batch.column(BLOCK).to_numpy()
        bounds = [0, *(np.flatnonzero(np.diff(ids)) + 1), len(ids)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if pending and pending[0].column(BLOCK)[0].as_py() != int(ids[lo]):
                yield pa.Table.from_batches(pending)
                pending = []
            pending.append(batch.slice(lo, hi - lo))
    if pending:
        yield pa.Table.from_batches(pending)


def score_block(model, cat: Catalogue, block: pa.Table, opts: ScoreOptions) -> pa.RecordBatch:
    """One block's lists as an Arrow batch of OUTPUT."""
    exclude = _arrays(block.column(EXCLUDE)) if EXCLUDE in block.column_names else None
    users = Users(_arrays(block.column(ITEMS)), _arrays(block.column(EVENTS)), exclude)
    lists = score_users(model, cat, users, opts)
    n, k = lists.items.shape
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))

    def listed(values: np.ndarray, type_: pa.DataType) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type_))

    return pa.RecordBatch.from_arrays(
        [block.column(POS).combine_chunks(), listed(lists.items, pa.int64()), listed(lists.scores, pa.float32()),
         listed(lists.reasons, pa.string()), pa.array(lists.candidates, pa.int64())],
        schema=LISTS_SCHEMA,
    )


def _scorer(model_path: str, catalogue, opts: ScoreOptions):
    """The function mapInArrow runs on each partition (pickled with what it closes over)."""

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import torch
        from pyspark import TaskContext

        # Spark runs one task per core it was given: one torch thread per task core, so
        # concurrent tasks on a worker do not oversubscribe its cores.
        context = TaskContext.get()
        torch.set_num_threads(max(1, context.cpus() if context else 1))
        model, cat = cached_model(model_path), catalogue.value
        for block in _whole_blocks(batches):
            yield score_block(model, cat, block, opts)

    return score_partition


def _collected(table: pa.Table, n: int, k: int) -> Lists:
    """The executors' lists back to (U, K) arrays in the users' order (chunk by chunk: one
    column of a million users' reasons can be past what one Arrow string array holds)."""
    pos = table.column(POS).to_numpy()
    order = np.argsort(pos, kind="stable")
    if not np.array_equal(pos[order], np.arange(n)):
        raise RuntimeError(f"the Spark score job returned {len(pos)} lists for {n} users")

    def grid(name: str) -> np.ndarray:
        flat = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in table.column(name).chunks]
        return np.concatenate(flat).reshape(len(pos), k)[order]

    return Lists(grid(ITEMS).astype(np.int64), grid(SCORES).astype(np.float32),
                 table.column(CANDIDATES).to_numpy()[order].astype(np.int64), grid(REASONS).astype(object))


class SparkEngine:
    """RECSYS_SCORE_ENGINE=spark: the users the model knows are ranked by this job on `spark`."""

    name = "spark"

    def __init__(self, spark: SparkSession, partitions: int | None = None):
        self.spark = spark
        self.partitions = partitions

    def score(self, model_path: Path, model, cat: Catalogue, users: Users, opts: ScoreOptions,
              workdir: Path) -> Lists:
        n = len(users.seqs)
        if n == 0:  # nothing to distribute; the same empty lists as the in-process engine
            return score_users(model, cat, users, opts)
        blocks = -(-n // opts.block_users)
        parts = self.partitions or self.spark.sparkContext.defaultParallelism * PARTITIONS_PER_CORE
        scratch = Path(workdir) / f"_spark-{uuid.uuid4().hex[:8]}"
        scratch.mkdir(parents=True)
        catalogue = self.spark.sparkContext.broadcast(cat)
        t0 = time.perf_counter()
        try:
            batches = user_batches(users, opts.block_users)
            first = next(batches)
            with pq.ParquetWriter(scratch / "users.parquet", first.schema) as writer:
                for batch in itertools.chain([first], batches):
                    writer.write_batch(batch)
            t1 = time.perf_counter()
            (
                self.spark.read.parquet(io.uri(scratch / "users.parquet"))
                # Whole blocks per partition, consecutive ones (a hash would leave some partitions
                # twice as full as others).
                .repartitionByRange(max(1, min(blocks, parts)), BLOCK)
                .sortWithinPartitions(BLOCK, POS)
                .mapInArrow(_scorer(str(model_path), catalogue, opts), OUTPUT)
                .write.parquet(io.uri(scratch / "lists"))
            )
            t2 = time.perf_counter()
            lists = _collected(pads.dataset(scratch / "lists", format="parquet").to_table(), n, opts.k)
        finally:
            catalogue.destroy()
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("spark scoring of %d users: %.1f s writing users, %.1f s the job, %.1f s reading lists",
                 n, t1 - t0, t2 - t1, time.perf_counter() - t2)
        return lists
