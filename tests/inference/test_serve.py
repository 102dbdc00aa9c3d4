"""The HTTP service: endpoints, limits, metrics, a 500-request load test, the real tiny model."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from inference.backends import Backend, Generation, GenerationOptions
from inference.extractor import Extractor
from inference.imaging import ImageOptions
from inference.serving.config import ConfigError, ServeConfig
from inference.serving.loadgen import plan_requests, png_bomb, run_load
from tests.hostile.servers import REPO, SMALL, make_service, png_bytes, serving


def chat_body(image: bytes, prompt: str) -> dict:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]
    return {"model": "kie", "messages": [{"role": "user", "content": content}]}


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Slow(Backend):
    """Blocks until released (for the busy and timeout tests)."""

    name = "slow"

    def __init__(self) -> None:
        super().__init__(GenerationOptions())
        self.release = threading.Event()

    def _generate(self, image: Image.Image, prompt: str) -> Generation:
        self.release.wait(10)
        return Generation('{"发票号码": "1"}', "stop")


# ---------------------------------------------------------------- endpoints


def test_extract_json_multipart_and_chat() -> None:
    app, _ = make_service()
    img = png_bytes()
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post(
            "/v1/extract",
            json={"image": base64.b64encode(img).decode(), "fields": ["发票号码", "购买方"]},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["fields"] == {"发票号码": "", "购买方": {}}
        assert body["prompt"] == 'OCR:{"发票号码":"","购买方":{}}'
        assert body["parse"]["method"] == "strict" and body["raw_output"]
        assert body["latency_s"] >= 0 and body["image_size"] == [160, 120]

        r = c.post(
            "/v1/extract",
            json={
                "image": "data:image/png;base64," + base64.b64encode(img).decode(),
                "request": {"购买方": {"名称": ""}},
            },
        )
        assert r.status_code == 200 and r.json()["fields"] == {"购买方": {"名称": ""}}

        r = c.post(
            "/v1/extract",
            json={"image": base64.b64encode(img).decode(), "prompt": 'OCR:{"开票日期":""}'},
        )
        assert r.json()["prompt"] == 'OCR:{"开票日期":""}'

        r = c.post(
            "/v1/extract",
            files={"image": ("a.png", img, "image/png")},
            data={"fields": "发票号码，开票日期"},
        )
        assert r.status_code == 200 and r.json()["fields"] == {"发票号码": "", "开票日期": ""}

        r = c.post("/v1/extract", files={"image": ("a.png", img, "image/png")})
        assert r.status_code == 200 and r.json()["prompt"] == "OCR:{}"

        r = c.post("/v1/chat/completions", json=chat_body(img, 'OCR:{"发票号码":""}'))
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["object"] == "chat.completion"
        assert json.loads(out["choices"][0]["message"]["content"]) == {"发票号码": ""}
        assert out["kie"]["parse"]["method"] == "strict"

        health = c.get("/health").json()
        assert health["status"] == "ok" and health["backend"] == "fake"
        text = c.get("/metrics").text
        assert metric(text, "kie_requests_total", endpoint="/v1/extract", status="200") == 5
        assert (
            metric(text, "kie_requests_total", endpoint="/v1/chat/completions", status="200") == 1
        )
        assert metric(text, "kie_request_latency_seconds_count", endpoint="/v1/extract") == 5
        assert metric(text, "kie_parse_total", method="strict") == 6


def test_malformed_requests_get_4xx() -> None:
    app, _ = make_service(limits={"max_body_bytes": 400_000})
    img = png_bytes()
    b64 = base64.b64encode(img).decode()
    cases = [
        ({"json": {"image": "not base64 !!"}}, 400, "invalid_image"),
        ({"json": {"image": base64.b64encode(b"hello").decode()}}, 400, "invalid_image"),
        ({"json": {"image": base64.b64encode(png_bomb()).decode()}}, 413, "image_too_large"),
        ({"json": {"image": "file:///etc/passwd"}}, 403, "url_not_allowed"),
        ({"json": {"image": "https://example.com/a.png"}}, 403, "url_not_allowed"),
        ({"json": {"image": "A" * 500_000}}, 413, "body_too_large"),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "invalid_json",
        ),
        (
            {"content": b"image=1", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"json": {"image": b64, "fields": ["a"], "prompt": "OCR:{}"}}, 400, "invalid_query"),
        ({"json": {"image": b64, "request": {"a": 1}}}, 400, "invalid_query"),
        ({"json": {"image": b64, "colour": "red"}}, 400, "invalid_request"),
        ({"json": {"fields": ["a"]}}, 400, "invalid_image"),
    ]
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for kwargs, status, code in cases:
            r = c.post("/v1/extract", **kwargs)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (
                kwargs.get("json", ""),
                r.text,
            )

        # chunked upload without Content-Length is capped too
        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(30):
                yield b"A" * 20_000

        r = c.post("/v1/extract", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        bad_chat = [
            {"model": "m", "messages": "hi"},
            {"model": "m", "messages": [{"role": "user", "content": "OCR:{}"}]},  # no image
            {**chat_body(img, "OCR:{}"), "stream": True},
            chat_body(img, ""),
        ]
        for body in bad_chat:
            assert c.post("/v1/chat/completions", json=body).status_code == 400
        r = c.post(
            "/v1/chat/completions",
            json=chat_body(img, "OCR:{}")
            | {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
                            {"type": "text", "text": "OCR:{}"},
                        ],
                    }
                ]
            },
        )
        assert r.status_code == 403
        assert c.get("/nope").status_code == 404
        assert c.get("/v1/extract").status_code == 405
        assert c.get("/health").json()["status"] == "ok"


def test_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIE_TEST_KEY", "s3cret")
    app, cfg = make_service(auth={"api_key_env": "KIE_TEST_KEY", "protect_metrics": True})
    assert cfg.auth.resolve() == "s3cret"
    body = {"image": base64.b64encode(png_bytes()).decode()}
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/extract", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (
            c.post("/v1/extract", json=body, headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        assert (
            c.post("/v1/extract", json=body, headers={"Authorization": "Bearer s3cret"}).status_code
            == 200
        )
        assert c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200


def test_busy_503_with_retry_after_and_timeout_504() -> None:
    slow = Slow()
    ex = Extractor(slow, image_options=ImageOptions(**SMALL))
    app, _ = make_service(
        extractor=ex,
        limits={"max_concurrency": 1, "max_queue": 0, "request_timeout_s": 1.0, "retry_after_s": 3},
    )
    body = {"image": base64.b64encode(png_bytes()).decode(), "fields": ["发票号码"]}
    with serving(app) as s:

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as c:
                first = asyncio.create_task(c.post("/v1/extract", json=body))
                await asyncio.sleep(0.3)  # the first one holds the only slot
                second = await c.post("/v1/extract", json=body)
                return await first, second

        first, second = asyncio.run(scenario())
        assert second.status_code == 503 and second.headers["retry-after"] == "3"
        assert second.json()["error"]["code"] == "overloaded"
        assert first.status_code == 504  # the model never answered within 1 s
        slow.release.set()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.post("/v1/extract", json=body).status_code == 200  # healthy again
            text = c.get("/metrics").text
        assert metric(text, "kie_errors_total", kind="busy") == 1
        assert metric(text, "kie_errors_total", kind="timeout") == 1


def test_serve_config_file(tmp_path: Path) -> None:
    for name in ("default.yaml", "openai.yaml", "fake.yaml"):
        ServeConfig.load(REPO / "configs" / "serve" / name)
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits:\n  max_body: 10\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: limits.max_body: unknown key"):
        ServeConfig.load(bad)
    with pytest.raises(ConfigError, match="max_decode_pixels"):
        ServeConfig.from_dict(
            {"image": {"max_image_pixels": 200_000_000}, "limits": {"max_decode_pixels": 1000}}
        )
    with pytest.raises(ConfigError, match="max_buffered_body_bytes"):
        ServeConfig.from_dict({"limits": {"max_buffered_body_bytes": 2048}})


# ---------------------------------------------------------------- load


def test_load_500_requests_concurrency_16_with_10pct_malformed() -> None:
    max_body = 1 << 20
    app, _ = make_service(
        backend={"backend": "fake", "fake_delay_s": 0.005},
        limits={"max_body_bytes": max_body, "max_concurrency": 8, "max_queue": 64},
    )
    image = png_bytes((640, 480))
    plans = plan_requests(image, 500, malformed_ratio=0.1, max_body_bytes=max_body, seed=7)
    with serving(app) as s:
        report = asyncio.run(run_load(s.url, plans, concurrency=16))
        with httpx.Client(base_url=s.url, timeout=30) as c:
            health = c.get("/health").json()
            after = c.post("/v1/extract", json={"image": base64.b64encode(image).decode()})
            text = c.get("/metrics").text
    summary = report.summary()
    print("\nservice load test:", json.dumps(summary, ensure_ascii=False))
    bad = [
        o
        for o in report.outcomes
        if (o.valid and o.status != 200) or (not o.valid and not 400 <= o.status < 500)
    ]
    assert not bad, bad[:5]
    assert summary["valid_ok"] == 450 and summary["malformed_4xx"] == 50
    assert summary["server_errors"] == 0
    assert health["status"] == "ok" and health["in_flight"] == 0 and health["queued"] == 0
    assert after.status_code == 200
    assert (
        metric(text, "kie_requests_total", endpoint="/v1/extract")
        + metric(text, "kie_requests_total", endpoint="/v1/chat/completions")
        == 501
    )
    assert not re.search(r'kie_requests_total\{[^}]*status="5\d\d"', text)


# ---------------------------------------------------------------- the real tiny model


def test_service_through_the_tiny_model(tiny_model_dir: Path, test_images: list[Path]) -> None:
    app, _ = make_service(
        backend={"backend": "paddlex", "model_dir": str(tiny_model_dir), "max_new_tokens": 8}
    )
    img = test_images[0].read_bytes()
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=120) as c:
        r = c.post(
            "/v1/extract", files={"image": ("a.png", img, "image/png")}, data={"fields": "发票号码"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["prompt"] == 'OCR:{"发票号码":""}' and body["backend"] == "paddlex"
        assert body["raw_output"] and body["parse"]["method"] in (
            "strict",
            "embedded",
            "repaired",
            "failed",
        )
        assert body["usage"]["completion_tokens"] <= 10
        r = c.post("/v1/chat/completions", json=chat_body(img, 'OCR:{"开票日期":""}'))
        assert r.status_code == 200, r.text
        chat = r.json()
        assert isinstance(chat["choices"][0]["message"]["content"], str)
        assert chat["choices"][0]["finish_reason"] in ("stop", "length")
        assert chat["usage"]["completion_tokens"] <= 10
        assert chat["kie"]["parse"]["method"] in ("strict", "embedded", "repaired", "failed")
        assert c.post("/v1/extract", json={"image": "!!"}).status_code == 400
        assert c.get("/health").json()["model"].startswith("PaddleOCR-VL-0.9B@")


def test_flags_and_set_overrides() -> None:
    from inference.serve import _parser, config_from_args

    args = _parser().parse_args(
        [
            "--config",
            str(REPO / "configs" / "serve" / "fake.yaml"),
            "--set",
            "limits.max_prompt_chars=3000",
            "--set",
            "image.formats=[PNG]",
            "--max-queue",
            "5",
            "--port",
            "9999",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.limits.max_prompt_chars == 3000 and cfg.limits.max_queue == 5
    assert cfg.image.formats == ("PNG",) and cfg.port == 9999
    assert cfg.backend.backend == "fake"
    bad = _parser().parse_args(["--set", "limits.max_promt_chars=1"])
    with pytest.raises(ConfigError, match="max_prompt_chars"):
        config_from_args(bad)
