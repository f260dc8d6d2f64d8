"""The gateway's hardening bars, measured on a real stack (Feast + tritonserver + gateway + broker).

Builds (or reuses, ``--home``) a stack home the way ``make demo`` does (MovieLens-100K
features, DLF trained for ``--epochs``, exported), starts it with ``recast stack up``
(supervisor on), on free ports, and measures in one run:

1. **Huge bodies next to normal traffic.** ``--clients`` closed-loop clients send
   100-candidate requests; p50/p99 idle, then with an attacker posting 25 MB bodies
   back to back (time from the first byte sent to the status line received, i.e. the
   refusal). Variants side by side: the default body limit (256 KiB) and a gateway
   restarted with a 64 MiB limit, which shows what the limit prevents.
2. **kill -9 of tritonserver under load:** time until the first 200 after the kill,
   the answers meanwhile (all must be 503), the supervisor's restart count.
3. **A corrupted model file:** time until ``/readyz`` answers 503 and until
   ``recast stack status`` reports the model unhealthy; then restored.
4. **schemathesis** with every check against the running gateway, ``--fuzz-examples``
   per operation; requests counted by the gateway's own request counter.

    nice -n 10 .venv/bin/python benchmarks/gateway_hardening.py --home /tmp/recast-hardening

Latencies on a shared 2-core host are noisy: the 1-min load average is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BIG_BODY_BYTES = 25 * 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, default=None, help="stack home (built once, reused); default: a temporary one")
    p.add_argument("--epochs", type=int, default=1, help="DLF training epochs when the home is built")
    p.add_argument("--clients", type=int, default=4, help="closed-loop clients sending 100-candidate requests")
    p.add_argument("--duration", type=float, default=12.0, help="seconds per load phase")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--fuzz-examples", type=int, default=1000, help="schemathesis --max-examples per operation (0: skip)")
    p.add_argument("--fuzz-seeds", default="2019,2020", help="one schemathesis run per seed (larger --max-examples "
                                                              "make hypothesis generate ever larger bodies, slowly)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: bodies,kill,corrupt,fuzz")
    return p.parse_args(argv)


def settings_for(home: Path, **gateway: Any):
    from recast.settings import GatewaySettings, KafkaSettings, Settings, TrainSettings, TritonSettings

    ports = json.loads((home / "ports.json").read_text()) if (home / "ports.json").exists() else None
    if ports is None:
        ports = dict(zip(("http", "grpc", "metrics", "gateway", "kafka"), common.free_ports(5)))
        home.mkdir(parents=True, exist_ok=True)
        (home / "ports.json").write_text(json.dumps(ports))
    return Settings(
        home=home, train=TrainSettings(epochs=1, batch_size=2048),
        triton=TritonSettings(http_port=ports["http"], grpc_port=ports["grpc"], metrics_port=ports["metrics"],
                              venv=common.TRITON_VENV, startup_timeout_s=240),
        gateway=GatewaySettings(port=ports["gateway"], max_candidates=500, **gateway),
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{ports['kafka']}"),
    )


def build(settings, epochs: int) -> None:
    from recast import workflow
    from serving.model_repository import list_models

    if list_models(settings.path(settings.export.local_model_repository)).get("dlf"):
        return
    common.progress(f"building {settings.home}: features, DLF ({epochs} epoch), export")
    workflow.build_features(settings)
    workflow.train_model(settings, "dlf", {"progress": False, "epochs": epochs})
    workflow.export_model(settings, "dlf")


def requests_for(settings, n: int, count: int = 200) -> list[bytes]:
    import numpy as np
    import polars as pl

    features = settings.path(settings.data.features_dir)
    users = pl.read_parquet(features / "users.parquet", columns=["user"]).get_column("user").to_list()
    items = pl.read_parquet(features / "items.parquet", columns=["item"]).get_column("item").to_list()
    rng = np.random.default_rng(7)
    return [json.dumps({"user_id": users[int(rng.integers(len(users)))], "model": "dlf",
                        "item_ids": [items[i] for i in rng.choice(len(items), n, replace=False)]}).encode()
            for _ in range(count)]


# -- load ------------------------------------------------------------------------------
async def closed_loop(url: str, bodies: list[bytes], clients: int, duration: float, stop_early=None,
                      out: list | None = None) -> list[tuple[float, float, int]]:
    """(sent at, seconds, status) of every request of ``clients`` back-to-back clients, appended to ``out``."""
    import httpx

    out = [] if out is None else out
    deadline = time.monotonic() + duration

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            i = k
            while time.monotonic() < deadline and not (stop_early and stop_early()):
                t0 = time.monotonic()
                try:
                    status = (await http.post("/v1/score", content=bodies[i % len(bodies)],
                                              headers={"content-type": "application/json"})).status_code
                except httpx.HTTPError:
                    status = -1
                out.append((t0, time.monotonic() - t0, status))
                i += clients

    await asyncio.gather(*(client(k) for k in range(clients)))
    return out


def big_body_bytes(size: int = BIG_BODY_BYTES) -> bytes:
    """A JSON body of ``size`` bytes: one user and as many candidate ids as fit."""
    prefix, tail = b'{"user_id": "1", "item_ids": [', b'"1"]}'
    ids = b'"1234567",' * ((size - len(prefix) - len(tail)) // 10)
    return (prefix + ids + tail).ljust(size)


async def big_body(host: str, port: int, body: bytes) -> tuple[float, int]:
    """Post ``body`` while reading the answer; (seconds from the first byte to the status line, status)."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST /v1/score HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    t0 = time.monotonic()

    async def send() -> None:
        try:
            writer.write(head)
            for i in range(0, len(body), 1 << 18):
                writer.write(body[i:i + (1 << 18)])
                await writer.drain()
        except (ConnectionError, OSError):  # the server answered and closed: expected
            pass

    sender = asyncio.create_task(send())
    try:
        line = await asyncio.wait_for(reader.readline(), timeout=300)
        elapsed = time.monotonic() - t0
    finally:
        sender.cancel()
        writer.close()
    status = int(line.split()[1]) if line.startswith(b"HTTP/") else -1
    return elapsed, status


async def with_attacker(url: str, bodies: list[bytes], clients: int, duration: float):
    host, port = url.removeprefix("http://").split(":")
    refusals: list[tuple[float, int]] = []
    done = False
    body = big_body_bytes()

    async def attack() -> None:
        while not done:
            refusals.append(await big_body(host, int(port), body))

    attacker = asyncio.create_task(attack())
    samples = await closed_loop(url, bodies, clients, duration)
    done = True
    await attacker
    return samples, refusals


def ok_latencies(samples) -> list[float]:
    return [s for _, s, status in samples if status == 200]


# -- parts -----------------------------------------------------------------------------
def part_bodies(args, settings, bodies) -> dict[str, Any]:
    from recast.stack import GatewayProcess
    from recast.supervisor import Supervisor

    Supervisor(settings).stop()  # it would restart the gateway we replace here with its own settings
    out = {}
    for label, limit in (("limit 256 KiB (default)", 262144), ("limit 64 MiB", 64 << 20)):
        gw = GatewayProcess(settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"max_body_bytes": limit})}))
        gw.stop()
        gw.start()
        asyncio.run(closed_loop(gw.url, bodies, args.clients, 3.0))  # warm up
        common.progress(f"{label}: idle run")
        idle = asyncio.run(closed_loop(gw.url, bodies, args.clients, args.duration))
        common.progress(f"{label}: with 25 MB bodies posted back to back")
        loaded, refusals = asyncio.run(with_attacker(gw.url, bodies, args.clients, args.duration))
        out[label] = {"idle": common.summary_ms(ok_latencies(idle)), "attacked": common.summary_ms(ok_latencies(loaded)),
                      "refusal": common.summary_ms([t for t, _ in refusals]),
                      "refusal_statuses": sorted({s for _, s in refusals}),
                      "errors": sum(1 for *_, s in loaded if s != 200)}
    GatewayProcess(settings).stop()
    GatewayProcess(settings).start()
    Supervisor(settings).start()
    return out


def part_kill(args, settings, bodies) -> dict[str, Any]:
    from recast import stack
    from recast.supervisor import Supervisor

    url = stack.GatewayProcess(settings).url
    tri = stack.triton(settings)
    old = tri.pid()
    killed: dict[str, float] = {}

    async def run() -> list:
        async def killer() -> None:
            await asyncio.sleep(2.0)
            os.kill(old, signal.SIGKILL)
            killed["at"] = time.monotonic()

        recovered = lambda: "at" in killed and any(t > killed["at"] and s == 200 for t, _, s in samples)  # noqa: E731
        samples: list = []
        task = asyncio.create_task(killer())

        async def load() -> None:
            await closed_loop(url, bodies, 2, 300, stop_early=recovered, out=samples)

        await asyncio.gather(task, load())
        return samples

    common.progress("kill -9 tritonserver under load")
    samples = asyncio.run(run())
    t_kill = killed["at"]
    after = [(t, s) for t, _, s in samples if t > t_kill]
    first_ok = next(t for t, s in after if s == 200)
    return {"recovery_s": first_ok - t_kill, "answers_during_outage": {str(s): sum(1 for t, x in after if x == s and t < first_ok)
                                                                      for s in sorted({s for t, s in after if t < first_ok})},
            "restarts": Supervisor(settings).status()["restarts"], "new_pid_differs": tri.pid() not in (None, old)}


def part_corrupt(settings) -> dict[str, Any]:
    import httpx

    from recast import stack

    url = stack.GatewayProcess(settings).url
    model_file = settings.path(settings.export.local_model_repository) / "dlf" / "1" / "model.onnx"
    original = model_file.read_bytes()
    common.progress("corrupting the served model file")
    out: dict[str, Any] = {}
    try:
        with open(model_file, "r+b") as f:
            f.seek(len(original) // 2)
            f.write(b"\0" * 64)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30 and ("readyz_s" not in out or "status_s" not in out):
            if "readyz_s" not in out and httpx.get(f"{url}/readyz", timeout=5).status_code == 503:
                out["readyz_s"] = time.monotonic() - t0
            if "status_s" not in out and not stack.stack_status(settings)["models"]["dlf"]["healthy"]:
                out["status_s"] = time.monotonic() - t0
            time.sleep(0.1)
    finally:
        model_file.write_bytes(original)
    t0 = time.monotonic()
    while httpx.get(f"{url}/readyz", timeout=5).status_code != 200 and time.monotonic() - t0 < 180:
        time.sleep(0.5)
    out["ready_again_s"] = time.monotonic() - t0
    return out


def part_fuzz(args, settings) -> dict[str, Any]:
    import httpx

    from recast import stack

    url = stack.GatewayProcess(settings).url
    count = lambda: sum(float(v) for v in re.findall(r"^recast_gateway_requests_total\{[^}]*\} (\S+)$",  # noqa: E731
                                                       httpx.get(f"{url}/metrics").text, re.M))
    runs = []
    for seed in args.fuzz_seeds.split(","):
        before, t0 = count(), time.monotonic()
        common.progress(f"schemathesis, all checks, {args.fuzz_examples} examples per operation, seed {seed}")
        run = subprocess.run([str(Path(sys.executable).with_name("schemathesis")), "--config-file",
                              str(common.ROOT / "tests" / "integration" / "schemathesis.toml"), "run", f"{url}/openapi.json",
                              "--checks", "all", "--max-examples", str(args.fuzz_examples), "--seed", seed,
                              "--request-timeout", "30", "--workers", "1"], capture_output=True, text=True,
                             cwd=settings.home)  # its caches (.hypothesis, .schemathesis) stay in the stack home
        cases = re.search(r"(\d+) generated", run.stdout)
        runs.append({"seed": seed, "returncode": run.returncode, "requests": int(count() - before),
                     "test_cases": int(cases.group(1)) if cases else None, "seconds": time.monotonic() - t0,
                     "summary": run.stdout[run.stdout.rfind("SUMMARY"):][:3000]})
    return {"runs": runs, "requests": sum(r["requests"] for r in runs)}


def main(argv: list[str] | None = None) -> dict:
    import tempfile

    from recast import stack

    args = parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    home = args.home or Path(tempfile.mkdtemp(prefix="recast-hardening-"))
    settings = settings_for(home.resolve())
    build(settings, args.epochs)
    bodies = requests_for(settings, args.candidates)
    common.progress("recast stack up (supervised)")
    stack.stack_up(settings, ["dlf"])
    res: dict[str, Any] = {"environment": common.environment()}
    try:
        if "bodies" not in skip:
            res["bodies"] = part_bodies(args, settings, bodies)
        if "corrupt" not in skip:
            res["corrupt"] = part_corrupt(settings)
        if "fuzz" not in skip and args.fuzz_examples:
            res["fuzz"] = part_fuzz(args, settings)
        if "kill" not in skip:
            res["kill"] = part_kill(args, settings, bodies)
    finally:
        stack.stack_down(settings)
    print(render(res))
    common.write_json("gateway_hardening", res)
    return res


def render(res: dict[str, Any]) -> str:
    out = []
    if "bodies" in res:
        rows = []
        for label, r in res["bodies"].items():
            rows.append([label, r["idle"]["n"], r["idle"]["p50_ms"], r["idle"]["p99_ms"], r["attacked"]["n"],
                         r["attacked"]["p50_ms"], r["attacked"]["p99_ms"], common.ratio(r["attacked"]["p99_ms"], r["idle"]["p99_ms"]),
                         r["refusal"]["n"], r["refusal"]["p50_ms"], r["refusal"]["max_ms"], ",".join(map(str, r["refusal_statuses"])),
                         r["errors"]])
        out.append("100-candidate requests, idle vs. next to 25 MB bodies posted back to back\n" + common.table(
            ["gateway", "idle n", "idle p50 ms", "idle p99 ms", "loaded n", "loaded p50 ms", "loaded p99 ms",
             "p99 ratio", "25 MB posts", "refusal p50 ms", "refusal max ms", "status", "errors"], rows))
    if "kill" in res:
        k = res["kill"]
        out.append("kill -9 tritonserver under load (supervised)\n" + common.table(
            ["recovery s", "answers during the outage", "supervisor restarts", "new pid"],
            [[k["recovery_s"], json.dumps(k["answers_during_outage"]), json.dumps(k["restarts"]), k["new_pid_differs"]]]))
    if "corrupt" in res:
        c = res["corrupt"]
        out.append("corrupted model file\n" + common.table(
            ["/readyz 503 after s", "stack status unhealthy after s", "ready again after restore s"],
            [[c.get("readyz_s", float("nan")), c.get("status_s", float("nan")), c["ready_again_s"]]]))
    if "fuzz" in res:
        runs = res["fuzz"]["runs"]
        out.append("schemathesis, all checks (requests counted by the gateway, /metrics scrapes excluded)\n" + common.table(
            ["seed", "requests", "test cases", "exit code", "seconds"],
            [[r["seed"], r["requests"], r["test_cases"], r["returncode"], r["seconds"]] for r in runs]
            + [["total", res["fuzz"]["requests"], sum(r["test_cases"] or 0 for r in runs), max(r["returncode"] for r in runs),
                sum(r["seconds"] for r in runs)]])
            + "\n" + runs[-1]["summary"])
    out.append(common.load_note())
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
