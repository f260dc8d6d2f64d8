"""Online feature reads for the scoring gateway (no PyTorch, no polars).

Values come back already vocabulary-encoded, ready for the model input:
ints for single-valued features, lists of ints for multi-valued ones
(unpadded; padding to ``max_len`` is the request encoder's job).

With ``stream=True`` (the gateway turns it on when a served model's spec names
a streaming feature, ``stream.gateway_stream_features``) the same single
online read also returns the streaming features written by
the stream processor, as model-ready sparse ids (streaming/features.py:
log2 count buckets, 0 = no stream data, and ``recent_items``). A model whose
spec names them gets them; models trained on static features ignore them.
A user known only to the stream (no static row) is not a cold start: its
static features are 0 ("unknown") and its stream features are set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from features.feast_repo import (
    ITEM_KEY,
    ITEM_STREAM_VIEW,
    ITEM_VIEW,
    USER_KEY,
    USER_STREAM_VIEW,
    USER_VIEW,
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

    USER_STREAM_READ = ("clicks_1h", "clicks_24h", "events_24h", "purchases_24h", "last_item_ids", "last_event_ms")
    ITEM_STREAM_READ = ("item_clicks_1h", "item_clicks_24h", "item_clicks_total", "item_last_event_ms")

    def __init__(self, source: Settings | Path | str, stream: bool = False, item_cache_ttl_s: float = 300.0):
        repo = repo_dir(source) if isinstance(source, Settings) else Path(source)
        self.repo = repo
        self.store = open_store(repo)
        try:
            # Loads the registry now, so the first request does not pay for it; the views'
            # schemas say which features this dataset has and which are multi-valued.
            user_view = self.store.get_feature_view(USER_VIEW)
            item_view = self.store.get_feature_view(ITEM_VIEW)
        except Exception as exc:  # feast raises its own FeatureViewNotFoundException
            raise RuntimeError(
                f"Feast repository {repo} has no {USER_VIEW}/{ITEM_VIEW} views ({exc}); "
                "run features.feast_repo.ensure_feature_store(settings) (or `recast features build`)"
            ) from exc
        self.user_names = tuple(f.name for f in user_view.features)
        self.item_names = tuple(f.name for f in item_view.features)
        self.multi_valued = frozenset(f.name for view in (user_view, item_view) for f in view.features
                                      if "Array" in str(f.dtype))
        self._user_refs = [f"{USER_VIEW}:{f}" for f in self.user_names]
        self._item_refs = [f"{ITEM_VIEW}:{f}" for f in self.item_names]
        self.stream = False
        if stream:
            try:
                self.store.get_feature_view(USER_STREAM_VIEW)
                self.store.get_feature_view(ITEM_STREAM_VIEW)
                self.stream = True
            except Exception:  # a repository applied before the streaming views: static features only
                self.stream = False
        self._item_static_refs = list(self._item_refs)
        self._item_stream_refs = [f"{ITEM_STREAM_VIEW}:{f}" for f in self.ITEM_STREAM_READ] if self.stream else []
        if self.stream:
            self._user_refs += [f"{USER_STREAM_VIEW}:{f}" for f in self.USER_STREAM_READ]
            self._item_refs += self._item_stream_refs
        # A Feast online read costs ~0.05-0.1 ms of Python per entity row and view (5-15 ms for
        # 100 candidates). The static item view only changes when `recast features build`
        # re-materialises it, so known items' static rows are cached for item_cache_ttl_s
        # (0: no cache); streaming item features are still read on every request (a click
        # must change the next score).
        self.item_cache_ttl_s = item_cache_ttl_s
        self._item_cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def user_features(self, user: str) -> dict[str, int] | None:
        """Encoded features of one user, or None when the online store does not know it."""
        response = self.store.get_online_features(
            features=self._user_refs, entity_rows={USER_KEY: [str(user)]}
        )
        if not self.stream:
            out = _columns(response, self.user_names)
            if out[self.user_names[0]][0] is None:
                return None
            return {name: _single(out[name][0]) for name in self.user_names}
        from streaming.features import bucketize_user

        out = _columns(response, self.user_names + self.USER_STREAM_READ)
        stream = {name: out[name][0] for name in self.USER_STREAM_READ}
        if out[self.user_names[0]][0] is None and stream["last_event_ms"] is None:
            return None
        return {**{name: _single(out[name][0]) for name in self.user_names}, **bucketize_user(stream)}

    def stream_features(self, user: str) -> dict | None:
        """Raw streaming values of one user (counts, ``last_event_ms``...), None when the stream never saw it."""
        if not self.stream:
            return None
        refs = [f"{USER_STREAM_VIEW}:{f}" for f in self.USER_STREAM_READ]
        out = _columns(self.store.get_online_features(features=refs, entity_rows={USER_KEY: [str(user)]}),
                       self.USER_STREAM_READ)
        values = {name: out[name][0] for name in self.USER_STREAM_READ}
        return None if values["last_event_ms"] is None else values

    def item_features(self, items: Sequence[str]) -> tuple[dict[str, list], list[str]]:
        """Encoded features of many items in one online read.

        Returns ``({feature: [value per item]}, unknown_items)``. Items missing
        from the store get the unknown encoding (0, or ``[]`` for multi-valued)
        and are listed, in request order, in ``unknown_items``.
        """
        items = [str(i) for i in items]
        if not items:
            return {name: [] for name in self.item_names}, []
        if self.item_cache_ttl_s > 0:
            return self._item_features_cached(items)
        response = self.store.get_online_features(
            features=self._item_refs, entity_rows={ITEM_KEY: items}
        )
        out = _columns(response, self.item_names + (self.ITEM_STREAM_READ if self.stream else ()))
        present = out[self.item_names[0]]
        unknown = [item for item, value in zip(items, present) if value is None]
        values: dict[str, list] = {}
        for name in self.item_names:
            if name in self.multi_valued:
                values[name] = [list(v) if v is not None else [] for v in out[name]]
            else:
                values[name] = [_single(v) for v in out[name]]
        if self.stream:
            from streaming.features import bucketize_item

            rows = [bucketize_item({n: out[n][k] for n in self.ITEM_STREAM_READ}) for k in range(len(items))]
            for name in (rows[0] if rows else {}):
                values[name] = [r[name] for r in rows]
        return values, unknown

    def _item_features_cached(self, items: list[str]) -> tuple[dict[str, list], list[str]]:
        now = time.monotonic()
        rows: dict[str, dict[str, Any]] = {}
        for item in dict.fromkeys(items):
            hit = self._item_cache.get(item)
            if hit is not None and now - hit[0] < self.item_cache_ttl_s:
                rows[item] = hit[1]
        missing = [item for item in dict.fromkeys(items) if item not in rows]
        unknown: set[str] = set()
        if missing:
            response = self.store.get_online_features(features=self._item_static_refs, entity_rows={ITEM_KEY: missing})
            out = _columns(response, self.item_names)
            for k, item in enumerate(missing):
                if out[self.item_names[0]][k] is None:
                    unknown.add(item)
                row = {name: (list(out[name][k]) if out[name][k] is not None else []) if name in self.multi_valued
                       else _single(out[name][k]) for name in self.item_names}
                rows[item] = row
                if item not in unknown:
                    self._item_cache[item] = (now, row)
        values: dict[str, list] = {name: [rows[item][name] for item in items] for name in self.item_names}
        if self.stream:
            from streaming.features import bucketize_item

            response = self.store.get_online_features(features=self._item_stream_refs, entity_rows={ITEM_KEY: items})
            out = _columns(response, self.ITEM_STREAM_READ)
            stream_rows = [bucketize_item({n: out[n][k] for n in self.ITEM_STREAM_READ}) for k in range(len(items))]
            for name in (stream_rows[0] if stream_rows else {}):
                values[name] = [r[name] for r in stream_rows]
        return values, [item for item in items if item in unknown]


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
