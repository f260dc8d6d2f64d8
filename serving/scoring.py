"""Scoring core of the gateway: features from Feast -> model inputs -> Triton.

Kept apart from the HTTP layer so it can be tested and benchmarked on its
own. Torch-free: it reads the exported model's ``spec.json`` from the model
repository and talks to Triton through ``tritonclient``.

Cold start: an unknown user is scored with every user feature set to the
reserved id 0 ("unknown"), and the response says ``cold_start: true``.
Unknown items are a client error: the caller learns which ids to drop.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from features.encoding import encode_padded
from features.spec import FeatureSpec


INTERNAL = "internal error; the gateway log has the details under this request id"


class ScoringError(Exception):
    """An error with an HTTP status and a machine-readable code.

    ``message`` and ``details`` go to the client; ``internal`` (hosts, exception
    texts, operator hints) only to the gateway log, under the request id.
    """

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, internal: str | None = None, **details: Any) -> None:
        super().__init__(message if internal is None else f"{message} ({internal})")
        self.message = message
        self.internal = internal
        self.details = details


class UnknownItems(ScoringError):
    status, code = 422, "unknown_items"


class UnknownModel(ScoringError):
    status, code = 404, "unknown_model"


class TooManyCandidates(ScoringError):
    status, code = 413, "too_many_candidates"


class ModelUnavailable(ScoringError):
    status, code = 503, "model_unavailable"


class FeatureStoreUnavailable(ScoringError):
    status, code = 503, "feature_store_unavailable"


class FeatureReader(Protocol):
    def user_features(self, user: str) -> dict[str, int] | None: ...

    def item_features(self, items: Sequence[str]) -> tuple[dict[str, list], list[str]]: ...


class InferenceBackend(Protocol):
    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, str]: ...

    async def ready(self, model: str) -> bool: ...


@dataclass
class ScoreResult:
    user_id: str
    model: str
    model_version: str
    cold_start: bool
    items: list[str]
    scores: list[float]
    timings_ms: dict[str, float] = field(default_factory=dict)
    features: dict[str, dict[str, Any]] | None = None
    """With ``log_features``: the model's user and item feature ids as scored (``items``: one value per candidate)."""

    def ranked(self, top_k: int | None = None) -> list[dict[str, Any]]:
        order = np.argsort(-np.asarray(self.scores), kind="stable")
        if top_k is not None:
            order = order[:top_k]
        return [{"item_id": self.items[i], "score": float(self.scores[i])} for i in order]


def load_model_specs(repo: Path) -> dict[str, FeatureSpec]:
    """spec.json of every model in the (local) Triton model repository."""
    specs: dict[str, FeatureSpec] = {}
    if not repo.exists():
        return specs
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        spec_path = model_dir / "spec.json"
        if spec_path.exists():
            specs[model_dir.name] = FeatureSpec.load(spec_path)
    return specs


def build_inputs(spec: FeatureSpec, user: dict[str, int] | None, items: dict[str, list], n: int) -> dict[str, np.ndarray]:
    """Broadcast the user's features over the n candidates, add item features, pad."""
    columns: dict[str, Any] = {}
    for f in spec.sparse:
        if f.entity == "user":
            value = (user or {}).get(f.name, 0)
            columns[f.name] = [value] * n if not f.multi_valued else [value or []] * n
        elif f.entity == "item":
            if f.name not in items:
                raise ScoringError(INTERNAL,
                                   internal=f"the feature store has no item feature {f.name!r} that the model needs")
            columns[f.name] = items[f.name]
        else:
            columns[f.name] = [0] * n if not f.multi_valued else [[]] * n
    ids, mask = encode_padded(spec, columns)
    inputs = {"sparse_ids": ids, "sparse_mask": mask}
    if spec.dense:
        inputs["dense"] = np.zeros((n, len(spec.dense)), dtype=np.float32)
    return inputs


def used_features(spec: FeatureSpec, user: dict[str, Any] | None, items: dict[str, list]) -> dict[str, dict[str, Any]]:
    """The user and item feature ids ``build_inputs`` feeds the model (unknown user: 0 / [])."""
    def value(f):
        v = (user or {}).get(f.name)
        return v if v is not None else ([] if f.multi_valued else 0)

    return {"user": {f.name: value(f) for f in spec.by_entity("user")},
            "items": {f.name: list(items[f.name]) for f in spec.by_entity("item")}}


class Scorer:
    def __init__(
        self,
        features: FeatureReader,
        backend: InferenceBackend,
        specs: dict[str, FeatureSpec],
        default_model: str,
        max_candidates: int,
    ) -> None:
        self.features = features
        self.backend = backend
        self.specs = specs
        self.default_model = default_model
        self.max_candidates = max_candidates
        self._feature_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-read")

    def spec_for(self, model: str) -> FeatureSpec:
        if model not in self.specs:
            raise UnknownModel(f"model {model!r} is not in the model repository", available=sorted(self.specs))
        return self.specs[model]

    def _read_features(self, user_id: str, item_ids: list[str]):
        return self.features.user_features(user_id), self.features.item_features(item_ids)

    async def score(self, user_id: str, item_ids: list[str], model: str | None = None,
                    log_features: bool = False) -> ScoreResult:
        model = model or self.default_model
        spec = self.spec_for(model)
        if len(item_ids) > self.max_candidates:
            raise TooManyCandidates(
                f"{len(item_ids)} candidates exceed the limit of {self.max_candidates}; split the request",
                limit=self.max_candidates,
            )
        t0 = time.perf_counter()
        try:
            # Feast reads block (SQLite/Redis + protobuf): on one worker thread (Feast stays
            # single-threaded) the event loop keeps serving other requests and Triton responses.
            user, (items, unknown) = await asyncio.get_running_loop().run_in_executor(
                self._feature_executor, self._read_features, user_id, item_ids)
        except Exception as exc:  # sqlite/redis errors surface as many types
            raise FeatureStoreUnavailable("the feature store is unavailable; retry later",
                                          internal=f"online feature read failed: {type(exc).__name__}: {exc}",
                                          reason="feature_read_failed") from exc
        if unknown:
            raise UnknownItems(f"{len(unknown)} item id(s) are not in the feature store", unknown_items=unknown)
        t1 = time.perf_counter()
        try:
            inputs = build_inputs(spec, user, items, len(item_ids))
        except (KeyError, ValueError) as exc:  # the online store and the model disagree on vocabularies
            raise ScoringError(
                INTERNAL,
                internal=f"the online features do not fit model {model!r} ({exc}); re-export the model after "
                "`recast features build` so both use the same vocabularies",
            ) from exc
        t2 = time.perf_counter()
        probs, version = await self.backend.infer(model, inputs)
        t3 = time.perf_counter()
        return ScoreResult(
            user_id=user_id,
            model=model,
            model_version=version,
            cold_start=user is None,
            items=list(item_ids),
            scores=probs.reshape(-1).astype(float).tolist(),
            timings_ms={
                "features": (t1 - t0) * 1e3,
                "encode": (t2 - t1) * 1e3,
                "inference": (t3 - t2) * 1e3,
            },
            features=used_features(spec, user, items) if log_features else None,
        )
