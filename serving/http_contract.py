"""The gateway's HTTP contract around the routes: request ids, limits, the API key,
and one JSON error shape for every status.

``Guard`` is a plain ASGI layer outside FastAPI's routing, so it acts *before*
a body is parsed: a request whose ``Content-Length`` exceeds
``gateway.max_body_bytes`` is answered 413 without reading a byte of it, and a
chunked body is read only up to the limit. The event loop therefore never
parses more than ``max_body_bytes`` of JSON for anyone, and one client's huge
body costs the others nothing. (At the default 256 KiB the largest allowed
body parses in about a millisecond, so parsing stays on the loop.)

Every answer carries an ``X-Request-ID`` header (the client's own when it is
a sane token, else a fresh one), and every error body is ``ErrorBody``:
``{error, message, request_id, ...}``. Messages are written for clients;
hosts, ports and exception texts go only to the log, under the request id,
so an operator finds them from what the client reports.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders

log = logging.getLogger("recast.gateway")

REQUEST_ID_HEADER = "x-request-id"
INTERNAL_ERROR_MESSAGE = "internal error; the gateway log has the details under this request id"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


class Problem(BaseModel):
    field: str = Field(description="dotted path of the offending value in the body ('' for the whole body)")
    problem: str


class ErrorBody(BaseModel):
    """The one error shape of the gateway (every 4xx and 5xx)."""

    error: str = Field(description="machine-readable code, e.g. invalid_request, unknown_items, unknown_model, "
                                   "too_many_candidates, body_too_large, unauthorized, not_found, "
                                   "method_not_allowed, bad_request, model_unavailable, "
                                   "feature_store_unavailable, internal_error")
    message: str = Field(description="what went wrong and what to do, for humans")
    request_id: str = Field(description="also in the X-Request-ID header; the gateway log has the details under it")
    problems: list[Problem] | None = Field(None, description="invalid_request: one entry per schema violation")
    unknown_items: list[str] | None = Field(None, description="unknown_items: the ids the feature store does not know")
    available: list[str] | None = Field(None, description="unknown_model: the models that are served")
    limit: int | None = Field(None, description="too_many_candidates, body_too_large: the limit exceeded")
    reason: str | None = Field(None, description="503: which dependency failed (triton_unreachable, inference_failed, ...)")


def request_id_of(scope: dict[str, Any]) -> str:
    return scope.get("state", {}).get("request_id") or uuid.uuid4().hex


def error_payload(request_id: str, code: str, message: str, **details: Any) -> dict[str, Any]:
    body = ErrorBody(error=code, message=message, request_id=request_id, **details)
    return body.model_dump(exclude_none=True)


async def send_error(send: Callable[[dict], Awaitable[None]], request_id: str, status: int, code: str,
                     message: str, headers: dict[str, str] | None = None, details: dict[str, Any] | None = None) -> None:
    raw = json.dumps(error_payload(request_id, code, message, **(details or {}))).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
            (REQUEST_ID_HEADER.encode(), request_id.encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw, "more_body": False})


def api_key_matches(scope: dict[str, Any], expected: bytes) -> bool:
    """``Authorization: Bearer KEY`` or ``X-API-Key: KEY``, compared in constant time."""
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            given = value.strip()
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            given = value[7:].strip()
        else:
            continue
        if hmac.compare_digest(given, expected):
            return True
    return False


class Guard:
    """Request id, API key, body limit, request metrics and the last-resort 500 (see module doc).

    ``open_paths`` answer without the key (probes). ``observe(route, status, seconds)``
    records each request; ``route`` is the matched route's path or ``unmatched``.
    """

    def __init__(self, app, *, max_body_bytes: int, api_key: str | None = None,
                 open_paths: frozenset[str] = frozenset(),
                 observe: Callable[[str, int, float], None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key.encode() if api_key else None
        self.open_paths = open_paths
        self.observe = observe

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == REQUEST_ID_HEADER.encode()), "")
        request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        outcome = {"status": 500, "started": False}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                outcome["status"], outcome["started"] = message["status"], True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            rejected = self._reject(scope)
            if rejected is not None:
                await send_error(send_with_id, request_id, *rejected)
                return
            if scope["method"] in _BODY_METHODS:
                body = await self._read_body(receive)
                if body is None:
                    await send_error(send_with_id, request_id, *self._too_large())
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - last resort: logged with the id, JSON for the client
            log.exception("request %s %s %s failed", request_id, scope.get("method"), scope.get("path"))
            if not outcome["started"]:
                await send_error(send_with_id, request_id, 500, "internal_error", INTERNAL_ERROR_MESSAGE)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            if self.observe is not None:
                self.observe(route, outcome["status"], time.perf_counter() - started)

    def _reject(self, scope) -> tuple | None:
        """(status, code, message, headers, details) of a request refused before any body is read."""
        if (self.api_key is not None and scope["path"] not in self.open_paths and scope["method"] != "OPTIONS"
                and not api_key_matches(scope, self.api_key)):
            return (401, "unauthorized", "a valid API key is required: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
                    {"www-authenticate": "Bearer"}, {})
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            # a length that is not a number is refused like an oversized one: the server cannot frame it
            return self._too_large()
        return None

    def _too_large(self) -> tuple:
        return 413, "body_too_large", f"the request body exceeds {self.max_body_bytes} bytes", None, {"limit": self.max_body_bytes}

    async def _read_body(self, receive) -> bytes | None:
        """The whole body, or None as soon as it grows past the limit."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that hands the already-read body to the app once, then defers to the server."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
