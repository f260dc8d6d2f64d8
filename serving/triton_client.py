"""Async Triton client for the gateway (HTTP/REST via tritonclient.http.aio).

Every failure to reach Triton or to run the model becomes
``ModelUnavailable`` (HTTP 503 at the gateway) with the reason; the client
reconnects on the next request, so the gateway recovers by itself when
Triton comes back.
"""

from __future__ import annotations

import asyncio

import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from tritonclient.utils import InferenceServerException

from serving.scoring import ModelUnavailable

_DTYPES = {np.dtype(np.int64): "INT64", np.dtype(np.float32): "FP32"}


class TritonBackend:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client: aioclient.InferenceServerClient | None = None

    def _get(self) -> aioclient.InferenceServerClient:
        if self._client is None:
            self._client = aioclient.InferenceServerClient(self.url, conn_timeout=self.timeout_s)
        return self._client

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:
                pass

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
        request = []
        for name, array in inputs.items():
            tensor = httpclient.InferInput(name, list(array.shape), _DTYPES[array.dtype])
            tensor.set_data_from_numpy(array, binary_data=True)
            request.append(tensor)
        outputs = [httpclient.InferRequestedOutput("probability", binary_data=True)]
        try:
            result = await asyncio.wait_for(
                self._get().infer(model, request, outputs=outputs), timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            raise ModelUnavailable(f"Triton could not run model {model!r}: {exc.message()}", reason="inference_failed") from exc
        except (OSError, asyncio.TimeoutError, Exception) as exc:
            await self._reset()
            raise ModelUnavailable(
                f"Triton at {self.url} is unreachable ({type(exc).__name__}: {exc}); is `recast stack up` running?",
                reason="triton_unreachable",
            ) from exc
        probs = result.as_numpy("probability")
        if probs is None:
            raise ModelUnavailable(f"Triton returned no 'probability' output for {model!r}", reason="empty_output")
        version = str(result.get_response().get("model_version", ""))
        return probs, version

    async def ready(self, model: str) -> bool:
        try:
            return bool(await self._get().is_model_ready(model))
        except Exception:
            await self._reset()
            return False

    async def close(self) -> None:
        await self._reset()
