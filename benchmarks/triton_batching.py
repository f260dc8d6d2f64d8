"""Triton dynamic batching on vs off: single-row requests at concurrency 16.

One local Triton repository (temporary home, free ports) holds the exported
DLF ONNX twice, written by ``serving.model_repository.write_model_repository``:

* ``dlf_batching_on``:  ``dynamic_batching=True``  (max queue delay ``--max-queue-delay-us``)
* ``dlf_batching_off``: ``dynamic_batching=False``

Both are the local flavour (Python backend running onnxruntime with
``--threads`` intra-op threads, one instance). ``--concurrency`` threads, each
with its own ``tritonclient.http`` client, send one-row requests (real rows of
the MovieLens test split) back to back. The two models alternate in phases of
``--phase-duration`` s (on, off, off, on, ...) for ``--rounds`` rounds; the
table gives the median per-phase throughput and the p50/p99 latency over all
requests, plus Triton's own count of executions (rows per model execution).

    .venv/bin/python benchmarks/triton_batching.py --concurrency 16
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ON, OFF = "dlf_batching_on", "dlf_batching_off"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--triton-url", default=None, help="host:port of a running Triton that already serves --model-on/--model-off (skips starting one)")
    p.add_argument("--model-on", default=ON)
    p.add_argument("--model-off", default=OFF)
    p.add_argument("--onnx", type=Path, default=common.ONNX_MODEL)
    p.add_argument("--spec", type=Path, default=common.ONNX_SPEC)
    p.add_argument("--features-dir", type=Path, default=common.FEATURES_DIR)
    p.add_argument("--concurrency", type=int, default=16, help="client threads (one tritonclient.http client each)")
    p.add_argument("--phase-duration", type=float, default=3.0, help="seconds per measured phase")
    p.add_argument("--rounds", type=int, default=7, help="phases per model (alternating)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load per model before measuring")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads in the Triton model")
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--max-batch-size", type=int, default=1024)
    p.add_argument("--keep", action="store_true", help="keep the temporary home (Triton log)")
    p.add_argument("--out", type=Path, default=common.OUT_DIR)
    return p.parse_args(argv)


def start_triton(args: argparse.Namespace):
    from features.spec import FeatureSpec
    from recast.settings import ExportSettings, Settings, TritonSettings
    from serving.model_repository import write_model_repository
    from serving.triton_launcher import LocalTriton

    home = Path(tempfile.mkdtemp(prefix="recast-bench-triton-"))
    http, grpc, metrics = common.free_ports(3)
    settings = Settings(
        home=home,
        export=ExportSettings(model_repository=home / "repo", local_model_repository=home / "repo_local"),
        triton=TritonSettings(http_port=http, grpc_port=grpc, metrics_port=metrics, venv=common.TRITON_VENV, startup_timeout_s=180),
    )
    spec = FeatureSpec.load(args.spec)
    for name, batching in ((args.model_on, True), (args.model_off, False)):
        write_model_repository(
            args.onnx, spec, name, 1, settings.path(settings.export.model_repository),
            settings.path(settings.export.local_model_repository),
            max_batch_size=args.max_batch_size, dynamic_batching=batching, max_queue_delay_us=args.max_queue_delay_us,
            intra_op_threads=args.threads, site_packages=common.triton_site_packages(),
        )
    common.progress(f"starting tritonserver on :{http} with {args.model_on} and {args.model_off} (home {home})")
    server = LocalTriton(settings)
    server.start(wait=True)
    for name in (args.model_on, args.model_off):
        server.wait_model_ready(name, timeout=120)
    return server, home, settings.triton.url


def load_rows_numpy(features_dir: Path, n: int):
    """Test rows without torch (polars + the shared encoder)."""
    import polars as pl

    from features.encoding import encode_frame
    from features.spec import FeatureSpec

    spec = FeatureSpec.load(features_dir / "spec.json")
    frame = pl.read_parquet(features_dir / "interactions_test.parquet").head(n)
    return encode_frame(spec, frame)


def phase(url: str, model: str, rows, concurrency: int, duration: float, server_pids: list[int] | None = None) -> dict[str, Any]:
    """``concurrency`` threads with their own client send single rows for ``duration`` s."""
    import tritonclient.http as httpclient

    ids, mask = rows
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(w: int) -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=30)
        try:
            inputs = []
            for k in range(8):
                r = (w * 8 + k) % len(ids)
                a = httpclient.InferInput("sparse_ids", [1, ids.shape[1]], "INT64")
                a.set_data_from_numpy(ids[r : r + 1], binary_data=True)
                b = httpclient.InferInput("sparse_mask", [1, mask.shape[1]], "FP32")
                b.set_data_from_numpy(mask[r : r + 1], binary_data=True)
                inputs.append([a, b])
            outputs = [httpclient.InferRequestedOutput("probability", binary_data=True)]
            barrier.wait()
            i = 0
            while True:
                t = time.perf_counter()
                if t >= stop_at[0]:
                    break
                try:
                    res = client.infer(model, inputs[i % len(inputs)], outputs=outputs)
                    if res.as_numpy("probability") is None:
                        raise RuntimeError("no output")
                    lat[w].append(time.perf_counter() - t)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                i += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for th in threads:
        th.start()
    stop_at[0] = time.perf_counter() + 3600  # set for real once all clients are ready
    server_pids = server_pids or []
    cpu0, srv0 = common.own_cpu_seconds(), common.cpu_seconds(server_pids)
    barrier.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration
    for th in threads:
        th.join()
    span = time.perf_counter() - t0
    client_cores = (common.own_cpu_seconds() - cpu0) / span
    server_cores = (common.cpu_seconds(server_pids) - srv0) / span if server_pids else float("nan")
    flat = [x for per in lat for x in per]
    return {"requests": len(flat), "errors": len(errors), "error_examples": sorted(set(errors))[:3],
            "seconds": span, "req_per_s": len(flat) / span, "latencies": flat,
            "client_cpu_cores": client_cores, "server_cpu_cores": server_cores}


def stats(url: str, model: str) -> tuple[int, int]:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        s = client.get_inference_statistics(model)["model_stats"][0]
        return int(s["inference_stats"]["success"]["count"]), int(s["execution_count"])
    finally:
        client.close()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    common.pin_threads(args.threads)
    rows = load_rows_numpy(args.features_dir, 256)
    server, home = None, None
    try:
        if args.triton_url:
            url = args.triton_url.replace("http://", "")
        else:
            server, home, url = start_triton(args)
        models = [args.model_on, args.model_off]
        # tritonserver and its Python-backend stubs (their command lines name our temporary home)
        server_pids = common.pids_matching(str(home)) if home is not None else []
        for m in models:
            common.progress(f"warm-up {m}: {args.warmup:g} s")
            phase(url, m, rows, args.concurrency, args.warmup)
        before = {m: stats(url, m) for m in models}
        per_phase: dict[str, list[dict]] = {m: [] for m in models}
        for r in range(args.rounds):
            for m in (models if r % 2 == 0 else models[::-1]):
                res = phase(url, m, rows, args.concurrency, args.phase_duration, server_pids)
                per_phase[m].append(res)
                common.progress(f"round {r + 1}/{args.rounds} {m}: {res['req_per_s']:,.0f} req/s, "
                                f"p50 {common.percentile(res['latencies'], 50) * 1e3:.2f} ms, {res['errors']} errors")
        after = {m: stats(url, m) for m in models}
    finally:
        if server is not None:
            server.stop()
            if args.keep:
                common.progress(f"kept {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)

    results: dict[str, Any] = {}
    for m in models:
        phases = per_phase[m]
        lat = [x for p in phases for x in p["latencies"]]
        ok_n = after[m][0] - before[m][0]
        execs = after[m][1] - before[m][1]
        results[m] = {
            "req_per_s_median": common.median([p["req_per_s"] for p in phases]),
            "req_per_s_phases": [p["req_per_s"] for p in phases],
            "requests": sum(p["requests"] for p in phases),
            "errors": sum(p["errors"] for p in phases),
            "error_examples": sorted({e for p in phases for e in p["error_examples"]})[:3],
            "latency": common.summary_ms(lat),
            "triton_requests": ok_n,
            "triton_executions": execs,
            "rows_per_execution": common.ratio(ok_n, execs),
            "client_cpu_cores": common.median([p["client_cpu_cores"] for p in phases]),
            "server_cpu_cores": common.median([p["server_cpu_cores"] for p in phases]),
        }
    on, off = results[args.model_on], results[args.model_off]
    speedup = common.ratio(on["req_per_s_median"], off["req_per_s_median"])
    # adjacent on/off phases of the same round: robust to load that drifts between rounds
    paired = [common.ratio(a, b) for a, b in zip(on["req_per_s_phases"], off["req_per_s_phases"])]
    paired_median = common.median(paired)
    rows_out = []
    for m, label in ((args.model_on, "dynamic batching on"), (args.model_off, "dynamic batching off")):
        r = results[m]
        rows_out.append([f"{label} ({m})", r["req_per_s_median"], r["latency"]["p50_ms"], r["latency"]["p99_ms"],
                         r["rows_per_execution"], r["client_cpu_cores"], r["server_cpu_cores"], r["requests"], r["errors"]])
    title = (f"Triton dynamic batching, DLF ONNX via the local Python backend (onnxruntime, {args.threads} thread(s), 1 instance), "
             f"1-row requests, {args.concurrency} client threads, median of {args.rounds} x {args.phase_duration:g} s phases "
             f"(max queue delay {args.max_queue_delay_us} us)")
    text = title + "\n\n" + common.table(
        ["model", "req/s (median)", "p50 ms", "p99 ms", "rows/execution", "client CPU cores", "Triton CPU cores", "requests", "errors"], rows_out
    )
    text += (f"\n\nbatching on / off throughput = {speedup:.2f}x from the medians, {paired_median:.2f}x median of "
             f"same-round pairs {[round(x, 2) for x in paired]} (target >= 2x)")
    text += "\n" + common.load_note()
    print(text)
    payload = {
        "benchmark": "triton_batching",
        "args": vars(args),
        "triton_url": url,
        "environment": common.environment(args.threads),
        "results": results,
        "speedup": speedup,
        "speedup_paired": paired,
        "speedup_paired_median": paired_median,
        "table": text,
    }
    path = common.write_json("triton_batching", payload, args.out)
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    main()
