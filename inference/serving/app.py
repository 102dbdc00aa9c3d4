"""The FastAPI app: `create_app(extractor, config)`.

Endpoints (all errors are ``{"error": {"message", "type", "code"}}``, as OpenAI servers answer):

* ``POST /v1/extract`` — JSON ``{"image": base64 | data: URL [| file:// | https:// when
  enabled], "fields": [..] | "a,b", "request": {..}, "prompt": "OCR:..."}`` or multipart
  (file part ``image`` + the same text fields); at most one of fields/request/prompt
  (none: everything). Answers ``{"id", "fields", "raw_output", "parse", "latency_s",
  "prompt", "usage", "finish_reason", "model", "image_size", "model_image_size"}``.
* ``POST /v1/chat/completions`` — OpenAI-compatible; one image as an ``image_url`` part
  (``data:`` URL) and the prompt as text in the last user message; the answer is a
  ``chat.completion`` whose content is the raw model output (plus a ``kie`` object with the
  parsed fields and parse report). No streaming.
* ``GET /health`` — liveness and load; ``GET /metrics`` — Prometheus text.

Limits: request body size (413), decoded image pixels read from the header before decoding
(413), per-request timeout (504), a concurrency cap with a bounded queue (503 +
``Retry-After``), optional bearer token (401), ``file://`` and remote URLs refused (403)
unless enabled.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.backends import BackendError, BackendUnavailable
from inference.extractor import Extraction, Extractor, Query, QueryError, query_from_text
from inference.imaging import ImageError, ImageTooLarge
from inference.serving.config import ServeConfig
from inference.serving.inputs import InputRejected, decode_base64, fetch_image_url
from inference.serving.metrics import Metrics

log = logging.getLogger("inference.serve")

ENDPOINTS = ("/v1/extract", "/v1/chat/completions", "/health", "/metrics")


def error_body(message: str, code: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


class ApiError(Exception):
    """An error answered to the client as `status` + `error_body`."""

    def __init__(
        self, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


# ---------------------------------------------------------------- ASGI middleware


class ObserveAndLimit:
    """Outermost layer: counts every request, times it, and enforces the body size.

    The body is read here (up to the limit) and replayed to the app, so an oversize
    body is answered 413 before any parsing, whether or not it declared a length. An
    oversize body is drained (up to 8x the limit) so the client can read the answer.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes

    @staticmethod
    def _endpoint(scope: Scope) -> str:
        path = scope.get("path", "")
        return path if path in ENDPOINTS else "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self._endpoint(scope)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body, too_large = await self._read_body(scope, receive)
                if too_large:
                    await _send_json(
                        send_wrapper,
                        413,
                        error_body(
                            f"request body over {self.max_body} bytes; send a smaller image",
                            "body_too_large",
                        ),
                    )
                    return
                await self.app(scope, _replay(body), send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            code = status["code"]
            self.metrics.requests.labels(endpoint, str(code)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
            if code >= 400:
                self.metrics.errors.labels(endpoint, _error_kind(code)).inc()

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, bool]:
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        too_large = declared is not None and declared > self.max_body
        if too_large and declared > 8 * self.max_body:
            return b"", True  # not worth draining; the connection is closed after the answer
        chunks: list[bytes] = []
        size = 0
        drain_cap = 8 * self.max_body
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                too_large = True
            if not too_large:
                chunks.append(chunk)
            if not message.get("more_body", False) or size > drain_cap:
                break
        return b"".join(chunks), too_large


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # like a client that sent everything and waits
        return {"type": "http.disconnect"}  # pragma: no cover

    return receive


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _error_kind(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        415: "unsupported_media_type",
        422: "invalid_request",
        503: "busy",
        504: "timeout",
        502: "backend",
    }.get(status, "client_error" if status < 500 else "internal")


# ---------------------------------------------------------------- admission


class Admission:
    """At most `max_active` extractions at once and `max_queue` waiting; beyond: 503."""

    def __init__(self, max_active: int, max_queue: int, metrics: Metrics) -> None:
        self.max_active = max_active
        self.max_queue = max_queue
        self.active = 0
        self.waiting = 0
        self._sem = asyncio.Semaphore(max_active)
        self.metrics = metrics

    def full(self) -> bool:
        return self.active + self.waiting >= self.max_active + self.max_queue

    async def run(self, work: Callable[[], Awaitable[Extraction]]) -> Extraction:
        self.waiting += 1
        self.metrics.queued.set(self.waiting)
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
            self.metrics.queued.set(self.waiting)
        self.active += 1
        self.metrics.in_flight.set(self.active)
        try:
            return await work()
        finally:
            self.active -= 1
            self.metrics.in_flight.set(self.active)
            self._sem.release()


# ---------------------------------------------------------------- the app


def create_app(extractor: Extractor, config: ServeConfig | None = None) -> ASGIApp:
    """The service around `extractor` (which it closes on shutdown)."""
    config = config or ServeConfig()
    limits = config.limits
    metrics = Metrics()
    admission = Admission(limits.max_concurrency, limits.max_queue, metrics)
    api_key = config.auth.resolve()
    started = time.time()

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        await extractor.aclose()
        extractor.close()

    app = FastAPI(
        title="Invoice KIE (PaddleOCR-VL)",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )

    # ------------------------------------------------ errors → one JSON shape

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        kind = "server_error" if exc.status >= 500 else "invalid_request_error"
        return JSONResponse(
            error_body(exc.message, exc.code, kind), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(str(exc.errors())[:500], "invalid_request"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(str(exc.detail), f"http_{exc.status_code}"),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body(f"internal error ({type(exc).__name__})", "internal", "server_error"), 500
        )

    # ------------------------------------------------ helpers

    def check_auth(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), api_key):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                "invalid_api_key",
                {"WWW-Authenticate": "Bearer"},
            )

    async def image_bytes(value: Any) -> bytes:
        if isinstance(value, UploadFile):
            return await value.read()
        if not isinstance(value, str) or not value.strip():
            raise ApiError(
                400, "image: expected base64 text, a data: URL or a file part", "invalid_image"
            )
        s = value.strip()
        if ":" in s[:16]:  # base64 has no colon: a data:, file: or http(s): URL
            return await fetch_image_url(s, config.urls, limits.max_body_bytes)
        return decode_base64(s)

    def query_of(fields: Any, request: Any, prompt: Any) -> Query:
        given = [x for x in (fields, request, prompt) if x not in (None, "", [])]
        if len(given) > 1:
            raise ApiError(
                400, "give at most one of 'fields', 'request', 'prompt'", "invalid_query"
            )
        if fields not in (None, "", []):
            if isinstance(fields, str):
                parsed = query_from_text(fields)
                if isinstance(parsed, (str, dict)):
                    raise ApiError(400, "'fields' is a list of key names", "invalid_query")
                return parsed
            if isinstance(fields, list) and all(isinstance(k, str) for k in fields):
                return fields
            raise ApiError(400, "'fields' must be a list of key names", "invalid_query")
        if request not in (None, "", []):
            if isinstance(request, str):
                try:
                    request = json.loads(request)
                except json.JSONDecodeError:
                    raise ApiError(400, "'request' is not valid JSON", "invalid_query") from None
            if not isinstance(request, dict):
                raise ApiError(400, "'request' must be a JSON object", "invalid_query")
            return request
        if prompt not in (None, ""):
            if not isinstance(prompt, str):
                raise ApiError(400, "'prompt' must be a string", "invalid_query")
            return prompt
        return None

    async def run_extraction(data: bytes, query: Query) -> Extraction:
        if not data:
            raise ApiError(400, "image: empty", "invalid_image")
        try:
            extractor.prompt_for(query)
        except QueryError as e:
            raise ApiError(400, str(e), "invalid_query") from None
        if admission.full():
            raise ApiError(
                503,
                f"busy: {admission.active} running, {admission.waiting} waiting; retry later",
                "overloaded",
                {"Retry-After": str(limits.retry_after_s)},
            )
        try:
            result = await asyncio.wait_for(
                admission.run(lambda: extractor.aextract(data, query)),
                timeout=limits.request_timeout_s,
            )
        except TimeoutError:
            raise ApiError(
                504, f"extraction took over {limits.request_timeout_s:g} s", "timeout"
            ) from None
        except ImageTooLarge as e:
            raise ApiError(413, str(e), "image_too_large") from None
        except ImageError as e:
            raise ApiError(400, str(e), "invalid_image") from None
        except BackendUnavailable as e:
            raise ApiError(503, f"backend unavailable: {e}", "backend_unavailable") from None
        except BackendError as e:
            raise ApiError(502, f"backend failed: {e}", "backend_error") from None
        metrics.extraction_latency.observe(result.latency_s)
        metrics.parse.labels(result.parse.method, str(result.parse.truncated).lower()).inc()
        return result

    # ------------------------------------------------ endpoints

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            **extractor.info(),
            "in_flight": admission.active,
            "queued": admission.waiting,
            "max_concurrency": admission.max_active,
            "max_queue": admission.max_queue,
            "uptime_s": round(time.time() - started, 1),
        }

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if config.auth.protect_metrics:
            check_auth(request)
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/extract")
    async def extract(request: Request) -> dict[str, Any]:
        check_auth(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                try:
                    payload = json.loads(await request.body())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise ApiError(400, "body is not valid JSON", "invalid_json") from None
                if not isinstance(payload, dict):
                    raise ApiError(400, "body must be a JSON object", "invalid_json")
                unknown = sorted(set(payload) - {"image", "fields", "request", "prompt"})
                if unknown:
                    raise ApiError(400, f"unknown key(s) {unknown}", "invalid_request")
                image_value = payload.get("image")
                fields, req, prompt = (payload.get(k) for k in ("fields", "request", "prompt"))
            elif ctype == "multipart/form-data":
                form = await request.form(max_files=1, max_fields=8)
                image_value = form.get("image")
                fields, req, prompt = (form.get(k) for k in ("fields", "request", "prompt"))
            else:
                raise ApiError(
                    415,
                    "send application/json or multipart/form-data",
                    "unsupported_media_type",
                )
            if image_value is None:
                raise ApiError(400, "missing 'image'", "invalid_image")
            query = query_of(fields, req, prompt)
            data = await image_bytes(image_value)
        except InputRejected as e:
            raise ApiError(e.status, str(e), e.code) from None
        except QueryError as e:
            raise ApiError(400, str(e), "invalid_query") from None
        result = await run_extraction(data, query)
        return {"id": f"kie-{uuid.uuid4().hex[:16]}", **result.to_dict()}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        check_auth(request)
        try:
            payload = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "body is not valid JSON", "invalid_json") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            raise ApiError(400, "'messages' must be a list", "invalid_request")
        if payload.get("stream"):
            raise ApiError(400, "streaming is not supported; send stream: false", "unsupported")
        users = [m for m in payload["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ApiError(400, "no user message", "invalid_request")
        content = users[-1].get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        texts, urls = [], []
        for p in parts:
            if not isinstance(p, dict):
                raise ApiError(400, "content parts must be objects", "invalid_request")
            if p.get("type") == "text" and isinstance(p.get("text"), str):
                texts.append(p["text"])
            elif p.get("type") == "image_url":
                url = p.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise ApiError(400, "image_url.url must be a string", "invalid_image")
                urls.append(url)
        if len(urls) != 1:
            raise ApiError(
                400, f"expected exactly one image_url part, got {len(urls)}", "invalid_image"
            )
        prompt = "".join(texts).strip()
        if not prompt:
            raise ApiError(400, "no prompt text in the user message", "invalid_query")
        try:
            data = await fetch_image_url(urls[0], config.urls, limits.max_body_bytes)
        except InputRejected as e:
            raise ApiError(e.status, str(e), e.code) from None
        result = await run_extraction(data, prompt)
        completion = result.usage.get("completion_tokens") or 0
        prompt_tokens = result.usage.get("prompt_tokens") or 0
        return {
            "id": f"chatcmpl-kie-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model") or result.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.raw_output},
                    "finish_reason": result.finish_reason or "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
            "kie": {
                "fields": result.fields,
                "parse": result.parse.to_dict(),
                "latency_s": round(result.latency_s, 4),
            },
        }

    app.state.metrics = metrics
    app.state.admission = admission
    return ObserveAndLimit(app, metrics, limits.max_body_bytes)
