"""What every offline batch job shares: the ``Job`` interface, its ``Verdict``, the registry
and the ``JobContext`` a job's ``run`` talks to.

A job tests a paper's claim. It declares a typed ``Config`` with the paper's defaults,
``presets`` (``tiny`` for CI, ``full`` for the numbers in jobs/README.md), computes JSON-able
results in ``run`` and judges them in ``verdict``. Everything else -- the run directory,
manifest, seeding, resume, cancellation, parallel sweeps, metrics, reports -- is the
platform's (jobs/runner.py), so a job module holds only the paper.
"""

from __future__ import annotations

import importlib
import json
import pickle
import pkgutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from jobs.metrics import MetricsRecorder


class JobCancelled(Exception):
    """Raised inside a job by ``check_cancel`` after SIGINT/SIGTERM; the run ends as ``cancelled``
    and can be resumed."""


class SweepSize(Exception):
    """Raised by ``JobContext.map`` when the context only counts the cells of the first sweep."""

    def __init__(self, cells: int) -> None:
        super().__init__(f"{cells} cells")
        self.cells = cells


class StopAfterCell(Exception):
    """Raised by ``JobContext.map`` in cluster cell mode once this index's cell is stored and
    the sweep is not complete yet: the rest of ``run`` belongs to the reduce step."""


@dataclass
class Verdict:
    held: bool | None
    """True: the claim held; False: it did not; None: inconclusive or held only in part."""
    summary: str
    """What we measured, one paragraph, plain words."""
    table_md: str = ""
    """Markdown table of the headline comparison."""


class Job:
    """One paper's experiment. Subclass, set the class attributes, decorate with ``@register``."""

    name: str = ""
    title: str = ""
    claim: str = ""
    Config: type = object
    presets: dict[str, dict] = {}

    def run(self, cfg: Any, ctx: "JobContext") -> dict:
        raise NotImplementedError

    def verdict(self, cfg: Any, results: dict) -> Verdict:
        raise NotImplementedError

    def plots(self, cfg: Any, results: dict, ctx: "JobContext") -> list[Path]:
        """Optional: (re)draw PNG plots from results alone; ``recast jobs report`` calls it
        again, so plots can change without rerunning the experiment."""
        return []


# -- registry ------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Job]] = {}
_PLATFORM_MODULES = {"base", "runner", "cli", "registry", "sweep", "metrics", "report", "config"}
_discovered = False


def register(cls: type[Job]) -> type[Job]:
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a job needs a name")
    known = _REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"two jobs are called {cls.name!r}: {known.__module__} and {cls.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def discover() -> None:
    """Import every job module under jobs/ (each registers itself). Job modules should import
    heavy libraries (torch) inside ``run`` or their submodules, so listing stays fast."""
    global _discovered
    if _discovered:
        return
    import jobs

    for info in pkgutil.iter_modules(jobs.__path__):
        if info.name.startswith("_") or info.name in _PLATFORM_MODULES:
            continue
        importlib.import_module(f"jobs.{info.name}")
    _discovered = True


def get_job(name: str) -> Job:
    discover()
    if name not in _REGISTRY:
        raise KeyError(f"no job named {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'} (recast jobs list)")
    return _REGISTRY[name]()


def all_jobs() -> list[Job]:
    discover()
    return [_REGISTRY[name]() for name in sorted(_REGISTRY)]


# -- the context a job runs in ----------------------------------------------------------------


class JobContext:
    """The run directory and the platform services of one run (see jobs/runner.py, which makes it)."""

    def __init__(self, run_dir: Path, seed: int, *, parallelism: int = 1, cancel_event: threading.Event | None = None,
                 metrics: "MetricsRecorder | None" = None, cell_index: int | None = None,
                 log_file: Path | None = None, quiet: bool = False, count_only: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.parallelism = max(1, parallelism)
        self.cancel_event = cancel_event or threading.Event()
        self.metrics = metrics
        self.cell_index = cell_index
        """Cluster cell mode: compute only this index of each sweep (Kubernetes Indexed Job)."""
        self.log_file = log_file or (self.run_dir / "log.txt")
        self.quiet = quiet
        self.count_only = count_only
        self._maps = 0
        self.cells_computed = 0
        """Cells this process computed (the rest came from run_dir/cells/)."""

    def log(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        with open(self.log_file, "a") as fh:
            fh.write(line + "\n")
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterator:
        """A tqdm bar on a terminal, about ten log lines otherwise; checks for cancellation
        at every item."""
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        if sys.stderr.isatty() and not self.quiet:
            from tqdm import tqdm

            for item in tqdm(iterable, total=total, desc=desc, leave=False):
                self.check_cancel()
                yield item
            return
        every = max(1, (total or 10) // 10)
        started = time.monotonic()
        for i, item in enumerate(iterable):
            self.check_cancel()
            yield item
            done = i + 1
            if done % every == 0 or done == total:
                of = f"/{total}" if total else ""
                self.log(f"{desc or 'progress'} {done}{of} ({time.monotonic() - started:.0f}s)")

    def check_cancel(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled("cancelled by a signal")

    # -- state for resume ----------------------------------------------------------------------

    def _state_path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"state key {key!r}: use a plain name")
        return self.run_dir / "state" / f"{key}.pt"

    def save_state(self, key: str, obj: Any) -> None:
        """Checkpoint ``obj`` (torch tensors and modules' state dicts too) atomically."""
        path = self._state_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        if "torch" in sys.modules:
            sys.modules["torch"].save(obj, tmp)
        else:
            with open(tmp, "wb") as fh:
                pickle.dump(obj, fh)
        tmp.replace(path)

    def load_state(self, key: str) -> Any | None:
        path = self._state_path(key)
        if not path.exists():
            return None
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == b"PK":  # torch's zip format
            import torch

            return torch.load(path, weights_only=False)
        with open(path, "rb") as fh:
            return pickle.load(fh)

    # -- outputs -------------------------------------------------------------------------------

    def metric(self, name: str, value: float, **labels: Any) -> None:
        """Record a result metric (metrics.jsonl; pushed to the Pushgateway when configured)."""
        if self.metrics is not None:
            self.metrics.record(name, float(value), {k: str(v) for k, v in labels.items()})

    def plot_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.png"

    def map(self, fn: Callable[[dict], Any], cells: list[dict], desc: str = "") -> list:
        """``[fn(cell) for cell in cells]``, in parallel processes, each cell seeded from the run
        seed and its own content, each result cached under run_dir/cells/ (resume skips it)."""
        from jobs.sweep import run_cells

        if self.count_only:
            raise SweepSize(len(cells))
        tag = f"{self._maps:02d}-{_slug(desc or getattr(fn, '__name__', 'cells'))}"
        self._maps += 1
        return run_cells(self, fn, cells, tag, desc)


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    return out[:40] or "cells"


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, Paths and tuples -> plain JSON types (NaN stays a float)."""
    return json.loads(json.dumps(obj, default=_default))


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-able")
