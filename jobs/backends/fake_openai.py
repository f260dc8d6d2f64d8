"""A tiny deterministic OpenAI-compatible server (chat completions, prompt-scoring completions,
embeddings) in a background thread: it lets tests run a job against "a model server" exactly as a
team would against vLLM or llama.cpp, with no model and no network.

Answers: chat -> ``answer:`` + the last user message's final line's last word (``n`` copies, then
cut at the stop strings); completions with ``echo`` -> one token per whitespace-separated word,
each log-prob ``-len(word)/10``; embeddings -> a hashed bag of words (similar texts, similar vectors).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

DIM = 64


def fake_embedding(text: str) -> list[float]:
    vec = np.zeros(DIM)
    for word in text.lower().split():
        vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    return vec.tolist()


def fake_reply(messages: list[dict[str, str]]) -> str:
    user = [m["content"] for m in messages if m["role"] == "user"][-1]
    words = user.strip().splitlines()[-1].split() if user.strip() else []
    return "answer: " + (words[-1] if words else "")


class _Handler(BaseHTTPRequestHandler):
    server: "FakeOpenAIServer"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.requests.append((self.path, body))
        if self.path.endswith("/chat/completions"):
            text = fake_reply(body["messages"])
            out = {"choices": [{"index": i, "message": {"role": "assistant", "content": text}}
                               for i in range(int(body.get("n", 1)))]}
        elif self.path.endswith("/completions"):
            prompt = body["prompt"]
            offsets, logps, at = [], [], 0
            for word in prompt.split():
                at = prompt.index(word, at)
                offsets.append(at)
                logps.append(-len(word) / 10)
                at += len(word)
            out = {"choices": [{"index": 0, "text": prompt,
                                "logprobs": {"text_offset": offsets, "token_logprobs": [None] + logps[1:]}}]}
        elif self.path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            out = {"data": [{"index": i, "embedding": fake_embedding(t)} for i, t in enumerate(inputs)]}
        else:
            self.send_error(404, f"no route {self.path}")
            return
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeOpenAIServer(ThreadingHTTPServer):
    """``with FakeOpenAIServer() as srv: spec = srv.spec("fake-model")`` -- on a free port."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def spec(self, model: str = "fake-model") -> str:
        return f"openai:{self.base_url}#{model}"

    def __enter__(self) -> "FakeOpenAIServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.server_close()
