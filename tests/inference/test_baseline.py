"""The OCR + LLM baseline: LLM stage against a local OpenAI-compatible stub, OCR cache,
resume, and the OCR-ceiling logic. OCR here is a fake engine; real PP-OCRv6 runs in
test_baseline_ocr.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from data_tools.llm_client import FatalLLMError
from data_tools.ppocr import OcrLine
from data_tools.schema import load_schema
from inference.baseline import (
    BaselineConfig,
    OcrText,
    run_baseline,
    skeleton_for,
    value_in_ocr,
)
from tests.support.openai_stub import (
    FaultPlan,
    OpenAIStub,
    StubReply,
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

    def __init__(self, by_image: dict[str, dict]) -> None:
        self.by_image = by_image
        self.calls = 0

    def __call__(self, image: Path) -> list[OcrLine]:
        self.calls += 1
        values = _leaves(self.by_image[image.name])
        return [
            OcrLine(t, 0.99, (0.0, 30.0 * i, 200.0, 30.0 * i + 20)) for i, t in enumerate(values)
        ]


def truth_responder(body: dict) -> str | StubReply:
    """Finds the invoice by its number in the OCR text; answers the JSON template."""
    text = request_text(body)
    template = json.loads(text.split("JSON 模板：\n", 1)[1])
    for fields in FIELDS:
        if fields["发票号码"] in text:
            return json.dumps(project(fields, template), ensure_ascii=False)
    return "{}"


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    rows = []
    for i, fields in enumerate(FIELDS):
        make_test_image(tmp_path / f"inv{i}.jpg", seed=i)
        rows.append(
            {"id": f"inv{i}", "image": f"inv{i}.jpg", "doc_type": "vat_invoice", "fields": fields}
        )
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _config(url: str, tmp: Path) -> BaselineConfig:
    cfg = BaselineConfig()
    cfg.llm.base_urls = [url]
    cfg.llm.model = "stub-model"
    cfg.llm.concurrency = 2
    cfg.llm.timeout_s = 10
    cfg.ocr.cache_dir = str(tmp / "ocr_cache")
    return cfg


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_llm_stage_with_faults_cache_and_scoring(dataset: Path, tmp_path: Path) -> None:
    engine = FakeOcr({f"inv{i}.jpg": f for i, f in enumerate(FIELDS)})
    # first call: a 500 (retried), second: prose instead of JSON (a parse failure)
    faults = FaultPlan(script=["500", "invalid_json"], retry_after_s=0.01)
    out = tmp_path / "pred.jsonl"
    with OpenAIStub(truth_responder, faults=faults) as stub:
        cfg = _config(stub.base_url, tmp_path)
        cfg.llm.max_attempts = 3
        report = run_baseline(dataset, out, cfg, engine=engine)
        n_calls = stub.stats()["calls"]
    rows = _read(out)
    assert len(rows) == 3 and engine.calls == 3 and n_calls == 4
    by_method = sorted(r["parse"]["method"] for r in rows)
    assert by_method == ["failed", "strict", "strict"]
    for r in rows:
        assert r["system"] == "ppocr-small-onnx+stub-model"
        assert r["prompt"] == "OCR:{}"
        assert set(r["stage_latency_s"]) == {"ocr", "llm"}
        assert r["latency_s"] == pytest.approx(
            r["stage_latency_s"]["ocr"] + r["stage_latency_s"]["llm"], abs=1e-3
        )
        assert r["ocr"] == {"cache_hit": False, "n_lines": len(_leaves(FIELDS[int(r["id"][-1])]))}
        if r["parse"]["method"] == "strict":
            skeleton = load_schema("vat_invoice").skeleton()
            assert r["prediction"] == project(FIELDS[int(r["id"][-1])], skeleton)
            assert list(r["prediction"]) == list(skeleton)  # every schema key, schema order
    # the fake OCR holds every gold value: the ceiling is 1 everywhere
    assert report["overall"]["share"] == 1.0
    assert (tmp_path / "pred.jsonl.ocr_ceiling.md").is_file()

    # second run: OCR comes from the cache (no engine call), same OCR time recorded
    out2 = tmp_path / "pred2.jsonl"
    with OpenAIStub(truth_responder) as stub:
        run_baseline(dataset, out2, _config(stub.base_url, tmp_path), engine=engine)
    rows2 = {r["id"]: r for r in _read(out2)}
    assert engine.calls == 3
    assert all(r["ocr"]["cache_hit"] for r in rows2.values())
    for r in rows:
        assert rows2[r["id"]]["stage_latency_s"]["ocr"] == r["stage_latency_s"]["ocr"]

    # the scorer reads the baseline's file: perfect answers score 1
    from eval.score import ScoreSettings, score_files

    metrics, _ = score_files(
        [out2], gold_path=dataset, settings=ScoreSettings(bootstrap=0, workers=1)
    )
    o = metrics["systems"]["pred2"]["overall"]
    assert o["f1"] == 1.0 and o["json_strict_valid_rate"] == 1.0
    assert metrics["systems"]["pred2"]["latency"]["stages"]["llm"]["n"] == 3


def test_resume_and_partial_prompt(dataset: Path, tmp_path: Path) -> None:
    engine = FakeOcr({f"inv{i}.jpg": f for i, f in enumerate(FIELDS)})
    out = tmp_path / "pred.jsonl"
    with OpenAIStub(truth_responder) as stub:
        cfg = _config(stub.base_url, tmp_path)
        cfg.prompt = 'OCR:{"发票号码":"","购买方":{"名称":""}}'
        run_baseline(dataset, out, cfg, engine=engine, limit=2)
        with out.open("a", encoding="utf-8") as fh:
            fh.write('{"id": "torn')  # an interrupted write
        run_baseline(dataset, out, cfg, engine=engine)
        user_texts = [request_text(r.body) for r in stub.requests if r.body]
    rows = _read(out)
    assert [r["id"] for r in rows] == ["inv0", "inv1", "inv2"]
    assert rows[2]["prediction"] == {
        "发票号码": "12269558",
        "购买方": {"名称": "深圳市购机汇网络有限公司"},
    }
    assert len(user_texts) == 3
    assert all(
        re.search(r'JSON 模板：\n\{"发票号码": "", "购买方": \{"名称": ""\}\}', t)
        for t in user_texts
    )


def test_wrong_key_stops_the_run(dataset: Path, tmp_path: Path) -> None:
    engine = FakeOcr({f"inv{i}.jpg": f for i, f in enumerate(FIELDS)})
    with (
        OpenAIStub(truth_responder, faults=FaultPlan(api_key="right")) as stub,
        pytest.raises(FatalLLMError),
    ):
        run_baseline(dataset, tmp_path / "p.jsonl", _config(stub.base_url, tmp_path), engine=engine)


def test_skeleton_for_prompts() -> None:
    schema = load_schema("vat_invoice")
    assert skeleton_for("OCR:{}", schema) == schema.skeleton()
    assert skeleton_for('OCR:{"发票号码":""}', schema) == {"发票号码": ""}


def _ocr(*texts: str) -> OcrText:
    return OcrText.from_lines(
        [OcrLine(t, 1.0, (0.0, 20.0 * i, 10.0, 20.0 * i + 10)) for i, t in enumerate(texts)]
    )


def test_value_in_ocr() -> None:
    ocr = _ocr(
        "价税合计(大写)  叁仟肆佰玖拾伍圆整  (小写)  ￥3495.00",
        "开票日期：  2016年06月12日",
        "小米红米3全网通版时尚金色  红米3  个  5  597.43589744  2987.18  17%  507.82",
        "移动联通电信4G手机双卡双待",
        "名  称：  深圳市购机汇网络有限公司",
    )
    assert value_in_ocr("¥3495.00", "amount", ocr)  # full-width ￥, typed match
    assert value_in_ocr("3,495", "amount", ocr)
    assert value_in_ocr("2016-06-12", "date", ocr)
    assert value_in_ocr("0.17", "percent", ocr)
    assert value_in_ocr("叁仟肆佰玖拾伍圆整", "amount_in_words", ocr)
    assert value_in_ocr("深圳市购机汇网络有限公司", "text", ocr)
    # a name wrapped over two printed lines: every piece inside one OCR line
    assert value_in_ocr("小米 红米 3 全网通版 时尚金色 移动联通电信4G手机 双卡双待", "text", ocr)
    assert not value_in_ocr("深圳市龙华新区", "text", ocr)
    assert not value_in_ocr("¥1417.00", "amount", ocr)
