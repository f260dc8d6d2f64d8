"""The scoring gateway: ``POST /v1/score`` plus health, readiness and metrics.

Run with ``recast serve`` (uvicorn). OpenAPI docs at ``/docs``; the schema
documents every status a route can answer, with the real bodies.

The contract (see ``serving/http_contract.py`` for the layer that enforces the
first three points before any route runs):

* every answer has an ``X-Request-ID`` header; every error is ``ErrorBody``
  JSON ``{error, message, request_id, ...}``; details meant for operators
  (hosts, exception texts) are only in the log, under the request id;
* bodies above ``gateway.max_body_bytes`` are refused with 413 before parsing;
* with ``gateway.api_key`` set, every route except ``/healthz`` and ``/readyz``
  needs the key (401 otherwise);
* ``item_ids``: 1 to ``gateway.max_candidates`` ids (more: 413
  ``too_many_candidates``; the limit counts the list as sent). **Duplicates are dropped, the first occurrence
  kept**: each candidate is scored, returned and logged as an exposure once,
  in the order first seen. Unknown ids are 422 ``unknown_items`` (listed);
* ``model``: absent means the default (or the experiment's variant); an
  empty string is invalid (422); an unknown name is 404 ``unknown_model``;
* an unreachable Triton or feature store is 503 (counted in
  ``recast_gateway_backend_errors_total``);
* unknown fields in the body are refused (422), so a typo is not silently ignored.

``/readyz`` is honest about the models (``serving/readiness.py``): a failed load
of the newest version or a model file that no longer matches its publication
record makes it 503 even while Triton still serves an older instance.

Every scored response is also logged as an exposure event to Kafka by
``serving.exposures`` without blocking the request (bounded queue, background
producer; the policy when Kafka is down is in that module's docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from datetime import datetime, timezone
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr, create_model
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from recast.settings import Settings, get_settings
from serving.http_contract import ErrorBody, Guard, error_payload, request_id_of
from serving.readiness import ModelFiles, assess
from serving.scoring import ScoringError, Scorer, load_model_specs

log = logging.getLogger("recast.gateway")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes answer without the API key
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "body_too_large", 415: "unsupported_media_type"}


def _as_id(value: Any) -> Any:
    """Ids may be strings or integers (MovieLens ids are numbers); booleans are not ids."""
    if isinstance(value, bool):
        raise ValueError("ids must be strings or integers, not booleans")
    if isinstance(value, int):
        return str(value)
    return value


def _first_occurrences(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


Id = Annotated[StrictStr, BeforeValidator(_as_id), Field(min_length=1, max_length=128)]
Candidates = Annotated[list[Id], AfterValidator(_first_occurrences)]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"user_id": "196", "item_ids": ["242", "302", "377", "51"]},
                     {"user_id": 196, "item_ids": [242, 302], "model": "dlf", "top_k": 1}]})

    user_id: Id
    item_ids: Candidates = Field(min_length=1, max_length=500,
                                 description="candidate items to score; duplicates are dropped (first occurrence kept)")
    model: StrictStr | None = Field(None, min_length=1, max_length=128,
                                    description="model name in the repository; absent: the default (or the experiment's variant)")
    top_k: StrictInt | None = Field(None, ge=1, description="return only the best k items")


def _at_most(limit: int) -> BeforeValidator:
    """Refuse an over-long list before its items are validated (87k ids in an allowed body: 25 ms -> 0)."""
    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            raise PydanticCustomError("too_long", "List should have at most {max_length} items", {"max_length": limit})
        return value
    return BeforeValidator(check)


def score_request_model(max_candidates: int) -> type[ScoreRequest]:
    """``ScoreRequest`` with ``item_ids`` bounded by the configured candidate limit."""
    bounded = Annotated[list[Id], _at_most(max_candidates), AfterValidator(_first_occurrences)]
    return create_model("ScoreRequest", __base__=ScoreRequest, item_ids=(bounded, Field(
        min_length=1, max_length=max_candidates,
        description=f"candidate items to score (1 to {max_candidates}); duplicates are dropped (first occurrence kept)")))


class ScoredItem(BaseModel):
    item_id: str
    score: float


class ScoreResponse(BaseModel):
    request_id: str = Field(description="also in the X-Request-ID header and in the exposure events")
    user_id: str
    model: str
    model_version: str
    cold_start: bool = Field(description="true when the user is unknown and scored with 'unknown' user features")
    items: list[ScoredItem]
    timings_ms: dict[str, float]
    experiments: list[dict[str, str]] = Field(default_factory=list, description="experiment assignments that chose the model")
    holdout: bool = Field(False, description="true when the user is in the global experiment holdout")


class ReadyBody(BaseModel):
    ready: bool = Field(description="true when the default model is healthy (serving/readiness.py)")
    default_model: str
    models: dict[str, bool] = Field(description="health of every served model")
    problems: dict[str, list[str]] = Field(description="why a model is not healthy (empty lists when it is)")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "the body cannot be read (e.g. not UTF-8)", 401: "the API key is missing or wrong",
            404: "unknown model", 413: "body larger than gateway.max_body_bytes, or more than max_candidates items",
            422: "the body does not match the schema, or unknown item ids",
            500: "internal error (details in the gateway log under the request id)",
            503: "the model server or the feature store is unavailable (retry)"}
    return {s: {"model": ErrorBody, "description": what[s]} for s in statuses}


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
        self.model_healthy = Gauge("recast_gateway_model_healthy", "1 while a served model passes the readiness checks (serving/readiness.py)", ["model"], registry=registry)

    def observe(self, route: str, status: int, seconds: float) -> None:
        if route != "/metrics":
            self.requests.labels(route, str(status)).inc()
            self.latency.labels(route).observe(seconds)


def _error(request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None,
           **details: Any) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers,
                        content=error_payload(request_id_of(request.scope), code, message, **details))


def create_app(settings: Settings | None = None, scorer: Scorer | None = None, exposures: Any = None,
               router: Any = None) -> FastAPI:
    """Build the app; ``scorer`` can be injected (tests), otherwise Feast + Triton from settings.

    ``router`` (an ``abtest.routing.Router``) assigns users to experiment variants; without
    it the gateway builds one from ``settings.abtest`` when ``abtest.route_requests`` is on.

    ``exposures`` (a ``serving.exposures.ExposureSink``) can be injected too; without it the
    gateway publishes to Kafka when it builds its own scorer and ``stream.publish_exposures`` is on.
    """
    settings = settings or get_settings()
    g = settings.gateway
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    state: dict[str, Any] = {"scorer": scorer, "exposures": exposures, "router": router,
                             "feature_log_sample": settings.loop.consistency_sample}
    model_files = ModelFiles(settings.path(settings.export.local_model_repository))
    api_key = g.api_key.get_secret_value() if g.api_key is not None else None
    if g.metrics_port and g.workers != 1:
        raise ValueError("gateway.metrics_port needs gateway.workers: 1 (each worker would bind the port)")

    async def model_health() -> dict[str, list[str]]:
        scorer: Scorer = state["scorer"]
        backend = scorer.backend
        index = await backend.repository_index() if hasattr(backend, "repository_index") else []
        latest = await asyncio.to_thread(model_files.latest_versions)
        health = {}
        for name in scorer.specs:
            ready = await backend.ready(name)
            files = await asyncio.to_thread(model_files.problems, name, latest[name]) if name in latest else []
            health[name] = assess(name, ready, index, latest.get(name), files)
            metrics.model_healthy.labels(name).set(0 if health[name] else 1)
        return health

    async def watch_models() -> None:
        while True:
            try:
                await model_health()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one failure
                log.exception("model health check failed")
            await asyncio.sleep(g.readiness_interval_s)

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
                g.model_name,
                g.max_candidates,
            )
            if state["exposures"] is None and settings.stream.publish_exposures:
                from serving.exposures import ExposurePublisher

                state["exposures"] = ExposurePublisher.from_settings(settings, registry).start()
        if state["router"] is None and settings.abtest.route_requests:
            from abtest.routing import Router

            state["router"] = Router.from_settings(settings)
        metrics_server = None
        if g.metrics_port:
            from prometheus_client import start_http_server

            metrics_server, _ = start_http_server(g.metrics_port, addr=g.metrics_host, registry=registry)
        watcher = asyncio.create_task(watch_models())
        # Feast, protobuf, FastAPI and pydantic leave ~200k long-lived objects; a full
        # (gen-2) collection over them stalls the event loop for 100-180 ms, which is
        # the gateway's p99. Move them out of the collector's reach once, at startup.
        gc.collect()
        gc.freeze()
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        if state["exposures"] is not None:
            state["exposures"].close(timeout=5.0)
        backend = getattr(state["scorer"], "backend", None)
        if hasattr(backend, "close"):
            await backend.close()

    app = FastAPI(title="recast scoring gateway", version="0.1.0", lifespan=lifespan,
                  docs_url="/docs" if g.docs else None, redoc_url="/redoc" if g.docs else None)
    app.add_middleware(Guard, max_body_bytes=g.max_body_bytes, api_key=api_key, open_paths=OPEN_PATHS,
                       observe=metrics.observe)
    if g.cors_origins:  # outside the guard: preflight requests carry no key
        app.add_middleware(CORSMiddleware, allow_origins=g.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
                           expose_headers=["x-request-id"])

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "too_long" and tuple(e.get("loc", ()))[1:] == ("item_ids",) for e in errors):
            return _error(request, 413, "too_many_candidates",
                          f"more than {g.max_candidates} candidates; split the request", limit=g.max_candidates)
        problems = [{"field": "", "problem": f"not valid JSON ({e.get('ctx', {}).get('error', 'decode error')})"}
                    if e.get("type") == "json_invalid" else
                    {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "problem": e.get("msg", "")}
                    for e in errors]
        return _error(request, 422, "invalid_request", "the request body does not match the schema (see /docs)",
                      problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal_error")
        message = {400: "the request body cannot be read; send UTF-8 JSON",
                   404: f"no route {request.url.path}; see /docs",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code)
        if message is None:
            message = str(exc.detail) if exc.status_code < 500 else "internal error"
            log.info("request %s: %s %s", request_id_of(request.scope), exc.status_code, exc.detail)
        return _error(request, exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(ScoringError)
    async def scoring_error(request: Request, exc: ScoringError) -> JSONResponse:
        if exc.status == 503:
            metrics.backend_errors.labels(exc.details.get("reason", exc.code)).inc()
        if exc.internal:
            level = logging.ERROR if exc.status >= 500 and exc.status != 503 else logging.WARNING
            log.log(level, "request %s: %s: %s", request_id_of(request.scope), exc.code, exc.internal)
        return _error(request, exc.status, exc.code, exc.message, **exc.details)

    request_model = score_request_model(g.max_candidates)

    async def score(req, request: Request) -> ScoreResponse:
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
        log_features = state["exposures"] is not None and random.random() < state["feature_log_sample"]
        result = await state["scorer"].score(req.user_id, req.item_ids, model, log_features=log_features)
        metrics.features.observe(result.timings_ms["features"] / 1e3)
        metrics.inference.labels(result.model).observe(result.timings_ms["inference"] / 1e3)
        metrics.candidates.observe(len(req.item_ids))
        if result.cold_start:
            metrics.cold_starts.inc()
        timings = {k: round(v, 3) for k, v in result.timings_ms.items()}
        timings["total"] = round((time.perf_counter() - started) * 1e3, 3)
        response = ScoreResponse(
            request_id=request_id_of(request.scope),
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
            logged = {}
            if result.features is not None:  # sampled: the ids it was scored with, for the consistency check
                where = {item: k for k, item in enumerate(result.items)}
                rows = [where[i] for i, _ in shown]
                logged = {"features": {"user": result.features["user"],
                                       "items": {n: [v[k] for k in rows] for n, v in result.features["items"].items()}}}
            # one exposure per experiment (same request id); one untagged when in none or forced
            for a in (assignments if not forced else []) or [None]:
                state["exposures"].publish_scored(response.request_id, response.user_id, response.model,
                                                  response.model_version, shown, response.cold_start,
                                                  experiment=a.experiment if a else None,
                                                  variant=a.variant if a else None, **logged)
        return response

    score.__annotations__["req"] = request_model  # the class is built per app (candidate limit)
    secured = _errors(401) if api_key else {}
    app.post("/v1/score", response_model=ScoreResponse, summary="Score candidate items for a user",
             responses={**_errors(400, 404, 413, 422, 500, 503), **secured})(score)

    @app.get("/healthz", responses=_errors(500), summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyBody, summary="Readiness: the default model is healthy",
             responses={503: {"model": ReadyBody, "description": "the default model is not healthy"}, **_errors(500)})
    async def readyz() -> JSONResponse:
        health = await model_health()
        default = state["scorer"].default_model
        ok = default in health and not health[default]
        body = ReadyBody(ready=ok, default_model=default, models={n: not p for n, p in health.items()}, problems=health)
        return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())

    if not g.metrics_port:
        @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
                 responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                  "description": "Prometheus text exposition format"}, **_errors(500), **secured})
        async def metrics_endpoint() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if api_key:
        _document_api_key(app)
    return app


def _document_api_key(app: FastAPI) -> None:
    """Add the bearer / X-API-Key schemes to the OpenAPI schema for every route but the probes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, operations in schema["paths"].items():
                if path not in OPEN_PATHS:
                    for op in operations.values():
                        op["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory serving.gateway:app_factory``."""
    return create_app()
