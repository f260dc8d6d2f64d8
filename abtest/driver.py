"""How the simulator reaches a recommender: the ``Driver`` interface and its implementations.

A driver takes one request (a user and candidate items) and returns what was served:
the ranked items, the model that ranked them and the experiment assignments.

* ``InProcessDriver``: the abtest router plus in-process rankers (no services); the
  default rankers are noisy versions of the simulator's ground truth, one noise level per
  model name, so "better" models really do rank better.
* ``GatewayDriver``: HTTP ``POST /v1/score`` on the running scoring gateway. Until the
  gateway routes by itself (``gateway_routes=False``) the driver asks the router and passes
  ``model``; once the gateway hook is in (``gateway_routes=True``), the gateway picks the model,
  returns ``experiments`` in the response and logs exposures on Kafka itself, so the
  driver's own exposure rows are only a mirror.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from abtest.assignment import Assignment
from abtest.routing import RoutingDecision, Router


@dataclass
class ServeRequest:
    request_id: str
    unit_id: str
    ts: datetime
    candidates: list[str]
    top_k: int
    route: bool = True
    """False: serve the default model outside every experiment (the simulator's pre-period)."""


@dataclass
class Served:
    request_id: str
    unit_id: str
    ts: datetime
    items: list[str]
    model: str | None
    assignments: list[Assignment] = field(default_factory=list)
    holdout: bool = False

    def exposure_rows(self) -> list[dict[str, Any]]:
        d = RoutingDecision(self.unit_id, self.model, self.assignments, self.holdout)
        return d.exposure_rows(self.request_id, self.ts, len(self.items), self.model)


class Driver(Protocol):
    def serve(self, request: ServeRequest) -> Served: ...


Ranker = Callable[[str, Sequence[str]], np.ndarray]
"""(unit_id, candidate item ids) -> scores (higher first)."""


class OracleRanker:
    """SIMULATION: ranks by the simulator's true click logit plus Gaussian noise (``noise`` = 0: perfect)."""

    def __init__(self, simulator: Any, noise: float, seed: int = 0) -> None:
        self.sim, self.noise = simulator, noise
        self.rng = np.random.default_rng(seed)

    def __call__(self, unit_id: str, items: Sequence[str]) -> np.ndarray:
        u = self.sim.unit_index.get(unit_id, 0)
        idx = np.asarray([self.sim.item_index[i] for i in items])
        logit = self.sim.attractiveness_logit(np.full(idx.size, u), idx)
        return logit + self.noise * self.rng.standard_normal(idx.size)


class InProcessDriver:
    """Router + rankers in this process (no services)."""

    def __init__(self, router: Router, rankers: Mapping[str, Ranker], default_model: str | None = None) -> None:
        self.router = router
        self.rankers = dict(rankers)
        self.default_model = default_model or router.default_model or next(iter(self.rankers))

    def serve(self, request: ServeRequest) -> Served:
        d = self.router.route(request.unit_id, now=request.ts) if request.route else RoutingDecision(request.unit_id, self.router.default_model)
        model = d.model or self.default_model
        if model not in self.rankers:
            raise KeyError(f"no ranker for model {model!r} (have {sorted(self.rankers)})")
        scores = np.asarray(self.rankers[model](request.unit_id, request.candidates))
        order = np.argsort(-scores, kind="stable")[: request.top_k]
        return Served(request.request_id, request.unit_id, request.ts, [request.candidates[i] for i in order], model, d.assignments, d.holdout)


class GatewayDriver:
    """The real scoring gateway over HTTP (``httpx``; pass ``client`` to reuse one or to test)."""

    def __init__(self, base_url: str = "http://127.0.0.1:18080", router: Router | None = None, gateway_routes: bool = False,
                 client: Any = None, timeout_s: float = 10.0) -> None:
        import httpx

        if not gateway_routes and router is None:
            raise ValueError("GatewayDriver needs a router until the gateway routes experiments itself")
        self.router = router
        self.gateway_routes = gateway_routes
        self.client = client or httpx.Client(base_url=base_url, timeout=timeout_s)

    def serve(self, request: ServeRequest) -> Served:
        body: dict[str, Any] = {"user_id": request.unit_id, "item_ids": request.candidates, "top_k": request.top_k}
        decision = None
        if not self.gateway_routes:
            decision = (self.router.route(request.unit_id, now=request.ts) if request.route  # type: ignore[union-attr]
                        else RoutingDecision(request.unit_id, self.router.default_model))  # type: ignore[union-attr]
            if decision.model:
                body["model"] = decision.model
        r = self.client.post("/v1/score", json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:300]}")
        data = r.json()
        items = [i["item_id"] for i in data["items"]]
        if decision is not None:
            return Served(request.request_id, request.unit_id, request.ts, items, data.get("model"), decision.assignments, decision.holdout)
        assignments = [Assignment(e["experiment"], e.get("layer", ""), e["variant"], data.get("model")) for e in data.get("experiments", [])]
        return Served(request.request_id, request.unit_id, request.ts, items, data.get("model"), assignments, bool(data.get("holdout", False)))

    def close(self) -> None:
        self.client.close()
