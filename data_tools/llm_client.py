"""An async client for OpenAI-compatible chat endpoints (FastDeploy, vLLM, hosted ERNIE).

Why httpx and not ``openai.AsyncOpenAI``: the retry policy is the point of this module. The
``openai`` package retries inside the call and hides how many attempts it made, always sends a
retry to the same base URL, and treats a timeout budget per attempt. Here one explicit loop owns
it: each attempt goes to the next base URL (round robin, so a retry lands on another server),
``Retry-After`` is honoured, 401/403 stop at once, other 4xx come back as ``RequestRejected``
so the caller can adapt (a smaller image), and the result says how many attempts it took.

API (stable; the labeler, the inference backends and the baseline use it)
--------------------------------------------------------------------------
``EndpointConfig(base_urls, model, api_key_env="OPENAI_API_KEY", api_key=None, timeout_s=120.0,
connect_timeout_s=10.0, max_attempts=6, backoff_base_s=1.0, backoff_max_s=30.0,
max_retry_after_s=120.0, max_concurrency=None, extra_body={}, temperature=None, max_tokens=None,
headers={})``
    ``base_urls`` end in ``/v1`` (``http://host:8180/v1``); a single string is accepted.
    The key is ``api_key`` if given, else the environment variable ``api_key_env`` (absent: no
    ``Authorization`` header, as a local FastDeploy/vLLM server needs none).
    ``max_concurrency`` bounds the requests in flight from this client (None: unbounded);
    ``extra_body`` is merged into every request body (e.g. ``{"enable_thinking": False}`` or
    ``{"chat_template_kwargs": {"enable_thinking": False}}``). ``EndpointConfig.from_dict(d)``
    builds one from a YAML mapping (unknown keys raise).

``AsyncChatClient(config, *, transport=None, rng=None)`` (async context manager)
    ``await chat(messages, *, max_tokens=None, temperature=None, extra_body=None,
    timeout_s=None, model=None) -> ChatResult``; ``await list_models() -> list[str]``;
    ``await aclose()``.

``SyncChatClient(config)``: the same ``chat``/``list_models`` as blocking calls (its own event
loop; not thread-safe; not usable inside a running event loop). ``chat_once(config, messages)``
for one-off calls.

``ChatResult(text, finish_reason, usage, latency_s, attempts, base_url, model,
attempt_latency_s, errors)``: ``latency_s`` is the wall time of the whole call, backoff
included; ``attempt_latency_s`` that of the successful attempt (from its concurrency slot on);
``errors`` the reasons of the failed attempts before it. ``base_url`` is the bare URL.

Errors (all ``LLMError`` with ``.reason``, ``.status``, ``.attempts``, ``.base_url``):
``FatalLLMError`` (401/403: wrong key or no access: stop the run), ``RequestRejected`` (other
4xx: retrying the same request will not help; ``.body`` has the server's message),
``RetriesExhausted`` (429/5xx/timeouts/connection errors on every attempt).

Message helpers: ``image_part(data, mime="image/jpeg")``, ``user_message(text, images=())``.

Deadlines: ``timeout_s`` is the **total** wall-clock time one attempt may take: connecting,
sending, waiting for the answer and reading all of it. A server that drips one byte every
0.5 s is cut off after ``timeout_s`` (httpx's own timeouts are per read, so they alone would
never fire there; each attempt runs under ``asyncio.timeout``). ``connect_timeout_s`` bounds
the connect inside that. A call makes at most ``max_attempts`` attempts, so it ends within
``max_attempts x timeout_s`` plus the waits between attempts (each at most ``backoff_max_s``,
or ``max_retry_after_s`` after a ``Retry-After``) plus any wait for a ``max_concurrency``
slot, which is not part of an attempt. ``chat(timeout_s=...)`` sets the per-attempt deadline
of one call. ``list_models`` (the preflight) gets ``timeout_s`` in all.

Secrets: ``user:password@`` in a base URL is taken out of the URL and sent as HTTP Basic auth
(as httpx would), so requests, httpx's log lines and every URL this module names carry the
bare URL. Every text this module produces (``LLMError.reason`` and ``.body``,
``ChatResult.errors``, log lines, the 401/403 advice) has the API key, the ``Authorization``
value, custom ``headers`` values and URL userinfo replaced by ``***``, even when a server or
proxy quotes them back in its error message; ``repr(EndpointConfig)`` is redacted too. So a
batch run's ``failures.jsonl`` and ``summary.json`` never hold them.

Retry policy: 429, 408, 409, 5xx, timeouts, connection errors and malformed 200 envelopes are
retried up to ``max_attempts`` in all. The delay before attempt ``n+1`` is ``Retry-After``
(``retry-after-ms`` or ``Retry-After`` seconds, capped at ``max_retry_after_s``) when the server
sent one, else exponential backoff with equal jitter:
``d = min(backoff_max_s, backoff_base_s * 2**(n-1)); delay = d/2 + uniform(0, d/2)``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import itertools
import logging
import os
import random
import sys
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from data_tools.compat import async_timeout
from data_tools.config import redact, redact_url
from data_tools.runner import FatalError


def _lazy_httpx() -> Any:
    """httpx, loaded on first attribute access (``importlib.util.LazyLoader``): a CLI's
    ``--help`` does not pay for it (~0.3 s with its rich/click CLI)."""
    import importlib.util

    if "httpx" in sys.modules:
        return sys.modules["httpx"]
    spec = importlib.util.find_spec("httpx")
    if spec is None or spec.loader is None:  # pragma: no cover - httpx is a dependency
        raise ImportError("httpx is not installed")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["httpx"] = module
    loader.exec_module(module)
    return module


httpx = _lazy_httpx()


log = logging.getLogger(__name__)

POOL_CONNECTIONS = 8  # connections per httpx pool (see AsyncChatClient.__init__)
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403})
MIN_SECRET_LEN = 4  # shorter header values are not searched for in messages (too common)


# ---------------------------------------------------------------- errors
class LLMError(RuntimeError):
    """A chat call that did not give an answer."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        attempts: int = 0,
        base_url: str = "",
        body: str = "",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.attempts = attempts
        self.base_url = base_url
        self.body = body


class FatalLLMError(LLMError, FatalError):
    """401/403: the key is wrong or lacks access; every further call would fail too.

    A ``runner.FatalError``: a batch run stops (exit 3) and a rerun continues."""


class EndpointUnreachable(FatalLLMError):
    """No base URL answered at all (connection refused, DNS, timeout) at the preflight."""


class RequestRejected(LLMError):
    """A 4xx other than 401/403/408/409/429: this request as sent will not succeed."""


class RetriesExhausted(LLMError):
    """Every attempt failed with a retryable error."""


# ---------------------------------------------------------------- config and result
def resolve_secret(value: str | None, env_var: str | None) -> str | None:
    """An explicit secret, else the named environment variable; empty counts as unset."""
    if value:
        return value
    if env_var:
        return os.environ.get(env_var) or None
    return None


@dataclass
class EndpointConfig:
    base_urls: list[str]
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    api_key: str | None = None
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    max_concurrency: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = None
    max_tokens: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.base_urls, str):
            self.base_urls = [self.base_urls]
        self.base_urls = [u.rstrip("/") for u in self.base_urls]
        if not self.base_urls:
            raise ValueError(
                "EndpointConfig.base_urls is empty: give at least one URL ending in /v1"
            )
        for u in self.base_urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"base URL {redact_url(u)!r} must start with http:// or https://")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "client") -> EndpointConfig:
        """Typed and checked by the one config loader (unknown keys name the nearest)."""
        from data_tools.config import build

        return build(cls, d, source=where)

    def resolve_api_key(self) -> str | None:
        return resolve_secret(self.api_key, self.api_key_env)

    def __repr__(self) -> str:  # fit for logs: no key, header values or URL userinfo
        shown = redact(dataclasses.asdict(self))
        return "EndpointConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def split_userinfo(url: str) -> tuple[str, httpx.BasicAuth | None, list[str]]:
    """``http://user:pw@host/v1`` → (``http://host/v1``, BasicAuth, the secret strings)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, []
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    user, password = urllib.parse.unquote(user), urllib.parse.unquote(password)
    auth = httpx.BasicAuth(user, password)
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return bare, auth, [userinfo, user, password, token]


def endpoint_from_flags(
    current: EndpointConfig | None,
    base_urls: Sequence[str] | None,
    model: str | None,
    default_model: str,
) -> EndpointConfig:
    """``current`` with the CLI's ``--server-url`` / model flags applied (or a new one)."""
    if current is None:
        if not base_urls:
            raise ValueError("no endpoint: pass --server-url http://HOST:PORT/v1")
        return EndpointConfig(base_urls=list(base_urls), model=model or default_model)
    return dataclasses.replace(
        current,
        base_urls=list(base_urls) if base_urls else current.base_urls,
        model=model or current.model,
    )


@dataclass
class ChatResult:
    text: str
    finish_reason: str | None
    usage: dict[str, Any]
    latency_s: float
    attempts: int
    base_url: str
    model: str
    attempt_latency_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    logprobs: dict[str, Any] | None = None  # the choice's ``logprobs`` when asked for


# ---------------------------------------------------------------- message helpers
def image_part(data: bytes, mime: str = "image/jpeg") -> dict[str, Any]:
    """An OpenAI ``image_url`` content part carrying ``data`` as a base64 data URL."""
    b64 = base64.b64encode(data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64}"}}


def user_message(text: str, images: Iterable[tuple[bytes, str] | bytes] = ()) -> dict[str, Any]:
    """A user message: images first (as the VL models were trained), then the text."""
    parts: list[dict[str, Any]] = []
    for img in images:
        data, mime = (img, "image/jpeg") if isinstance(img, bytes) else img
        parts.append(image_part(data, mime))
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def _retry_after(headers: httpx.Headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:500]
        return str(err)[:500]
    return str(data)[:500]


# ---------------------------------------------------------------- the client
class AsyncChatClient:
    """See the module docstring."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self._rr = itertools.cycle(range(len(config.base_urls)))
        # requests go to the bare URLs; userinfo becomes Basic auth (see "Secrets")
        self._urls: list[str] = []
        self._auth: list[httpx.BasicAuth | None] = []
        secrets: list[str] = []
        for u in config.base_urls:
            bare, auth, found = split_userinfo(u)
            self._urls.append(bare)
            self._auth.append(auth)
            secrets += found
        headers = self._headers()
        # httpcore's pool does O(requests x connections) work on every event, which costs
        # ~3 ms per request at 32 connections; several small pools keep that flat.
        limit = config.max_concurrency or 256
        n_pools = max(1, -(-limit // POOL_CONNECTIONS))
        per_pool = -(-limit // n_pools)
        # one TLS context for all pools (loading the CA bundle costs ~40 ms a time), none at all
        # when every endpoint is plain http
        tls = any(u.startswith("https://") for u in config.base_urls)
        verify: Any = httpx.create_ssl_context() if tls else False
        self._pools = [
            httpx.AsyncClient(
                transport=transport,
                verify=verify,
                timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
                limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
                headers=headers,
            )
            for _ in range(n_pools)
        ]
        self._busy = [0] * n_pools
        self._sem = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        secrets += [config.resolve_api_key() or "", *headers.values()]
        secrets += [v.split(" ", 1)[-1] for v in headers.values()]  # the <key> of "Bearer <key>"
        self._secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_LEN and s != "application/json"},
            key=len,
            reverse=True,
        )

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this client and any URL userinfo replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_url(text)

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", **self.config.headers}
        key = self.config.resolve_api_key()
        if key:
            h["Authorization"] = f"Bearer {key}"
        elif self.config.api_key_env:
            log.debug("no API key in $%s; sending no Authorization header", self.config.api_key_env)
        return h

    async def __aenter__(self) -> AsyncChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    def _next_url_index(self) -> int:
        return next(self._rr)

    def _backoff(self, attempt: int) -> float:
        d = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        return d / 2 + self._rng.uniform(0, d / 2)

    def _fatal_text(self, base: str, resp: httpx.Response, model: str) -> str:
        where = f"${self.config.api_key_env}" if self.config.api_key_env else "client.api_key"
        return self.scrub(
            f"{base}: HTTP {resp.status_code} {_error_message(resp)}. The API key ({where}) is "
            f"missing, wrong or lacks access to model {model!r}; fix it and rerun "
            "(finished work is kept)."
        )

    async def list_models(self) -> list[str]:
        """The model ids of the first base URL (``GET /models``, ``timeout_s`` in all)."""
        base = self._urls[0]
        try:
            async with async_timeout(self.config.timeout_s):
                resp = await self._pools[0].get(base + "/models", auth=self._auth_for(0))
        except TimeoutError:
            raise httpx.ReadTimeout(
                f"GET {base}/models took longer than timeout_s={self.config.timeout_s:g}"
            ) from None
        if resp.status_code in FATAL_STATUSES:
            raise FatalLLMError(
                self._fatal_text(base, resp, self.config.model),
                status=resp.status_code,
                base_url=base,
                body=self.scrub(resp.text[:2000]),
            )
        if resp.status_code >= 400:
            raise LLMError(
                self.scrub(f"GET {base}/models: HTTP {resp.status_code} {_error_message(resp)}"),
                status=resp.status_code,
                base_url=base,
            )
        return [m.get("id", "") for m in resp.json().get("data", [])]

    def _auth_for(self, i: int) -> Any:
        auth = self._auth[i]
        return auth if auth is not None else httpx.USE_CLIENT_DEFAULT

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        model: str | None = None,
    ) -> ChatResult:
        cfg = self.config
        payload: dict[str, Any] = {"model": model or cfg.model, "messages": list(messages)}
        mt = max_tokens if max_tokens is not None else cfg.max_tokens
        if mt is not None:
            payload["max_tokens"] = mt
        temp = temperature if temperature is not None else cfg.temperature
        if temp is not None:
            payload["temperature"] = temp
        payload.update(cfg.extra_body)
        if extra_body:
            payload.update(extra_body)
        deadline = timeout_s if timeout_s is not None else cfg.timeout_s
        timeout = (
            httpx.Timeout(timeout_s, connect=min(timeout_s, cfg.connect_timeout_s))
            if timeout_s is not None
            else httpx.USE_CLIENT_DEFAULT
        )
        t_start = time.monotonic()
        errors: list[str] = []
        base = ""
        for attempt in range(1, cfg.max_attempts + 1):
            i = self._next_url_index()
            base = self._urls[i]
            delay: float | None = None
            t_attempt = time.monotonic()
            try:
                if self._sem is not None:
                    async with self._sem:
                        t_attempt = time.monotonic()
                        resp = await self._post(i, payload, timeout, deadline)
                else:
                    resp = await self._post(i, payload, timeout, deadline)
            except TimeoutError:
                errors.append(f"timeout (no whole answer within timeout_s={deadline:g}s) at {base}")
            except httpx.TimeoutException as e:
                errors.append(f"timeout ({type(e).__name__}) at {base}")
            except httpx.TransportError as e:
                errors.append(self.scrub(f"connection error ({type(e).__name__}: {e}) at {base}"))
            else:
                status = resp.status_code
                if status == 200:
                    result = self._parse_ok(resp, base)
                    if isinstance(result, str):
                        errors.append(self.scrub(result))
                    else:
                        text, finish, usage, used_model, logprobs = result
                        now = time.monotonic()
                        return ChatResult(
                            text=text,
                            finish_reason=finish,
                            usage=usage,
                            latency_s=now - t_start,
                            attempts=attempt,
                            base_url=base,
                            model=used_model,
                            attempt_latency_s=now - t_attempt,
                            errors=errors,
                            logprobs=logprobs,
                        )
                elif status in FATAL_STATUSES:
                    raise FatalLLMError(
                        self._fatal_text(base, resp, payload["model"]),
                        status=status,
                        attempts=attempt,
                        base_url=base,
                        body=self.scrub(resp.text[:2000]),
                    )
                elif status in RETRY_STATUSES:
                    errors.append(
                        self.scrub(f"HTTP {status} {_error_message(resp)[:200]} at {base}")
                    )
                    delay = _retry_after(resp.headers)
                    if delay is not None:
                        delay = min(delay, cfg.max_retry_after_s)
                else:
                    raise RequestRejected(
                        self.scrub(f"HTTP {status} {_error_message(resp)}"),
                        status=status,
                        attempts=attempt,
                        base_url=base,
                        body=self.scrub(resp.text[:2000]),
                    )
            if attempt < cfg.max_attempts:
                wait = delay if delay is not None else self._backoff(attempt)
                log.debug("attempt %d failed (%s); retrying in %.2fs", attempt, errors[-1], wait)
                await asyncio.sleep(wait)
        raise RetriesExhausted(
            f"{cfg.max_attempts} attempt(s) failed; last: {errors[-1] if errors else '?'}",
            attempts=cfg.max_attempts,
            base_url=base,
            body="\n".join(errors),
        )

    async def _post(
        self, url_index: int, payload: dict[str, Any], timeout: Any, deadline: float
    ) -> httpx.Response:
        """One attempt: the whole exchange within ``deadline`` seconds (raises TimeoutError)."""
        url = self._urls[url_index] + "/chat/completions"
        i = min(range(len(self._pools)), key=self._busy.__getitem__)  # least busy pool
        self._busy[i] += 1
        try:
            async with async_timeout(deadline):
                # .post reads the whole body before it returns, so the deadline covers it all
                return await self._pools[i].post(
                    url, json=payload, timeout=timeout, auth=self._auth_for(url_index)
                )
        finally:
            self._busy[i] -= 1

    @staticmethod
    def _parse_ok(
        resp: httpx.Response, base: str
    ) -> tuple[str, str | None, dict[str, Any], str, dict[str, Any] | None] | str:
        """The answer of a 200, or a reason string when the envelope is malformed."""
        try:
            data = resp.json()
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content")
            if isinstance(text, list):  # some servers return content parts
                text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
            if text is None:
                text = ""
            logprobs = choice.get("logprobs")
            return (
                str(text),
                choice.get("finish_reason"),
                dict(data.get("usage") or {}),
                str(data.get("model", "")),
                logprobs if isinstance(logprobs, dict) else None,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            return f"malformed 200 response ({type(e).__name__}: {e}) at {base}"


async def preflight(client: AsyncChatClient) -> None:
    """``GET /models`` on every base URL before the run: a wrong key stops here, an unreachable
    server is named, and a model the server does not list is warned about."""
    reachable = 0
    for url in client.config.base_urls:
        one = AsyncChatClient(
            dataclasses.replace(client.config, base_urls=[url], max_concurrency=1)
        )
        try:
            models = await one.list_models()
        except FatalLLMError:
            raise
        except Exception as exc:  # 404 on /models, a proxy, ...: the chat calls will tell
            log.warning(
                "preflight: GET %s/models failed (%s)",
                redact_url(url),
                client.scrub(f"{type(exc).__name__}: {exc}"),
            )
            if not isinstance(exc, httpx.TransportError):
                reachable += 1
            continue
        finally:
            await one.aclose()
        reachable += 1
        if models and client.config.model not in models:
            log.warning(
                "preflight: %s serves %s, not %r; check client.model",
                redact_url(url),
                models,
                client.config.model,
            )
    if not reachable:
        raise EndpointUnreachable(
            f"no endpoint reachable: {[redact_url(u) for u in client.config.base_urls]}; is the "
            "server up? (FastDeploy / vLLM: curl -i http://HOST:PORT/v1/models)"
        )


class SyncChatClient:
    """Blocking wrapper around ``AsyncChatClient`` with its own event loop."""

    def __init__(self, config: EndpointConfig, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = self._loop.run_until_complete(self._make(config, kwargs))

    @staticmethod
    async def _make(config: EndpointConfig, kwargs: dict[str, Any]) -> AsyncChatClient:
        return AsyncChatClient(config, **kwargs)

    @property
    def config(self) -> EndpointConfig:
        return self._client.config

    def chat(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> ChatResult:
        return self._loop.run_until_complete(self._client.chat(messages, **kwargs))

    def list_models(self) -> list[str]:
        return self._loop.run_until_complete(self._client.list_models())

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()

    def __enter__(self) -> SyncChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chat_once(
    config: EndpointConfig, messages: Sequence[Mapping[str, Any]], **kw: Any
) -> ChatResult:
    """One blocking call with a fresh client."""
    with SyncChatClient(config) as c:
        return c.chat(messages, **kw)
