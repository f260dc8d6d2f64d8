"""The shared text / embedding backends of the jobs: the real local models (shipped in wheels),
the disk cache, the OpenAI-compatible client against a local server speaking the protocol, BM25
and the vector index."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.backends import GenParams, bm25_index, embedder, text_backend, vector_index
from jobs.backends import embed as embed_mod
from jobs.backends.cache import DiskCache
from jobs.backends.fake_openai import FakeOpenAIServer
from jobs.backends.text import CachedTextBackend, cut_at_stop, parse_openai_spec


class CountingBackend:
    model_id = "counting"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def generate(self, prompts, params=GenParams(), system=None):
        self.seen.extend(prompts)
        return [[f"{p}|{system}|{params.max_tokens}"] * params.n for p in prompts]

    def logprobs(self, prompts, continuations, system=None):
        self.seen.extend(continuations)
        return [-float(len(c)) for c in continuations]


def test_gen_params_reject_bad_values():
    for bad in ({"temperature": -1}, {"max_tokens": 0}, {"top_p": 0}, {"n": 0}):
        with pytest.raises(ValueError):
            GenParams(**bad)
    assert GenParams(stop=["x"]).stop == ("x",)


def test_cache_asks_the_backend_once_per_distinct_request(tmp_path):
    inner = CountingBackend()
    cached = CachedTextBackend(inner, DiskCache("llm", inner.model_id, root=tmp_path))
    first = cached.generate(["a", "b", "a"], GenParams(max_tokens=5), system="s")
    assert first == [["a|s|5"], ["b|s|5"], ["a|s|5"]]
    assert inner.seen == ["a", "b"]
    assert cached.generate(["b", "c"], GenParams(max_tokens=5), system="s") == [["b|s|5"], ["c|s|5"]]
    assert inner.seen == ["a", "b", "c"]
    cached.generate(["a"], GenParams(max_tokens=6), system="s")  # other parameters: another key
    cached.generate(["a"], GenParams(max_tokens=5), system=None)  # other system prompt: another key
    assert inner.seen == ["a", "b", "c", "a", "a"]
    # a fresh process (new wrapper, same file) reads the disk cache
    again = CachedTextBackend(CountingBackend(), DiskCache("llm", inner.model_id, root=tmp_path))
    assert again.generate(["a"], GenParams(max_tokens=5), system="s") == [["a|s|5"]] and again.calls == 0
    assert again.logprobs(["p", "p"], ["xy", "xyz"]) == [-2.0, -3.0] and again.calls == 2
    with pytest.raises(ValueError):
        again.logprobs(["p"], ["a", "b"])
    with pytest.raises(TypeError):
        again.generate("not a list")


def test_specs_are_parsed_or_rejected_with_a_hint():
    assert parse_openai_spec("openai:http://h:8000/v1/#Qwen/Qwen2.5") == ("http://h:8000/v1", "Qwen/Qwen2.5")
    with pytest.raises(ValueError, match="openai:<base_url>#<model>"):
        parse_openai_spec("openai:http://h:8000/v1")
    with pytest.raises(ValueError, match="unknown text backend"):
        text_backend("llamafile:x")
    with pytest.raises(ValueError, match="unknown embedder"):
        embedder("word2vec")
    assert cut_at_stop("abc\nQ: next", ("\nQ:", "zz")) == "abc"


def test_openai_compatible_server_backs_generation_scoring_and_embeddings(tmp_path, monkeypatch):
    monkeypatch.setenv("RECAST_JOBS__CACHE_DIR", str(tmp_path))
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("RECAST_JOBS__LLM", server.spec())
        backend = text_backend()  # by the setting, as a job would get it
        assert backend.model_id.startswith("openai:fake-model@")
        out = backend.generate(["Question:\nwhere is Paris", "say nothing"], GenParams(n=2, stop=("aris",)))
        assert out == [["answer: P", "answer: P"], ["answer: nothing", "answer: nothing"]]
        path, body = server.requests[0]
        assert path == "/v1/chat/completions" and body["n"] == 2 and body["stop"] == ["aris"]
        assert body["messages"] == [{"role": "user", "content": "Question:\nwhere is Paris"}]
        scored = backend.logprobs(["q", "q"], ["ab cdef", ""], system="sys")
        assert scored == pytest.approx([-0.6, 0.0])  # only the continuation's words count
        before = len(server.requests)
        assert backend.generate(["say nothing"], GenParams(n=2, stop=("aris",))) == [["answer: nothing"] * 2]
        assert len(server.requests) == before  # from the disk cache
        emb = embedder(server.spec("fake-embed"))
        vecs = emb.encode(["red apple", "apple red", "blue sky"])
        assert vecs.dtype == np.float32 and np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
        assert vecs[0] @ vecs[1] == pytest.approx(1.0) and vecs[0] @ vecs[2] < 0.5


def test_unreachable_server_fails_with_a_clear_message(tmp_path, monkeypatch):
    from jobs.backends.openai_compat import OpenAIClient

    client = OpenAIClient("http://127.0.0.1:9/v1", timeout_s=2, retries=0)
    with pytest.raises(RuntimeError, match="cannot reach"):
        client.post("/chat/completions", {})


def test_local_model_generates_deterministically_and_scores_continuations(tmp_path):
    shared = text_backend("local")
    fresh = CachedTextBackend(shared.inner, DiskCache("llm", shared.model_id, root=tmp_path))
    prompts = ["What is the capital of France? Answer in one word.", "Name a primary colour."]
    first = fresh.generate(prompts, GenParams(max_tokens=12))
    assert "paris" in first[0][0].lower()
    recomputed = CachedTextBackend(shared.inner, DiskCache("llm", shared.model_id, root=tmp_path / "again"))
    assert recomputed.generate(prompts, GenParams(max_tokens=12)) == first  # greedy is deterministic
    assert recomputed.generate(prompts[:1], GenParams(max_tokens=12, stop=("aris",)))[0][0].lower().endswith("p")
    sampled = fresh.generate(prompts[:1], GenParams(max_tokens=8, temperature=1.0, n=3, seed=3))[0]
    assert len(sampled) == 3 and len(set(sampled)) > 1
    paris, berlin = fresh.logprobs([prompts[0]] * 2, ["Paris", "Berlin"])
    assert paris > berlin and paris < 0


def test_local_embedder_vector_index_and_bm25():
    emb = embedder("local")
    docs = ["The cat sleeps on the warm mat.", "Stock prices fell sharply on Monday.",
            "A kitten naps on a rug.", "The central bank raised interest rates."]
    vecs = emb.encode(docs)
    assert vecs.shape == (4, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    ids, scores = vector_index(vecs).search(emb.encode(["a sleeping cat"]), k=2)
    assert set(ids[0]) == {0, 2} and scores[0, 0] >= scores[0, 1]
    assert emb.encode([]).shape == (0, 384)

    ids, scores = bm25_index(docs).search(["interest rates bank", "zebra", "cat mat"], k=10)
    assert ids.shape == (3, 4)  # k clipped to the corpus
    assert ids[0, 0] == 3 and scores[0, 0] > 0 and np.all(scores[1] == 0) and ids[2, 0] == 0
    with pytest.raises(ValueError):
        bm25_index([])


def test_vector_index_hnsw_agrees_with_exact_search(monkeypatch):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2000, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = vecs[:20] + 0.01 * rng.normal(size=(20, 16)).astype(np.float32)
    exact_ids, _ = vector_index(vecs).search(queries, k=5)
    monkeypatch.setattr(embed_mod, "EXACT_LIMIT", 100)
    approx = vector_index(vecs)
    assert not approx.exact
    approx_ids, approx_scores = approx.search(queries, k=5)
    assert np.all(approx_ids[:, 0] == np.arange(20))
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact_ids, approx_ids)]) > 0.9
    assert np.all(np.diff(approx_scores, axis=1) <= 1e-6)


def test_disk_cache_is_shared_by_forked_workers(tmp_path):
    import multiprocessing as mp

    cache = DiskCache("llm", "forked", root=tmp_path)
    cache.put_many({"parent": b"1"})
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_from_child, args=(cache, i)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert cache.get_many(["parent", "child0", "child1"]) == {"parent": b"1", "child0": b"0", "child1": b"1"}


def _write_from_child(cache: DiskCache, i: int) -> None:
    assert cache.get_many(["parent"]) == {"parent": b"1"}
    cache.put_many({f"child{i}": str(i).encode()})
