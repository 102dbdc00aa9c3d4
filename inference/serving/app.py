"""The FastAPI app: `create_app(extractor, config) -> Service` (an ASGI app).

Endpoints (all errors are ``{"error": {"message", "type", "code"}}``, as OpenAI servers answer,
with the request id in ``X-Request-ID``):

* ``POST /v1/extract`` — JSON ``{"image": base64 | data: URL [| file:// | https:// when
  enabled], "fields": [..] | "a,b", "request": {..}, "prompt": "OCR:..."}`` or multipart
  (file part ``image`` + the same text fields); at most one of fields/request/prompt
  (none: everything). Answers ``{"id", "fields", "raw_output", "parse", "latency_s",
  "prompt", "usage", "finish_reason", "model", "image_size", "model_image_size",
  "validation"}`` (``validation``: the QA rules on the fields, `data_tools.validation`).
  A PDF or OFD ``image`` is read page by page (`inference.serving.ui.extract_document`):
  ``{"id", "kind", "n_pages", "pages": [per page: fields, validation, confidence, ...],
  "fields": the merged document, "validation"}``.
* ``POST /v1/chat/completions`` — OpenAI-compatible; one image as an ``image_url`` part
  (``data:`` URL) and the prompt as text in the last user message; the answer is a
  ``chat.completion`` whose content is the raw model output (plus a ``kie`` object with the
  parsed fields and parse report). No streaming.
* ``GET /health`` — liveness, admission and memory budgets; ``GET /metrics`` — Prometheus.

How a request goes through (`Guard`, the outermost ASGI layer, then the endpoint):

1. a request id; the bearer token checked on the raw header bytes (any bytes: no
   TypeError on a non-ASCII token) before anything is read; with a key set, everything
   but ``/health`` (and ``/metrics`` unless protected) needs it, ``/docs`` included;
2. admission *before the body is read*: a declared body over ``max_body_bytes`` is 413,
   no ticket is 503 + ``Retry-After``; the body's bytes are reserved from the budget shared
   by all requests (``max_buffered_body_bytes``), then read within ``body_timeout_s`` (408);
3. JSON parsing (bounded: depth, number length), field checks, base64 and the image
   header run in worker threads (``cpu_threads``), so the event loop and ``/health`` stay
   responsive; the decode reserves its pixels from ``max_decode_pixels`` first;
4. the model call runs in a slot (``max_concurrency``) within ``request_timeout_s`` of
   admission; on timeout the answer is 504 but the call keeps its slot until it returns;
5. the answer is rendered off the loop when large. Bad input is always a 4xx and leaves
   the connection usable; an unexpected error is a 500 with one log line and its
   traceback (a bug to fix), never for bad input.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from data_tools.compat import async_timeout
from data_tools.documents import sniff_kind
from data_tools.llm_client import resolve_secret
from data_tools.parsing import JsonLimitError, ParseLimits, loads_bounded
from data_tools.validation import validation_dict
from inference.backends import BackendError, BackendUnavailable
from inference.extractor import Extraction, Extractor, Query, QueryError, query_from_text
from inference.imaging import ImageError, ImageTooLarge, OpenedImage, open_image, prepare_opened
from inference.serving.admission import Admission, Budget, BudgetTimeout, Ticket
from inference.serving.config import ServeConfig
from inference.serving.connections import ConnectionGuard
from inference.serving.inputs import (
    InputRejected,
    check_structure,
    check_text,
    decode_base64,
    fetch_image_url,
)
from inference.serving.logs import install_redaction
from inference.serving.metrics import Metrics
from inference.serving.ui import UI_PUBLIC_PATHS, ui_router

log = logging.getLogger("inference.serve")

ENDPOINTS = ("/v1/extract", "/v1/chat/completions", "/health", "/metrics")
EXTRACT_KEYS = frozenset({"image", "fields", "request", "prompt"})
_RENDER_INLINE_BYTES = 64 * 1024  # larger answers are serialised in a worker thread
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
request_id_var: ContextVar[str] = ContextVar("kie_request_id", default="-")

T = TypeVar("T")


def error_body(message: str, code: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


def json_bytes(obj: Any) -> bytes:
    """UTF-8 JSON; a lone surrogate in a string becomes its ``\\uXXXX`` escape (valid JSON
    that decodes back to the same string) instead of an encoding error."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "backslashreplace")


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


def _error_kind(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        408: "body_timeout",
        413: "too_large",
        415: "unsupported_media_type",
        422: "invalid_request",
        503: "busy",
        504: "timeout",
        502: "backend",
    }.get(status, "client_error" if status < 500 else "internal")


# ---------------------------------------------------------------- the outermost layer


class Guard:
    """Request id, metrics, auth, admission and the body budget (see the module docstring)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.s = service
        self.limits = service.config.limits
        key = service.api_key
        self.key = key.encode("utf-8") if key is not None else None
        self.public = {"/health", *UI_PUBLIC_PATHS} | (
            {"/metrics"} if not service.config.auth.protect_metrics else set()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        headers = dict(scope.get("headers") or [])
        rid_in = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = rid_in if _REQUEST_ID.match(rid_in) else uuid.uuid4().hex[:16]
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())],
                }
            await send(message)

        ticket: Ticket | None = None
        reserved = 0
        try:
            if self.key is not None and path not in self.public and not self._authorized(headers):
                await self._reject(
                    send_wrapper,
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <key>'",
                    "invalid_api_key",
                    {"www-authenticate": "Bearer"},
                )
                return
            if scope.get("method") not in ("POST", "PUT", "PATCH"):
                await self.app(scope, receive, send_wrapper)
                return
            declared = _content_length(headers)
            if declared is not None and declared > self.limits.max_body_bytes:
                await self._reject(
                    send_wrapper,
                    413,
                    f"request body of {declared} bytes is over the limit of "
                    f"{self.limits.max_body_bytes}; send a smaller image",
                    "body_too_large",
                    close=declared > 4 * self.limits.max_body_bytes,
                )
                return
            ticket = self.s.admission.try_enter()
            if ticket is None:
                a = self.s.admission
                await self._reject(
                    send_wrapper,
                    503,
                    f"busy: {a.admitted} requests admitted ({a.active} in the model, "
                    f"{a.abandoned} of them timed out); retry later",
                    "overloaded",
                    {"retry-after": str(self.limits.retry_after_s)},
                )
                return
            scope["state"]["ticket"] = ticket
            scope["state"]["deadline"] = time.monotonic() + self.limits.request_timeout_s
            want = declared if declared is not None else self.limits.max_body_bytes
            try:
                await self.s.body_budget.acquire(want, self.limits.request_timeout_s)
            except BudgetTimeout:
                await self._reject(
                    send_wrapper,
                    503,
                    "busy: request bodies in memory are at their limit; retry later",
                    "overloaded",
                    {"retry-after": str(self.limits.retry_after_s)},
                )
                return
            reserved = want
            try:
                async with async_timeout(self.limits.body_timeout_s):
                    body, too_large = await self._read_body(receive)
            except TimeoutError:
                await self._reject(
                    send_wrapper,
                    408,
                    f"request body not received within {self.limits.body_timeout_s:g} s",
                    "body_timeout",
                    close=True,
                )
                return
            if too_large:
                await self._reject(
                    send_wrapper,
                    413,
                    f"request body over {self.limits.max_body_bytes} bytes; send a smaller image",
                    "body_too_large",
                    close=True,
                )
                return
            if reserved > len(body):  # give back what a chunked upload did not use
                self.s.body_budget.release(reserved - len(body))
                reserved = len(body)
            await self.app(scope, _replay(body), send_wrapper)
        finally:
            if reserved:
                self.s.body_budget.release(reserved)
            if ticket is not None:
                ticket.drop()
            code = status["code"]
            m = self.s.metrics
            m.requests.labels(endpoint, str(code)).inc()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)
            if code >= 400:
                m.errors.labels(endpoint, _error_kind(code)).inc()
            request_id_var.reset(token)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        assert self.key is not None
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def _reject(
        self,
        send: Send,
        status: int,
        message: str,
        code: str,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        log.info("request %s: %d %s: %s", request_id_var.get(), status, code, message)
        kind = "server_error" if status >= 500 else "invalid_request_error"
        data = json_bytes(error_body(message, code, kind))
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
        ]
        if close:  # the rest of the body is not worth draining
            raw.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": data})

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        limit = self.limits.max_body_bytes
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), False


def _content_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length")
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None


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


# ---------------------------------------------------------------- the service


class Service:
    """The ASGI app `create_app` returns, with its parts for servers and tests."""

    def __init__(self, extractor: Extractor, config: ServeConfig) -> None:
        self.extractor = extractor
        self.config = config
        limits = config.limits
        self.api_key = config.auth.resolve()
        self.metrics = Metrics()
        self.admission = Admission(limits.max_concurrency, limits.max_queue, self._gauges)
        self.body_budget = Budget(limits.max_buffered_body_bytes, "request body bytes")
        self.pixel_budget = Budget(limits.max_decode_pixels, "decode pixels")
        self.guard = ConnectionGuard(limits.header_timeout_s, limits.max_connections_per_client)
        self.cpu = ThreadPoolExecutor(limits.cpu_threads, thread_name_prefix="kie-cpu")
        self.started = time.time()
        install_redaction([self.api_key, _upstream_key(config)])
        self.fastapi = _build_fastapi(self)
        self.app = Guard(self.fastapi, self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def _gauges(self) -> None:
        a = self.admission
        self.metrics.in_flight.set(a.active)
        self.metrics.queued.set(a.waiting)
        self.metrics.admitted.set(a.admitted)
        self.metrics.abandoned.set(a.abandoned)

    async def cpu_call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the service's CPU threads (decode, JSON, parsing)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.cpu, functools.partial(fn, *args))

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            **self.extractor.info(),
            **self.admission.snapshot(),
            "body_bytes_buffered": self.body_budget.used,
            "max_buffered_body_bytes": self.body_budget.total,
            "decode_pixels_in_use": self.pixel_budget.used,
            "max_decode_pixels": self.pixel_budget.total,
            "connections": self.guard.snapshot(),
            "threads": threading.active_count(),
            "uptime_s": round(time.time() - self.started, 1),
        }


def _upstream_key(config: ServeConfig) -> str | None:
    endpoint = getattr(config.backend, "endpoint", None)
    if endpoint is None:
        return None
    return resolve_secret(endpoint.api_key, endpoint.api_key_env)


def create_app(extractor: Extractor, config: ServeConfig | None = None) -> Service:
    """The service around `extractor` (which it closes on shutdown)."""
    return Service(extractor, config or ServeConfig())


# ---------------------------------------------------------------- request handling


def _parse_body(body: bytes, limits: ParseLimits) -> Any:
    try:
        return loads_bounded(body, limits)
    except JsonLimitError as e:
        raise ApiError(
            413 if str(e).startswith("JSON text of") else 400, f"body: {e}", "invalid_json"
        ) from None
    except json.JSONDecodeError as e:
        raise ApiError(
            400, f"body is not valid JSON ({e.msg} at char {e.pos})", "invalid_json"
        ) from None


def _build_fastapi(s: Service) -> FastAPI:
    config = s.config
    limits = config.limits
    extractor = s.extractor
    metrics = s.metrics
    json_limits = ParseLimits(
        max_chars=limits.max_body_bytes, max_depth=limits.max_json_depth, max_number_chars=32
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        await extractor.aclose()
        extractor.close()
        s.cpu.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="Invoice KIE (PaddleOCR-VL)",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",  # behind the bearer token when one is set (Guard)
        redoc_url=None,
    )

    # ------------------------------------------------ errors → one JSON shape, one log line

    def answer_error(
        status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> Response:
        log.info("request %s: %d %s: %s", request_id_var.get(), status, code, message[:300])
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return Response(
            json_bytes(error_body(message, code, kind)),
            status_code=status,
            headers=headers,
            media_type="application/json",
        )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return answer_error(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return answer_error(422, str(exc.errors())[:500], "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return answer_error(
            exc.status_code,
            str(exc.detail),
            f"http_{exc.status_code}",
            getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        log.error(
            "request %s: 500 internal: %s: %s",
            request_id_var.get(),
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        return answer_error(500, f"internal error ({type(exc).__name__})", "internal")

    # ------------------------------------------------ helpers

    def deadline_left(request: Request) -> float:
        return max(0.0, request.scope["state"]["deadline"] - time.monotonic())

    def query_of(fields: Any, req: Any, prompt: Any) -> Query:
        given = [x for x in (fields, req, prompt) if x not in (None, "", [])]
        if len(given) > 1:
            raise ApiError(
                400, "give at most one of 'fields', 'request', 'prompt'", "invalid_query"
            )
        if fields not in (None, "", []):
            if isinstance(fields, str):
                check_text(fields, "fields", limits.max_prompt_chars)
                parsed = query_from_text(fields)
                if isinstance(parsed, str | dict):
                    raise ApiError(400, "'fields' is a list of key names", "invalid_query")
                fields = parsed
            if not (isinstance(fields, list) and all(isinstance(k, str) for k in fields)):
                raise ApiError(400, "'fields' must be a list of key names", "invalid_query")
            check_structure(fields, "fields", limits)
            return fields
        if req not in (None, "", []):
            if isinstance(req, str):
                check_text(req, "request", limits.max_prompt_chars)
                try:
                    req = loads_bounded(req, json_limits)
                except (json.JSONDecodeError, JsonLimitError) as e:
                    raise ApiError(
                        400, f"'request' is not valid JSON ({e})", "invalid_query"
                    ) from None
            if not isinstance(req, dict):
                raise ApiError(400, "'request' must be a JSON object", "invalid_query")
            check_structure(req, "request", limits)
            return req
        if prompt not in (None, ""):
            if not isinstance(prompt, str):
                raise ApiError(400, "'prompt' must be a string", "invalid_query")
            return check_text(prompt, "prompt", limits.max_prompt_chars)
        return None

    def resolve_prompt(query: Query) -> str:
        """The prompt text, within the character and token limits (runs in a CPU thread)."""
        try:
            prompt, _ = extractor.prompt_for(query)
        except QueryError as e:
            raise ApiError(400, str(e), "invalid_query") from None
        if len(prompt) > limits.max_prompt_chars:
            raise ApiError(
                413,
                f"prompt of {len(prompt)} characters is over the limit of {limits.max_prompt_chars} "
                "(limits.max_prompt_chars); ask for fewer keys",
                "prompt_too_long",
            )
        n = _count_tokens(extractor, prompt)
        if n is not None and n > limits.max_prompt_tokens:
            raise ApiError(
                413,
                f"prompt of {n} tokens is over the limit of {limits.max_prompt_tokens} "
                "(limits.max_prompt_tokens); ask for fewer keys",
                "prompt_too_long",
            )
        return prompt

    async def image_bytes(value: Any) -> bytes:
        if isinstance(value, UploadFile):
            data = await value.read()
        elif isinstance(value, str) and value:
            if ":" in value[:16]:  # base64 has no colon: a data:, file: or http(s): URL
                data = await fetch_image_url(value, config.urls, limits.max_body_bytes)
            elif len(value) > 256 * 1024:
                data = await s.cpu_call(decode_base64, value)
            else:
                data = decode_base64(value)
        else:
            raise ApiError(
                400, "image: expected base64 text, a data: URL or a file part", "invalid_image"
            )
        if not data:
            raise ApiError(400, "image: empty", "invalid_image")
        return data

    fit = extractor.backend.uses_image  # the fake backend never looks at the pixels

    def open_checked(data: bytes) -> OpenedImage:
        return open_image(data, extractor.image_options, draft=fit)

    async def run_extraction(request: Request, data: bytes, prompt: str) -> Extraction:
        ticket: Ticket = request.scope["state"]["ticket"]
        options = extractor.image_options
        try:
            opened = await s.cpu_call(open_checked, data)
            try:
                await s.pixel_budget.acquire(opened.cost_pixels, deadline_left(request))
            except BudgetTimeout:
                raise ApiError(
                    503,
                    "busy: images being decoded are at the pixel limit; retry later",
                    "overloaded",
                    {"Retry-After": str(limits.retry_after_s)},
                ) from None
            cost = opened.cost_pixels
            try:
                prepared = await s.cpu_call(
                    functools.partial(prepare_opened, fit=fit), opened, options
                )
            except BaseException:
                s.pixel_budget.release(cost)
                raise
            # the full-size decode is gone with `opened`; what the model gets stays counted
            # until the model call has ended (it may outlive this request: see Admission)
            held = min(cost, prepared.size[0] * prepared.size[1])
            s.pixel_budget.release(cost - held)
            del data, opened
            released = started = False

            def release_held() -> None:
                nonlocal released
                if not released:
                    released = True
                    s.pixel_budget.release(held)

            async def work() -> Extraction:
                nonlocal started
                started = True
                try:
                    return await extractor.aextract(prepared, prompt)
                finally:
                    release_held()

            try:
                result = await s.admission.run_model(ticket, work, deadline_left(request))
            finally:
                if not started:  # never got a model slot
                    release_held()
        except TimeoutError:
            raise ApiError(
                504, f"extraction took over {limits.request_timeout_s:g} s", "timeout"
            ) from None
        except ImageTooLarge as e:
            raise ApiError(413, str(e), "image_too_large") from None
        except ImageError as e:
            raise ApiError(400, str(e), "invalid_image") from None
        except QueryError as e:
            raise ApiError(400, str(e), "invalid_query") from None
        except BackendUnavailable as e:
            raise ApiError(503, f"backend unavailable: {e}", "backend_unavailable") from None
        except BackendError as e:
            raise ApiError(502, f"backend failed: {e}", "backend_error") from None
        metrics.extraction_latency.observe(result.latency_s)
        metrics.parse.labels(result.parse.method, str(result.parse.truncated).lower()).inc()
        return result

    async def respond(obj: dict[str, Any], big: bool) -> Response:
        data = await s.cpu_call(json_bytes, obj) if big else json_bytes(obj)
        return Response(data, media_type="application/json")

    # ------------------------------------------------ endpoints

    @app.get("/health")
    async def health() -> Response:
        return Response(json_bytes(s.health()), media_type="application/json")

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/v1/extract")
    async def extract(request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if ctype == "application/json":
                payload = await s.cpu_call(_parse_body, await request.body(), json_limits)
                if not isinstance(payload, dict):
                    raise ApiError(400, "body must be a JSON object", "invalid_json")
                unknown = sorted(set(payload) - EXTRACT_KEYS)
                if unknown:
                    shown = [check_text(str(k), "key", limits.max_key_chars) for k in unknown[:5]]
                    raise ApiError(
                        400,
                        f"unknown key(s) {shown}; known: {sorted(EXTRACT_KEYS)}",
                        "invalid_request",
                    )
                image_value = payload.get("image")
                fields, req, prompt = (payload.get(k) for k in ("fields", "request", "prompt"))
            elif ctype == "multipart/form-data":
                part_limit = max(4096, 4 * limits.max_prompt_chars)  # UTF-8: <= 4 bytes a char
                try:
                    form = await request.form(max_files=1, max_fields=8, max_part_size=part_limit)
                except StarletteHTTPException as e:
                    if "maximum size" in str(e.detail):
                        raise ApiError(
                            413,
                            f"a text field is over {part_limit} bytes (limits.max_prompt_chars "
                            f"is {limits.max_prompt_chars} characters)",
                            "too_long",
                        ) from None
                    raise ApiError(
                        400, f"malformed multipart body: {e.detail}", "invalid_form"
                    ) from None
                image_value = form.get("image")
                fields, req, prompt = (form.get(k) for k in ("fields", "request", "prompt"))
            else:
                raise ApiError(
                    415, "send application/json or multipart/form-data", "unsupported_media_type"
                )
            if image_value is None:
                raise ApiError(400, "missing 'image'", "invalid_image")
            query = query_of(fields, req, prompt)
            prompt_text = await s.cpu_call(resolve_prompt, query)
            data = await image_bytes(image_value)
            del image_value  # the base64 text: only the bytes are needed from here
        except InputRejected as e:
            raise ApiError(e.status, str(e), e.code) from None
        except QueryError as e:
            raise ApiError(400, str(e), "invalid_query") from None
        if sniff_kind(data) != "image":  # a PDF or OFD: every page, then the merged document
            doc = await ui.extract_document(
                request, data, "upload", prompt_text, full_request=query is None, previews=False
            )
            return await respond({"id": f"kie-{uuid.uuid4().hex[:16]}", **doc}, True)
        result = await run_extraction(request, data, prompt_text)
        body = {"id": f"kie-{uuid.uuid4().hex[:16]}", **result.to_dict()}
        body["validation"] = await s.cpu_call(
            lambda: validation_dict(result.fields, extractor.schema, request=result.request)
        )
        return await respond(body, len(result.raw_output) > _RENDER_INLINE_BYTES)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        payload = await s.cpu_call(_parse_body, await request.body(), json_limits)
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            raise ApiError(400, "'messages' must be a list", "invalid_request")
        if payload.get("stream"):
            raise ApiError(400, "streaming is not supported; send stream: false", "unsupported")
        messages = payload["messages"]
        if len(messages) > 64:
            raise ApiError(413, f"{len(messages)} messages; at most 64", "too_many_messages")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ApiError(400, "no user message", "invalid_request")
        content = users[-1].get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        if len(parts) > 32:
            raise ApiError(413, f"{len(parts)} content parts; at most 32", "too_many_parts")
        texts, urls = [], []
        try:
            for p in parts:
                if not isinstance(p, dict):
                    raise ApiError(400, "content parts must be objects", "invalid_request")
                if p.get("type") == "text" and isinstance(p.get("text"), str):
                    texts.append(check_text(p["text"], "text", limits.max_prompt_chars))
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
            prompt = check_text("".join(texts).strip(), "prompt", limits.max_prompt_chars)
            if not prompt:
                raise ApiError(400, "no prompt text in the user message", "invalid_query")
            model = payload.get("model")
            model = check_text(model, "model", 256) if isinstance(model, str) else None
            prompt_text = await s.cpu_call(resolve_prompt, prompt)
            data = await fetch_image_url(urls[0], config.urls, limits.max_body_bytes)
            del payload, messages, users, content, parts, urls
        except InputRejected as e:
            raise ApiError(e.status, str(e), e.code) from None
        result = await run_extraction(request, data, prompt_text)
        completion = result.usage.get("completion_tokens") or 0
        prompt_tokens = result.usage.get("prompt_tokens") or 0
        body = {
            "id": f"chatcmpl-kie-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or result.model,
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
        return await respond(body, len(result.raw_output) > _RENDER_INLINE_BYTES)

    ui = ui_router(s, run_extraction, resolve_prompt)  # the web UI (/ui/); PDF/OFD pages
    app.include_router(ui)
    return app


def _count_tokens(extractor: Extractor, text: str) -> int | None:
    """Prompt tokens with the backend's tokenizer, when it has one (local models)."""
    count = getattr(extractor.backend, "count_tokens", None) or getattr(
        extractor.backend, "_count_tokens", None
    )
    if count is None:
        return None
    try:
        return count(text)
    except Exception:  # counting is best effort; the character limit still holds
        return None
