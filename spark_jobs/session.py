"""One way to get a SparkSession, in-process (local[*]) or against a cluster master."""

from __future__ import annotations

from pyspark.sql import SparkSession


def get_spark(master: str = "local[*]", app_name: str = "recsys", driver_memory: str = "2g") -> SparkSession:
    """Return the process's SparkSession, creating it with quiet, UTC, small-data defaults.

    Under spark-submit the master comes from the command line and `master` is ignored.
    """
    from recsys import runtime

    runtime.configure()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    import os

    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Small nightly partitions: 200 shuffle partitions would be mostly empty tasks.
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.adaptive.enabled", "true")
        # Reading thousands of day folders (a multi-year import) lists them in a Spark job of
        # one task per folder by default (up to 10000): seconds of scheduling for
        # milliseconds of listing. A few tasks list them as fast, locally and on S3.
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "16")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.driver.memory", driver_memory)
    )
    # Under spark-submit the master (and the driver's address) come from its command line.
    submitted = "SPARK_SUBMIT_ARGS" in os.environ or bool(os.environ.get("SPARK_ENV_LOADED"))
    if master.startswith("local") and not submitted:
        # In-process Spark talks only to itself: keep the driver on loopback. On a cluster the
        # executors must reach the driver, so its address is left to Spark's configuration.
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    if not submitted:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    # A local lake needs no `.crc` side file per data file (Parquet checks its own pages);
    # with thousands of day files that extra file is a third of the write time.
    jvm = spark.sparkContext._jvm
    jvm.org.apache.hadoop.fs.FileSystem.getLocal(spark.sparkContext._jsc.hadoopConfiguration()).setWriteChecksum(False)
    return spark
