"""``recast demo``: the main job end to end on local defaults.

fetch MovieLens-100K -> polars features + Feast -> train with TorchRec ->
ONNX export (parity-checked) -> local tritonserver + gateway -> score a
sample of real users (and one unknown user) over HTTP -> print the results.
"""

from __future__ import annotations

import time

import httpx

from recast import stack, workflow
from recast.settings import Settings


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(started: float, info: dict) -> None:
    skipped = " (up to date, skipped)" if info.get("skipped") else ""
    print(f"   done in {time.perf_counter() - started:.1f}s{skipped}", flush=True)


def run_demo(settings: Settings, models: list[str] | None = None, epochs: int | None = None, keep_running: bool = True) -> None:
    models = models or ["dlf", "dmoe"]
    t = _step("1/5 features: MovieLens-100K -> parquet offline store -> Feast online store")
    info = workflow.build_features(settings)
    print(f"   {info['features_dir']}: {info['meta']}")
    _done(t, info)

    t = _step(f"2/5 train {', '.join(models)} with TorchRec (DistributedModelParallel, fused embedding optimizer)")
    overrides = {"epochs": epochs} if epochs else None
    results = {}
    for model in models:
        results[model] = result = workflow.train_model(settings, model, overrides)
        corr = f", expert correlation {result['test_expert_correlation']:.4f}" if "test_expert_correlation" in result else ""
        print(f"   {model}: best epoch {result['best_epoch']}: val AUC {result['val_auc']:.4f}; "
              f"test AUC {result['test_auc']:.4f}, logloss {result['test_logloss']:.4f}{corr}")
    _done(t, {"skipped": all(r.get("skipped") for r in results.values())})

    t = _step("3/5 export: ONNX + parity check + Triton model repositories")
    for model in models:
        exported = workflow.export_model(settings, model)
        print(f"   {model} v{exported['version']}: max |ONNX - PyTorch| = {exported['parity_max_abs_diff']:.2e} "
              f"on {exported['parity_rows']} rows; TensorRT: {exported['tensorrt']}")
    _done(t, {})

    t = _step("4/5 stack: tritonserver + scoring gateway")
    status = stack.stack_up(settings, models)
    print(f"   triton {status['triton'].get('url', '')}  gateway {status['gateway']['url']}  (docs: {status['gateway']['url']}/docs)")
    _done(t, {})

    t = _step("5/5 score sample users through the gateway")
    url = status["gateway"]["url"]
    with httpx.Client(timeout=10) as client:
        for body in workflow.sample_requests(settings):
            for model in models:
                r = client.post(f"{url}/v1/score", json=body | {"model": model, "top_k": 5})
                if r.status_code != 200:
                    print(f"   user {body['user_id']}: HTTP {r.status_code} {r.text}")
                    continue
                out = r.json()
                top = ", ".join(f"{i['item_id']}:{i['score']:.3f}" for i in out["items"])
                flag = " [cold start]" if out["cold_start"] else ""
                print(f"   user {out['user_id']:>16}{flag} {out['model']:>5} v{out['model_version']}: "
                      f"{len(body['item_ids'])} candidates -> top5 {top}  ({out['timings_ms']['total']:.1f} ms)")
    _done(t, {})
    if keep_running:
        print(f"\nThe stack keeps running: try `recast score 196 242 302 377` or open {url}/docs; "
              "`recast stack down` stops it.")
    else:
        stack.stack_down(settings)
