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
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Small nightly partitions: 200 shuffle partitions would be mostly empty tasks.
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.driver.memory", driver_memory)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
    )
    import os

    if "SPARK_SUBMIT_ARGS" not in os.environ and not os.environ.get("SPARK_ENV_LOADED"):
        builder = builder.master(master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
