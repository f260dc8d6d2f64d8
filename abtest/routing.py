"""What the scoring gateway calls per request: user id -> assignments -> model + exposure tags.

Kept free of FastAPI/Triton/torch so the gateway (and tests) can import it cheaply::

    router = Router.from_settings(settings)          # once, at startup (None-safe: see below)
    decision = router.route(user_id, requested_model=req.model, now=datetime.now(timezone.utc))
    model = decision.model                           # None: the gateway's default model
    ...score with `model`...
    rows = decision.exposure_rows(request_id, ts, n_items=len(shown), model=result.model)
    # -> the exposure stream (Kafka topic settings.kafka.exposures_topic), one row per experiment

Rules:

* a unit in the global holdout gets no experiment and the default model;
* if the request names a model explicitly (ops/debugging), that model is used and the
  request is *not* logged as an experiment exposure (``forced``): it would contaminate the arms;
* otherwise the model comes from the assignment in the (single) model-routing layer, or the
  config's ``default_model``, or None (gateway default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from abtest.assignment import Assigner, Assignment
from abtest.config import ExperimentsConfig, load_config


@dataclass
class RoutingDecision:
    user_id: str
    model: str | None
    assignments: list[Assignment] = field(default_factory=list)
    holdout: bool = False
    forced: bool = False

    def tags(self) -> dict[str, str]:
        """Flat tags for logs/headers: ``exp.<experiment>: <variant>``, plus ``holdout``."""
        out = {f"exp.{a.experiment}": a.variant for a in self.assignments}
        if self.holdout:
            out["holdout"] = "1"
        return out

    def public(self) -> list[dict[str, str]]:
        """What the gateway may return to the client (``experiments`` field of the response)."""
        return [{"experiment": a.experiment, "layer": a.layer, "variant": a.variant} for a in self.assignments]

    def exposure_rows(self, request_id: str, ts: datetime, n_items: int, model: str | None = None) -> list[dict[str, Any]]:
        """Rows of the exposure log (``abtest.events.EXPOSURE_SCHEMA``): one per experiment the
        request was exposed to, or one row with null experiment when it was in none (still
        useful: pre-period covariates come from the same log)."""
        ts = ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts
        served_model = model or self.model
        base = {"request_id": request_id, "ts": ts, "unit_id": self.user_id, "model": served_model, "n_items": int(n_items)}
        if not self.assignments:
            return [{**base, "layer": None, "experiment": None, "variant": None}]
        return [{**base, "layer": a.layer, "experiment": a.experiment, "variant": a.variant} for a in self.assignments]


DEFAULT_CONFIG = Path(__file__).with_name("experiments.yaml")


def config_path(settings: Any) -> Path:
    """``settings.abtest.config`` resolved against ``home``, or the shipped ``abtest/experiments.yaml``."""
    cfg = getattr(getattr(settings, "abtest", None), "config", None)
    return settings.path(cfg) if cfg is not None else DEFAULT_CONFIG


def config_from_settings(settings: Any) -> ExperimentsConfig:
    return load_config(config_path(settings))


class Router:
    def __init__(self, config: ExperimentsConfig, default_model: str | None = None) -> None:
        self.config = config
        self.assigner = Assigner(config)
        self.default_model = config.default_model or default_model

    @classmethod
    def from_file(cls, path: str | Path, default_model: str | None = None) -> "Router":
        return cls(load_config(path), default_model)

    @classmethod
    def from_settings(cls, settings: Any) -> "Router":
        """From ``settings.abtest.config`` (resolved against ``home``); default model ``settings.gateway.model_name``."""
        return cls(config_from_settings(settings), settings.gateway.model_name)

    def route(self, user_id: str | int, requested_model: str | None = None, now: datetime | None = None) -> RoutingDecision:
        uid = str(user_id)
        if now is not None and now.tzinfo is not None:
            now = now.astimezone(timezone.utc).replace(tzinfo=None)
        if requested_model:
            return RoutingDecision(uid, requested_model, [], self.assigner.in_holdout(uid), forced=True)
        if self.assigner.in_holdout(uid):
            return RoutingDecision(uid, self.default_model, [], holdout=True)
        assignments = self.assigner.assign(uid, now)
        model = next((a.model for a in assignments if a.model), None) or self.default_model
        return RoutingDecision(uid, model, assignments)
