"""Requests → prompts, and the extractor's parse report, on scripted backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from data_tools.schema import load_schema
from inference.backends import Backend, BackendConfig, Generation, GenerationOptions
from inference.extractor import Extractor, QueryError, query_from_text, resolve_query
from inference.imaging import ImageOptions

SMALL = ImageOptions(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)


class Scripted(Backend):
    """Answers a fixed text and remembers what it was given."""

    name = "scripted"

    def __init__(self, text: str, finish: str | None = "stop", n_tokens: int | None = None):
        super().__init__(GenerationOptions(max_new_tokens=50))
        self.text, self.finish, self.n_tokens = text, finish, n_tokens
        self.seen: list[tuple[tuple[int, int], str]] = []

    def _generate(self, image: Image.Image, prompt: str) -> Generation:
        self.seen.append((image.size, prompt))
        return Generation(self.text, self.finish, self.n_tokens, {"completion_tokens": 3})


def test_resolve_query_forms() -> None:
    schema = load_schema("vat_invoice")
    assert resolve_query(None) == ("OCR:{}", {})
    prompt, request = resolve_query({"购买方": {"名称": ""}})
    assert prompt == 'OCR:{"购买方":{"名称":""}}' and request == {"购买方": {"名称": ""}}
    # a list of keys gets type-aware placeholders from the schema, in the given order
    prompt, request = resolve_query(["货物或应税劳务、服务", "发票号码", "购买方"], schema)
    assert request == {"货物或应税劳务、服务": [], "发票号码": "", "购买方": {}}
    assert prompt == 'OCR:{"货物或应税劳务、服务":[],"发票号码":"","购买方":{}}'
    # a raw prompt is sent verbatim; its request is parsed back when it has one
    assert resolve_query('OCR:{"发票号码":""}') == ('OCR:{"发票号码":""}', {"发票号码": ""})
    assert resolve_query("OCR:") == ("OCR:", None)
    for bad in ({"a": 1}, ["a", "a"], [], "  ", 42):
        with pytest.raises(QueryError):
            resolve_query(bad)  # type: ignore[arg-type]


def test_query_from_text() -> None:
    assert query_from_text("发票号码, 开票日期") == ["发票号码", "开票日期"]
    assert query_from_text("发票号码，开票日期") == ["发票号码", "开票日期"]
    assert query_from_text('["发票号码"]') == ["发票号码"]
    assert query_from_text('{"购买方":{}}') == {"购买方": {}}
    assert query_from_text('OCR:{"发票号码":""}') == 'OCR:{"发票号码":""}'
    with pytest.raises(QueryError):
        query_from_text("{not json")


def test_extract_reports_strict_parse_and_sizes(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    Image.new("RGB", (300, 200), "white").save(img)
    backend = Scripted('{"发票号码": "12345678"}')
    ex = Extractor(backend, image_options=SMALL, schema="vat_invoice")
    r = ex.extract(img, ["发票号码"])
    assert r.prompt == 'OCR:{"发票号码":""}'
    assert r.fields == {"发票号码": "12345678"}
    assert r.parse.method == "strict" and not r.parse.truncated
    assert r.image_size == (300, 200)
    w, h = r.model_image_size
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 28 * 28 * 64
    assert backend.seen == [((w, h), 'OCR:{"发票号码":""}')]
    d = r.to_dict()
    assert d["parse"]["method"] == "strict" and d["latency_s"] >= 0
    assert set(d["timings"]) == {"prepare_s", "generate_s", "parse_s"}


@pytest.mark.parametrize(
    ("text", "finish", "n_tokens", "method", "truncated", "dups"),
    [
        ('```json\n{"a": "1"}\n```', "stop", None, "embedded", False, []),
        ('{"a": "1", "b": "2', "length", None, "repaired", True, []),
        ('{"a": "1", "b": "2"}', None, 50, "strict", True, []),  # budget used up
        ('{"a": "1", "a": "2"}', "stop", None, "strict", False, ["a"]),
        ("sorry, cannot read", "stop", None, "failed", False, []),
    ],
)
def test_parse_report_cases(text, finish, n_tokens, method, truncated, dups) -> None:  # type: ignore[no-untyped-def]
    ex = Extractor(Scripted(text, finish, n_tokens), image_options=SMALL, schema=None)
    r = ex.extract(Image.new("RGB", (100, 100)), {"a": ""})
    assert r.parse.method == method
    assert r.parse.truncated is truncated
    assert r.parse.duplicate_keys == dups
    assert r.raw_output == text


def test_aextract_matches_extract() -> None:
    ex = Extractor.from_config(BackendConfig(backend="fake"), image_options=SMALL)
    image = Image.new("RGB", (120, 90), "white")
    sync = ex.extract(image, ["发票号码", "购买方"])
    asyn = asyncio.run(ex.aextract(image, ["发票号码", "购买方"]))
    assert sync.prompt == asyn.prompt
    assert sync.fields == asyn.fields == {"发票号码": "", "购买方": {}}


def test_backend_config_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        BackendConfig(backend="tensorrt")
    with pytest.raises(ValueError, match="unknown key"):
        BackendConfig.from_dict({"backend": "fake", "modeldir": "x"})


def test_several_prompts_share_one_preparation(monkeypatch: pytest.MonkeyPatch) -> None:
    import inference.imaging as imaging

    calls = []
    real = imaging.prepare_opened
    monkeypatch.setattr(imaging, "prepare_opened", lambda *a, **k: calls.append(1) or real(*a, **k))
    backend = Scripted('{"a": "1"}')
    ex = Extractor(backend, image_options=SMALL, schema=None)
    image = Image.new("RGB", (300, 200), "white")
    results = ex.extract_many(image, [{"a": ""}, {"b": ""}, None])
    assert [r.prompt for r in results] == ['OCR:{"a":""}', 'OCR:{"b":""}', "OCR:{}"]
    assert len(calls) == 1 and len(backend.seen) == 3
    out = asyncio.run(ex.aextract_many(image, [{"a": ""}, {"a": 1}]))
    assert len(calls) == 2  # once more for the second image
    assert out[0].fields == {"a": "1"} and isinstance(out[1], QueryError)


def test_no_resize_for_a_backend_that_ignores_the_pixels() -> None:
    image = Image.new("RGB", (1601, 999), "white")
    fake = Extractor.from_config(BackendConfig(backend="fake"), image_options=SMALL)
    assert fake.prepare(image).size == (1601, 999)  # decoded and checked, not resized
    scripted = Extractor(Scripted("{}"), image_options=SMALL, schema=None)
    w, h = scripted.prepare(image).size
    assert w % 28 == 0 and h % 28 == 0 and w * h <= 28 * 28 * 64
