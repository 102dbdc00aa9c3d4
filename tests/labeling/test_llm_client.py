"""The async OpenAI-compatible client: retries, round robin, fatal errors, concurrency, total
deadlines per attempt, secrets kept out of every message."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import socket
import time
from pathlib import Path

import httpx
import pytest

from data_tools.llm_client import (
    AsyncChatClient,
    ChatResult,
    EndpointConfig,
    FatalLLMError,
    RequestRejected,
    RetriesExhausted,
    SyncChatClient,
    chat_once,
    user_message,
)
from tests.support.openai_stub import FaultPlan, OpenAIStub

MSG = [user_message("hello")]


def _cfg(*urls: str, **kw) -> EndpointConfig:
    kw = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0, **kw}
    return EndpointConfig(base_urls=list(urls), model="m", **kw)


def _run(coro):
    return asyncio.run(coro)


async def _chat(cfg: EndpointConfig, **kw):
    async with AsyncChatClient(cfg) as c:
        return await c.chat(MSG, **kw)


def test_success_result_fields() -> None:
    with OpenAIStub(lambda b: '{"a": "1"}', latency_s=0.05) as stub:
        r = _run(_chat(_cfg(stub.base_url, extra_body={"enable_thinking": False})))
        body = stub.requests[0].body
    assert r.text == '{"a": "1"}'
    assert r.finish_reason == "stop"
    assert r.attempts == 1 and r.errors == []
    assert r.usage["total_tokens"] > 0
    assert r.latency_s >= 0.05
    assert r.base_url == stub.base_url
    assert body["enable_thinking"] is False
    assert body["model"] == "m"


def test_429_honours_retry_after() -> None:
    plan = FaultPlan(script=["429", "429"], retry_after_s=0.3)
    with OpenAIStub(lambda b: "ok", faults=plan) as stub:
        r = _run(_chat(_cfg(stub.base_url)))
    assert r.attempts == 3
    assert r.latency_s >= 0.6  # two Retry-After waits, not the 0.01 s backoff
    assert all("429" in e for e in r.errors)


def test_5xx_and_timeout_are_retried() -> None:
    plan = FaultPlan(script=["500", "hang", "503"], hang_s=3)
    with OpenAIStub(lambda b: "ok", faults=plan) as stub:
        r = _run(_chat(_cfg(stub.base_url, timeout_s=0.3)))
    assert r.text == "ok"
    assert r.attempts == 4
    assert "HTTP 500" in r.errors[0]
    assert r.errors[1].startswith("timeout")
    assert "HTTP 503" in r.errors[2]


def test_401_is_fatal_at_once() -> None:
    with OpenAIStub(lambda b: "ok", faults=FaultPlan(api_key="sk-right")) as stub:
        with pytest.raises(FatalLLMError, match="API key") as ei:
            _run(_chat(_cfg(stub.base_url, api_key="sk-wrong", max_attempts=5)))
        assert ei.value.status == 401
        assert len(stub.requests) == 1  # no retries


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ERNIE_KEY", "sk-right")
    with OpenAIStub(lambda b: "ok", faults=FaultPlan(api_key="sk-right")) as stub:
        assert _run(_chat(_cfg(stub.base_url, api_key_env="MY_ERNIE_KEY"))).text == "ok"
        monkeypatch.delenv("MY_ERNIE_KEY")
        with pytest.raises(FatalLLMError):
            _run(_chat(_cfg(stub.base_url, api_key_env="MY_ERNIE_KEY")))


def test_other_4xx_is_rejected_not_retried() -> None:
    with OpenAIStub(lambda b: "ok", faults=FaultPlan(script=["400_image"])) as stub:
        with pytest.raises(RequestRejected, match="image") as ei:
            _run(_chat(_cfg(stub.base_url)))
        assert ei.value.status == 400
        assert len(stub.requests) == 1


def test_retries_exhausted() -> None:
    with OpenAIStub(lambda b: "ok", faults=FaultPlan(rate=1.0, kinds=("500",))) as stub:
        with pytest.raises(RetriesExhausted) as ei:
            _run(_chat(_cfg(stub.base_url, max_attempts=3)))
        assert ei.value.attempts == 3
        assert len(stub.requests) == 3


def _dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/v1"


def test_round_robin_and_failover() -> None:
    bad = FaultPlan(rate=1.0, kinds=("500",))
    with (
        OpenAIStub(lambda b: "A") as a,
        OpenAIStub(lambda b: "B") as b,
        OpenAIStub(faults=bad) as c,
    ):

        async def many() -> list[str]:
            async with AsyncChatClient(_cfg(a.base_url, b.base_url)) as cl:
                return [(await cl.chat(MSG)).text for _ in range(6)]

        assert _run(many()) == ["A", "B"] * 3
        # a retry goes to the next server: a dead one and an always-500 one are skipped
        cfg = _cfg(_dead_url(), c.base_url, a.base_url, max_attempts=3)
        r = _run(_chat(cfg))
        assert r.text == "A" and r.attempts == 3
        assert r.errors[0].startswith("connection error")


def test_max_concurrency_bounds_in_flight_requests() -> None:
    with OpenAIStub(lambda b: "ok", latency_s=0.1) as stub:

        async def many() -> None:
            async with AsyncChatClient(_cfg(stub.base_url, max_concurrency=4)) as cl:
                await asyncio.gather(*[cl.chat(MSG) for _ in range(16)])

        t = time.monotonic()
        _run(many())
        took = time.monotonic() - t
        assert stub.stats()["max_in_flight"] == 4
    assert took >= 0.4  # 16 calls / 4 slots x 0.1 s


def test_backoff_has_bounded_jitter() -> None:
    cl = AsyncChatClient(
        _cfg("http://x/v1", backoff_base_s=1.0, backoff_max_s=8.0), rng=random.Random(0)
    )
    for attempt, cap in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 8.0)]:
        ds = [cl._backoff(attempt) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in ds)
        assert len(set(ds)) > 1


def test_sync_wrapper_and_models() -> None:
    with OpenAIStub(lambda b: "sync ok", model="ernie") as stub:
        with SyncChatClient(_cfg(stub.base_url)) as c:
            assert c.list_models() == ["ernie"]
            assert c.chat(MSG, max_tokens=7).text == "sync ok"
        assert stub.requests[0].body["max_tokens"] == 7
        assert chat_once(_cfg(stub.base_url), MSG).text == "sync ok"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        EndpointConfig.from_dict({"base_urls": ["http://x/v1"], "model": "m", "concurency": 3})
    with pytest.raises(ValueError, match="http"):
        EndpointConfig(base_urls=["localhost:8180/v1"], model="m")
    assert EndpointConfig(base_urls="http://h/v1/", model="m").base_urls == ["http://h/v1"]


# ---------------------------------------------------------------- total deadlines
def test_timeout_is_a_total_deadline_per_attempt_against_a_dripping_server() -> None:
    """One byte every 0.5 s: every read is quick, so only a total deadline ends the attempt."""
    plan = FaultPlan(script=["drip", "drip", "drip"], drip_interval_s=0.5)
    with OpenAIStub(lambda b: "ok", faults=plan) as stub:
        t = time.monotonic()
        with pytest.raises(RetriesExhausted, match=r"timeout_s=2s") as ei:
            _run(_chat(_cfg(stub.base_url, timeout_s=2.0, max_attempts=1)))
        one = time.monotonic() - t
        assert ei.value.attempts == 1
        # chat(timeout_s=...) sets the deadline of each attempt of that call; two attempts
        t = time.monotonic()
        with pytest.raises(RetriesExhausted) as ei:
            _run(_chat(_cfg(stub.base_url, timeout_s=30.0, max_attempts=2), timeout_s=1.0))
        two = time.monotonic() - t
        assert ei.value.attempts == 2 and len(stub.requests) == 3
    assert 1.9 <= one < 4.0, one
    assert 1.9 <= two < 4.0, two  # 2 x 1 s + a backoff of at most 0.05 s


def test_a_drip_fast_enough_still_answers() -> None:
    plan = FaultPlan(script=["drip"], drip_interval_s=0.0005)
    with OpenAIStub(lambda b: "slow but whole", faults=plan) as stub:
        r = _run(_chat(_cfg(stub.base_url, timeout_s=20.0, max_attempts=1)))
    assert r.text == "slow but whole" and r.attempts == 1


# ---------------------------------------------------------------- secrets
SECRET_CFG = {
    "api_key": "sk-very-secret-1",
    "headers": {"X-Tenant": "tenant-secret-2"},
}


def test_userinfo_leaves_the_url_and_goes_as_basic_auth(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        return httpx.Response(200, json=body)

    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="httpx")  # a CLI test may have quietened it
    cfg = _cfg("http://alice:pa%3Ass@llm.internal:8180/v1")

    async def go() -> ChatResult:
        async with AsyncChatClient(cfg, transport=httpx.MockTransport(handler)) as c:
            return await c.chat(MSG)

    r = _run(go())
    assert r.text == "ok" and r.base_url == "http://llm.internal:8180/v1"
    req = seen[0]
    assert str(req.url) == "http://llm.internal:8180/v1/chat/completions"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"alice:pa:ss").decode()
    assert "llm.internal" in caplog.text  # httpx logged the request ...
    assert "alice" not in caplog.text and "pa%3Ass" not in caplog.text  # ... without userinfo


def test_errors_and_repr_never_carry_secrets() -> None:
    plan = FaultPlan(script=["400_image", "500", "500"], echo_headers=True)
    with OpenAIStub(lambda b: "ok", faults=plan) as stub:
        url = stub.base_url.replace("://", "://bob:hunter22@")
        cfg = _cfg(url, max_attempts=2, **SECRET_CFG)
        with pytest.raises(RequestRejected) as rejected:
            _run(_chat(cfg))
        with pytest.raises(RetriesExhausted) as exhausted:
            _run(_chat(cfg))
    texts = [
        rejected.value.reason,
        rejected.value.body,
        str(exhausted.value),
        exhausted.value.body,
        repr(cfg),
    ]
    assert "request headers" in rejected.value.reason  # the server did quote them
    basic = base64.b64encode(b"bob:hunter22").decode()
    for text in texts:
        for secret in ("bob", "hunter22", basic, "sk-very-secret-1", "tenant-secret-2"):
            assert secret not in text, (secret, text)
    assert "model='m'" in repr(cfg) and "***" in repr(cfg)


def test_a_label_run_writes_no_secrets(invoice_set, tmp_path: Path) -> None:
    """data_tools.label on a server that fails every call and quotes the request headers."""
    from data_tools.label import label_images
    from tests.labeling.conftest import fast_config

    inv = invoice_set(2)
    out = tmp_path / "out"
    plan = FaultPlan(rate=1.0, kinds=("500",), echo_headers=True)
    with OpenAIStub(inv.responder, faults=plan) as stub:
        url = stub.base_url.replace("://", "://carol:letmein77@")
        cfg = fast_config(
            url, inv.folder, out, "client.max_attempts=2",
            "client.api_key=sk-very-secret-1", "client.headers={X-Tenant: tenant-secret-2}",
        )  # fmt: skip
        s = _run(label_images(cfg))
    assert (s.failed, s.exit_code) == (2, 1)
    failures = (out / "failures.jsonl").read_text()
    assert "request headers: authorization: Basic ***; x-tenant: ***" in failures
    written = failures + (out / "summary.json").read_text()
    basic = base64.b64encode(b"carol:letmein77").decode()
    for secret in ("carol", "letmein77", basic, "sk-very-secret-1", "tenant-secret-2"):
        assert secret not in written, secret
