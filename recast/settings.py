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
from typing import Any

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class DataSettings(BaseModel):
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


class TrainSettings(BaseModel):
    model: str = "dlf"
    epochs: int = 10
    batch_size: int = 4096
    lr: float = 1e-3
    embedding_lr: float = 0.05
    embedding_dim: int = 16
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
    workers: int = 1


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:19092"
    exposures_topic: str = "recast.exposures"
    events_topic: str = "recast.events"


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
