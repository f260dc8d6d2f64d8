"""Gateway under load: POST /v1/score with 100-candidate requests at a fixed offered rate.

By default this starts its own stack in a temporary home (never the one on the
default ports): a Feast online store materialised from ``data/features``, a
local Triton model repository holding ``artifacts/models/dlf/1/model.onnx``
(Python backend running onnxruntime, dynamic batching on, as ``recast export``
writes it), a ``tritonserver`` and the gateway (uvicorn) on free ports; all of
it is stopped afterwards. ``--gateway-url`` drives an already running gateway
instead.

Runs, in order:

1. the parts of a request in isolation, on the idle stack, interleaved in
   blocks: bare onnxruntime in this process on the very same 100-row inputs
   the gateway builds (serving.scoring.build_inputs from the parquet
   features), the floor a request cannot beat; the same inputs sent straight
   to Triton (sync ``tritonclient.http``); the gateway's Feast read in this
   process. Half of these calls run here, half after the load (step 4);
2. open loop: requests leave on a fixed schedule (``--rate`` req/s for
   ``--duration`` s) whether or not earlier ones have returned, so a slow
   server cannot slow the load down; latency is measured from the scheduled
   send time (no coordinated omission) and from the actual send;
3. closed loop: ``--concurrency`` clients back to back for
   ``--closed-duration`` s, the maximum the stack sustains;
4. the second half of step 1.

Gateways that publish exposures to Kafka never reach another stack's broker:
Kafka points at a free port, publishing is off unless ``--exposures private``
starts a broker of our own there.

The gateway's ``timings_ms`` (features = Feast online read, encode, inference
= the Triton call, total = inside the handler) break the latency down.

    .venv/bin/python benchmarks/gateway_load.py --rate 25 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway-url", default=None, help="use this running gateway (e.g. http://127.0.0.1:18080) instead of starting a stack")
    p.add_argument("--triton-url", default=None, help="with --gateway-url: that gateway's Triton (host:port), for the direct-Triton row")
    p.add_argument("--features-dir", type=Path, default=common.FEATURES_DIR, help="users/items/test parquet for request bodies and the ORT baseline")
    p.add_argument("--onnx", type=Path, default=common.ONNX_MODEL, help="model served by the started Triton and timed bare")
    p.add_argument("--spec", type=Path, default=common.ONNX_SPEC, help="spec.json of that model")
    p.add_argument("--model", default="dlf", help="model name in the repository / request")
    p.add_argument("--candidates", type=int, default=100, help="items per request")
    p.add_argument("--rate", type=float, default=25.0, help="offered load, requests/s (open loop)")
    p.add_argument("--duration", type=float, default=30.0, help="open-loop seconds")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load at --rate before measuring")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop clients (0 = skip the closed loop)")
    p.add_argument("--closed-duration", type=float, default=10.0)
    p.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp", help="HTTP client of the load generator")
    p.add_argument("--max-connections", type=int, default=64)
    p.add_argument("--idle-calls", type=int, default=300, help="calls of each idle part (bare ORT, direct Triton, Feast read), half before and half after the load")
    p.add_argument("--no-components", action="store_true", help="time only bare ORT while idle (no direct Triton / Feast rows)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads: the baseline and the started Triton model")
    p.add_argument("--exposures", choices=("off", "private"), default="off",
                   help="started gateway's Kafka exposure publishing: off, or to a private broker started on a free port")
    p.add_argument("--gateway-workers", type=int, default=1, help="uvicorn workers of the started gateway")
    p.add_argument("--max-queue-delay-us", type=int, default=500, help="Triton dynamic batching delay of the started model")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the temporary home (logs) after the run")
    p.add_argument("--out", type=Path, default=common.OUT_DIR)
    return p.parse_args(argv)


# -- request bodies and the ORT baseline ------------------------------------------------
def make_requests(features_dir: Path, n_candidates: int, count: int, seed: int) -> list[dict[str, Any]]:
    """Real users (test split) with ``n_candidates`` distinct catalogue items each."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    users = pl.read_parquet(features_dir / "interactions_test.parquet", columns=["user"]).get_column("user").unique(maintain_order=True).to_list()
    items = pl.read_parquet(features_dir / "items.parquet", columns=["item"]).get_column("item").to_list()
    out = []
    for k in range(count):
        user = users[int(rng.integers(len(users)))]
        chosen = rng.choice(len(items), size=min(n_candidates, len(items)), replace=False)
        out.append({"user_id": user, "item_ids": [items[i] for i in chosen]})
    return out


def build_feeds(args: argparse.Namespace, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model inputs the gateway builds for these requests (from the parquet features)."""
    import polars as pl

    from features.spec import FeatureSpec
    from serving.scoring import build_inputs

    spec = FeatureSpec.load(args.spec)
    users = {r["user"]: r for r in pl.read_parquet(args.features_dir / "users.parquet").iter_rows(named=True)}
    items = {r["item"]: r for r in pl.read_parquet(args.features_dir / "items.parquet").iter_rows(named=True)}
    user_names = [f.name for f in spec.by_entity("user")]
    item_names = [f.name for f in spec.by_entity("item")]
    feeds = []
    for req in requests[:32]:
        u = users.get(req["user_id"])
        user = {n: u[n] for n in user_names} if u else None
        cols = {n: [items[i][n] for i in req["item_ids"]] for n in item_names}
        feeds.append(build_inputs(spec, user, cols, len(req["item_ids"])))
    return feeds


def ort_caller(args: argparse.Namespace, feeds: list[dict[str, Any]]):
    """Bare onnxruntime on the inputs the gateway would build (one call per invocation)."""
    session = common.ort_session(args.onnx, args.threads)
    names = {i.name for i in session.get_inputs()}
    feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]

    def call(i: int) -> None:
        session.run(["probability"], feeds[i % len(feeds)])

    return call, None


def triton_caller(url: str, model: str, feeds: list[dict[str, Any]]):
    """The same inputs sent straight to Triton (sync tritonclient.http), one at a time."""
    import tritonclient.http as httpclient

    dtypes = {"int64": "INT64", "float32": "FP32"}
    client = httpclient.InferenceServerClient(url.replace("http://", ""), network_timeout=30)
    requests = []
    for f in feeds:
        inputs = []
        for name, array in f.items():
            t = httpclient.InferInput(name, list(array.shape), dtypes[str(array.dtype)])
            t.set_data_from_numpy(array, binary_data=True)
            inputs.append(t)
        requests.append(inputs)
    outputs = [httpclient.InferRequestedOutput("probability", binary_data=True)]

    def call(i: int) -> None:
        client.infer(model, requests[i % len(requests)], outputs=outputs)

    return call, client.close


def feast_caller(settings: Any, requests: list[dict[str, Any]]):
    """The gateway's feature read (user + all candidates) in this process."""
    import inspect

    from features.online import OnlineFeatureReader

    kwargs = {}
    stream = getattr(getattr(settings, "stream", None), "gateway_stream_features", None)
    if stream is not None and "stream" in inspect.signature(OnlineFeatureReader).parameters:
        kwargs["stream"] = stream  # read what the gateway reads (streaming features too, when it does)
    reader = OnlineFeatureReader(settings, **kwargs)

    def call(i: int) -> None:
        req = requests[i % len(requests)]
        reader.user_features(req["user_id"])
        reader.item_features(req["item_ids"])

    return call, None


def interleaved(callers: dict[str, Any], calls: int, block: int = 20, warmup: int = 10) -> dict[str, list[float]]:
    """Time ``calls`` calls of each caller in alternating blocks (noise hits all alike)."""
    for fn in callers.values():
        for i in range(warmup):
            fn(i)
    lat: dict[str, list[float]] = {name: [] for name in callers}
    counters = dict.fromkeys(callers, 0)
    while any(len(v) < calls for v in lat.values()):
        for name, fn in callers.items():
            for _ in range(min(block, calls - len(lat[name]))):
                t0 = time.perf_counter()
                fn(counters[name])
                lat[name].append(time.perf_counter() - t0)
                counters[name] += 1
    return lat


# -- the stack ---------------------------------------------------------------------------
class Stack:
    """Feast store + Triton + gateway in a temporary home, on free ports."""

    def __init__(self, args: argparse.Namespace) -> None:
        from recast.settings import DataSettings, ExportSettings, GatewaySettings, Settings, TritonSettings

        self.home = Path(tempfile.mkdtemp(prefix="recast-bench-gw-"))
        http, grpc, metrics, gw, kafka = common.free_ports(5)
        # Exposure publishing (newer gateways): never towards another stack's broker. Off by
        # default; --exposures private starts a broker of our own on a free port.
        extra: dict[str, Any] = {}
        if "kafka" in Settings.model_fields:
            extra["kafka"] = {"bootstrap_servers": f"127.0.0.1:{kafka}"}
        if "stream" in Settings.model_fields:
            extra["stream"] = {"publish_exposures": args.exposures == "private"}
        elif args.exposures == "private":
            raise SystemExit("--exposures private: this checkout's gateway does not publish exposures")
        self.settings = Settings(
            **extra,
            home=self.home,
            data=DataSettings(features_dir=args.features_dir.resolve()),
            export=ExportSettings(model_repository=self.home / "repo", local_model_repository=self.home / "repo_local"),
            triton=TritonSettings(http_port=http, grpc_port=grpc, metrics_port=metrics, venv=common.TRITON_VENV, startup_timeout_s=180),
            gateway=GatewaySettings(port=gw, model_name=args.model, max_candidates=max(500, args.candidates), workers=args.gateway_workers),
        )
        self.args = args
        self.triton = None
        self.gateway = None
        self.broker = False

    def start(self) -> str:
        from features.feast_repo import ensure_feature_store
        from features.spec import FeatureSpec
        from recast.stack import GatewayProcess
        from serving.model_repository import write_model_repository
        from serving.triton_launcher import LocalTriton

        s = self.settings
        common.progress(f"stack home {self.home}: materialising the Feast online store")
        ensure_feature_store(s)
        write_model_repository(
            self.args.onnx, FeatureSpec.load(self.args.spec), self.args.model, 1,
            s.path(s.export.model_repository), s.path(s.export.local_model_repository),
            max_queue_delay_us=self.args.max_queue_delay_us, intra_op_threads=self.args.threads,
            site_packages=common.triton_site_packages(),
        )
        common.progress(f"starting tritonserver on :{s.triton.http_port}")
        self.triton = LocalTriton(s)
        self.triton.start(wait=True)
        self.triton.wait_model_ready(self.args.model, timeout=120)
        if self.args.exposures == "private":
            from streaming.broker import broker_up

            common.progress(f"starting a private Kafka broker on {s.kafka.bootstrap_servers} (exposures)")
            broker_up(s)
            self.broker = True
        common.progress(f"starting the gateway on :{s.gateway.port}")
        self.gateway = GatewayProcess(s)
        self.gateway.start()
        return self.gateway.url

    def stop(self) -> None:
        t0 = time.perf_counter()
        if self.gateway is not None:
            _reap_gateway(self.gateway)
            self.gateway.stop()
        t1 = time.perf_counter()
        if self.triton is not None:
            self.triton.stop()
        if self.broker:
            from streaming.broker import broker_down

            broker_down(self.settings)
        common.progress(f"stopped: gateway in {t1 - t0:.1f} s, tritonserver in {time.perf_counter() - t1:.1f} s")
        if self.args.keep:
            common.progress(f"kept {self.home}")
        else:
            shutil.rmtree(self.home, ignore_errors=True)


def _reap_gateway(gateway: Any, timeout: float = 15.0) -> None:
    """SIGTERM our gateway child and reap it.

    GatewayProcess.stop() polls with ``os.kill(pid, 0)``, which succeeds on the
    zombie an exited child of this very process leaves, so it would wait its
    full 15 s timeout; reaping first makes it return at once.
    """
    import os
    import signal

    pid = gateway._pid()
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: GatewayProcess.stop() handles it
            return
        time.sleep(0.05)


# -- load generation ---------------------------------------------------------------------
class Client:
    def __init__(self, kind: str, base_url: str, max_connections: int) -> None:
        self.kind, self.base_url, self.max_connections = kind, base_url.rstrip("/"), max_connections

    async def __aenter__(self) -> "Client":
        if self.kind == "aiohttp":
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections), timeout=aiohttp.ClientTimeout(total=30)
            )
        else:
            import httpx

            self._session = httpx.AsyncClient(
                base_url=self.base_url, timeout=30,
                limits=httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections),
            )
        return self

    async def __aexit__(self, *exc) -> None:
        if self.kind == "aiohttp":
            await self._session.close()
        else:
            await self._session.aclose()

    async def get(self, path: str) -> int:
        if self.kind == "aiohttp":
            async with self._session.get(self.base_url + path) as r:
                await r.read()
                return r.status
        return (await self._session.get(path)).status_code

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"content-type": "application/json"}
        if self.kind == "aiohttp":
            async with self._session.post(self.base_url + path, data=body, headers=headers) as r:
                return r.status, await r.read()
        r = await self._session.post(path, content=body, headers=headers)
        return r.status_code, r.content


async def _one(client: Client, body: bytes, scheduled: float, out: list) -> None:
    sent = time.perf_counter()
    try:
        status, raw = await client.post("/v1/score", body)
        done = time.perf_counter()
        timings = json.loads(raw).get("timings_ms", {}) if status == 200 else {}
        error = None if status == 200 else f"HTTP {status}: {raw[:200]!r}"
    except Exception as exc:  # noqa: BLE001  (any failure is an error sample)
        done, timings, status, error = time.perf_counter(), {}, 0, f"{type(exc).__name__}: {exc}"
    out.append({"scheduled": scheduled, "sent": sent, "done": done, "status": status, "timings": timings, "error": error})


async def open_loop(client: Client, bodies: list[bytes], rate: float, duration: float) -> tuple[list[dict], float, float]:
    n = max(1, int(round(rate * duration)))
    out: list[dict] = []
    tasks = []
    t0 = time.perf_counter() + 0.05
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(client, bodies[i % len(bodies)], scheduled, out)))
    await asyncio.gather(*tasks)
    return out, t0, time.perf_counter()


async def closed_loop(client: Client, bodies: list[bytes], concurrency: int, duration: float) -> tuple[list[dict], float, float]:
    out: list[dict] = []
    t0 = time.perf_counter()
    stop = t0 + duration

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < stop:
            now = time.perf_counter()
            await _one(client, bodies[i % len(bodies)], now, out)
            i += concurrency

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return out, t0, time.perf_counter()


def summarise(samples: list[dict], t0: float, t1: float, candidates: int) -> dict[str, Any]:
    ok = [s for s in samples if s["status"] == 200]
    errors = [s for s in samples if s["status"] != 200]
    span = max(1e-9, (max(s["done"] for s in samples) if samples else t1) - t0)
    out: dict[str, Any] = {
        "requests": len(samples),
        "ok": len(ok),
        "errors": len(errors),
        "error_examples": sorted({e["error"] for e in errors})[:5],
        "seconds": span,
        "achieved_req_per_s": len(ok) / span,
        "achieved_candidates_per_s": len(ok) * candidates / span,
        "latency_from_send": common.summary_ms([s["done"] - s["sent"] for s in ok]),
        "latency_from_schedule": common.summary_ms([s["done"] - s["scheduled"] for s in ok]),
        "send_lag": common.summary_ms([max(0.0, s["sent"] - s["scheduled"]) for s in samples]),
    }
    # per-second timeline by scheduled time: shows stalls (e.g. a CPU-starved second) that the percentiles only hint at
    timeline = []
    for sec in range(int(span) + 1):
        bucket = [s for s in samples if sec <= s["scheduled"] - t0 < sec + 1]
        if bucket:
            lat = [(s["done"] - s["scheduled"]) * 1e3 for s in bucket]
            timeline.append({"second": sec, "sent": len(bucket), "errors": sum(s["status"] != 200 for s in bucket),
                             "p50_ms": round(common.percentile(lat, 50), 2), "max_ms": round(max(lat), 2)})
    out["timeline"] = timeline
    for key in ("features", "encode", "inference", "total"):
        vals = [s["timings"][key] / 1e3 for s in ok if key in s["timings"]]
        out[f"server_{key}"] = common.summary_ms(vals)
    return out


def _cpu_snapshot(procs: dict[str, list[int]]) -> dict[str, float]:
    snap = {name: common.cpu_seconds(pids) for name, pids in procs.items()}
    snap["load generator"] = common.own_cpu_seconds()
    snap["wall"] = time.perf_counter()
    return snap


def _cpu_cores(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    wall = after["wall"] - before["wall"]
    return {k: (after[k] - before[k]) / wall for k in before if k != "wall"}


async def drive(args: argparse.Namespace, url: str, bodies: list[bytes], procs: dict[str, list[int]] | None = None) -> dict[str, Any]:
    procs = procs or {}
    async with Client(args.client, url, args.max_connections) as client:
        deadline = time.monotonic() + 120
        while (status := await client.get("/readyz")) != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}/readyz answered {status} for 120 s")
            await asyncio.sleep(0.5)
        if args.warmup > 0:
            common.progress(f"warm-up: {args.warmup:.0f} s at {args.rate:g} req/s")
            await open_loop(client, bodies, args.rate, args.warmup)
        common.progress(f"open loop: {args.rate:g} req/s x {args.candidates} candidates for {args.duration:g} s")
        cpu0 = _cpu_snapshot(procs)
        samples, t0, t1 = await open_loop(client, bodies, args.rate, args.duration)
        result = {"open_loop": summarise(samples, t0, t1, args.candidates)}
        result["open_loop"]["cpu_cores"] = _cpu_cores(cpu0, _cpu_snapshot(procs))
        o = result["open_loop"]
        common.progress(f"open loop: {o['ok']} ok, {o['errors']} errors, p50 {o['latency_from_schedule']['p50_ms']:.1f} ms, "
                        f"p99 {o['latency_from_schedule']['p99_ms']:.1f} ms, {o['achieved_candidates_per_s']:,.0f} candidates/s")
        if args.concurrency > 0:
            await asyncio.sleep(1.0)
            common.progress(f"closed loop: {args.concurrency} clients for {args.closed_duration:g} s")
            cpu0 = _cpu_snapshot(procs)
            samples, t0, t1 = await closed_loop(client, bodies, args.concurrency, args.closed_duration)
            result["closed_loop"] = summarise(samples, t0, t1, args.candidates)
            result["closed_loop"]["cpu_cores"] = _cpu_cores(cpu0, _cpu_snapshot(procs))
            c = result["closed_loop"]
            common.progress(f"closed loop: {c['achieved_req_per_s']:.1f} req/s = {c['achieved_candidates_per_s']:,.0f} candidates/s, "
                            f"p99 {c['latency_from_send']['p99_ms']:.1f} ms, {c['errors']} errors")
        return result


def render(args: argparse.Namespace, res: dict[str, Any], ort: dict[str, Any], idle: dict[str, Any]) -> str:
    o = res["open_loop"]
    lat_rows = [
        ["gateway, client-observed (from scheduled send)", o["latency_from_schedule"]],
        ["gateway, client-observed (from actual send)", o["latency_from_send"]],
        ["  server handler total (timings_ms.total)", o["server_total"]],
        ["    features (Feast online read)", o["server_features"]],
        ["    encode (build_inputs)", o["server_encode"]],
        ["    inference (Triton HTTP call)", o["server_inference"]],
        ["  client send lag behind schedule", o["send_lag"]],
        [f"bare onnxruntime in-process, {args.candidates} rows (idle stack)", ort],
    ]
    if "triton_direct" in idle:
        lat_rows.append(["Triton direct, sync tritonclient.http (idle stack)", idle["triton_direct"]])
    if "feast_direct" in idle:
        lat_rows.append(["Feast online read in-process, user + items (idle stack)", idle["feast_direct"]])
    t1 = common.table(
        ["path (open loop)", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        [[name, s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]] for name, s in lat_rows],
    )
    runs = [["open loop", args.rate, o]]
    if "closed_loop" in res:
        runs.append([f"closed loop, {args.concurrency} clients", float("nan"), res["closed_loop"]])
    cpu_names = list(o.get("cpu_cores", {}))
    t2 = common.table(
        ["run", "offered req/s", "offered cand/s", "achieved req/s", "achieved cand/s", "ok", "errors", "p50 ms", "p99 ms",
         *[f"CPU cores: {n}" for n in cpu_names]],
        [[name, rate, rate * args.candidates, s["achieved_req_per_s"], s["achieved_candidates_per_s"], s["ok"], s["errors"],
          s["latency_from_schedule"]["p50_ms"], s["latency_from_schedule"]["p99_ms"],
          *[s.get("cpu_cores", {}).get(n, float("nan")) for n in cpu_names]] for name, rate, s in runs],
    )
    r50 = common.ratio(o["latency_from_schedule"]["p50_ms"], ort["p50_ms"])
    r99 = common.ratio(o["latency_from_schedule"]["p99_ms"], ort["p99_ms"])
    title = (f"Gateway load: POST /v1/score, {args.candidates} candidates/request, real MovieLens users/items, "
             f"open loop {args.rate:g} req/s for {args.duration:g} s ({args.client} client, same host"
             + (f"; exposures {args.exposures}" if not args.gateway_url else "") + ")")
    lines = [
        title, "", t1, "", t2, "",
        f"gateway p50 / bare ORT p50 = {r50:.1f}x;  gateway p99 / bare ORT p99 = {r99:.1f}x (target p99 ratio <= 3x)",
        f"sustained {o['achieved_candidates_per_s']:,.0f} candidates/s with {o['errors']} errors at the offered "
        f"{args.rate * args.candidates:,.0f} (target >= 2,000 with 0 errors)",
        common.load_note(),
    ]
    res["ratio_p50"], res["ratio_p99"] = r50, r99
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    common.pin_threads(args.threads)
    requests = make_requests(args.features_dir, args.candidates, 256, args.seed)
    bodies = [json.dumps(r).encode() for r in requests]
    feeds = build_feeds(args, requests)
    callers: dict[str, Any] = {}
    closers = []
    ort_call, _ = ort_caller(args, feeds)
    callers["ort"] = ort_call

    stack = None
    try:
        if args.gateway_url:
            url, triton_url = args.gateway_url, args.triton_url
        else:
            stack = Stack(args)
            url = stack.start()
            triton_url = stack.settings.triton.url
        if not args.no_components and triton_url:
            callers["triton_direct"], close = triton_caller(triton_url, args.model, feeds)
            closers.append(close)
        if not args.no_components and stack is not None:
            callers["feast_direct"], _ = feast_caller(stack.settings, requests)
        # the idle parts, interleaved; half before and half after the load
        common.progress(f"idle stack: {', '.join(callers)} interleaved, {args.idle_calls // 2} calls each (1/2)")
        lat = interleaved(callers, args.idle_calls // 2)
        procs: dict[str, list[int]] = {}
        if stack is not None:
            procs["gateway"] = [p for p in [stack.gateway._pid()] if p]
            procs["tritonserver + stub"] = common.pids_matching(str(stack.home))
        res = asyncio.run(drive(args, url, bodies, procs))
        common.progress(f"idle stack: {', '.join(callers)} interleaved, {args.idle_calls - args.idle_calls // 2} calls each (2/2)")
        time.sleep(1.0)
        for name, more in interleaved(callers, args.idle_calls - args.idle_calls // 2, warmup=2).items():
            lat[name].extend(more)
    finally:
        for close in closers:
            close()
        if stack is not None:
            common.progress("stopping the stack")
            stack.stop()
    ort = common.summary_ms(lat.pop("ort"))
    idle = {name: common.summary_ms(v) for name, v in lat.items()}
    text = render(args, res, ort, idle)
    print(text)
    payload = {
        "benchmark": "gateway_load",
        "args": vars(args),
        "gateway_url": url,
        "environment": common.environment(args.threads),
        "ort_baseline": ort,
        "idle_components": idle,
        "results": res,
        "table": text,
    }
    path = common.write_json("gateway_load", payload, args.out)
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
