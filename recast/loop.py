"""``recast loop``: one cycle of continuous training and guarded rollout.

1. **Examples**: the labels job's exposures x outcomes (``stream.labels_dir``),
   plus the replayed MovieLens history (ratings as examples, click = rating >= 4),
   in time order.
2. **Training set**: static features from the offline store (its vocabularies,
   so the last checkpoint can continue), the streaming features as of strictly
   before each example when the model's spec names them
   (features/point_in_time.py: the stream processor's offline parts when it
   wrote any, else the history replayed through its state code); split by time.
3. **Train**: from the live model's checkpoint (the last promoted cycle's,
   else ``recast train``'s; the trainer resumes its last epoch) for
   ``loop.incremental_epochs`` more epochs, or from scratch when none exists or
   every ``loop.scratch_every``-th cycle. A time split with a one-class part is
   refused (:class:`DegenerateSplit`).
4. **Export** (ONNX, parity-checked) and **register** the result as a
   *candidate*: it is published as the Triton model ``<model>_candidate``, a name
   no variant routes to, so it gets no traffic.
5. **Guarded rollout** (``loop.rollout = simulate``): abtest/rollout.py on the
   simulated marketplace; *promote* publishes the candidate as the next version
   of the live model (Triton serves the latest version), *roll back* deletes
   it; a newer candidate supersedes an undecided one. Every decision is
   appended to ``decisions.jsonl`` with its evidence and as a line of
   ``report.md``; ``registry.json`` holds each candidate's status.

Torch is imported only by the training subprocess and the export step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from recast.settings import Settings

REGISTRY = "registry.json"
DECISIONS = "decisions.jsonl"
REPORT = "report.md"


def loop_dir(settings: Settings) -> Path:
    return settings.path(settings.loop.dir)


def model_name(settings: Settings) -> str:
    return settings.loop.model or settings.train.model


def candidate_name(model: str) -> str:
    return f"{model}_candidate"


def read_registry(settings: Settings) -> dict[str, Any]:
    path = loop_dir(settings) / REGISTRY
    if not path.exists():
        return {"cycle": 0, "live": {"model": model_name(settings)}, "candidates": []}
    return json.loads(path.read_text())


def _write_registry(settings: Settings, registry: dict[str, Any]) -> None:
    path = loop_dir(settings) / REGISTRY
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(registry, indent=2, default=str))
    tmp.replace(path)


def record(settings: Settings, event: dict[str, Any], line: str) -> None:
    """One decision event (with its evidence) in decisions.jsonl, one line in report.md."""
    out = loop_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    event = {"logged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **event}
    with open(out / DECISIONS, "a") as f:
        f.write(json.dumps(event, default=str) + "\n")
    report = out / REPORT
    if not report.exists():
        report.write_text("# Continuous training: decisions\n\n")
    with open(report, "a") as f:
        f.write(f"- {line}\n")


# ------------------------------------------------------------------------------------------ data


def labelled_examples(settings: Settings) -> tuple[pl.DataFrame, dict[str, int]]:
    """Labels job output plus the replayed history, as ``user, item, ts_ms, label`` in time order."""
    from features.movielens import fetch_movielens, load_interactions

    raw = fetch_movielens(settings.path(settings.data.dir), settings.data.recbole_version)
    history = (load_interactions(raw).with_row_index("_row").sort(["timestamp", "_row"]).collect()
               .select("user", "item", (pl.col("timestamp") * 1000).alias("ts_ms"),
                       (pl.col("rating") >= 4).cast(pl.Int64).alias("label")))
    if settings.loop.history_limit is not None:
        history = history.head(settings.loop.history_limit)
    from streaming.labels import LABELS_FILE

    labels_path = settings.path(settings.stream.labels_dir) / LABELS_FILE
    labelled = pl.DataFrame(schema=history.schema)
    if settings.loop.use_labels and labels_path.exists():
        labelled = pl.read_parquet(labels_path).select(
            "user", "item", pl.col("exposure_ms").alias("ts_ms"), pl.col("label").cast(pl.Int64))
    examples = pl.concat([history, labelled]).with_row_index("_row").sort(["ts_ms", "_row"]).drop("_row")
    return examples, {"history": history.height, "labelled_exposures": labelled.height}


def feature_history(settings: Settings, examples: pl.DataFrame):
    """History rows for the as-of join: the processor's offline parts, else the examples replayed as events."""
    from features.feast_repo import stream_offline_dirs
    from features.pipeline import load_vocab
    from features.point_in_time import history_from_events, read_offline_parts

    user_dir, item_dir = stream_offline_dirs(settings)
    if user_dir.is_dir() and any(user_dir.glob("*.parquet")):
        return read_offline_parts(user_dir, item_dir), "stream processor offline parts"
    events = examples.select("user", "item", pl.when(pl.col("label") == 1).then(pl.lit("click"))
                             .otherwise(pl.lit("view")).alias("type"), "ts_ms")
    vocab = load_vocab(settings.path(settings.data.features_dir))["item_id"]
    return history_from_events(events, vocab), "history replayed through the processor's state"


# ------------------------------------------------------------------------------------------ training


class DegenerateSplit(ValueError):
    """The time split left a split with one class: no AUC, no model selection."""


def _check_split(features_dir: Path) -> None:
    for split in ("train", "val", "test"):
        labels = pl.read_parquet(features_dir / f"interactions_{split}.parquet", columns=["label"])["label"]
        if labels.n_unique() < 2:
            raise DegenerateSplit(
                f"the {split} split (by time) of {features_dir} holds {labels.len():,} examples of one class "
                f"({labels.sum():,} positives): the most recent labelled exposures carry no clicks (outcomes not "
                "attributed to them: check the outcome stream and stream.attribution_window_s), or set "
                "loop.use_labels=false to train on the replayed history only")


def _base_run(settings: Settings, registry: dict[str, Any]) -> Path | None:
    """The checkpoint a cycle continues from: the live model's, i.e. the last promoted candidate's run, else
    `recast train`'s (a rolled-back or undecided candidate is never built upon)."""
    for c in reversed(registry["candidates"]):
        if c["status"] != "promoted":
            continue
        run = Path(c["run_dir"])
        if (run / "best.pt").exists() and (run / "last").exists():
            return run
    run = settings.path(settings.train.checkpoint_dir) / model_name(settings)
    return run if (run / "best.pt").exists() and (run / "last").exists() else None


def _warm_start(base: Path, run: Path, epochs: int) -> dict[str, Any]:
    """Copy ``base``'s checkpoint into ``run`` so the trainer resumes it for ``epochs`` more epochs on new
    data: model selection starts over (the validation split is new), the optimizer state is kept."""
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(base, run, ignore=shutil.ignore_patterns("result.json", "export"))
    state = json.loads((run / "state.json").read_text())
    state.update(best_auc=-1.0, best_metric=-float("inf"), bad_epochs=0)
    (run / "state.json").write_text(json.dumps(state, indent=2))
    config = dict(state["config"])
    config["epochs"] = state["epoch"] + epochs
    config["progress"] = False
    return config


def _train(settings: Settings, features_dir: Path, run: Path, config: dict[str, Any], resume: bool) -> dict:
    args = [sys.executable, "-m", "training.run", "--features-dir", str(features_dir), "--run-dir", str(run),
            "--config-json", json.dumps(config)] + ([] if resume else ["--no-resume"])
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    subprocess.run(args, check=True, env=env, cwd=str(Path(__file__).resolve().parents[1]))
    return json.loads((run / "result.json").read_text())


def _export_candidate(settings: Settings, run: Path, features_dir: Path, name: str, version: int) -> dict[str, Any]:
    """ONNX export of the cycle's best weights, published as ``name/version`` (the cycle number: never reused)."""
    from training.data import load_split
    from training.export import export_checkpoint

    out_dir = run / "export"
    test = load_split(features_dir, "test")
    n = min(settings.export.parity_rows, len(test))
    dense = test.dense[:n].numpy() if test.dense.shape[1] else None
    result = export_checkpoint(run / "best.pt", out_dir, (test.ids[:n].numpy(), test.mask[:n].numpy(), dense),
                               max_batch=settings.export.max_batch_size)
    _publish(settings, out_dir, name, version)
    return {"model": name, "version": version, "onnx": str(result.onnx_path),
            "parity_max_abs_diff": result.parity_max_abs_diff, "export_dir": str(out_dir)}


def _publish(settings: Settings, export_dir: Path, name: str, version: int) -> None:
    from features.spec import FeatureSpec
    from serving.model_repository import default_site_packages, write_model_repository

    write_model_repository(export_dir / "model.onnx", FeatureSpec.load(export_dir / "spec.json"), name, version,
                           settings.path(settings.export.model_repository),
                           settings.path(settings.export.local_model_repository),
                           max_batch_size=settings.export.max_batch_size,
                           extra_files={"export.json": export_dir / "export.json"},
                           site_packages=default_site_packages(settings))


def train_candidate(settings: Settings, from_scratch: bool | None = None) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; returns the registered candidate."""
    from features.point_in_time import build_training_set
    from features.spec import FeatureSpec
    from recast.workflow import train_config
    from streaming.features import stream_sparse_features, uses_stream_features

    registry = read_registry(settings)
    cycle, model = registry["cycle"] + 1, model_name(settings)
    base = _base_run(settings, registry)
    every = settings.loop.scratch_every
    scratch = from_scratch if from_scratch is not None else (base is None or bool(every and cycle % every == 0))
    if not scratch and base is None:
        raise FileNotFoundError(f"no checkpoint to continue: run `recast train --model {model}` first, "
                                "or `recast loop --from-scratch`")
    features_dir = settings.path(settings.data.features_dir)
    if scratch:
        spec = FeatureSpec.load(features_dir / "spec.json")
        if settings.loop.stream_features and not uses_stream_features([spec]):
            items = spec.feature("item_id").vocab_size
            spec = FeatureSpec(spec.sparse + tuple(stream_sparse_features(items)), spec.dense, spec.label, spec.meta)
    else:
        previous = next((c for c in reversed(registry["candidates"]) if Path(c["run_dir"]) == base), None)
        spec = FeatureSpec.load(Path(previous["features_dir"] if previous else features_dir) / "spec.json")
    out = loop_dir(settings) / "cycles" / str(cycle)
    examples, counts = labelled_examples(settings)
    history, source = (feature_history(settings, examples) if uses_stream_features([spec]) else (None, "none"))
    rows = build_training_set(examples, features_dir, spec, out / "features", history)
    _check_split(out / "features")
    run = out / "run"
    if scratch:
        config, resume = train_config(settings, model, {"progress": False}), False
    else:
        config, resume = _warm_start(base, run, settings.loop.incremental_epochs), True
    result = _train(settings, out / "features", run, config, resume)
    exported = _export_candidate(settings, run, out / "features", candidate_name(model), cycle)
    candidate = {"cycle": cycle, "name": exported["model"], "version": exported["version"], "status": "candidate",
                 "live_model": model, "from_scratch": scratch, "base_run": str(base) if base and not scratch else None,
                 "run_dir": str(run), "features_dir": str(out / "features"), "export_dir": exported["export_dir"],
                 "examples": counts, "rows": rows, "stream_history": source, "val_auc": result["val_auc"],
                 "test_auc": result["test_auc"], "parity_max_abs_diff": exported["parity_max_abs_diff"]}
    for older in registry["candidates"]:
        if older["status"] == "candidate":  # never rolled out: the newer candidate replaces it
            _retire(settings, older, "superseded")
            record(settings, {"event": "superseded", "cycle": older["cycle"], "by_cycle": cycle},
                   f"cycle {older['cycle']}: SUPERSEDED by cycle {cycle} before any rollout; candidate removed")
    registry["cycle"] = cycle
    registry["candidates"].append(candidate)
    _write_registry(settings, registry)
    record(settings, {"event": "register", **candidate},
           f"cycle {cycle}: REGISTER {candidate['name']} v{candidate['version']} as candidate (no traffic); "
           f"{'from scratch' if scratch else 'incremental from ' + str(base)}; {sum(rows.values()):,} examples "
           f"({counts['labelled_exposures']:,} labelled exposures); time-split val AUC {result['val_auc']:.4f}, "
           f"test AUC {result['test_auc']:.4f}")
    return candidate


def _retire(settings: Settings, candidate: dict[str, Any], status: str) -> None:
    """Set the candidate's status and delete its version under the candidate name from both repositories."""
    from serving.model_repository import list_models, remove_version

    candidate["status"] = status
    for repo in (settings.path(settings.export.local_model_repository), settings.path(settings.export.model_repository)):
        if candidate["version"] in list_models(repo).get(candidate["name"], []):
            remove_version(repo, candidate["name"], candidate["version"])
        if list_models(repo).get(candidate["name"]) == []:  # a model without versions would fail to load
            shutil.rmtree(repo / candidate["name"])


def rollout_policy(settings: Settings):
    from abtest.rollout import RolloutPolicy

    s = settings.loop
    return RolloutPolicy(stages=tuple(s.stages), stage_days=s.stage_days, max_stage_days=s.max_stage_days,
                         gmv_margin=s.gmv_margin, latency_margin=s.latency_margin, error_margin=s.error_margin)


def guarded_rollout(settings: Settings, behaviour=None, seed: int = 0) -> dict[str, Any]:
    """Step 5 for the newest candidate: simulated rollout, then promote or roll back (no manual step)."""
    from abtest.rollout import SimulatedCandidate, report_line, simulate_rollout
    from serving.model_repository import list_models

    registry = read_registry(settings)
    pending = [c for c in registry["candidates"] if c["status"] == "candidate"]
    if not pending:
        raise ValueError("no candidate awaits a rollout: run `recast loop` to train one")
    candidate = pending[-1]
    s = settings.loop
    behaviour = behaviour or SimulatedCandidate(s.simulated_ctr_effect, s.simulated_latency_multiplier,
                                                s.simulated_error_rate)
    features_dir = settings.path(settings.data.features_dir)

    def on_decision(d) -> None:
        record(settings, {"event": "rollout", "cycle": candidate["cycle"], "version": candidate["version"],
                          "simulated": True, "simulated_candidate": asdict(behaviour), **d.to_dict()},
               f"cycle {candidate['cycle']}: {report_line(d)} (SIMULATED marketplace)")

    decisions = simulate_rollout(candidate["live_model"], candidate["name"], behaviour, rollout_policy(settings),
                                 n_units=s.simulated_units, seed=seed,
                                 features_dir=features_dir if features_dir.is_dir() else None,
                                 on_decision=on_decision)
    final = decisions[-1]
    live = candidate["live_model"]
    local_repo = settings.path(settings.export.local_model_repository)
    if final.action == "promote":
        versions = list_models(local_repo).get(live, [])
        version = max(versions) + 1 if versions else 1
        _publish(settings, Path(candidate["export_dir"]), live, version)
        candidate.update(status="promoted", promoted_as=f"{live}/{version}")
        registry["live"] = {"model": live, "version": version, "cycle": candidate["cycle"]}
    _retire(settings, candidate, "promoted" if final.action == "promote" else "rolled_back")
    candidate["decided_on_simulated_day"] = final.simulated_day
    _write_registry(settings, registry)
    outcome = (f"{live} v{registry['live'].get('version')} now serves" if final.action == "promote"
               else f"{live} keeps serving; candidate removed")
    record(settings, {"event": candidate["status"], "cycle": candidate["cycle"], "candidate": candidate["name"],
                      "version": candidate["version"], "simulated_day": final.simulated_day},
           f"cycle {candidate['cycle']}: {candidate['status'].upper().replace('_', ' ')} after "
           f"{final.simulated_day} simulated days: {outcome}")
    return {"status": candidate["status"], "decisions": [d.action for d in decisions],
            "simulated_days": final.simulated_day, "live": registry["live"]}


def run_cycle(settings: Settings, from_scratch: bool | None = None, rollout: str | None = None) -> dict[str, Any]:
    """``recast loop``: train and register a candidate, then (``rollout=simulate``) decide on it."""
    candidate = train_candidate(settings, from_scratch)
    out: dict[str, Any] = {"candidate": candidate}
    if (rollout or settings.loop.rollout) == "simulate":
        out["rollout"] = guarded_rollout(settings, seed=candidate["cycle"])
    out["report"] = str(loop_dir(settings) / REPORT)
    return out


def demo_cycle(settings: Settings) -> list[str]:
    """`make demo`'s loop step: labels job, one incremental cycle on 20k replayed ratings, the simulated rollout,
    the consistency check; returns the lines to print."""
    from recast.consistency import run_check
    from streaming.labels import build_labels

    registry = read_registry(settings)
    if registry["cycle"]:  # like the other demo steps: done once; `recast loop` runs another cycle
        last = registry["candidates"][-1]
        return [f"already ran {registry['cycle']} cycle(s); last: cycle {last['cycle']} {last['status']}; live "
                f"{registry['live']}; `recast loop` runs another", f"report: {loop_dir(settings) / REPORT}"]
    labels = build_labels(settings)
    lines = [f"labels job: {labels['examples']:,} labelled exposures ({labels['positives']:,} clicked)"]
    quick = settings.model_copy(update={"loop": settings.loop.model_copy(update={
        "history_limit": settings.loop.history_limit or 20_000, "rollout": "simulate"})})
    try:
        out = run_cycle(quick)
    except DegenerateSplit as exc:
        lines.append(f"not training on them: {exc}")
        quick.loop.use_labels = False
        out = run_cycle(quick)
    c, r = out["candidate"], out.get("rollout", {})
    consistency = run_check(settings)
    rates = {k: v["rate"] for k, v in consistency.get("features", {}).items()}
    return lines + [
            f"cycle {c['cycle']}: {'from scratch' if c['from_scratch'] else 'incremental'} on {sum(c['rows'].values()):,} "
            f"examples -> candidate {c['name']} v{c['version']} (val AUC {c['val_auc']:.4f}, no traffic)",
            f"guarded rollout (SIMULATED marketplace): {' -> '.join(r.get('decisions', []))} => {r.get('status')} "
            f"after {r.get('simulated_days')} simulated days; live {r.get('live')}",
            f"training-serving consistency: {consistency['checked_rows']} logged rows, max mismatch rate "
            f"{consistency.get('max_rate', 0):.3f} {rates if rates else consistency.get('note', '')}",
            f"report: {out['report']}"]
