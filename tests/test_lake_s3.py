"""The lake in an S3 bucket: a night whose every stage starts from an empty local copy publishes
the same lists as a night on a local folder.

The bucket is served by moto's S3 server, started here on 127.0.0.1. No stage reads `s3a://`:
the in-process Spark jobs (validate, features) would need the Hadoop AWS jars for that, which
this environment does not have, so they read their stage's local copy of the bucket, which the
stage pulls first, like every other stage (recsys.objectstore).
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
import torch
from moto import server as moto_server

from recsys.config import load_settings
from recsys.data.generate import GenerateConfig, generate
from recsys.errors import ConfigError, InputError
from recsys.lake import RAW_IO, STAGE_IO, STAGES, Lake, LakeIO, Output
from recsys.objectstore import open_lake, working_copy
from recsys.pipeline.run import run_pipeline
from tests.helpers import TINY, fresh_database, published


DS = TINY["end_date"]
BUCKET = "recsys-test"
URL = f"s3://{BUCKET}/lake"
# The night's model: the default kind, kept small as in tests/test_pipeline.py.
NIGHT = dict(top_k=5, spark_master="local[2]", model_kind="mtrl", model_epochs=2)


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port with one empty bucket; yields its endpoint URL."""
    import boto3

    # Its request log would bury a failure's output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "test")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    server.stop()


def _keys(endpoint: str, prefix: str) -> list[str]:
    import boto3

    listing = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2")
    pages = listing.paginate(Bucket=BUCKET, Prefix=prefix)
    # Keys ending in "/" are the empty folder markers pyarrow leaves, not files.
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/"))


def _objects(endpoint: str, prefix: str) -> dict[str, bytes]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    return {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in _keys(endpoint, prefix)}


def _copy(endpoint: str, source: str, target: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    for key in _keys(endpoint, source):
        client.copy_object(Bucket=BUCKET, Key=target + key[len(source) :], CopySource={"Bucket": BUCKET, "Key": key})


def _rows(url: str, view: str, order: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT * FROM recsys.{view} ORDER BY {order}").fetchall()


# --- one night, twice ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nights(s3, tmp_path_factory, pg_url, spark):
    """The same night on a local folder (as `recsys run` runs it) and in the bucket, each stage of
    the latter with a new, empty cache folder, as on a fresh worker."""
    from recsys import cli
    from recsys.pipeline import stages

    # One thread for both trainings: with several, torch's reductions round differently from run
    # to run, and the two nights' scores would differ in the last digit.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _two_nights(tmp_path_factory, pg_url, s3, cli, stages)
    finally:
        torch.set_num_threads(threads)


def _two_nights(tmp_path_factory, pg_url, s3, cli, stages):
    local_root = tmp_path_factory.mktemp("lake")
    generate(local_root, GenerateConfig(**TINY))
    local = load_settings(lake_root=local_root, database_url=fresh_database(pg_url), **NIGHT)
    # The challenger serves whatever the gate says, so the lists come from a model trained tonight.
    on_disk = run_pipeline(DS, local, force_promote=True)["stages"]

    # The same log, written into the bucket by the command.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RECSYS_S3_ENDPOINT", s3)
        env.setenv("RECSYS_LAKE_CACHE", str(tmp_path_factory.mktemp("cache-generate")))
        assert cli.main([
            "--lake-root", URL, "generate", "--users", str(TINY["n_users"]), "--items", str(TINY["n_items"]),
            "--days", str(TINY["days"]), "--end-date", DS.isoformat(), "--seed", str(TINY["seed"]),
        ]) == 0  # fmt: skip

    remote = load_settings(lake_root=URL, s3_endpoint=s3, database_url=fresh_database(pg_url), **NIGHT)
    in_bucket = {}
    for name in STAGES:
        worker = remote.model_copy(update={"lake_cache": tmp_path_factory.mktemp(f"cache-{name}")})
        kwargs = {"force_promote": True, "forced_by": "cli"} if name == "gate" else {}
        in_bucket[name] = getattr(stages, name)(DS, worker, **kwargs)
    return local, on_disk, remote, in_bucket


@pytest.mark.slow
def test_a_night_in_the_bucket_publishes_the_lists_of_a_night_on_disk(nights):
    local, on_disk, remote, in_bucket = nights
    assert in_bucket["gate"].serving_version == on_disk["gate"].serving_version
    assert in_bucket["gate"].serving_version.startswith("mtrl-")
    lists = published(remote.database_url)
    assert len(lists) == in_bucket["publish"].rows > 0
    assert lists == published(local.database_url)
    for view, order in (("current_similar_items", "item_id, rank"), ("current_fallback", "rank")):
        assert [r[:4] for r in _rows(remote.database_url, view, order)] == [
            r[:4] for r in _rows(local.database_url, view, order)], view


@pytest.mark.slow
def test_the_bucket_holds_every_stage_result_and_records_name_it(nights, s3):
    _, _, remote, in_bucket = nights
    runs = _objects(s3, f"lake/runs/ds={DS.isoformat()}/")
    for name in STAGES:
        saved = runs[f"lake/runs/ds={DS.isoformat()}/{name}.json"]
        assert saved.decode() == in_bucket[name].model_dump_json(indent=2), name
    # Paths in records are URLs into the bucket, which any worker resolves to its own copy.
    assert in_bucket["train"].path == f"{URL}/models/{in_bucket['train'].model_version}"
    assert in_bucket["score"].path == f"{URL}/scores/ds={DS.isoformat()}/recommendations.parquet"
    assert in_bucket["encode"].path.startswith(f"{URL}/embeddings/")
    assert in_bucket["gate"].report.startswith(f"{URL}/models/")
    with psycopg.connect(remote.database_url) as conn:
        paths = [r[0] for r in conn.execute("SELECT artifact_path FROM recsys.models").fetchall()]
    assert paths and all(p.startswith(f"{URL}/models/") for p in paths)
    assert f"lake/models/{in_bucket['train'].model_version}/model.json" in _keys(s3, "lake/models/")


@pytest.mark.slow
def test_a_fresh_worker_finds_the_champion_through_the_registry(nights, tmp_path):
    from recsys.pipeline.stages import _champion_path

    _, _, remote, in_bucket = nights
    worker = remote.model_copy(update={"lake_cache": tmp_path / "cache"})
    lake = open_lake(worker)
    # What tomorrow's train warm-starts from: the registry's URL, pulled into this worker's copy.
    warm = Path(_champion_path(worker, lake, DS))
    assert warm == lake.models_root / in_bucket["train"].model_version
    assert (warm / "weights.safetensors").is_file()


@pytest.mark.slow
def test_a_first_night_baseline_is_fitted_and_pushed_from_a_fresh_worker(nights, s3, pg_url, tmp_path):
    from recsys.pipeline import stages
    from recsys.store.migrate import migrate
    from recsys.store.registry import register_model

    _, _, remote, in_bucket = nights
    # Tonight's lake and challenger in a registry with no champion, so the night above keeps its own.
    _copy(s3, "lake/", "first-night/")
    worker = remote.model_copy(update={
        "lake_root": f"s3://{BUCKET}/first-night", "lake_cache": tmp_path / "cache",
        "database_url": fresh_database(pg_url), "gate_margin_vs_popularity": 10.0,
    })  # fmt: skip
    trained = in_bucket["train"]
    migrate(worker.database_url)
    register_model(worker.database_url, version=trained.model_version, ds=DS, kind="mtrl", path=trained.path,
                   config={}, fingerprint=trained.fingerprint)  # fmt: skip
    gate = stages.gate(DS, worker)
    assert gate.decision == "fail"
    baseline = f"first-night/models/{gate.serving_version}/"
    assert f"{baseline}model.json" in _keys(s3, baseline)
    with psycopg.connect(worker.database_url) as conn:
        champion = conn.execute("SELECT artifact_path FROM recsys.models WHERE status = 'champion'").fetchone()
    assert champion == (f"s3://{BUCKET}/{baseline.rstrip('/')}",)


# --- the copy and the bucket ------------------------------------------------------------------------
def _settings(tmp_path, endpoint, prefix):
    return load_settings(lake_root=f"s3://{BUCKET}/{prefix}", s3_endpoint=endpoint, lake_cache=tmp_path / "cache")


def test_pull_mirrors_the_bucket_and_downloads_only_what_changed(s3, tmp_path):
    settings = _settings(tmp_path, s3, "pull")
    writer = open_lake(settings.model_copy(update={"lake_cache": tmp_path / "writer"}))
    for name, text in (("a.txt", "one"), ("sub/b.txt", "two")):
        path = writer.root / "raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        writer.put(path)

    lake = open_lake(settings)
    folder = lake.fetch(lake.root / "raw")
    assert {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()} == {
        "a.txt": "one", "sub/b.txt": "two"}
    kept = (folder / "a.txt").stat().st_ino
    (folder / "stale.txt").write_text("not in the bucket")
    (folder / "sub" / "b.txt").write_text("changed here")
    lake.fetch(folder)
    assert not (folder / "stale.txt").exists()
    assert (folder / "sub" / "b.txt").read_text() == "two"
    assert (folder / "a.txt").stat().st_ino == kept  # unchanged: not downloaded again


def test_push_replaces_what_a_step_rewrote_and_leaves_the_rest(s3, tmp_path):
    settings = _settings(tmp_path, s3, "push")
    io = LakeIO(writes=lambda lake, day, s: [Output(lake.root / "whole"), Output(lake.root / "days", "partitions")])
    with working_copy(settings, io) as lake:
        for name in ("whole/part-1", "whole/part-2", "days/date=1/part-1", "days/date=2/part-1"):
            (lake.root / name).parent.mkdir(parents=True, exist_ok=True)
            (lake.root / name).write_text(name)
    # A later step on a fresh copy rewrites the folder and one partition with other file names.
    settings = settings.model_copy(update={"lake_cache": tmp_path / "other"})
    with working_copy(settings, io) as lake:
        for name in ("whole/part-3", "days/date=2/part-9"):
            (lake.root / name).parent.mkdir(parents=True, exist_ok=True)
            (lake.root / name).write_text(name)
    assert _keys(s3, "push/") == ["push/days/date=1/part-1", "push/days/date=2/part-9", "push/whole/part-3"]


def test_a_failed_step_pushes_nothing_but_its_bad_rows(s3, tmp_path):
    settings = _settings(tmp_path, s3, "failed")
    with pytest.raises(InputError), working_copy(settings, RAW_IO) as lake:
        part = lake.events_partition(DS) / "part-0.parquet"
        part.parent.mkdir(parents=True)
        part.write_text("half an import")
        lake.import_quarantine.mkdir(parents=True)
        (lake.import_quarantine / "events-1.csv").write_text("file,line,reason\n")
        raise InputError("too many bad rows")
    assert _keys(s3, "failed/") == ["failed/quarantine/import/events-1.csv"]
    assert not part.exists()  # the copy holds nothing the bucket lacks


def test_every_stage_says_what_it_reads_and_writes():
    assert list(STAGE_IO) == list(STAGES)


def test_records_name_a_bucket_by_url_and_resolve_to_the_local_copy(s3, tmp_path):
    lake = open_lake(_settings(tmp_path, s3, "refs"))
    model = lake.models_root / "mtrl-1"
    assert lake.ref(model) == f"s3://{BUCKET}/refs/models/mtrl-1"
    assert lake.resolve(lake.ref(model)) == model
    assert lake.resolve(f"s3a://{BUCKET}/refs/models/mtrl-1") == model
    local = Lake(tmp_path / "lake")
    assert local.ref(local.models_root / "x") == str(tmp_path / "lake" / "models" / "x")
    with pytest.raises(ConfigError, match="RECSYS_LAKE_ROOT"):
        load_settings(lake_root="hdfs://namenode/lake")


def test_in_process_spark_on_a_cluster_refuses_a_lake_in_a_bucket(s3, tmp_path):
    from recsys.pipeline.stages import _spark

    settings = _settings(tmp_path, s3, "cluster").model_copy(update={"spark_master": "spark://nowhere:7077"})
    with pytest.raises(ConfigError, match="spark-submit"):
        _spark(settings)
