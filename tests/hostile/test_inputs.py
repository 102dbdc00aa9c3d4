"""Hostile request bodies: deep, long, surrogate and malformed JSON, odd tokens and images.

Every case must be a 4xx naming what was wrong (never a 500), answered on the same
keep-alive connection, with the service healthy afterwards.
"""

from __future__ import annotations

import base64
import json
import logging

import httpx
import pytest

from inference.backends import Backend, Generation, GenerationOptions
from inference.extractor import Extractor
from inference.imaging import ImageOptions
from tests.hostile.servers import SMALL, make_service, png_bytes, serving

B64 = base64.b64encode(png_bytes()).decode()


def _raw_json(text: str) -> dict:
    return {
        "content": text.encode("utf-8", "surrogatepass"),
        "headers": {"content-type": "application/json"},
    }


def _nest(depth: int) -> dict:
    d: dict = {"a": ""}
    for _ in range(depth):
        d = {"a": d}
    return d


CASES = [
    # (name, request kwargs, status, error code)
    (
        "deep body",
        _raw_json('{"image": "x", "request": ' + "[" * 5000 + "]" * 5000 + "}"),
        400,
        "invalid_json",
    ),
    ("deep request", {"json": {"image": B64, "request": _nest(40)}}, 400, "invalid_json"),
    (
        "deep fields text",
        {"json": {"image": B64, "fields": "[" * 900 + "]" * 900}},
        400,
        "invalid_query",
    ),
    (
        "deep request text",
        {"json": {"image": B64, "request": "[" * 1500}},
        400,
        "invalid_query",
    ),
    (
        "5000-digit number",
        _raw_json('{"image": "x", "request": {"a": ' + "9" * 5000 + "}}"),
        400,
        "invalid_json",
    ),
    (
        "lone surrogate prompt",
        _raw_json('{"image": "' + B64 + '", "prompt": "OCR:{\\"\\ud800\\":\\"\\"}"}'),
        400,
        "invalid_text",
    ),
    (
        "lone surrogate field",
        _raw_json('{"image": "' + B64 + '", "fields": ["\\udfff"]}'),
        400,
        "invalid_text",
    ),
    (
        "lone surrogate key",
        _raw_json('{"image": "' + B64 + '", "request": {"\\ud83d": ""}}'),
        400,
        "invalid_text",
    ),
    (
        "surrogate unknown key",
        _raw_json('{"image": "' + B64 + '", "\\ud800": 1}'),
        400,
        "invalid_text",
    ),
    (
        "not UTF-8",
        {"content": b'{"image": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
        400,
        "invalid_json",
    ),
    ("long prompt", {"json": {"image": B64, "prompt": "OCR:" + "x" * 50_000}}, 413, "too_long"),
    (
        "many keys",
        {"json": {"image": B64, "fields": [f"k{i}" for i in range(1000)]}},
        413,
        "too_many_keys",
    ),
    ("long key", {"json": {"image": B64, "fields": ["k" * 1000]}}, 413, "too_long"),
    (
        "prompt over chars after building",
        {"json": {"image": B64, "fields": [f"字段{i:03d}" for i in range(250)]}},
        413,
        "prompt_too_long",
    ),
    ("image not a string", {"json": {"image": {"a": 1}}}, 400, "invalid_image"),
    ("image non-ASCII", {"json": {"image": "图片" * 10}}, 400, "invalid_image"),
    ("array body", {"json": [1, 2, 3]}, 400, "invalid_json"),
    ("fields wrong type", {"json": {"image": B64, "fields": [1, 2]}}, 400, "invalid_query"),
    ("request wrong type", {"json": {"image": B64, "request": [1]}}, 400, "invalid_query"),
    (
        "ppm image",
        {"json": {"image": base64.b64encode(png_bytes(fmt="PPM")).decode()}},
        400,
        "invalid_image",
    ),
    (
        "percent data url",
        {"json": {"image": "data:image/png,%89PNG%0D%0A%1A%0A%00%00"}},
        400,
        "invalid_image",
    ),
    (
        "file url with host",
        {"json": {"image": "file://evil.example/etc/passwd"}},
        403,
        "url_not_allowed",
    ),
]


def test_hostile_bodies_are_4xx_on_one_connection(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = make_service()
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        caplog.set_level(logging.INFO, logger="inference.serve")
        for name, kwargs, status, code in CASES:
            caplog.clear()
            r = c.post("/v1/extract", **kwargs)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (
                name,
                r.text[:300],
            )
            rid = r.headers["x-request-id"]
            lines = [rec.getMessage() for rec in caplog.records if rec.name == "inference.serve"]
            assert any(rid in line for line in lines), (name, lines)  # one line, with the id
            assert all("Traceback" not in line for line in lines)
            assert not any(rec.exc_info for rec in caplog.records), name
        # a 28x2800 strip is a valid image: answered, not a 500
        strip = base64.b64encode(png_bytes((28, 2800))).decode()
        r = c.post("/v1/extract", json={"image": strip, "fields": ["发票号码"]})
        assert r.status_code == 200, r.text
        assert c.get("/health").json()["status"] == "ok"
        assert app.guard.opened_total == 1  # every answer kept the connection alive


def test_chat_hostile_payloads() -> None:
    app, _ = make_service()
    url = "data:image/png;base64," + B64
    cases = [
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 100}]},
        {"messages": [{"role": "user", "content": "OCR:{}"}] * 100},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": "OCR:" + "y" * 10_000},
                    ],
                }
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
                        {"type": "text", "text": "OCR:{}"},
                    ],
                }
            ]
        },
    ]
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for body in cases:
            r = c.post("/v1/chat/completions", json=body)
            assert 400 <= r.status_code < 500, r.text
        r = c.post(
            "/v1/chat/completions",
            content=b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
            headers={"content-type": "application/json"},
        )
        assert 400 <= r.status_code < 500
        assert app.guard.opened_total == 1


def test_non_ascii_bearer_token_and_docs_behind_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIE_HOSTILE_KEY", "s3cret-ключ")
    app, _ = make_service(auth={"api_key_env": "KIE_HOSTILE_KEY"})
    body = {"image": B64}
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for value in (b"Bearer \xe9\xffx", "Bearer ключ".encode(), b"Bearer", b"\xff"):
            r = c.post("/v1/extract", json=body, headers={"Authorization": value})
            assert r.status_code == 401, (value, r.text)
        good = "Bearer s3cret-ключ".encode()
        assert c.post("/v1/extract", json=body, headers={"Authorization": good}).status_code == 200
        assert c.get("/docs").status_code == 401
        assert c.get("/openapi.json").status_code == 401
        assert c.get("/openapi.json", headers={"Authorization": good}).status_code == 200
        assert c.get("/health").status_code == 200


def test_secrets_never_reach_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KIE_HOSTILE_KEY", "topsecret-123")
    make_service(auth={"api_key_env": "KIE_HOSTILE_KEY"})
    caplog.set_level(logging.INFO)
    log = logging.getLogger("inference.serve")
    log.info("upstream http://user:pw@host/v1 with key topsecret-123 and Authorization: Bearer abc")
    text = caplog.text
    assert "topsecret-123" not in text and "user:pw" not in text and "Bearer abc" not in text
    assert "***" in text


def test_multipart_hostile_parts() -> None:
    app, _ = make_service()
    img = png_bytes()
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/extract", files={"image": ("a.png", img)}, data={"prompt": "票" * 20_000})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "too_long")
        assert "max_prompt_chars" in r.json()["error"]["message"]
        r = c.post(
            "/v1/extract",
            files=[("image", ("a.png", img)), ("image", ("b.png", img))],
        )
        assert 400 <= r.status_code < 500
        r = c.post(
            "/v1/extract",
            content=b'--xx\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc',
            headers={"content-type": "multipart/form-data; boundary=xx"},
        )
        assert 400 <= r.status_code < 500, r.text
        r = c.post("/v1/extract", files={"image": ("a.png", img)}, data={"fields": "[" * 900})
        assert r.status_code == 400
        assert app.guard.opened_total == 1


class PixelReader(Backend):
    """A local model that looks at the pixels it gets."""

    name = "pixels"

    def _generate(self, image, prompt):  # type: ignore[no-untyped-def]
        return Generation(json.dumps({"发票号码": str(image.getpixel((0, 0)))}), "stop")


def test_an_image_already_on_the_grid_reaches_the_model_intact() -> None:
    ex = Extractor(PixelReader(GenerationOptions()), image_options=ImageOptions(**SMALL))
    app, _ = make_service(extractor=ex)
    on_grid = base64.b64encode(png_bytes((28 * 8, 28 * 6))).decode()  # no resize needed
    resized = base64.b64encode(png_bytes((301, 199))).decode()
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for img in (on_grid, resized):
            r = c.post("/v1/extract", json={"image": img, "fields": ["发票号码"]})
            assert r.status_code == 200, r.text
            assert r.json()["fields"] == {"发票号码": "(240, 240, 230)"}


class Surrogates(Backend):
    """A model whose output holds a lone surrogate escape and a 5000-digit number."""

    name = "surrogates"

    def _generate(self, image, prompt):  # type: ignore[no-untyped-def]
        if "发票号码" in prompt:
            return Generation('{"发票号码": "\\ud800x"}', "stop")
        return Generation('{"发票号码": ' + "9" * 5000 + "}", "stop")


def test_hostile_model_output_is_answered_not_500() -> None:
    ex = Extractor(Surrogates(GenerationOptions()), image_options=ImageOptions(**SMALL))
    app, _ = make_service(extractor=ex)
    with serving(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/extract", json={"image": B64, "fields": ["发票号码"]})
        assert r.status_code == 200, r.text
        assert b"\\ud800x" in r.content  # valid JSON: the escape, not broken UTF-8
        assert r.json()["fields"] == {"发票号码": "\ud800x"}
        r = c.post("/v1/extract", json={"image": B64, "fields": ["开票日期"]})
        assert r.status_code == 200
        assert r.json()["parse"]["method"] == "failed"
        assert "number literal" in r.json()["parse"]["error"]
