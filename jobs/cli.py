"""``recast jobs ...``: offline batch jobs that test the research group's papers.

    recast jobs list                                  # jobs and their presets
    recast jobs run lightsam --preset tiny            # a new run (seeded; --set field=value)
    recast jobs run --resume lightsam/RUN-ID          # continue a failed or cancelled run
    recast jobs status [RUN]                          # runs and their status
    recast jobs report RUN                            # print (and redraw) a run's report
    recast jobs cells lightsam --preset full          # sweep size = Indexed Job completions
    recast jobs run lightsam --run-id R --cell-index $JOB_COMPLETION_INDEX   # one cluster cell
    recast jobs reduce lightsam/R                     # collect the cells (computes any missing)

Runs live under settings.jobs.run_root (artifacts/jobs/<job>/<run-id>/). Ctrl-C or SIGTERM
cancels at the next checkpoint; the run keeps its finished sweep cells and checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from recast.cli import _parse_set  # the same KEY=VALUE (JSON values) as `recast train --set`
from recast.settings import Settings

EXIT = {"succeeded": 0, "cell-stored": 0, "failed": 1, "cancelled": 130}


def parallelism(s: Settings, requested: int | None) -> int:
    if requested:
        return requested
    if s.jobs.parallelism:
        return s.jobs.parallelism
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cmd_list(args: argparse.Namespace, s: Settings) -> None:
    from jobs.base import all_jobs

    for job in all_jobs():
        print(f"{job.name:<22} {job.title}")
        print(f"{'':<22} presets: {', '.join(job.presets) or '-'}")


def cmd_run(args: argparse.Namespace, s: Settings, reduce: bool = False) -> None:
    from jobs.runner import run_job

    if reduce:
        args.resume, args.name = args.run, None
    if args.name is None and args.resume is None:
        raise ValueError("name a job (recast jobs list) or --resume a run")
    if args.cell_index is not None and not args.run_id:
        raise ValueError("--cell-index needs --run-id: every index of one sweep must write to the same run")
    outcome = run_job(
        args.name if args.resume is None else None, root=s.path(s.jobs.run_root), preset=args.preset,
        overrides=_parse_set(args.set), seed=args.seed, run_id=args.run_id, resume=args.resume,
        cell_index=args.cell_index, parallelism=parallelism(s, args.parallelism),
        pushgateway_url=s.jobs.pushgateway_url, quiet=args.quiet, argv=["recast", *sys.argv[1:]],
    )
    m = outcome.manifest
    summary = {"run": f"{m['job']}/{m['run_id']}", "status": outcome.status, "run_dir": str(outcome.run_dir),
               "seconds": m["seconds"], "claim_held": m.get("claim_held")}
    for key in ("error", "note", "pushgateway_error", "report_error"):
        if m.get(key):
            summary[key] = m[key]
    print(json.dumps(summary, indent=2))
    if outcome.status != "succeeded" and outcome.status in EXIT:
        sys.exit(EXIT[outcome.status])


def cmd_reduce(args: argparse.Namespace, s: Settings) -> None:
    cmd_run(args, s, reduce=True)


def cmd_status(args: argparse.Namespace, s: Settings) -> None:
    from jobs.runner import find_run, list_runs

    root = s.path(s.jobs.run_root)
    if args.run:
        print((find_run(root, args.run) / "manifest.json").read_text())
        return
    rows = list_runs(root, args.job)
    if not rows:
        print(f"no runs under {root}")
    for r in rows:
        held = {True: "claim held", False: "claim not held", None: ""}[r["claim_held"]]
        secs = f"{r['seconds']:.0f}s" if isinstance(r["seconds"], (int, float)) else ""
        print(f"{r['run']:<40} {r['status']:<24} {r['started_at'] or '':<26} {secs:>7} {held}"
              + (f"  {r['error']}" if r["error"] else ""))


def cmd_report(args: argparse.Namespace, s: Settings) -> None:
    from jobs.runner import rereport

    path = rereport(s.path(s.jobs.run_root), args.run)
    print(path.read_text())
    print(f"(written to {path} and {path.with_suffix('.html')})", file=sys.stderr)


def cmd_cells(args: argparse.Namespace, s: Settings) -> None:
    from jobs.runner import count_cells

    print(json.dumps({"cells": count_cells(args.name, args.preset, _parse_set(args.set), args.seed)}))


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="tiny (CI, < 1 minute) or full (the numbers in jobs/README.md)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field (JSON values: --set etas=[0.1,1.0])")
    p.add_argument("--seed", type=int, default=None, help="run seed (default 0); sweep cells derive theirs from it")


def register(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("jobs", help="offline batch jobs: run, resume, inspect paper experiments",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jsub = j.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")

    jsub.add_parser("list", help="the registered jobs").set_defaults(func=cmd_list)

    r = jsub.add_parser("run", help="run a job (or --resume a run, or one --cell-index of a cluster sweep)")
    r.add_argument("name", nargs="?", help="job name (recast jobs list)")
    _run_options(r)
    r.add_argument("--resume", metavar="RUN", help="continue RUN (job/run-id): finished cells and checkpoints are kept")
    r.add_argument("--run-id", help="run directory name (default: UTC time + preset)")
    r.add_argument("--cell-index", type=int, help="compute only this sweep cell (Kubernetes Indexed Job index);"
                                                  " the pod that completes the sweep reduces")
    r.add_argument("--parallelism", type=int, help="processes for sweeps (default: settings.jobs.parallelism or cores)")
    r.add_argument("--quiet", action="store_true", help="no log lines on stderr (log.txt still gets them)")
    r.set_defaults(func=cmd_run)

    rd = jsub.add_parser("reduce", help="finish a cluster sweep: collect its cells, compute missing ones, report")
    rd.add_argument("run", metavar="RUN")
    rd.add_argument("--parallelism", type=int)
    rd.add_argument("--quiet", action="store_true")
    rd.set_defaults(func=cmd_reduce, preset=None, set=[], seed=None, run_id=None, cell_index=None)

    st = jsub.add_parser("status", help="runs and their status, or one run's manifest")
    st.add_argument("run", nargs="?", metavar="RUN")
    st.add_argument("--job", help="only this job's runs")
    st.set_defaults(func=cmd_status)

    rp = jsub.add_parser("report", help="redraw and print a finished run's report")
    rp.add_argument("run", metavar="RUN")
    rp.set_defaults(func=cmd_report)

    c = jsub.add_parser("cells", help="how many cells the job's sweep has (the Indexed Job's completions)")
    c.add_argument("name")
    _run_options(c)
    c.set_defaults(func=cmd_cells)
