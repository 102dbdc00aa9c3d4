"""The async OpenAI-compatible client: retries, round robin, fatal errors, concurrency."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from data_tools.llm_client import (
    AsyncChatClient,
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
