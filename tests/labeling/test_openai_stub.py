"""The local OpenAI-compatible stub: answers, faults, concurrency."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from data_tools.llm_client import AsyncChatClient, EndpointConfig, user_message
from tests.support.openai_stub import (
    FaultPlan,
    OpenAIStub,
    TruthResponder,
    make_test_image,
    project,
    request_images,
)

TRUTH = {
    "发票代码": "4400154130",
    "购买方": {"名称": "甲公司", "纳税人识别号": "91X"},
    "items": [{"a": "1", "b": "2"}],
}


def _post(stub: OpenAIStub, body: dict, timeout: float = 10) -> httpx.Response:
    return httpx.post(stub.base_url + "/chat/completions", json=body, timeout=timeout)


def _body(prompt: str, image: bytes | None = None) -> dict:
    return {"model": "m", "messages": [user_message(prompt, [image] if image else [])]}


def test_project_follows_request_order_and_placeholders() -> None:
    req = {"items": [{"b": ""}], "购买方": {"名称": ""}, "missing": {"x": ""}, "m2": []}
    assert project(TRUTH, req) == {
        "items": [{"b": "2"}],
        "购买方": {"名称": "甲公司"},
        "missing": {"x": ""},
        "m2": [],
    }
    assert list(project(TRUTH, req)) == ["items", "购买方", "missing", "m2"]
    assert project(TRUTH, {}) == TRUTH


def test_truth_responder_identifies_reencoded_image(tmp_path: Path) -> None:
    tr = TruthResponder()
    paths = [make_test_image(tmp_path / f"{i}.jpg", i, size=(400, 300)) for i in range(20)]
    for i, p in enumerate(paths):
        tr.add_image(p, {"i": str(i)})
    # shrink + re-encode image 7: the bytes differ, the perceptual hash still finds it
    buf = io.BytesIO()
    Image.open(paths[7]).resize((150, 112)).save(buf, format="JPEG", quality=50)
    assert buf.getvalue() != paths[7].read_bytes()
    with OpenAIStub(tr) as stub:
        r = _post(stub, _body('OCR:{"i":""}', buf.getvalue()))
        assert json.loads(r.json()["choices"][0]["message"]["content"]) == {"i": "7"}
        r = _post(stub, _body('Fill this JSON: {"i": "", "j": []}', paths[3].read_bytes()))
        assert json.loads(r.json()["choices"][0]["message"]["content"]) == {"i": "3", "j": []}
        assert stub.requests[0].body is not None
        assert request_images(stub.requests[0].body) == [buf.getvalue()]
    assert tr.lookups[str(paths[7])] == 1


def test_fault_plan_is_seeded_and_scripted() -> None:
    def seq(seed: int) -> list[str | None]:
        plan = FaultPlan(rate=0.5, seed=seed, script=["401", None])
        return [plan.draw(i, {}, {}) for i in range(40)]

    assert seq(3) == seq(3)
    assert seq(3) != seq(4)
    assert seq(3)[:2] == ["401", None]
    assert {k for k in seq(3)[2:] if k} <= set(FaultPlan().kinds)
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan(kinds=("418",))


@pytest.mark.parametrize(
    ("fault", "status"),
    [("429", 429), ("500", 500), ("503", 503), ("400_image", 400), ("401", 401)],
)
def test_status_faults(fault: str, status: int) -> None:
    with OpenAIStub(lambda b: '{"a": "1"}', faults=FaultPlan(script=[fault])) as stub:
        r = _post(stub, _body("x"))
        assert r.status_code == status
        assert "message" in r.json()["error"]
        if fault == "429":
            assert float(r.headers["retry-after"]) == pytest.approx(0.05)
        assert _post(stub, _body("x")).status_code == 200
        assert stub.stats()["faults"] == {fault: 1}


def test_content_faults() -> None:
    answer = '{"a": "1", "b": "2"}'
    plan = FaultPlan(script=["truncated", "duplicate_keys", "invalid_json", "fenced"])
    with OpenAIStub(lambda b: answer, faults=plan) as stub:
        outs = [_post(stub, _body("x")).json()["choices"][0] for _ in range(4)]
    assert outs[0]["finish_reason"] == "length"
    assert answer.startswith(outs[0]["message"]["content"])
    assert len(outs[0]["message"]["content"]) < len(answer)
    dup = outs[1]["message"]["content"]
    assert dup.count('"a"') == 2
    assert json.loads(dup)["a"] != "1"  # json.loads keeps the wrong, last one
    with pytest.raises(ValueError):
        json.loads(outs[2]["message"]["content"])
    assert outs[3]["message"]["content"].startswith("```json")


def test_hang_makes_the_client_time_out() -> None:
    with OpenAIStub(faults=FaultPlan(script=["hang"], hang_s=5)) as stub:
        t = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            _post(stub, _body("x"), timeout=0.3)
        assert time.monotonic() - t < 2


def test_image_size_limit_and_api_key(tmp_path: Path) -> None:
    big = make_test_image(tmp_path / "big.png", 1, size=(600, 600)).read_bytes()
    plan = FaultPlan(max_image_bytes=1000, api_key="sk-good")
    with OpenAIStub(faults=plan) as stub:
        ok = {"Authorization": "Bearer sk-good"}
        url = stub.base_url + "/chat/completions"
        assert httpx.post(url, json=_body("x")).status_code == 401
        assert httpx.post(url, json=_body("x", big), headers=ok).status_code == 400
        assert httpx.post(url, json=_body("x"), headers=ok).status_code == 200
        recs = stub.requests
        assert "authorization" not in recs[0].headers
        assert recs[2].headers["authorization"] == "<redacted>"  # keys never recorded


def test_streaming_answer() -> None:
    with OpenAIStub(lambda b: '{"k": "一二三四五六"}') as stub:
        body = {**_body("x"), "stream": True}
        text, finish = "", None
        with httpx.stream("POST", stub.base_url + "/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    ch = json.loads(line[6:])["choices"][0]
                    text += ch["delta"].get("content", "")
                    finish = ch["finish_reason"] or finish
    assert text == '{"k": "一二三四五六"}'
    assert finish == "stop"


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_sustains_32_concurrent_slow_calls(mode: str) -> None:
    async def run(stub: OpenAIStub) -> float:
        cfg = EndpointConfig(base_urls=[stub.base_url], model="m", max_attempts=1)
        async with AsyncChatClient(cfg) as c:
            await c.chat([user_message("warm")])
            t = time.monotonic()
            await asyncio.gather(*[c.chat([user_message(str(i))]) for i in range(64)])
            return time.monotonic() - t

    with OpenAIStub(lambda b: "{}", latency_s=0.2, mode=mode) as stub:
        took = asyncio.run(run(stub))
        stats = stub.stats()
        assert len(stub.requests) == 65
    assert stats["max_in_flight"] >= 32
    assert took < 0.8, f"64 parallel 200 ms calls took {took:.2f}s"
