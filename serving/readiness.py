"""Honest model health: is what Triton serves what was exported, and did the last load work?

Triton in poll mode keeps an old instance serving when a reload fails (a broken
new version, a corrupted or deleted model file) and retries forever; its plain
model-ready flag then stays true. A model is therefore *healthy* only when

* Triton is reachable and the model answers ready;
* the newest version in the model repository is not UNAVAILABLE in Triton's
  repository index (a version still loading, or not yet picked up by the next
  poll, is pending, not failed: the previous version serves meanwhile);
* that version's ``model.onnx`` still has the sha256 recorded in its
  ``metadata.json`` when it was published (``model_sha256``).

The same assessment feeds ``/readyz``, the ``recast_gateway_model_healthy``
gauge and ``recast stack status``. Hashes are cached by (inode, size, mtime),
so a probe re-reads a model file only after it changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from serving.model_repository import METADATA_FILE, MODEL_FILE, list_models, sha256_file

# Triton's reason for versions that left the version policy on purpose
_PLANNED_UNLOAD = ("unloaded",)


class ModelFiles:
    """Checks the newest local version of each model against its publication record."""

    def __init__(self, repo: Path) -> None:
        self.repo = Path(repo)
        self._hashes: dict[Path, tuple[tuple[int, int, int], str]] = {}

    def latest_versions(self) -> dict[str, int]:
        return {name: max(versions) for name, versions in list_models(self.repo).items() if versions}

    def _hash(self, path: Path) -> str:
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._hashes.get(path)
        if cached is None or cached[0] != key:
            cached = (key, sha256_file(path))
            self._hashes[path] = cached
        return cached[1]

    def problems(self, model: str, version: int) -> list[str]:
        """What is wrong with the files of one published version (empty: nothing)."""
        version_dir = self.repo / model / str(version)
        model_file = version_dir / MODEL_FILE
        if not model_file.is_file():
            return [f"version {version}: {MODEL_FILE} is missing from the model repository"]
        try:
            expected = json.loads((version_dir / METADATA_FILE).read_text()).get("model_sha256")
        except (OSError, ValueError):
            expected = None
        if not expected:
            return []  # published before hashes were recorded: nothing to compare against
        try:
            actual = self._hash(model_file)
        except OSError as exc:
            return [f"version {version}: {MODEL_FILE} cannot be read ({exc.strerror})"]
        if actual != expected:
            return [f"version {version}: {MODEL_FILE} no longer matches the sha256 recorded when it was published"]
        return []


def assess(model: str, served_ready: bool, index: list[dict[str, Any]] | None, latest: int | None,
           file_problems: Iterable[str]) -> list[str]:
    """Problems of one model from Triton's answers and the file check (empty: healthy)."""
    if index is None:
        return ["the model server is unreachable"]
    problems = list(file_problems)
    if not served_ready:
        problems.append("the model server does not report the model ready")
    if latest is not None:
        for entry in index:
            if entry.get("name") != model or str(entry.get("version", "")) != str(latest):
                continue
            state, reason = str(entry.get("state", "")), str(entry.get("reason", ""))
            if state == "UNAVAILABLE" and reason not in _PLANNED_UNLOAD:
                # Triton's reason names files and paths: it stays in Triton's log and `recast stack status`
                problems.append(f"version {latest} failed to load (UNAVAILABLE in the model server)")
    return problems
