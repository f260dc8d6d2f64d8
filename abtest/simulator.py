"""A marketplace SIMULATOR for demos and validation. Everything it produces is synthetic.

Users and items are MovieLens-100K's (the ``user`` / ``item`` columns of the parquet
offline store at ``settings.data.features_dir``); when more units are asked for than
MovieLens has users, replicas ``"<user>~<k>"`` are added. Activity follows each
user's MovieLens rating count (heavier raters visit more often) times gamma noise;
items are drawn by their MovieLens popularity. Everything else is invented and
**labelled as simulation** in every output (``simulation.json``, ``"simulated": true``):

* prices: a heavy-tailed distribution per item (log-normal or Pareto, configurable);
* clicks: a ground-truth position-based click model,
  ``P(click) = sigmoid(logit(base_ctr) + a_user + b_item + <f_user, g_item>) * exam(position)``,
  ``exam(k) = 1 / (1 + k) ** position_decay``;
* purchases: ``P(buy | click) = sigmoid(logit(base_rate) + c_user - elasticity * log(price / median))``;
* injected treatment effects per variant: click probability times ``1 + ctr`` and purchase
  probability times ``1 + purchase``. The true relative lifts are then known exactly:
  CTR and clicks per user ``ctr``, GMV and orders per user ``(1 + ctr)(1 + purchase) - 1``,
  AOV ``0`` (prices of bought items are unaffected); they are written to ``simulation.json``.

Two ways to run it:

* ``simulate_direct``: vectorised numpy, writes exposure and outcome tables straight to a
  sink (fast: millions of events; what the benchmarks and tests use);
* ``simulate_driven``: request by request through a ``Driver`` (``abtest.driver``): the
  in-process driver (router + rankers) or the HTTP gateway; the simulator then draws
  clicks and purchases on what was actually served and logs them to the sink.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from abtest.assignment import Assigner
from abtest.config import ExperimentsConfig
from abtest.events import CLICK, EXPOSURE_SCHEMA, OUTCOME_SCHEMA, PURCHASE, EventSink

DEFAULT_START = datetime(2026, 1, 5)


class PriceModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    distribution: Literal["lognormal", "pareto"] = "lognormal"
    median: float = Field(20.0, gt=0)
    sigma: float = Field(1.0, gt=0)
    """log-normal: sd of log price."""
    pareto_shape: float = Field(1.6, gt=0)
    """Pareto: tail index (< 2: infinite variance)."""
    minimum: float = Field(1.0, ge=0)
    cap: float | None = 10_000.0


class ClickModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_ctr: float = Field(0.06, gt=0, lt=1)
    position_decay: float = Field(0.8, ge=0)
    user_sd: float = Field(0.6, ge=0)
    item_sd: float = Field(0.5, ge=0)
    affinity_dim: int = Field(4, ge=0)
    affinity_sd: float = Field(0.5, ge=0)


class PurchaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_rate: float = Field(0.1, gt=0, lt=1)
    price_elasticity: float = Field(0.3, ge=0)
    user_sd: float = Field(0.7, ge=0)


class Effect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ctr: float = Field(0.0, gt=-1)
    """Relative change of the click probability."""
    purchase: float = Field(0.0, gt=-1)
    """Relative change of the purchase probability given a click."""


class SimulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: str
    n_units: int = Field(20_000, gt=0)
    days: int = Field(14, gt=0)
    pre_days: int = Field(7, ge=0)
    start: datetime | None = None
    """Experiment start; default: the experiment's ``start`` in the config, else 2026-01-05."""
    sessions_per_day: float = Field(0.5, gt=0)
    activity_shape: float = Field(1.0, gt=0)
    """Gamma shape of per-user activity noise (smaller: more heterogeneous)."""
    items_per_request: int = Field(10, gt=0)
    effects: dict[str, Effect] = Field(default_factory=dict)
    """Injected effects by variant name (the control should have none)."""
    srm_drop: float = Field(0.0, ge=0, lt=1)
    """Simulated logging bug: this share of treatment units loses all its exposures (shows the SRM banner)."""
    price: PriceModel = Field(default_factory=PriceModel)
    click: ClickModel = Field(default_factory=ClickModel)
    purchase: PurchaseModel = Field(default_factory=PurchaseModel)
    seed: int = 2026
    features_dir: Path | None = None
    """Parquet offline store with ``users.parquet`` / ``items.parquet``; None: synthetic ids."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def true_relative_lifts(effects: dict[str, Effect]) -> dict[str, dict[str, float]]:
    """Exact relative lifts implied by the injected effects (see the module docstring)."""
    out = {}
    for v, e in effects.items():
        g = (1 + e.ctr) * (1 + e.purchase) - 1
        out[v] = {"ctr": e.ctr, "clicks_per_user": e.ctr, "gmv_per_user": g, "orders_per_user": g, "aov": 0.0}
    return out


@dataclass
class Population:
    unit_ids: pl.Series
    base_user: np.ndarray
    activity: np.ndarray
    click_bias: np.ndarray
    buy_bias: np.ndarray
    taste: np.ndarray
    item_ids: pl.Series
    item_pop: np.ndarray
    item_bias: np.ndarray
    item_vec: np.ndarray
    price: np.ndarray


def _load_movielens(features_dir: Path | None) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """User ids with rating counts and item ids with popularity, from the offline store (or synthetic)."""
    if features_dir is not None and (features_dir / "users.parquet").exists() and (features_dir / "items.parquet").exists():
        users = pl.read_parquet(features_dir / "users.parquet", columns=["user"]).get_column("user").cast(pl.String)
        items = pl.read_parquet(features_dir / "items.parquet", columns=["item"]).get_column("item").cast(pl.String)
        inter = sorted(features_dir.glob("interactions_*.parquet"))
        if inter:
            ratings = pl.concat([pl.read_parquet(p, columns=["user", "item"]).cast(pl.String) for p in inter])
            uc = users.to_frame().join(ratings.group_by("user").len(), on="user", how="left").get_column("len").fill_null(1)
            ic = items.to_frame().join(ratings.group_by("item").len(), on="item", how="left").get_column("len").fill_null(1)
            return users.to_list(), uc.to_numpy().astype(float), items.to_list(), ic.to_numpy().astype(float)
        return users.to_list(), np.ones(users.len()), items.to_list(), np.ones(items.len())
    n_users, n_items = 943, 1682
    ranks = np.arange(1, n_items + 1)
    return [str(i) for i in range(1, n_users + 1)], np.ones(n_users), [str(i) for i in range(1, n_items + 1)], 1.0 / ranks


class MarketplaceSimulator:
    """SIMULATION: a synthetic marketplace over MovieLens users and items (see the module docstring)."""

    def __init__(self, cfg: SimulationConfig, experiments: ExperimentsConfig) -> None:
        self.cfg = cfg
        self.experiments = experiments
        self.layer, self.experiment = experiments.find(cfg.experiment)
        self.start = cfg.start or (self.experiment.start.replace(tzinfo=None) if self.experiment.start else DEFAULT_START)
        unknown = sorted(set(cfg.effects) - {v.name for v in self.experiment.variants})
        if unknown:
            raise ValueError(f"effects name variants that {cfg.experiment!r} does not have: {unknown}")
        self.rng = np.random.default_rng(cfg.seed)
        self.pop = self._population()
        self.assignments = Assigner(experiments).assign_experiment(cfg.experiment, self.pop.unit_ids, now=None)

    # ----------------------------------------------------------------------------------- setup
    def _population(self) -> Population:
        cfg, rng = self.cfg, self.rng
        users, user_counts, items, item_counts = _load_movielens(cfg.features_dir)
        n = cfg.n_units
        base = np.arange(n) % len(users)
        replica = np.arange(n) // len(users)
        ids = [users[b] if r == 0 else f"{users[b]}~{r}" for b, r in zip(base, replica)]
        rel = np.sqrt(user_counts / user_counts.mean())[base]
        activity = cfg.sessions_per_day * rel / rel.mean() * rng.gamma(cfg.activity_shape, 1 / cfg.activity_shape, n)
        d = cfg.click.affinity_dim
        pm = cfg.price
        n_items = len(items)
        if pm.distribution == "lognormal":
            price = pm.median * np.exp(pm.sigma * rng.standard_normal(n_items))
        else:  # Pareto with the given median: x_m * 2 ** (1 / shape) = median
            xm = pm.median / 2 ** (1 / pm.pareto_shape)
            price = xm * (1 + rng.pareto(pm.pareto_shape, n_items))
        price = np.maximum(price, pm.minimum)
        if pm.cap is not None:
            price = np.minimum(price, pm.cap)
        return Population(
            unit_ids=pl.Series("unit_id", ids, dtype=pl.String),
            base_user=base,
            activity=activity,
            click_bias=cfg.click.user_sd * rng.standard_normal(n),
            buy_bias=cfg.purchase.user_sd * rng.standard_normal(n),
            taste=rng.standard_normal((n, d)) * math.sqrt(cfg.click.affinity_sd / max(d, 1)),
            item_ids=pl.Series("item_id", items, dtype=pl.String),
            item_pop=item_counts / item_counts.sum(),
            item_bias=cfg.click.item_sd * rng.standard_normal(n_items),
            item_vec=rng.standard_normal((n_items, d)) * math.sqrt(cfg.click.affinity_sd / max(d, 1)),
            price=np.round(price, 2),
        )

    @property
    def unit_index(self) -> dict[str, int]:
        if not hasattr(self, "_unit_index"):
            self._unit_index = {u: i for i, u in enumerate(self.pop.unit_ids.to_list())}
        return self._unit_index

    @property
    def item_index(self) -> dict[str, int]:
        if not hasattr(self, "_item_index"):
            self._item_index = {u: i for i, u in enumerate(self.pop.item_ids.to_list())}
        return self._item_index

    # ----------------------------------------------------------------------------- ground truth
    def attractiveness_logit(self, units: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Ground-truth click logit before the position effect (broadcasts units against items)."""
        p = self.pop
        aff = np.einsum("...d,...d->...", p.taste[units], p.item_vec[items]) if p.taste.shape[1] else 0.0
        return _logit(self.cfg.click.base_ctr) + p.click_bias[units] + p.item_bias[items] + aff

    def click_probability(self, units: np.ndarray, items: np.ndarray, positions: np.ndarray, ctr_mult: np.ndarray | float = 1.0) -> np.ndarray:
        exam = 1.0 / (1.0 + positions) ** self.cfg.click.position_decay
        return np.minimum(1.0, _sigmoid(self.attractiveness_logit(units, items)) * exam * ctr_mult)

    def purchase_probability(self, units: np.ndarray, items: np.ndarray, buy_mult: np.ndarray | float = 1.0) -> np.ndarray:
        pm = self.cfg.purchase
        logit = _logit(pm.base_rate) + self.pop.buy_bias[units] - pm.price_elasticity * np.log(self.pop.price[items] / self.cfg.price.median)
        return np.minimum(1.0, _sigmoid(logit) * buy_mult)

    def _multipliers(self, variant_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-unit click and purchase multipliers from the injected effects (1 outside the experiment)."""
        names = [v.name for v in self.experiment.variants]
        ctr = np.ones(len(names) + 1)
        buy = np.ones(len(names) + 1)
        for i, name in enumerate(names):
            e = self.cfg.effects.get(name)
            if e is not None:
                ctr[i], buy[i] = 1 + e.ctr, 1 + e.purchase
        return ctr[variant_idx], buy[variant_idx]

    def _variant_index(self) -> np.ndarray:
        """Per unit: index of its variant, len(variants) when not enrolled."""
        names = [v.name for v in self.experiment.variants]
        lookup = {n: i for i, n in enumerate(names)}
        return np.asarray([lookup.get(v, len(names)) if v is not None else len(names) for v in self.assignments.get_column("variant").to_list()])

    def metadata(self, mode: str) -> dict:
        return {
            "simulated": True,
            "label": "SIMULATED DATA: synthetic marketplace over MovieLens-100K users/items; not real traffic",
            "mode": mode,
            "experiment": self.experiment.name,
            "start": self.start.isoformat(),
            "days": self.cfg.days,
            "pre_days": self.cfg.pre_days,
            "n_units": self.cfg.n_units,
            "effects": {k: v.model_dump() for k, v in self.cfg.effects.items()},
            "true_relative_lift": true_relative_lifts(self.cfg.effects),
            "srm_drop": self.cfg.srm_drop,
            "config": json.loads(self.cfg.model_dump_json()),
        }

    # ------------------------------------------------------------------------------ direct mode
    def simulate_direct(self, sink: EventSink) -> dict:
        """Vectorised simulation of the pre-period and the experiment, day by day, into ``sink``."""
        cfg, rng, pop = self.cfg, self.rng, self.pop
        names = [v.name for v in self.experiment.variants]
        models = [v.model or (self.experiments.default_model or "default") for v in self.experiment.variants]
        default_model = self.experiments.default_model or "default"
        vidx = self._variant_index()
        ctr_mult, buy_mult = self._multipliers(vidx)
        dropped = np.zeros(cfg.n_units, dtype=bool)
        if cfg.srm_drop > 0:
            treated = vidx != names.index(self.experiment.control) if self.experiment.control in names else vidx < len(names)
            dropped = treated & (vidx < len(names)) & (rng.random(cfg.n_units) < cfg.srm_drop)
        var_map = {i: n for i, n in enumerate(names)}
        model_map = {i: m for i, m in enumerate(models + [default_model])}
        K = cfg.items_per_request
        n_req_total = n_out_total = 0
        for day in range(-cfg.pre_days, cfg.days):
            in_exp = day >= 0
            counts = rng.poisson(pop.activity)
            units = np.repeat(np.arange(cfg.n_units), counts)
            R = units.size
            if R == 0:
                continue
            day0 = self.start + timedelta(days=day)
            ts = (np.datetime64(day0, "us") + (rng.random(R) * 86_400e6).astype("timedelta64[us]"))
            order = np.argsort(ts, kind="stable")
            units, ts = units[order], ts[order]
            items = rng.choice(pop.item_ids.len(), size=(R, K), p=pop.item_pop)
            pos = np.broadcast_to(np.arange(K), (R, K))
            um = units[:, None]
            cm = ctr_mult[um] if in_exp else 1.0
            clicked = rng.random((R, K)) < self.click_probability(um, items, pos, cm)
            rid = np.arange(n_req_total, n_req_total + R)
            n_req_total += R
            # exposures
            enrolled = (vidx[units] < len(names)) & in_exp
            keep = ~(dropped[units] & enrolled)
            v_of = np.where(enrolled, vidx[units], len(names))
            exp = pl.DataFrame(
                {"rid": rid[keep], "ts": ts[keep], "u": units[keep], "enrolled": enrolled[keep], "v": v_of[keep]}
            ).with_columns(
                pl.when(pl.col("enrolled")).then(pl.lit(self.layer.name)).alias("layer"),
                pl.when(pl.col("enrolled")).then(pl.lit(self.experiment.name)).alias("experiment"),
                pl.col("v").replace_strict(var_map, default=None, return_dtype=pl.String).alias("variant"),
                pl.col("v").replace_strict(model_map, return_dtype=pl.String).alias("model"),
                pl.lit(K, dtype=pl.Int32).alias("n_items"),
            )
            sink.write_exposures(self._finish(exp, EXPOSURE_SCHEMA))
            # outcomes: clicks, then purchases among clicks
            r_i, k_i = np.nonzero(clicked)
            cu, ci = units[r_i], items[r_i, k_i]
            bought = rng.random(r_i.size) < self.purchase_probability(cu, ci, buy_mult[cu] if in_exp else 1.0)
            click_ts = ts[r_i] + (rng.exponential(30.0, r_i.size) * 1e6).astype("timedelta64[us]")
            buy_ts = click_ts[bought] + (rng.exponential(600.0, int(bought.sum())) * 1e6).astype("timedelta64[us]")
            out = pl.DataFrame(
                {
                    "rid": np.concatenate([rid[r_i], rid[r_i][bought]]),
                    "ts": np.concatenate([click_ts, buy_ts]),
                    "u": np.concatenate([cu, cu[bought]]),
                    "i": np.concatenate([ci, ci[bought]]),
                    "buy": np.concatenate([np.zeros(r_i.size, dtype=bool), np.ones(int(bought.sum()), dtype=bool)]),
                    "value": np.concatenate([np.zeros(r_i.size), pop.price[ci[bought]]]),
                },
            ).with_columns(pl.when(pl.col("buy")).then(pl.lit(PURCHASE)).otherwise(pl.lit(CLICK)).alias("event"))
            n_out_total += out.height
            sink.write_outcomes(self._finish(out, OUTCOME_SCHEMA))
        sink.close()
        meta = self.metadata("direct")
        meta["requests"] = n_req_total
        meta["outcome_events"] = n_out_total
        return meta

    def _finish(self, frame: pl.DataFrame, schema: dict) -> pl.DataFrame:
        """Integer indices -> string ids, the public schema."""
        cols = [pl.format("r{}", pl.col("rid")).alias("request_id"), pl.col("ts").cast(pl.Datetime("us"))]
        frame = frame.with_columns(pl.Series("unit_id", self.pop.unit_ids.gather(frame.get_column("u"))))
        if "i" in frame.columns:
            frame = frame.with_columns(pl.Series("item_id", self.pop.item_ids.gather(frame.get_column("i"))))
        return frame.with_columns(cols).select(list(schema)).cast(schema)

    # ------------------------------------------------------------------------------ driven mode
    def simulate_driven(self, driver, sink: EventSink, candidates: int = 50, max_requests: int | None = None) -> dict:
        """Request by request through ``driver`` (see ``abtest.driver``): the driver serves a ranked
        list (and reports the exposures); the simulator draws clicks and purchases on it."""
        from abtest.driver import ServeRequest

        cfg, rng, pop = self.cfg, self.rng, self.pop
        K = cfg.items_per_request
        names = [v.name for v in self.experiment.variants]
        n_req = 0
        exp_rows: list[dict] = []
        out_rows: list[dict] = []
        for day in range(-cfg.pre_days, cfg.days):
            counts = rng.poisson(pop.activity)
            units = np.repeat(np.arange(cfg.n_units), counts)
            ts = self.start + timedelta(days=day)
            offs = np.sort(rng.random(units.size) * 86_400)
            order = rng.permutation(units.size)
            for u, off in zip(units[order], offs):
                if max_requests is not None and n_req >= max_requests:
                    break
                when = ts + timedelta(seconds=float(off))
                cand = rng.choice(pop.item_ids.len(), size=candidates, replace=False, p=pop.item_pop)
                # pre-period: the default model for everyone (no treatment leaks into the CUPED covariates)
                req = ServeRequest(f"r{n_req}", pop.unit_ids[int(u)], when, [pop.item_ids[int(i)] for i in cand], K, route=day >= 0)
                n_req += 1
                served = driver.serve(req)
                in_exp = day >= 0
                variant = next((a.variant for a in served.assignments if a.experiment == self.experiment.name), None) if in_exp else None
                if not in_exp:
                    served.assignments = []
                exp_rows.extend({**row, "items": served.items[:K]} for row in served.exposure_rows())
                eff = self.cfg.effects.get(variant) if variant in names else None
                shown = np.asarray([self.item_index[i] for i in served.items[:K]])
                if shown.size == 0:
                    continue
                pclick = self.click_probability(np.full(shown.size, u), shown, np.arange(shown.size), (1 + eff.ctr) if eff else 1.0)
                for pos in np.nonzero(rng.random(shown.size) < pclick)[0]:
                    it = int(shown[pos])
                    t_click = when + timedelta(seconds=float(rng.exponential(30.0)))
                    out_rows.append({"request_id": req.request_id, "ts": t_click, "unit_id": req.unit_id, "item_id": pop.item_ids[it], "event": CLICK, "value": 0.0})
                    pbuy = self.purchase_probability(np.asarray([u]), np.asarray([it]), (1 + eff.purchase) if eff else 1.0)[0]
                    if rng.random() < pbuy:
                        t_buy = t_click + timedelta(seconds=float(rng.exponential(600.0)))
                        out_rows.append({"request_id": req.request_id, "ts": t_buy, "unit_id": req.unit_id, "item_id": pop.item_ids[it], "event": PURCHASE, "value": float(pop.price[it])})
            if exp_rows:
                sink.write_exposures(pl.DataFrame(exp_rows, schema={**EXPOSURE_SCHEMA, "items": pl.List(pl.String)}))
            if out_rows:
                sink.write_outcomes(pl.DataFrame(out_rows, schema=OUTCOME_SCHEMA))
            exp_rows, out_rows = [], []
            if max_requests is not None and n_req >= max_requests:
                break
        sink.close()
        meta = self.metadata("driven")
        meta["requests"] = n_req
        meta["driver"] = type(driver).__name__
        return meta
