"""Sweeps: run every cell of a grid once, in parallel processes, and remember each result.

Each cell's result is stored as ``run_dir/cells/<tag>/<hash of the cell>.json`` next to the cell
itself, so a resumed run, a reduce step or a later sweep with the same cells reuses it (a cell
whose content changed is recomputed). Cells are seeded from the run seed and their own content, so a
result does not depend on which process, pod or order computed it.

On a cluster every index of a Kubernetes Indexed Job computes one cell
(``JobContext.cell_index``); the pod that stores the last missing cell goes on with the rest of
``run`` (the reduce), guarded by a lock file so only one pod does it.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import signal
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from jobs.base import StopAfterCell, to_jsonable

if TYPE_CHECKING:
    from jobs.base import JobContext


def cell_seed(run_seed: int, cell: dict) -> int:
    digest = hashlib.sha256(json.dumps([run_seed, cell], sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_all(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a runtime dependency
        pass
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def _compute(fn: Callable[[dict], Any], cell: dict, seed: int) -> tuple[Any, float]:
    """The cell's result and the seconds it took (measured where it ran)."""
    started = time.perf_counter()
    seed_all(seed)
    return to_jsonable(fn(cell)), time.perf_counter() - started


def _worker_init() -> None:
    # the parent handles Ctrl-C (it terminates the pool); one thread per process: the pool
    # already uses the cores, and oversubscribed OpenMP threads make torch far slower
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.simplefilter("ignore", FutureWarning)  # library deprecation notices, once per cell otherwise
    warnings.simplefilter("ignore", DeprecationWarning)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def cell_key(cell: dict) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(cell), sort_keys=True).encode()).hexdigest()[:20]


class CellStore:
    """Results of one sweep under run_dir/cells/<tag>/, one file per cell named by its content:
    a grid that grows, shrinks or is reordered reuses every cell it still has."""

    def __init__(self, run_dir: Path, tag: str) -> None:
        self.dir = run_dir / "cells" / tag

    def path(self, cell: dict) -> Path:
        return self.dir / f"{cell_key(cell)}.json"

    def count(self) -> int:
        return sum(1 for p in self.dir.glob("*.json") if p.name != "sweep.json")

    def get(self, cell: dict) -> tuple[bool, Any]:
        path = self.path(cell)
        if not path.exists():
            return False, None
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            return False, None  # a torn write from a killed process: recompute
        if saved.get("cell") != to_jsonable(cell):
            return False, None
        return True, saved["result"]

    def put(self, cell: dict, result: Any, seconds: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(cell)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"cell": to_jsonable(cell), "result": result, "seconds": round(seconds, 3)}))
        tmp.replace(path)


def run_cells(ctx: "JobContext", fn: Callable[[dict], Any], cells: list[dict], tag: str, desc: str) -> list:
    if getattr(fn, "__name__", "<lambda>") == "<lambda>" or "<locals>" in getattr(fn, "__qualname__", ""):
        raise ValueError("JobContext.map needs a module-level function (it is sent to other processes)")
    store = CellStore(ctx.run_dir, tag)
    store.dir.mkdir(parents=True, exist_ok=True)
    (store.dir / "sweep.json").write_text(json.dumps({"cells": len(cells), "desc": desc}))  # for `recast jobs status`
    results: list[Any] = [None] * len(cells)
    missing = []
    for i, cell in enumerate(cells):
        found, value = store.get(cell)
        if found:
            results[i] = value
        else:
            missing.append(i)

    if ctx.cell_index is not None:
        return _cell_mode(ctx, fn, cells, store, results, missing, desc)

    if missing:
        ctx.log(f"{desc or tag}: {len(cells) - len(missing)}/{len(cells)} cells stored, computing {len(missing)}"
                f" on {min(ctx.parallelism, len(missing))} process(es)")
    workers = min(ctx.parallelism, len(missing))
    if workers <= 1:
        for i in ctx.progress(missing, desc=desc or tag):
            results[i], seconds = _compute(fn, cells[i], cell_seed(ctx.seed, cells[i]))
            store.put(cells[i], results[i], seconds)
            ctx.cells_computed += 1
        return results
    _run_pool(ctx, fn, cells, store, results, missing, workers, desc or tag)
    return results


def _run_pool(ctx: "JobContext", fn: Callable, cells: list[dict], store: CellStore, results: list, missing: list[int],
              workers: int, desc: str) -> None:
    mp = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start is unsafe
    pool = mp.Pool(workers, initializer=_worker_init)
    try:
        pending = {i: pool.apply_async(_compute, (fn, cells[i], cell_seed(ctx.seed, cells[i]))) for i in missing}

        def completions():
            while pending:
                ctx.check_cancel()
                done = [i for i, r in pending.items() if r.ready()]
                if not done:
                    time.sleep(0.05)
                    continue
                for i in done:
                    results[i], seconds = pending.pop(i).get()  # re-raises the cell's exception here
                    store.put(cells[i], results[i], seconds)
                    ctx.cells_computed += 1
                    yield i

        for _ in ctx.progress(completions(), total=len(missing), desc=desc):
            pass
        pool.close()
    except BaseException:
        pool.terminate()  # cancelled or a cell failed: stop the others now
        raise
    finally:
        pool.join()


def _cell_mode(ctx: "JobContext", fn: Callable, cells: list[dict], store: CellStore, results: list, missing: list[int],
               desc: str) -> list:
    index = ctx.cell_index
    assert index is not None
    if index >= len(cells):
        raise ValueError(f"--cell-index {index} is out of range: this sweep has {len(cells)} cells (0..{len(cells) - 1});"
                         " set the Indexed Job's completions to the count `recast jobs cells` prints")
    if index in missing:
        ctx.log(f"{desc or store.dir.name}: computing cell {index}/{len(cells)}")
        results[index], seconds = _compute(fn, cells[index], cell_seed(ctx.seed, cells[index]))
        store.put(cells[index], results[index], seconds)
        ctx.cells_computed += 1
        missing = [i for i in missing if i != index]
    # other pods may have finished meanwhile
    for i in list(missing):
        found, value = store.get(cells[i])
        if found:
            results[i] = value
            missing.remove(i)
    if missing:
        raise StopAfterCell(f"cell {index} stored; {len(missing)} of {len(cells)} cells still to come")
    lock = ctx.run_dir / "reduce.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise StopAfterCell(f"cell {index} stored; another pod is reducing") from None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    ctx.log(f"all {len(cells)} cells stored: this pod reduces")
    ctx.cell_index = None  # later sweeps of this run are computed here, in parallel
    return results
