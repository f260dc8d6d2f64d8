"""Async Triton client for the gateway (HTTP/REST via tritonclient.http.aio).

Every failure to reach Triton or to run the model becomes
``ModelUnavailable`` (HTTP 503 at the gateway) with the reason; the client
reconnects on the next request, so the gateway recovers by itself when
Triton comes back.

Connection reset without a race: requests share one client session. When a
request finds Triton unreachable, that session is *retired* (new requests get
a fresh one) but only closed once the last request still using it has
finished; closing it at once made concurrent requests fail with aiohttp's
"Session is closed".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from serving.scoring import ModelUnavailable

_DTYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}
T = TypeVar("T")


@dataclass(eq=False)
class _Session:
    client: aioclient.InferenceServerClient
    users: int = 0
    retired: bool = False


class TritonBackend:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._session: _Session | None = None

    async def _call(self, fn: Callable[[aioclient.InferenceServerClient], Awaitable[T]]) -> T:
        """Run ``fn`` on the shared session; a transport failure retires that session."""
        session = self._session
        if session is None:
            session = self._session = _Session(aioclient.InferenceServerClient(self.url, conn_timeout=self.timeout_s))
        session.users += 1
        try:
            return await asyncio.wait_for(fn(session.client), timeout=self.timeout_s)
        except InferenceServerException:
            raise  # Triton answered: the connection is fine
        except Exception:  # transport failure (cancellation is not one)
            self._retire(session)
            raise
        finally:
            session.users -= 1
            if session.retired and session.users == 0:
                await _close_quietly(session.client)

    def _retire(self, session: _Session) -> None:
        if self._session is session:
            self._session = None
        session.retired = True

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
        request = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), _DTYPES[array.dtype])
            tensor.set_data_from_numpy(array, binary_data=True)
            request.append(tensor)
        outputs = [httpclient.InferRequestedOutput("probability", binary_data=True)]
        try:
            result = await self._call(lambda c: c.infer(model, request, outputs=outputs))
        except InferenceServerException as exc:
            raise ModelUnavailable(f"model {model!r} could not run; retry later", reason="inference_failed",
                                   internal=f"Triton could not run model {model!r}: {exc.message()}") from exc
        except Exception as exc:  # OSError, timeouts, aiohttp errors
            raise ModelUnavailable(
                f"model {model!r} is unavailable; retry later", reason="triton_unreachable",
                internal=f"Triton at {self.url} is unreachable ({type(exc).__name__}: {exc}); is `recast stack up` running?",
            ) from exc
        probs = result.as_numpy("probability")
        if probs is None:
            raise ModelUnavailable(f"model {model!r} returned no scores; retry later", reason="empty_output",
                                   internal=f"Triton returned no 'probability' output for {model!r}")
        version = str(result.get_response().get("model_version", ""))
        return probs, version

    async def ready(self, model: str) -> bool:
        try:
            return bool(await self._call(lambda c: c.is_model_ready(model)))
        except Exception:
            return False

    async def repository_index(self) -> list[dict[str, Any]] | None:
        """Triton's view of every model version (name, version, state, reason); None if unreachable."""
        try:
            index = await self._call(lambda c: c.get_model_repository_index())
        except Exception:
            return None
        return index if isinstance(index, list) else None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.retired = True
            if session.users == 0:
                await _close_quietly(session.client)


async def _close_quietly(client: aioclient.InferenceServerClient) -> None:
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - closing a broken session may fail; nothing to do
        pass
