"""The scoring gateway: ``POST /v1/score`` plus health, readiness and metrics.

Run with ``recast serve`` (uvicorn). OpenAPI docs at ``/docs``. Every error
is JSON with an ``error`` code; malformed requests get 422, unknown items
422 (listing them), unknown models 404, oversized requests 413, and an
unreachable Triton or feature store 503 (counted in
``recast_gateway_backend_errors_total``).

Every scored response is also logged as an exposure event to Kafka by
``serving.exposures`` without blocking the request (bounded queue, background
producer; the policy when Kafka is down is in that module's docstring).
"""

from __future__ import annotations

import gc
import time
import uuid
from datetime import datetime, timezone
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, BeforeValidator, Field, StrictInt, StrictStr

from recast.settings import Settings, get_settings
from serving.scoring import ScoringError, Scorer, load_model_specs

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


def _as_id(value: Any) -> Any:
    """Ids may be strings or integers (MovieLens ids are numbers); booleans are not ids."""
    if isinstance(value, bool):
        raise ValueError("ids must be strings or integers, not booleans")
    if isinstance(value, int):
        return str(value)
    return value


Id = Annotated[StrictStr, BeforeValidator(_as_id), Field(min_length=1, max_length=128)]


class ScoreRequest(BaseModel):
    user_id: Id
    item_ids: list[Id] = Field(min_length=1, description="candidate items to score (at least one)")
    model: StrictStr | None = Field(None, description="model name in the repository; default from settings")
    top_k: StrictInt | None = Field(None, ge=1, description="return only the best k items")


class ScoredItem(BaseModel):
    item_id: str
    score: float


class ScoreResponse(BaseModel):
    request_id: str
    user_id: str
    model: str
    model_version: str
    cold_start: bool = Field(description="true when the user is unknown and scored with 'unknown' user features")
    items: list[ScoredItem]
    timings_ms: dict[str, float]
    experiments: list[dict[str, str]] = Field(default_factory=list, description="experiment assignments that chose the model")
    holdout: bool = Field(False, description="true when the user is in the global experiment holdout")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("recast_gateway_requests_total", "HTTP requests", ["route", "status"], registry=registry)
        self.latency = Histogram("recast_gateway_request_seconds", "Whole request latency", ["route"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.features = Histogram("recast_gateway_feature_fetch_seconds", "Feast online read", buckets=_LATENCY_BUCKETS, registry=registry)
        self.inference = Histogram("recast_gateway_triton_seconds", "Triton inference call", ["model"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.candidates = Histogram("recast_gateway_candidates", "Candidates per request", buckets=(1, 10, 50, 100, 200, 500, 1000), registry=registry)
        self.backend_errors = Counter("recast_gateway_backend_errors_total", "Triton / feature store failures", ["reason"], registry=registry)
        self.cold_starts = Counter("recast_gateway_cold_start_total", "Requests for users unknown to the feature store", registry=registry)
        self.unroutable = Counter("recast_gateway_unroutable_total", "Requests whose experiment variant names a model that is not deployed", ["model"], registry=registry)


def create_app(settings: Settings | None = None, scorer: Scorer | None = None, exposures: Any = None,
               router: Any = None) -> FastAPI:
    """Build the app; ``scorer`` can be injected (tests), otherwise Feast + Triton from settings.

    ``router`` (an ``abtest.routing.Router``) assigns users to experiment variants; without
    it the gateway builds one from ``settings.abtest`` when ``abtest.route_requests`` is on.

    ``exposures`` (a ``serving.exposures.ExposureSink``) can be injected too; without it the
    gateway publishes to Kafka when it builds its own scorer and ``stream.publish_exposures`` is on.
    """
    settings = settings or get_settings()
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    state: dict[str, Any] = {"scorer": scorer, "exposures": exposures, "router": router}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state["scorer"] is None:
            from features.online import OnlineFeatureReader
            from serving.triton_client import TritonBackend

            repo = settings.path(settings.export.local_model_repository)
            specs = load_model_specs(repo)
            if not specs:
                raise RuntimeError(f"no models with spec.json in {repo}: run `recast export` first")
            from streaming.features import uses_stream_features

            mode = settings.stream.gateway_stream_features
            stream = mode == "on" or (mode == "auto" and uses_stream_features(specs.values()))
            state["scorer"] = Scorer(
                OnlineFeatureReader(settings, stream=stream),
                TritonBackend(settings.triton.url, settings.triton.client_timeout_s),
                specs,
                settings.gateway.model_name,
                settings.gateway.max_candidates,
            )
            if state["exposures"] is None and settings.stream.publish_exposures:
                from serving.exposures import ExposurePublisher

                state["exposures"] = ExposurePublisher.from_settings(settings, registry).start()
        if state["router"] is None and settings.abtest.route_requests:
            from abtest.routing import Router

            state["router"] = Router.from_settings(settings)
        # Feast, protobuf, FastAPI and pydantic leave ~200k long-lived objects; a full
        # (gen-2) collection over them stalls the event loop for 100-180 ms, which is
        # the gateway's p99. Move them out of the collector's reach once, at startup.
        gc.collect()
        gc.freeze()
        yield
        if state["exposures"] is not None:
            state["exposures"].close(timeout=5.0)
        backend = getattr(state["scorer"], "backend", None)
        if hasattr(backend, "close"):
            await backend.close()

    app = FastAPI(title="recast scoring gateway", version="0.1.0", lifespan=lifespan)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        if path != "/metrics":
            metrics.requests.labels(path, str(response.status_code)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err.get("loc", ())[1:]), "problem": err.get("msg", "")}
            for err in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"error": "invalid_request", "message": "the request body does not match the schema (see /docs)", "problems": problems})

    @app.exception_handler(ScoringError)
    async def scoring_error(request: Request, exc: ScoringError) -> JSONResponse:
        if exc.status == 503:
            metrics.backend_errors.labels(exc.details.get("reason", exc.code)).inc()
        return JSONResponse(status_code=exc.status, content=exc.body())

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # still JSON with an error code, so clients never parse an HTML/plain-text 500
        return JSONResponse(status_code=500, content={"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"})

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(req: ScoreRequest) -> ScoreResponse:
        started = time.perf_counter()
        model, assignments, holdout, forced = req.model, [], False, req.model is not None
        if state["router"] is not None:
            decision = state["router"].route(req.user_id, requested_model=req.model, now=datetime.now(timezone.utc))
            model, assignments, holdout = decision.model, list(decision.assignments), decision.holdout
            if not forced and model not in state["scorer"].specs:
                # the variant's model is not deployed: serve the default and do not count an
                # exposure (the SRM check of the readout flags the experiment)
                metrics.unroutable.labels(str(model)).inc()
                model, assignments = None, []
        result = await state["scorer"].score(req.user_id, req.item_ids, model)
        metrics.features.observe(result.timings_ms["features"] / 1e3)
        metrics.inference.labels(result.model).observe(result.timings_ms["inference"] / 1e3)
        metrics.candidates.observe(len(req.item_ids))
        if result.cold_start:
            metrics.cold_starts.inc()
        timings = {k: round(v, 3) for k, v in result.timings_ms.items()}
        timings["total"] = round((time.perf_counter() - started) * 1e3, 3)
        response = ScoreResponse(
            request_id=uuid.uuid4().hex,
            user_id=result.user_id,
            model=result.model,
            model_version=result.model_version,
            cold_start=result.cold_start,
            items=[ScoredItem(**i) for i in result.ranked(req.top_k)],
            timings_ms=timings,
            experiments=[{"experiment": a.experiment, "layer": a.layer, "variant": a.variant} for a in assignments],
            holdout=holdout,
        )
        if state["exposures"] is not None:  # never blocks: bounded queue, background producer
            shown = [(i.item_id, i.score) for i in response.items]
            # one exposure per experiment (same request id); one untagged when in none or forced
            for a in (assignments if not forced else []) or [None]:
                state["exposures"].publish_scored(response.request_id, response.user_id, response.model,
                                                  response.model_version, shown, response.cold_start,
                                                  experiment=a.experiment if a else None,
                                                  variant=a.variant if a else None)
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        scorer: Scorer = state["scorer"]
        models = {name: await scorer.backend.ready(name) for name in scorer.specs}
        ok = bool(models.get(scorer.default_model))
        return JSONResponse(status_code=200 if ok else 503, content={"ready": ok, "default_model": scorer.default_model, "models": models})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory serving.gateway:app_factory``."""
    return create_app()
