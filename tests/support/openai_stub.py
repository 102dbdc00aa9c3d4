"""A local OpenAI-compatible chat server for tests and benchmarks (127.0.0.1 only).

It stands in for FastDeploy / vLLM / a hosted ERNIE endpoint: answers come from a pluggable
*responder* (usually "look up the image's truth and answer the requested JSON"), every call can
be delayed, and a seeded *fault plan* injects the failures a real endpoint produces.

Quick use::

    from tests.support.openai_stub import FaultPlan, OpenAIStub, TruthResponder

    truth = TruthResponder()
    truth.add_image("b0.jpg", {"发票代码": "4400154130", ...})      # path -> fields
    with OpenAIStub(truth, latency_s=0.2, faults=FaultPlan(rate=0.3, seed=1)) as stub:
        client = AsyncChatClient(EndpointConfig(base_urls=[stub.base_url], model="stub"))
        ...
        stub.requests            # list[RecordedRequest], in arrival order
        stub.stats()             # {"calls": .., "faults": {...}, "max_in_flight": ..}

API (stable; other test folders rely on it)
-------------------------------------------
``OpenAIStub(responder=None, *, latency_s=0.0, faults=None, model="stub-model",
mode="thread", record_bodies=True)``
    Context manager. ``.base_url`` is ``"http://127.0.0.1:PORT/v1"``; ``.port``; ``.requests``;
    ``.stats()``; ``.reset()`` (clears records and counters). ``start()``/``stop()`` for use
    without ``with``.

    - ``responder``: ``Callable[[dict], str | StubReply]`` called with the parsed request body of
      ``POST /v1/chat/completions``; returns the assistant text (``finish_reason`` "stop") or a
      ``StubReply``. ``None`` answers ``"{}"``. It runs in a worker thread, so it may decode
      images. An exception in it becomes a 500 with the traceback text in the error message.
    - ``latency_s``: seconds per call, a float or ``Callable[[dict], float]``; measured from the
      request's arrival, so responder time is included, not added.
    - ``faults``: a ``FaultPlan`` (below).
    - ``mode``: ``"thread"`` (an asyncio loop in a daemon thread; responder and fault plan are
      shared with the test) or ``"process"`` (a forked child process: no GIL shared with the
      client, use it for throughput measurements; ``.requests``/``.stats()`` are then fetched
      from the child over HTTP, ``GET /_stub/requests`` and ``GET /_stub/stats``).
    - ``record_bodies=False`` keeps only metadata (large image payloads are not held).

    Endpoints: ``POST /v1/chat/completions`` (also ``"stream": true`` as server-sent events),
    ``GET /v1/models``, ``GET /_stub/requests``, ``GET /_stub/stats``, ``POST /_stub/reset``.

``FaultPlan(rate=0.0, kinds=TRANSIENT_FAULTS, weights=None, seed=0, script=(), when=None,
retry_after_s=0.05, hang_s=30.0, max_image_bytes=None, api_key=None, drip_interval_s=0.5,
echo_headers=False)``
    Decides per call (in arrival order, thread-safe) which fault to inject, if any:
    ``script[i]`` for the i-th call while the script lasts, then ``when(index, body)`` if given,
    then a seeded random draw: with probability ``rate`` one of ``kinds`` (``weights``).
    Independently of the draw, ``max_image_bytes`` answers ``400_image`` to any request carrying
    a larger image, and ``api_key`` answers ``401`` unless ``Authorization: Bearer <api_key>``
    (on ``GET /v1/models`` too). ``echo_headers=True`` makes every error answer (4xx/5xx, on
    ``GET /v1/models`` too) start its message with the request's headers (``Authorization`` and
    ``X-*`` first), as some proxies do: the
    client must keep them out of what it writes and logs.

    Fault kinds (``FAULT_KINDS``):
    ``"429"`` rate limit with ``Retry-After: <retry_after_s>`` (fractional seconds) and
    ``retry-after-ms``; ``"500"`` server error; ``"503"`` overloaded; ``"hang"`` no answer for
    ``hang_s`` then the connection is closed (the client must time out); ``"drip"`` a correct 200
sent one byte every ``drip_interval_s`` (status line and headers included: every read succeeds
within a per-read timeout, so only a total deadline ends it); ``"invalid_json"`` a 200
    whose content is prose, not JSON; ``"truncated"`` a 200 with the first half of the answer
    and ``finish_reason: "length"``; ``"duplicate_keys"`` a 200 whose JSON repeats its first key
    at the end with a different value (``json.loads`` keeps the wrong one); ``"fenced"`` a valid
    answer wrapped in a markdown code fence (benign); ``"400_image"`` a 400 saying the image
    cannot be processed; ``"401"`` invalid API key.

``TruthResponder(default=None)``
    ``add_image(path_or_bytes, fields)`` registers an image's truth; a request's image is
    identified by its exact bytes (sha256) or, after any re-encoding/resizing, by the nearest
    perceptual hash (16x16 difference hash). The answer is the truth *projected* on the JSON
    request found in the prompt: the object after ``OCR:`` if present, else the first JSON
    object in the prompt text (e.g. a schema skeleton), else the whole truth. Requested keys
    missing from the truth get the request's placeholder (``""``, ``{}``, ``[]``). Unknown
    images answer ``default`` (``None``: ``{}``). ``.lookups`` counts answers per registered key.

``"logprobs": true`` in a request adds ``choices[0].logprobs.content`` (token, logprob,
bytes) spelling the answer: the responder's ``StubReply.token_logprobs`` or ``stub_tokens``.

Helpers: ``request_text(body)`` (all user text), ``request_images(body)`` (decoded image bytes),
``make_test_image(path, seed, size=(96, 64))`` (a random block pattern JPEG/PNG whose perceptual
hash is far from any other seed's), ``project(value, request)``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import logging
import multiprocessing
import random
import re
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

log = logging.getLogger(__name__)

FAULT_KINDS = (
    "429",
    "500",
    "503",
    "hang",
    "drip",
    "invalid_json",
    "truncated",
    "duplicate_keys",
    "fenced",
    "400_image",
    "401",
)
# The faults a healthy run must survive by retrying (the "30% failing calls").
TRANSIENT_FAULTS = ("429", "500", "hang", "invalid_json", "truncated", "duplicate_keys")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


# ---------------------------------------------------------------- replies and faults
@dataclass
class StubReply:
    """What a responder may return instead of a plain string."""

    text: str
    finish_reason: str = "stop"
    # (token, logprob) pairs spelling `text`, sent when the request asks for ``logprobs``
    # (default: `stub_tokens(text)`, each with logprob -0.01)
    token_logprobs: Sequence[tuple[str, float]] | None = None


@dataclass
class RecordedRequest:
    index: int
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    fault: str | None
    status: int
    t_received: float
    t_done: float


@dataclass
class FaultPlan:
    """Seeded fault injection; see the module docstring."""

    rate: float = 0.0
    kinds: Sequence[str] = TRANSIENT_FAULTS
    weights: Sequence[float] | None = None
    seed: int = 0
    script: Sequence[str | None] = ()
    when: Callable[[int, dict[str, Any]], str | None] | None = None
    retry_after_s: float = 0.05
    hang_s: float = 30.0
    max_image_bytes: int | None = None
    api_key: str | None = None
    drip_interval_s: float = 0.5
    echo_headers: bool = False
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = [k for k in (*self.kinds, *[s for s in self.script if s]) if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; known: {FAULT_KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"FaultPlan.rate must be in [0, 1], got {self.rate}")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def draw(self, index: int, body: dict[str, Any], headers: Mapping[str, str]) -> str | None:
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return "401"
        if self.max_image_bytes is not None and any(
            len(img) > self.max_image_bytes for img in request_images(body)
        ):
            return "400_image"
        if index < len(self.script):
            return self.script[index]
        if self.when is not None:
            forced = self.when(index, body)
            if forced is not None:
                return forced
        with self._lock:
            if self.rate <= 0 or self._rng.random() >= self.rate:
                return None
            return self._rng.choices(list(self.kinds), weights=self.weights)[0]


# ---------------------------------------------------------------- request helpers
def _user_contents(body: Mapping[str, Any]) -> list[Any]:
    return [m.get("content") for m in body.get("messages", []) if isinstance(m, dict)]


def request_text(body: Mapping[str, Any], roles: Sequence[str] = ("user",)) -> str:
    """All text parts of the messages with the given roles, joined by newlines."""
    parts: list[str] = []
    for m in body.get("messages", []):
        if not isinstance(m, dict) or m.get("role") not in roles:
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return "\n".join(parts)


def request_images(body: Mapping[str, Any]) -> list[bytes]:
    """Decoded bytes of every ``image_url`` part that is a base64 data URL."""
    out: list[bytes] = []
    for content in _user_contents(body):
        if not isinstance(content, list):
            continue
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "image_url":
                continue
            url = p.get("image_url")
            url = url.get("url", "") if isinstance(url, dict) else str(url or "")
            if url.startswith("data:") and "," in url:
                with contextlib.suppress(ValueError):
                    out.append(base64.b64decode(url.split(",", 1)[1]))
    return out


def _find_json_object(text: str) -> Any:
    """The first balanced JSON object in ``text`` that parses, or None."""
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = dec.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def project(value: Any, request: Any) -> Any:
    """``value`` restricted to the keys of ``request`` (prompt grammar), in request order."""
    if isinstance(request, dict):
        if not request:  # {} = the whole value
            return value if value is not None else {}
        src = value if isinstance(value, dict) else {}
        return {
            key: project(src[key], sub) if key in src else _placeholder(sub)
            for key, sub in request.items()
        }
    if isinstance(request, list):
        if not request:  # [] = the whole list
            return value if isinstance(value, list) else []
        items = value if isinstance(value, list) else []
        return [project(item, request[0]) for item in items]
    return value if value is not None else ""


def _placeholder(request: Any) -> Any:
    if isinstance(request, dict):
        return {k: _placeholder(v) for k, v in request.items()}
    return [] if isinstance(request, list) else ""


_TOKEN = re.compile(r"\d{1,3}|[A-Za-z]+|\s+|[\u3400-\u9fff]|.", re.S)


def stub_tokens(text: str) -> list[str]:
    """A tokenizer stand-in: digit triples, words, spaces, single CJK characters, symbols."""
    return _TOKEN.findall(text)


def _dhash(image_bytes: bytes, size: int = 16) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as im:
        g = im.convert("L").resize((size + 1, size), Image.Resampling.BILINEAR)
        px = list(g.getdata())
    bits = 0
    for r in range(size):
        row = px[r * (size + 1) : (r + 1) * (size + 1)]
        for c in range(size):
            bits = (bits << 1) | (row[c] > row[c + 1])
    return bits


class TruthResponder:
    """Answers with a registered image's truth projected on the prompt's JSON request."""

    def __init__(self, default: Any = None) -> None:
        self._by_sha: dict[str, str] = {}
        self._hashes: list[tuple[int, str]] = []
        self._truth: dict[str, Any] = {}
        self.default = default
        self.lookups: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add_image(self, image: str | Path | bytes, fields: Any, key: str | None = None) -> str:
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        key = key or (
            str(image) if not isinstance(image, bytes) else hashlib.sha1(data).hexdigest()
        )
        self._by_sha[hashlib.sha256(data).hexdigest()] = key
        self._hashes.append((_dhash(data), key))
        self._truth[key] = fields
        return key

    def identify(self, image_bytes: bytes) -> str | None:
        key = self._by_sha.get(hashlib.sha256(image_bytes).hexdigest())
        if key is not None or not self._hashes:
            return key
        try:
            h = _dhash(image_bytes)
        except Exception:  # not an image
            return None
        dist, key = min(((h ^ hh).bit_count(), k) for hh, k in self._hashes)
        return key if dist <= 64 else None

    def truth_for(self, body: Mapping[str, Any]) -> Any:
        images = request_images(body)
        key = self.identify(images[0]) if images else None
        if key is None:
            return None
        with self._lock:
            self.lookups[key] += 1
        return self._truth[key]

    def __call__(self, body: dict[str, Any]) -> str:
        truth = self.truth_for(body)
        if truth is None:
            truth = self.default if self.default is not None else {}
        text = request_text(body)
        request: Any = None
        if "OCR:" in text:
            tail = text.split("OCR:", 1)[1].strip()
            with contextlib.suppress(ValueError):
                request = json.JSONDecoder().raw_decode(tail)[0]
        if request is None:
            request = _find_json_object(text)
        answer = project(truth, request) if isinstance(request, dict | list) else truth
        return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)


def make_test_image(path: str | Path, seed: int, size: tuple[int, int] = (96, 64)) -> Path:
    """A random 8x6 block pattern (format from the suffix); distinct seeds hash far apart."""
    from PIL import Image

    rng = random.Random(seed)
    w, h = size
    cols, rows = 8, 6
    im = Image.new("RGB", (w, h))
    bw, bh = -(-w // cols), -(-h // rows)
    for r in range(rows):
        for c in range(cols):
            color = tuple(rng.randrange(256) for _ in range(3))
            im.paste(color, (c * bw, r * bh, min(w, (c + 1) * bw), min(h, (r + 1) * bh)))
    path = Path(path)
    im.save(path, quality=92) if path.suffix.lower() in (".jpg", ".jpeg") else im.save(path)
    return path


# ---------------------------------------------------------------- the server core
def _fault_text(kind: str, text: str) -> tuple[str, str]:
    """(content, finish_reason) for the content-level faults."""
    if kind == "invalid_json":
        return "抱歉，这张图片我看不清楚，无法给出结构化结果。", "stop"
    if kind == "truncated":
        return text[: max(1, len(text) // 2)], "length"
    if kind == "fenced":
        return f"```json\n{text}\n```", "stop"
    if kind == "duplicate_keys":
        try:
            obj = json.loads(text)
        except ValueError:
            return text, "stop"
        if not isinstance(obj, dict) or not obj:
            return text, "stop"
        key = next(iter(obj))
        wrong = "DUPLICATE-" + (obj[key] if isinstance(obj[key], str) else "X")
        dup = json.dumps(key, ensure_ascii=False) + ": " + json.dumps(wrong, ensure_ascii=False)
        return text.rstrip()[:-1].rstrip() + ", " + dup + "}", "stop"
    return text, "stop"


class _Core:
    """State and request handling; lives in the thread or the child process."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str | StubReply] | None,
        latency_s: float | Callable[[dict[str, Any]], float],
        faults: FaultPlan | None,
        model: str,
        record_bodies: bool,
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.faults = faults
        self.model = model
        self.record_bodies = record_bodies
        self.records: list[RecordedRequest] = []
        self.counter = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.fault_counts: Counter[str] = Counter()
        self.server: asyncio.base_events.Server | None = None
        self.conn_tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        self.records.clear()
        self.counter = 0
        self.max_in_flight = 0
        self.fault_counts.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "calls": self.counter,
            "faults": dict(self.fault_counts),
            "max_in_flight": self.max_in_flight,
            "in_flight": self.in_flight,
        }

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._on_conn, sock=sock, backlog=1024)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.conn_tasks):
            t.cancel()
        if self.conn_tasks:
            await asyncio.gather(*self.conn_tasks, return_exceptions=True)

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.conn_tasks.add(task)
        try:
            await self._serve_conn(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:  # never let one bad connection kill the server
            log.exception("stub connection failed")
        finally:
            self.conn_tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            parts = line.decode("latin-1").split()
            if len(parts) != 3:
                return
            method, target, _version = parts
            headers: dict[str, str] = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                await self._send(writer, 411, {"error": {"message": "chunked bodies unsupported"}})
                return
            raw = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            keep = await self._dispatch(method, target.split("?", 1)[0], headers, raw, writer)
            if not keep or headers.get("connection", "").lower() == "close":
                return

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        extra_headers: Mapping[str, str] | None = None,
        request_headers: Mapping[str, str] | None = None,
        drip: bool = False,
    ) -> None:
        if (
            status >= 400
            and request_headers is not None
            and self.faults is not None
            and self.faults.echo_headers
            and isinstance(payload.get("error"), dict)
        ):
            # authorization and custom x-* headers first: a client that shortens messages
            # must not get away with cutting the secrets off by chance
            order = sorted(request_headers, key=lambda k: (k != "authorization", k[:2] != "x-"))
            echoed = "; ".join(f"{k}: {request_headers[k]}" for k in order)
            payload = {
                "error": {
                    **payload["error"],
                    "message": f"(request headers: {echoed}) {payload['error']['message']}",
                }
            }
        body = json.dumps(payload, ensure_ascii=False).encode()
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        if not drip:
            writer.write(data)
            await writer.drain()
            return
        interval = self.faults.drip_interval_s if self.faults else 0.5
        for i in range(len(data)):  # one byte at a time: no single read ever waits long
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(interval)

    async def _dispatch(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        if path.endswith("/models") and method == "GET":
            key = self.faults.api_key if self.faults else None
            if key is not None and headers.get("authorization") != f"Bearer {key}":
                err = _err("Incorrect API key provided", "invalid_api_key")
                await self._send(writer, 401, err, request_headers=headers)
                return True
            data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "stub"}]
            await self._send(writer, 200, {"object": "list", "data": data})
            return True
        if path == "/_stub/stats" and method == "GET":
            await self._send(writer, 200, self.stats())
            return True
        if path == "/_stub/requests" and method == "GET":
            await self._send(writer, 200, [asdict(r) for r in self.records])
            return True
        if path == "/_stub/reset" and method == "POST":
            self.reset()
            await self._send(writer, 200, {"ok": True})
            return True
        if not path.endswith("/chat/completions"):
            await self._send(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        if method != "POST":
            await self._send(writer, 405, {"error": {"message": "use POST"}})
            return True
        return await self._chat(headers, raw, writer)

    async def _chat(
        self, headers: dict[str, str], raw: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        t0 = time.monotonic()
        index = self.counter
        self.counter += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        body: dict[str, Any] | None = None
        fault: str | None = None
        try:
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise ValueError("body is not a JSON object")
            except ValueError as e:
                self._record(index, headers, None, None, 400, t0)
                await self._send(writer, 400, _err(f"invalid request body: {e}", "invalid_request"))
                return True
            loop = asyncio.get_running_loop()
            if self.faults is not None:
                fault = await loop.run_in_executor(None, self.faults.draw, index, body, headers)
            if fault:
                self.fault_counts[fault] += 1
            if fault == "hang":
                self._record(index, headers, body, fault, 0, t0)
                await asyncio.sleep(self.faults.hang_s if self.faults else 30.0)
                return False  # close without an answer
            status, payload, extra = await self._answer(body, fault, index, loop)
            latency = self.latency_s(body) if callable(self.latency_s) else self.latency_s
            left = latency - (time.monotonic() - t0)
            if left > 0:
                await asyncio.sleep(left)
            # recorded before the answer leaves, so a client that got it sees the record
            self._record(index, headers, body, fault, status, t0)
            if status == 200 and body.get("stream"):
                await self._stream(writer, body, payload["choices"][0], index)
                return False
            await self._send(
                writer, status, payload, extra, request_headers=headers, drip=fault == "drip"
            )
            return True
        finally:
            self.in_flight -= 1

    async def _answer(
        self,
        body: dict[str, Any],
        fault: str | None,
        index: int,
        loop: asyncio.AbstractEventLoop,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if fault == "401":
            return 401, _err("Incorrect API key provided", "invalid_api_key"), {}
        if fault == "400_image":
            msg = "Invalid image: the image could not be processed (too large or corrupt)"
            return 400, _err(msg, "invalid_image"), {}
        if fault in ("429", "500", "503"):
            extra: dict[str, str] = {}
            if fault == "429":
                ra = self.faults.retry_after_s if self.faults else 0.05
                extra = {"Retry-After": f"{ra:g}", "retry-after-ms": str(int(ra * 1000))}
            msg = {"429": "Rate limit reached", "500": "Internal error", "503": "Overloaded"}
            return int(fault), _err(msg[fault], f"stub_{fault}"), extra
        try:
            if self.responder is None:
                reply: str | StubReply = "{}"
            else:
                reply = await loop.run_in_executor(None, self.responder, body)
        except Exception:
            return 500, _err("responder failed: " + traceback.format_exc()), {}
        if isinstance(reply, str):
            reply = StubReply(reply)
        text, finish, tokens = reply.text, reply.finish_reason, reply.token_logprobs
        if fault:
            text, finish = _fault_text(fault, text)
        return 200, self._completion(body, text, finish, index, tokens), {}

    def _record(
        self,
        index: int,
        headers: dict[str, str],
        body: dict[str, Any] | None,
        fault: str | None,
        status: int,
        t0: float,
    ) -> None:
        rec_headers = {k: v for k, v in headers.items() if k != "authorization"}
        if "authorization" in headers:
            rec_headers["authorization"] = "<redacted>"
        self.records.append(
            RecordedRequest(
                index=index,
                method="POST",
                path="/v1/chat/completions",
                headers=rec_headers,
                body=body if self.record_bodies else None,
                fault=fault,
                status=status,
                t_received=t0,
                t_done=time.monotonic(),
            )
        )

    def _completion(
        self,
        body: dict[str, Any],
        text: str,
        finish: str,
        index: int,
        tokens: Sequence[tuple[str, float]] | None = None,
    ) -> dict:
        prompt_tokens = max(1, len(request_text(body)) // 2)
        completion_tokens = max(1, len(text) // 2)
        out = {
            "id": f"chatcmpl-stub-{index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        if body.get("logprobs"):
            if tokens is None or "".join(t for t, _ in tokens) != text:
                tokens = [(t, -0.01) for t in stub_tokens(text)]
            out["choices"][0]["logprobs"] = {
                "content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                    for t, lp in tokens
                ]
            }
        return out

    async def _stream(
        self, writer: asyncio.StreamWriter, body: dict[str, Any], choice: dict, index: int
    ) -> None:
        text, finish = choice["message"]["content"], choice["finish_reason"]
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode())
        step = max(1, len(text) // 3)
        pieces = [text[i : i + step] for i in range(0, len(text), step)] or [""]
        base = {"id": f"chatcmpl-stub-{index}", "object": "chat.completion.chunk"}
        base["model"] = body.get("model", self.model)
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            writer.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        writer.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        await writer.drain()


def _err(message: str, code: str = "stub_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": "stub", "code": code}}


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _child_main(core: _Core, sock: socket.socket, ready: Any) -> None:  # pragma: no cover
    async def main() -> None:
        await core.start(sock)
        ready.send("ok")
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------- the public handle
class OpenAIStub:
    """A running stub server; see the module docstring."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str | StubReply] | None = None,
        *,
        latency_s: float | Callable[[dict[str, Any]], float] = 0.0,
        faults: FaultPlan | None = None,
        model: str = "stub-model",
        mode: str = "thread",
        record_bodies: bool = True,
    ) -> None:
        if mode not in ("thread", "process"):
            raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")
        self.mode = mode
        self.model = model
        self._core = _Core(responder, latency_s, faults, model, record_bodies)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proc: Any = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpenAIStub:
        sock = _bind()
        self.port = sock.getsockname()[1]
        if self.mode == "process":
            ctx = multiprocessing.get_context("fork")
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(
                target=_child_main, args=(self._core, sock, child), daemon=True
            )
            self._proc.start()
            sock.close()
            if not parent.poll(30):
                raise RuntimeError("stub server process did not start within 30 s")
            parent.recv()
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="openai-stub"
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._core.start(sock), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(10)
            self._proc = None
        if self._loop is not None and self._thread is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._core.stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._loop = None
            self._thread = None

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _get(self, path: str, method: str = "GET") -> Any:
        req = Request(self.root_url + path, method=method, data=b"" if method == "POST" else None)
        with urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    @property
    def requests(self) -> list[RecordedRequest]:
        """Chat requests answered so far (recorded just before each answer is sent)."""
        if self.mode == "process":
            return [RecordedRequest(**d) for d in self._get("/_stub/requests")]
        return list(self._core.records)

    def stats(self) -> dict[str, Any]:
        """``{"calls", "faults": {kind: n}, "max_in_flight", "in_flight"}``."""
        if self.mode == "process":
            return self._get("/_stub/stats")
        return self._core.stats()

    def reset(self) -> None:
        if self.mode == "process":
            self._get("/_stub/reset", "POST")
        elif self._loop is not None:

            async def _reset() -> None:
                self._core.reset()

            asyncio.run_coroutine_threadsafe(_reset(), self._loop).result(10)
