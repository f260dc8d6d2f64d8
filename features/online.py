"""Online feature reads for the scoring gateway (no PyTorch, no polars).

Values come back already vocabulary-encoded, ready for the model input:
ints for single-valued features, lists of ints for multi-valued ones
(unpadded; padding to ``max_len`` is the request encoder's job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from features.feast_repo import (
    ITEM_KEY,
    ITEM_VIEW,
    ITEM_VIEW_FEATURES,
    MULTI_VALUED,
    USER_KEY,
    USER_VIEW,
    USER_VIEW_FEATURES,
    open_store,
    repo_dir,
)
from recast.settings import Settings


class OnlineFeatureReader:
    """Reads user and item features from the Feast online store.

    ``source`` is the Settings (uses ``settings.feast.repo_dir``) or the path
    of a generated Feast repository. Build it with
    :func:`features.feast_repo.ensure_feature_store` first.
    """

    def __init__(self, source: Settings | Path | str):
        repo = repo_dir(source) if isinstance(source, Settings) else Path(source)
        self.repo = repo
        self.store = open_store(repo)
        self._user_refs = [f"{USER_VIEW}:{f}" for f in USER_VIEW_FEATURES]
        self._item_refs = [f"{ITEM_VIEW}:{f}" for f in ITEM_VIEW_FEATURES]
        try:
            # Loads the registry now, so the first request does not pay for it.
            self.store.get_feature_view(USER_VIEW)
            self.store.get_feature_view(ITEM_VIEW)
        except Exception as exc:  # feast raises its own FeatureViewNotFoundException
            raise RuntimeError(
                f"Feast repository {repo} has no {USER_VIEW}/{ITEM_VIEW} views ({exc}); "
                "run features.feast_repo.ensure_feature_store(settings) (or `recast features build`)"
            ) from exc

    def user_features(self, user: str) -> dict[str, int] | None:
        """Encoded features of one user, or None when the online store does not know it."""
        response = self.store.get_online_features(
            features=self._user_refs, entity_rows={USER_KEY: [str(user)]}
        )
        out = _columns(response, USER_VIEW_FEATURES)
        if out[USER_VIEW_FEATURES[0]][0] is None:
            return None
        return {name: _single(out[name][0]) for name in USER_VIEW_FEATURES}

    def item_features(self, items: Sequence[str]) -> tuple[dict[str, list], list[str]]:
        """Encoded features of many items in one online read.

        Returns ``({feature: [value per item]}, unknown_items)``. Items missing
        from the store get the unknown encoding (0, or ``[]`` for multi-valued)
        and are listed, in request order, in ``unknown_items``.
        """
        items = [str(i) for i in items]
        if not items:
            return {name: [] for name in ITEM_VIEW_FEATURES}, []
        response = self.store.get_online_features(
            features=self._item_refs, entity_rows={ITEM_KEY: items}
        )
        out = _columns(response, ITEM_VIEW_FEATURES)
        present = out[ITEM_VIEW_FEATURES[0]]
        unknown = [item for item, value in zip(items, present) if value is None]
        values: dict[str, list] = {}
        for name in ITEM_VIEW_FEATURES:
            if name in MULTI_VALUED:
                values[name] = [list(v) if v is not None else [] for v in out[name]]
            else:
                values[name] = [_single(v) for v in out[name]]
        return values, unknown


def _columns(response, names: Sequence[str]) -> dict[str, list]:
    """Feature columns straight from the response proto (``to_dict`` is ~3x slower).

    Int64 values become ints, Int64 arrays lists of ints, and absent values None.
    """
    proto = response.proto
    wanted = set(names)
    out: dict[str, list] = {}
    for name, vector in zip(proto.metadata.feature_names.val, proto.results):
        if name not in wanted:
            continue
        column = []
        for value in vector.values:
            kind = value.WhichOneof("val")
            if kind == "int64_val":
                column.append(value.int64_val)
            elif kind == "int64_list_val":
                column.append(list(value.int64_list_val.val))
            elif kind is None or kind == "null_val":
                column.append(None)
            else:
                raise TypeError(f"online feature {name!r} has unexpected value type {kind!r}")
        out[name] = column
    missing = wanted.difference(out)
    if missing:
        raise KeyError(f"online store response lacks features {sorted(missing)}")
    return out


def _single(value: int | None) -> int:
    return 0 if value is None else int(value)
