"""Clients of an OpenAI-compatible HTTP server (vLLM, llama.cpp server, Ollama, a hosted API), so a
job runs at scale against a real model server by one setting and without code changes.

* ``generate``: ``POST /chat/completions`` (the server applies its chat template).
* ``logprobs``: ``POST /completions`` with ``echo=true, logprobs=1, max_tokens=0`` on the prompt
  followed by the continuation -- the prompt-scoring call vLLM and llama.cpp support; the chat
  template cannot be applied over this endpoint, so the prompt is sent as plain text (system line,
  blank line, prompt, newline) and only tokens starting at or after the continuation's offset count.
* ``encode``: ``POST /embeddings``.

The API key comes from ``RECAST_LLM_API_KEY`` (optional for local servers). Transient errors
(connection, 429, 5xx) are retried with back-off; other errors say what the server answered.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from jobs.backends.text import GenParams, cut_at_stop


class OpenAIClient:
    def __init__(self, base_url: str, timeout_s: float = 300.0, retries: int = 4) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get("RECAST_LLM_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:500]
                if exc.code in (429, 500, 502, 503, 504) and attempt < self.retries:
                    time.sleep(min(30.0, 0.5 * 2 ** attempt))
                    continue
                raise RuntimeError(f"{self.base_url}{path} answered {exc.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt < self.retries:
                    time.sleep(min(30.0, 0.5 * 2 ** attempt))
                    continue
                raise RuntimeError(f"cannot reach {self.base_url}{path}: {exc}; is the server up "
                                   "(jobs.llm / jobs.embedder in recast.yaml)?") from None
        raise AssertionError("unreachable")


def plain_prompt(prompt: str, system: str | None) -> str:
    return (f"{system}\n\n" if system else "") + prompt + "\n"


class OpenAITextBackend:
    """``TextBackend`` over an OpenAI-compatible server."""

    def __init__(self, base_url: str, model: str) -> None:
        self.client = OpenAIClient(base_url)
        self.model = model
        self.model_id = f"openai:{model}@{base_url}"

    def generate(self, prompts: list[str], params: GenParams = GenParams(),
                 system: str | None = None) -> list[list[str]]:
        out = []
        for prompt in prompts:
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": params.temperature,
                                    "max_tokens": params.max_tokens, "top_p": params.top_p, "seed": params.seed,
                                    "n": params.n}
            if params.stop:
                body["stop"] = list(params.stop)
            choices = sorted(self.client.post("/chat/completions", body)["choices"], key=lambda c: c.get("index", 0))
            texts = [cut_at_stop(c["message"]["content"] or "", params.stop).strip() for c in choices]
            if len(texts) < params.n:  # servers without n > 1 answer one choice
                texts = texts + texts[:1] * (params.n - len(texts))
            out.append(texts[:params.n])
        return out

    def logprobs(self, prompts: list[str], continuations: list[str], system: str | None = None) -> list[float]:
        values = []
        for prompt, continuation in zip(prompts, continuations):
            if not continuation:
                values.append(0.0)
                continue
            head = plain_prompt(prompt, system)
            body = {"model": self.model, "prompt": head + continuation, "max_tokens": 0, "echo": True,
                    "logprobs": 1, "temperature": 0.0}
            lp = self.client.post("/completions", body)["choices"][0]["logprobs"]
            total = sum(float(v) for v, off in zip(lp["token_logprobs"], lp["text_offset"])
                        if off >= len(head) and v is not None)
            values.append(total)
        return values


class OpenAIEmbedder:
    """``Embedder`` over an OpenAI-compatible ``/embeddings`` endpoint."""

    def __init__(self, base_url: str, model: str) -> None:
        self.client = OpenAIClient(base_url)
        self.model = model
        self.model_id = f"openai:{model}@{base_url}"

    def encode_raw(self, texts: list[str], batch_size: int = 64) -> Any:
        import numpy as np

        rows: list[list[float]] = []
        for start in range(0, len(texts), batch_size):
            data = self.client.post("/embeddings", {"model": self.model, "input": texts[start:start + batch_size]})
            rows.extend(d["embedding"] for d in sorted(data["data"], key=lambda d: d.get("index", 0)))
        return np.asarray(rows, dtype=np.float32)
