"""Reading and writing the lake from Spark jobs: paths, listings, schema checks, small files.

Everything here goes through Hadoop's FileSystem API (the JVM side of the session), so the
same code lists and writes a local folder, `s3a://` or `hdfs://`. Transforms never call it:
only the `run_*` functions of a job do I/O.

Lakes with thousands of day folders (a public dataset spanning twenty years) are the
expensive case: every Py4J round trip costs about a millisecond. So local folders are
listed with `os.scandir`, and local Parquet footers are first read with pyarrow; only a
file that does not plainly match the expected schema is handed to Spark's converter,
which words the message.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePath

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys.errors import InputError
from recsys.lake import Lake
from recsys.schema import EVENTS_SCHEMA, ITEMS_SCHEMA

# Hive partition column of the raw and validated event folders (`date=YYYY-MM-DD`).
DAY = "date"
# Columns the validation job adds to quarantined rows.
REASON = "reason"
SOURCE_FILE = "source_file"

_REMOTE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):/+(.*)$")
_DAY_DIR = re.compile(r"^(?:date|ds)=(\d{4}-\d{2}-\d{2})$")


# --- schemas -------------------------------------------------------------------------------


def _spark_type(t: pa.DataType) -> T.DataType:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return T.StringType()
    if pa.types.is_float64(t):
        return T.DoubleType()
    if pa.types.is_boolean(t):
        return T.BooleanType()
    if pa.types.is_timestamp(t) and t.tz is not None:
        return T.TimestampType()
    raise TypeError(f"no Spark type for {t}")


def spark_schema(schema: pa.Schema) -> T.StructType:
    """The Spark twin of a `recsys.schema` Arrow schema (every field nullable: Spark reads so)."""
    return T.StructType([T.StructField(f.name, _spark_type(f.type), True) for f in schema])


EVENTS = spark_schema(EVENTS_SCHEMA)
ITEMS = spark_schema(ITEMS_SCHEMA)


def schema_problems(actual: T.StructType, expected: T.StructType) -> list[str]:
    """What keeps rows of a file with `actual` from being judged against `expected`.

    Extra columns are fine (ignored); a missing column or another type is not.
    """
    have = {f.name: f.dataType for f in actual}
    problems = []
    for f in expected:
        if f.name not in have:
            problems.append(f"missing required column {f.name} ({f.dataType.simpleString()})")
        elif have[f.name] != f.dataType:
            problems.append(
                f"column {f.name} has type {have[f.name].simpleString()}, expected {f.dataType.simpleString()}"
            )
    return problems


# --- paths ---------------------------------------------------------------------------------


def uri(path: str | PurePath) -> str:
    """A lake path as Hadoop reads it: `s3a://b/x` stays remote, a local path becomes `file:///abs`.

    `Path("s3a://b/x")` collapses the double slash to `s3a:/b/x`; this undoes that.
    """
    text = str(path)
    m = _REMOTE.match(text)
    if m and m.group(1).lower() != "file" and len(m.group(1)) > 1:
        return f"{m.group(1)}://{m.group(2)}"
    if text.startswith("file:"):
        return text
    # Not Path.as_uri(): it percent-encodes `=`, and Hadoop would take `date%3D...` literally.
    return "file://" + Path(text).absolute().as_posix()


def location(path: str | PurePath) -> str:
    """A path for a report or manifest: as given when local, the repaired URI when remote."""
    text = uri(path)
    return str(path) if text.startswith("file:") else text


def display(lake: Lake, path: str | PurePath) -> str:
    """A path for a message: relative to the lake root when it lies inside it."""
    text, root = uri(path), uri(lake.root).rstrip("/") + "/"
    # Spark reports `file:/x` or `file:///x` depending on the API; compare without the scheme.
    strip = re.compile(r"^file:/+")
    if strip.sub("/", text).startswith(strip.sub("/", root)):
        return strip.sub("/", text)[len(strip.sub("/", root)) :]
    return text


def partition_days(spark: SparkSession, root: PurePath) -> dict[dt.date, str]:
    """`date=YYYY-MM-DD` / `ds=YYYY-MM-DD` sub-folders of root -> their URIs (none if root is absent)."""
    out = {}
    for name, child in _list(spark, uri(root), dirs=True):
        m = _DAY_DIR.match(name)
        if m:
            try:
                out[dt.date.fromisoformat(m.group(1))] = child
            except ValueError:
                continue
    return dict(sorted(out.items()))


def data_files(spark: SparkSession, folder: str | PurePath) -> list[str]:
    """The files Spark would read in a folder (hidden `_`/`.` names skipped), sorted."""
    return sorted(child for _, child in _list(spark, uri(folder), dirs=False))


def exists(spark: SparkSession, path: str | PurePath) -> bool:
    fs, p = _fs(spark, uri(path))
    return bool(fs.exists(p))


def write_text(spark: SparkSession, path: str | PurePath, text: str) -> None:
    """Write a small text file, replacing it whole (temp file, then rename)."""
    fs, p = _fs(spark, uri(path))
    tmp = _jpath(spark, uri(path) + ".tmp")
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    if fs.exists(p):
        fs.delete(p, False)
    if not fs.rename(tmp, p):
        raise OSError(f"could not move {tmp} to {p}")


def delete(spark: SparkSession, path: str | PurePath) -> None:
    fs, p = _fs(spark, uri(path))
    if fs.exists(p):
        fs.delete(p, True)


def _jpath(spark: SparkSession, text: str):
    return spark.sparkContext._jvm.org.apache.hadoop.fs.Path(text)


def _fs(spark: SparkSession, text: str):
    p = _jpath(spark, text)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), p


def _local(text: str) -> str | None:
    """The local path of a `file:` URI (`file:/x`, `file:///x`), else None."""
    return "/" + text[len("file:") :].lstrip("/") if text.startswith("file:") else None


def _list(spark: SparkSession, text: str, dirs: bool) -> list[tuple[str, str]]:
    local = _local(text)
    if local is not None:
        try:
            entries = list(os.scandir(local))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [
            (e.name, "file://" + os.path.join(local, e.name))
            for e in entries
            if not e.name.startswith(("_", ".")) and e.is_dir() == dirs
        ]
    fs, p = _fs(spark, text)
    if not fs.exists(p) or not fs.getFileStatus(p).isDirectory():
        return []
    found = []
    for st in fs.listStatus(p):
        name = st.getPath().getName()
        if name.startswith(("_", ".")) or bool(st.isDirectory()) != dirs:
            continue
        found.append((name, st.getPath().toString()))
    return found


# --- reading -------------------------------------------------------------------------------


def file_schema(spark: SparkSession, lake: Lake, file: str) -> T.StructType:
    """The schema Spark reads from one Parquet file's footer; InputError naming the file if it can't.

    The footer is read on the driver with parquet-mr and converted by Spark's own converter
    (a few ms, no Spark job); if that API is missing, Spark's reader is asked instead.
    """
    from py4j.protocol import Py4JError, Py4JJavaError

    jvm = spark.sparkContext._jvm
    try:
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        source = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(_jpath(spark, file), conf)
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(source)
        try:
            footer = reader.getFooter().getFileMetaData().getSchema()
        finally:
            reader.close()
        converter = jvm.org.apache.spark.sql.execution.datasources.parquet.ParquetToSparkSchemaConverter(
            jvm.org.apache.spark.sql.internal.SQLConf.get()
        )
        return T.StructType.fromJson(json.loads(converter.convert(footer).json()))
    except Py4JJavaError as err:
        cause = str(err.java_exception.toString()).splitlines()[0]
    except Py4JError:
        try:
            return spark.read.parquet(file).schema
        except Exception as err:  # several Spark error types, all meaning "can't read this file"
            cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
    raise InputError(f"{display(lake, file)}: unreadable Parquet file ({cause[:300]})")


def check_files(spark: SparkSession, lake: Lake, files: list[str], expected: T.StructType) -> None:
    """Raise InputError naming the first file (in path order) whose columns drifted from `expected`.

    Local files whose footer plainly matches are passed with pyarrow (well under a
    millisecond each); the rest are read in a few threads through the JVM, so a year of
    daily catalogue files on S3 takes a second or two.
    """
    doubtful = [f for f in files if not _plainly_matches(f, expected)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        schemas = dict(zip(doubtful, pool.map(lambda f: _schema_or_error(spark, lake, f), doubtful)))
    for file in doubtful:
        got = schemas[file]
        if isinstance(got, InputError):
            raise got
        problems = schema_problems(got, expected)
        if problems:
            raise InputError(f"{display(lake, file)}: schema drift: {'; '.join(problems)}")


# Parquet column types that Spark reads as exactly these types, whatever its settings.
_PLAIN = {
    T.StringType(): lambda c: c.physical_type == "BYTE_ARRAY" and c.logical_type.type == "STRING",
    T.DoubleType(): lambda c: c.physical_type == "DOUBLE" and c.logical_type.type == "NONE",
    T.BooleanType(): lambda c: c.physical_type == "BOOLEAN" and c.logical_type.type == "NONE",
    T.TimestampType(): lambda c: c.physical_type == "INT64"
    and c.logical_type.type == "TIMESTAMP"
    and json.loads(c.logical_type.to_json()).get("isAdjustedToUTC") is True
    and json.loads(c.logical_type.to_json()).get("timeUnit") in ("milliseconds", "microseconds"),
}


def _plainly_matches(file: str, expected: T.StructType) -> bool:
    """True when a local Parquet file has every expected column, top level and not repeated,
    in a type Spark reads as the expected one. False means "ask Spark" (remote, unreadable,
    drifted or merely unusual), never "bad"."""
    local = _local(file)
    if local is None:
        return False
    try:
        schema = pq.read_metadata(local).schema
    except Exception:  # noqa: BLE001 - any failure just means Spark decides
        return False
    columns = {}
    for i in range(len(schema)):
        c = schema.column(i)
        if c.max_repetition_level == 0 and "." not in c.path:
            columns[c.path] = c
    for f in expected:
        c, plain = columns.get(f.name), _PLAIN.get(f.dataType)
        if c is None or plain is None or not plain(c):
            return False
    return True


def _schema_or_error(spark, lake, file):
    try:
        return file_schema(spark, lake, file)
    except InputError as err:
        return err


def read_partitions(spark: SparkSession, root: PurePath, files: list[str], schema: T.StructType) -> DataFrame:
    """Rows of `files` (already checked) under Hive root `root`, with the `date` partition column."""
    df = spark.read.schema(schema).option("basePath", uri(root)).parquet(*files)
    return df.withColumn(DAY, df[DAY].cast("date"))


# --- writing -------------------------------------------------------------------------------


def n_files(rows: int, rows_per_file: int = 2_000_000) -> int:
    """Output files for `rows` rows: one for a night's worth, more only when it is large."""
    return max(1, math.ceil(rows / rows_per_file))


def write_parquet(df: DataFrame, path: str | PurePath, files: int = 1, sort_by: list | None = None) -> str:
    """Replace the folder at `path` with `df` in `files` Parquet files; returns its URI.

    With `sort_by`, rows are spread over the files by its first column and each file is
    sorted by all of them. The files come from a shuffle of the result rather than a
    coalesce: a coalesce would shrink the whole upstream stage (join, aggregation, window)
    to `files` tasks, i.e. one core for a night's output.
    """
    target = uri(path)
    if sort_by:
        df = df.repartition(files, sort_by[0]).sortWithinPartitions(*sort_by)
    else:
        df = df.repartition(files)
    df.write.mode("overwrite").parquet(target)
    return target


def write_days(df: DataFrame, root: PurePath, rows: dict[dt.date, int], rows_per_file: int = 2_000_000) -> None:
    """Replace the `date=<day>` folders under `root` for each day in `rows` (day -> row count),
    leaving every other day as it is. `df` carries the `date` column; a day without rows gets
    an empty folder (one schema-only file), so a rerun never leaves yesterday's rows behind."""
    with_rows = [d for d, n in rows.items() if n > 0]
    if with_rows:
        # One task (so one file) per day; a day too big for one file is spread over a few tasks.
        files = max(n_files(rows[d], rows_per_file) for d in with_rows)
        salt = F.pmod(F.hash(*[c for c in df.columns if c != DAY]), F.lit(files))
        # An explicit task count: adaptive execution would fold a small multi-year catch-up
        # into one task, and opening thousands of day files one after another is the cost.
        tasks = min(len(with_rows) * files, max(1, df.sparkSession.sparkContext.defaultParallelism))
        (
            df.filter(df[DAY].isin(with_rows))
            .repartition(tasks, DAY, *([salt] if files > 1 else []))
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .option("maxRecordsPerFile", rows_per_file)
            .partitionBy(DAY)
            .parquet(uri(root))
        )
    for day in (d for d, n in rows.items() if n == 0):
        write_parquet(df.drop(DAY).limit(0), Path(str(root)) / f"{DAY}={day.isoformat()}")
