"""End to end: two systems -> metrics.json, report.md, report.html; megemini input."""

from __future__ import annotations

import copy
import gc
import json
import re
from pathlib import Path

import pytest

from eval.score import main

GOLD = [
    {"id": "d1", "image": "d1.jpg", "doc_type": "vat_invoice", "fields": {
        "发票号码": "12271524", "价税合计（小写）": "¥3495.00",
        "购买方": {"名称": "深圳市购机汇网络有限公司"},
        "货物或应税劳务、服务": [{"名称": "红米3", "金额": "2987.18"}, {"名称": "折扣", "金额": "-1776.07"}],
    }, "meta": {"source": "real"}},
    {"id": "d2", "image": "d2.jpg", "doc_type": "vat_invoice", "fields": {
        "发票号码": "12270242", "价税合计（小写）": "¥1417.00",
        "购买方": {"名称": "广州晶东贸易有限公司"}, "货物或应税劳务、服务": [],
    }, "meta": {"source": "synthetic"}},
]  # fmt: skip


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    gold = _write(tmp_path / "gold.jsonl", GOLD)
    perfect = [
        {"id": g["id"], "prompt": "OCR:{}", "raw_output": json.dumps(g["fields"], ensure_ascii=False),
         "latency_s": 1.0 + i, "stage_latency_s": {"ocr": 0.5, "llm": 0.5 + i}}
        for i, g in enumerate(GOLD)
    ]  # fmt: skip
    noisy_fields = copy.deepcopy(GOLD[0]["fields"])
    noisy_fields["价税合计（小写）"] = "3495"  # same amount: TP after normalisation
    noisy_fields["购买方"]["名称"] = "深圳市购机汇网络有限公"  # WRONG
    noisy_fields["货物或应税劳务、服务"].reverse()  # order does not matter
    noisy_fields["备注"] = "invented"  # HALLUCINATED
    noisy = [
        {"id": "d1", "prompt": "OCR:{}", "raw_output": "```json\n" + json.dumps(noisy_fields, ensure_ascii=False) + "\n```", "latency_s": 2.0},
        {"id": "d2", "prompt": "OCR:{}", "raw_output": '{"发票号码": "12270242", "价税合计（小写）": "¥1417', "finish_reason": "length", "latency_s": 9.0},
        {"id": "d1", "prompt": 'OCR:{"发票号码":""}', "raw_output": '{"发票号码": "12271524", "extra": "x"}', "latency_s": 0.5},
    ]  # fmt: skip
    return {
        "gold": gold,
        "perfect": _write(tmp_path / "perfect.jsonl", perfect),
        "noisy": _write(tmp_path / "noisy.jsonl", noisy),
        "out": tmp_path / "report",
    }


def test_two_systems_report(files: dict[str, Path]) -> None:
    rc = main([
        "--gold", str(files["gold"]), "--pred", str(files["perfect"]), "--pred", str(files["noisy"]),
        "--out-dir", str(files["out"]), "--bootstrap", "200", "--workers", "1",
    ])  # fmt: skip
    assert rc == 0
    m = json.loads((files["out"] / "metrics.json").read_text("utf-8"))
    assert m["schema_version"] == 1
    assert set(m["systems"]) == {"perfect", "noisy"}  # named after the files
    p, n = m["systems"]["perfect"], m["systems"]["noisy"]
    for name in (
        "f1",
        "precision",
        "recall",
        "kie_accuracy",
        "donut_f1",
        "anls_star",
        "exact_match",
    ):
        assert p["overall"][name] == 1.0, name
    assert p["overall"]["json_strict_valid_rate"] == 1.0
    # noisy, d1 full prompt (fenced -> embedded): 7 gold leaves, 6 TP, 1 WRONG, 1 HALLUCINATED;
    # d2 truncated, repaired: 发票号码 TP, 小写 amount cut to "¥1417" (= 1417: TP), 名称 MISS;
    # d1 partial prompt: 发票号码 TP, extra key HALLUCINATED
    o = n["overall"]
    assert n["n_samples"] == 3
    assert o["json_embedded_rate"] == pytest.approx(1 / 3)
    assert o["json_repaired_rate"] == pytest.approx(1 / 3)
    assert o["json_truncated_rate"] == pytest.approx(1 / 3)
    assert (
        n["per_field"]["购买方.名称"]["wrong"] == 1 and n["per_field"]["购买方.名称"]["miss"] == 1
    )
    assert n["per_field"]["备注"]["hallucinated"] == 1
    assert n["per_field"]["货物或应税劳务、服务[].金额"]["tp"] == 2
    tp, wrong, miss, hal = 6 + 2 + 1, 1, 1, 2
    assert o["precision"] == pytest.approx(tp / (tp + wrong + hal))
    assert o["recall"] == pytest.approx(tp / (tp + wrong + miss))
    assert o["instruction_unrequested_keys_rate"] == 1.0
    assert o["instruction_requested_keys_present"] == 1.0
    # strict view: only strictly valid JSON counts -> the two full-prompt samples are {}
    assert n["overall_strict"]["recall"] < o["recall"]
    assert n["latency"]["total"]["p50_s"] == 2.0
    assert p["latency"]["stages"]["llm"]["mean_s"] == 1.0
    assert set(n["per_source"]) == {"real", "synthetic"}
    assert n["ci95"]["f1"][0] <= o["f1"] <= n["ci95"]["f1"][1]
    comps = {(c["a"], c["b"], c["metric"]) for c in m["comparisons"]}
    assert ("perfect", "noisy", "f1") in comps
    assert all(len(m["metric_definitions"][k]) > 10 for k in p["overall"])

    md = (files["out"] / "report.md").read_text("utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| f1 |"))
    assert f"{p['overall']['f1']:.4f}" in row and f"{o['f1']:.4f}" in row
    page = (files["out"] / "report.html").read_text("utf-8")
    assert len(re.findall(r"src='data:image/png;base64,", page)) == 3  # self-contained plots
    assert "http://" not in page and "https://" not in page
    assert f"{o['kie_accuracy']:.4f}" in page
    assert (files["out"] / "plots" / "field_f1.png").stat().st_size > 1000


def test_names_and_errors(files: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    out = files["out"]
    rc = main(["--gold", str(files["gold"]), "--pred", str(files["perfect"]), "--name", "A",
               "--out-dir", str(out), "--bootstrap", "0", "--workers", "1"])  # fmt: skip
    assert rc == 0
    assert list(json.loads((out / "metrics.json").read_text("utf-8"))["systems"]) == ["A"]
    assert gc.isenabled() and gc.get_freeze_count() == 0
    bad = files["gold"].parent / "bad.jsonl"
    bad.write_text('{"id": "d1", "prompt": "describe the image"}\n', "utf-8")
    rc = main(
        ["--gold", str(files["gold"]), "--pred", str(bad), "--out-dir", str(out), "--workers", "1"]
    )
    assert rc == 2
    assert "bad.jsonl:1" in caplog.text
    # loading pauses and freezes the garbage collector: a failed load leaves it as it was
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_megemini_format(tmp_path: Path) -> None:
    rows = [
        {"sample_id": 0, "image_path": "/x/cord-v2/train/images/1.jpg",
         "ground_truth": {"menu": [{"nm": "A", "price": "1,000"}], "total": {"total_price": "1,000"}},
         "prediction": {"menu": [{"nm": "A", "price": "1.000"}], "total": {"total_price": "1,000"}},
         "accuracy": 0.5},
        {"sample_id": 1, "image_path": "/x/SROIE_2019_with_labels/1.jpg",
         "ground_truth": {"company": "ACME", "total": "9.00"},
         "prediction": {"company": "ACME", "total": "9.00"}, "accuracy": 1.0},
    ]  # fmt: skip
    path = _write(tmp_path / "kie.jsonl", rows)
    rc = main(["--pred", str(path), "--input-format", "megemini", "--schema", "none",
               "--out-dir", str(tmp_path / "r"), "--bootstrap", "0", "--workers", "1"])  # fmt: skip
    assert rc == 0
    s = json.loads((tmp_path / "r" / "metrics.json").read_text("utf-8"))["systems"]["kie"]
    # their own accuracy, recomputed: mean of the per-sample 'accuracy' they published
    assert s["overall"]["kie_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["overall"]["json_given_rate"] == 1.0
    assert set(s["per_source"]) == {"CORD-v2", "SROIE"}
    assert s["per_field"]["menu[].price"]["wrong"] == 1
