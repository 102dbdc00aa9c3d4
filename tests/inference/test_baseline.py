"""The OCR + LLM pipeline as the `ocr-llm` backend: stages, cache, faults, resume, exit codes.

The OCR engine is replaced by one that "reads" each test image's gold values (the real
PP-OCRv6 weights run in test_baseline_ocr.py); the LLM is the local OpenAI stub.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest

from data_tools.ppocr import OcrLine
from data_tools.schema import load_schema
from inference.backends import ocr_llm
from inference.backends.ocr_llm import skeleton_for
from inference.ocr_cache import image_sha256
from inference.predict import main
from tests.support.openai_stub import (
    FaultPlan,
    OpenAIStub,
    make_test_image,
    project,
    request_text,
)

FIELDS = [
    {"发票代码": "4400154130", "发票号码": "12271524", "开票日期": "2016年06月12日",
     "购买方": {"名称": "深圳市购机汇网络有限公司"}, "价税合计（小写）": "¥3495.00",
     "货物或应税劳务、服务": [{"名称": "小米 红米 3", "金额": "2987.18"}]},
    {"发票代码": "4400154130", "发票号码": "12270242", "开票日期": "2016年06月12日",
     "购买方": {"名称": "深圳市购机汇网络有限公司"}, "价税合计（小写）": "¥1417.00",
     "货物或应税劳务、服务": [{"名称": "小米 红米 3", "金额": "2987.18"}, {"名称": "折扣", "金额": "-1776.07"}]},
    {"发票代码": "4400154130", "发票号码": "12269558", "开票日期": "2016年06月12日",
     "购买方": {"名称": "深圳市购机汇网络有限公司"}, "价税合计（小写）": "¥3495.00",
     "货物或应税劳务、服务": [{"名称": "小米 红米 3", "金额": "2987.18"}]},
]  # fmt: skip


def _leaves(v: Any) -> list[str]:
    if isinstance(v, dict):
        return [x for k in v for x in _leaves(v[k])]
    if isinstance(v, list):
        return [x for item in v for x in _leaves(item)]
    return [str(v)]


class FakeOcr:
    """'Reads' an image by returning its gold values as lines; counts calls."""

    by_sha: ClassVar[dict[str, dict]] = {}
    calls: ClassVar[int] = 0

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def __call__(self, image: Any) -> list[OcrLine]:
        FakeOcr.calls += 1
        key = image.info.get("source_sha256") or ocr_llm.pixels_sha256(image)
        values = _leaves(FakeOcr.by_sha[key])
        return [
            OcrLine(t, 0.99, (0.0, 30.0 * i, 200.0, 30.0 * i + 20)) for i, t in enumerate(values)
        ]


def truth_responder(body: dict) -> str:
    """Finds the invoice by its number in the OCR text; answers the JSON template."""
    text = request_text(body)
    template = json.loads(text.split("JSON 模板：\n", 1)[1])
    for fields in FIELDS:
        if fields["发票号码"] in text:
            return json.dumps(project(fields, template), ensure_ascii=False)
    return "{}"


@pytest.fixture()
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rows = []
    FakeOcr.by_sha, FakeOcr.calls = {}, 0
    for i, fields in enumerate(FIELDS):
        image = tmp_path / f"inv{i}.jpg"
        make_test_image(image, seed=i)
        FakeOcr.by_sha[image_sha256(image)] = fields
        rows.append(
            {"id": f"inv{i}", "image": f"inv{i}.jpg", "doc_type": "vat_invoice", "fields": fields}
        )
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    monkeypatch.setattr(ocr_llm, "PaddleOcrEngine", FakeOcr)
    return path


def _args(dataset: Path, out: Path, url: str, *extra: str) -> list[str]:
    cache = dataset.parent / "ocr_cache"
    return [
        "--config", "configs/predict/ocr_llm.yaml", "--input", str(dataset), "--out", str(out),
        "--server-url", url, "--api-model", "stub-model", "--concurrency", "2",
        "--timeout-s", "10", "--no-progress", f"backend.ocr.cache_dir={cache}", *extra,
    ]  # fmt: skip


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_stages_faults_cache_and_scoring(dataset: Path, tmp_path: Path) -> None:
    # first call: a 500 (retried), second: prose instead of JSON (a parse failure)
    faults = FaultPlan(script=["500", "invalid_json"], retry_after_s=0.01)
    out = tmp_path / "pred.jsonl"
    with OpenAIStub(truth_responder, faults=faults) as stub:
        assert main(_args(dataset, out, stub.base_url, "--max-attempts", "3")) == 0
        n_calls = stub.stats()["calls"]
    rows = _read(out)
    assert len(rows) == 3 and FakeOcr.calls == 3 and n_calls == 4
    assert sorted(r["parse"]["method"] for r in rows) == ["failed", "strict", "strict"]
    for r in rows:
        gold = FIELDS[int(r["id"][-1])]
        assert r["system"] == "ocr-llm:ppocr-small-onnx+stub-model"
        assert r["prompt"] == "OCR:{}"
        assert set(r["stage_latency_s"]) == {"ocr", "llm"}
        assert r["info"]["ocr"] == {
            "source": "ocr",
            "cache_hit": False,
            "n_lines": len(_leaves(gold)),
        }
        if r["parse"]["method"] == "strict":
            skeleton = load_schema("vat_invoice").skeleton()
            assert r["prediction"] == project(gold, skeleton)
            assert list(r["prediction"]) == list(skeleton)  # every schema key, schema order

    # a second run into another file: the OCR comes from the cache, same OCR time recorded
    out2 = tmp_path / "pred2.jsonl"
    with OpenAIStub(truth_responder) as stub:
        assert main(_args(dataset, out2, stub.base_url, "--system", "baseline")) == 0
    rows2 = {r["id"]: r for r in _read(out2)}
    assert FakeOcr.calls == 3
    assert all(r["info"]["ocr"]["cache_hit"] for r in rows2.values())
    for r in rows:
        assert rows2[r["id"]]["stage_latency_s"]["ocr"] == r["stage_latency_s"]["ocr"]

    # the scorer reads the rows: perfect answers score 1, per-stage latency is reported
    from eval.score import ScoreSettings, score_files

    metrics, _ = score_files(
        [out2], gold_path=dataset, settings=ScoreSettings(bootstrap=0, workers=1)
    )
    (system,) = metrics["systems"].values()
    assert system["overall"]["f1"] == 1.0 and system["overall"]["json_strict_valid_rate"] == 1.0
    assert system["latency"]["stages"]["llm"]["n"] == 3

    # the OCR ceiling from gold + the cache the backend filled
    from eval.ocr_ceiling import run as ceiling

    report = ceiling(dataset, dataset.parent / "ocr_cache", tmp_path / "ceiling")
    assert report["overall"]["share"] == 1.0 and report["n_docs"] == 3


def test_resume_and_partial_prompt(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.jsonl"
    prompt = 'OCR:{"发票号码":"","购买方":{"名称":""}}'
    with OpenAIStub(truth_responder) as stub:
        assert main(_args(dataset, out, stub.base_url, "--query", prompt, "--limit", "2")) == 0
        with out.open("a", encoding="utf-8") as fh:
            fh.write('{"id": "torn')  # an interrupted write
        assert main(_args(dataset, out, stub.base_url, "--query", prompt)) == 0
        user_texts = [request_text(r.body) for r in stub.requests if r.body]
    rows = {r["id"]: r for r in _read(out)}  # appended as they finish (2 in flight)
    assert sorted(rows) == ["inv0", "inv1", "inv2"] and len(_read(out)) == 3
    assert rows["inv2"]["prediction"] == {
        "发票号码": "12269558",
        "购买方": {"名称": "深圳市购机汇网络有限公司"},
    }
    assert len(user_texts) == 3
    assert all(
        re.search(r'JSON 模板：\n\{"发票号码": "", "购买方": \{"名称": ""\}\}', t)
        for t in user_texts
    )


def test_endpoint_down_exits_3_and_the_rerun_completes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.jsonl"
    # nothing listens on port 9: the preflight stops the run before any document
    assert main(_args(dataset, out, "http://127.0.0.1:9/v1")) == 3
    assert not out.exists() or _read(out) == []
    assert not (tmp_path / "pred.failures.jsonl").exists()  # not blamed on the documents
    with OpenAIStub(truth_responder) as stub:  # the server is up: a plain rerun does them all
        assert main(_args(dataset, out, stub.base_url)) == 0
    assert sorted(r["id"] for r in _read(out)) == ["inv0", "inv1", "inv2"]


def test_wrong_key_stops_the_run(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    with OpenAIStub(truth_responder, faults=FaultPlan(api_key="right")) as stub:
        assert main(_args(dataset, out, stub.base_url)) == 3
        assert stub.stats()["calls"] == 0


def test_folder_of_images_without_gold(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.jsonl"
    with OpenAIStub(truth_responder) as stub:
        args = _args(dataset, out, stub.base_url)
        args[args.index("--input") + 1] = str(dataset.parent)
        assert main(args) == 0
    assert sorted(r["id"] for r in _read(out)) == ["inv0", "inv1", "inv2"]


def test_skeleton_for_prompts() -> None:
    schema = load_schema("vat_invoice")
    assert skeleton_for("OCR:{}", schema) == schema.skeleton()
    assert skeleton_for('OCR:{"发票号码":""}', schema) == {"发票号码": ""}


def test_served_through_the_service(dataset: Path) -> None:
    """`make serve` with configs/serve/ocr_llm.yaml answers /v1/extract (LLM = the stub)."""
    import base64

    import httpx

    from data_tools.config import load_config
    from inference.extractor import Extractor
    from inference.serving.app import create_app
    from inference.serving.config import ServeConfig
    from tests.hostile.servers import serving

    image = dataset.parent / "inv1.jpg"
    with OpenAIStub(truth_responder) as stub:
        cfg = load_config(
            ServeConfig,
            "configs/serve/ocr_llm.yaml",
            [
                ("backend.endpoint.base_urls", [stub.base_url]),
                ("backend.ocr.cache_dir", None),
                ("auth.api_key_env", None),
            ],
        )
        ex = Extractor.from_config(cfg.backend, image_options=cfg.image, schema=cfg.schema)
        # the service reads uploads, not files: the fake OCR finds the invoice by its pixels
        from PIL import Image

        with Image.open(image) as im:
            FakeOcr.by_sha[ocr_llm.pixels_sha256(ex.prepare(im.copy()).image)] = FIELDS[1]
        with serving(create_app(ex, cfg)) as server:
            body = {"image": base64.b64encode(image.read_bytes()).decode(), "fields": ["发票号码"]}
            r = httpx.post(f"{server.url}/v1/extract", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["fields"] == {"发票号码": "12270242"}


def test_pdf_text_layer_is_used_instead_of_ocr(dataset: Path, tmp_path: Path) -> None:
    from PIL import Image

    from tests.support.make_documents import TextItem, write_pdf

    d = tmp_path / "pdfs"
    d.mkdir()
    gold = FIELDS[2]
    lines = [TextItem(v, 10, 10 + 6 * i, 3.5) for i, v in enumerate(_leaves(gold))]
    write_pdf(d / "e-invoice.pdf", [Image.new("RGB", (480, 280), "white")], texts=[lines])
    out = tmp_path / "pred.jsonl"
    with OpenAIStub(truth_responder) as stub:
        args = _args(dataset, out, stub.base_url)
        args[args.index("--input") + 1] = str(d)
        assert main(args) == 0
        (body,) = [r.body for r in stub.requests if r.body]
    (row,) = _read(out)
    assert FakeOcr.calls == 0  # the PDF's own text, no OCR
    assert row["id"] == "e-invoice#p1" and row["page"] == 1
    assert row["info"]["ocr"]["source"] == "text_layer:pdf"
    assert gold["发票号码"] in request_text(body)
    assert row["prediction"]["发票号码"] == gold["发票号码"]
