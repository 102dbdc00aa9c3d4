"""Calibration of per-leaf confidence and the validation flag, as the scorer reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from data_tools.schema import load_schema
from data_tools.validation import validate_prediction
from eval.calibration import (
    calibration_from_rows,
    calibration_markdown,
    calibration_summary,
    field_of,
    judge_leaves,
    reliability,
    write_calibration_plots,
)

GOLD = {
    "发票代码": "4400154130",
    "发票号码": "12270242",
    "合计": {"金额": "¥1211.11", "税额": "¥205.89"},
    "价税合计（小写）": "¥1417.00",
    "货物或应税劳务、服务": [
        {"金额": "2987.18", "税额": "507.82"},
        {"金额": "-1776.07", "税额": "-301.93"},
    ],
}


def test_reliability_table_and_ece_by_hand() -> None:
    confs = [0.95] * 10 + [0.15] * 10
    correct = [True] * 9 + [False] + [True] * 2 + [False] * 8
    r = reliability(confs, correct)
    top, low = r["bins"][9], r["bins"][1]
    assert (top["count"], top["confidence"], top["accuracy"]) == (10, 0.95, 0.9)
    assert (low["count"], low["confidence"], low["accuracy"]) == (10, 0.15, 0.2)
    assert r["ece"] == pytest.approx(0.05) and r["mce"] == pytest.approx(0.05)
    brier = (9 * 0.05**2 + 0.95**2 + 2 * 0.85**2 + 8 * 0.15**2) / 20
    assert r["brier"] == pytest.approx(brier, abs=1e-6)
    assert reliability([1.0], [True])["bins"][9]["count"] == 1  # 1.0 falls in the last bin
    assert reliability([], [])["ece"] is None


def test_leaves_are_judged_per_field_order_free() -> None:
    schema = load_schema("vat_invoice")
    pred = {
        "发票代码": "12270242",  # swapped
        "发票号码": "4400154130",
        "合计": {"金额": "1211.11", "税额": ""},  # the sign does not matter; empty = no claim
        "货物或应税劳务、服务": [{"金额": "-1776.07"}, {"金额": "2987.18"}],  # reordered
    }
    j = judge_leaves(GOLD, pred, schema)
    assert j["leaves"] == {
        "发票代码": False,
        "发票号码": False,
        "合计.金额": True,
        "货物或应税劳务、服务[0].金额": True,
        "货物或应税劳务、服务[1].金额": True,
    }
    missed = {"合计.税额", "价税合计（小写）", "货物或应税劳务、服务[].税额"}
    assert j["wrong_fields"] == {"发票代码", "发票号码", *missed}
    assert field_of("a[3].b[10].c") == "a[].b[].c"


def _rows(schema) -> list[dict]:
    good = dict(GOLD)
    swapped = {**GOLD, "发票代码": "12270242", "发票号码": "4400154130"}
    broken_sum = {**GOLD, "合计": {"金额": "¥1211.11", "税额": "¥205.98"}}
    rows = []
    for i, (pred, c) in enumerate(
        [(good, 0.99), (swapped, 0.4), (broken_sum, 0.97), (good, 0.98), (good, 0.93)]
    ):
        leaves = dict.fromkeys(judge_leaves(GOLD, pred)["leaves"], 0.99)
        assert len(leaves) == 9
        leaves["发票代码"] = leaves["发票号码"] = c
        rows.append(
            {
                "id": f"d{i}",
                "prompt": "OCR:{}",
                "prediction": pred,
                "confidence": {"leaves": leaves},
                "validation": validate_prediction(pred, schema, request={"x": ""}).to_dict(),
            }
        )
    return rows


def test_calibration_and_the_validation_flag_over_rows() -> None:
    schema = load_schema("vat_invoice")
    rows = _rows(schema)
    gold = {f"d{i}": GOLD for i in range(5)}
    cal = calibration_from_rows(rows, gold, schema)
    v = cal["validation"]
    # d1 (swapped) and d2 (税额 typo: sums.tax and total fail) are flagged and wrong
    assert v["n_docs"] == 5 and v["pass_rate"] == pytest.approx(0.6)
    assert (v["doc"]["tp"], v["doc"]["fp"], v["doc"]["fn"]) == (2, 0, 0)
    assert v["doc"]["precision"] == 1.0 and v["doc"]["recall"] == 1.0
    # fields: d1 names 发票代码 + 发票号码 (both wrong); d2 names items[].税额 and 合计.税额
    # (sums.tax), 合计.金额/税额/价税合计 (total): only 合计.税额 is wrong
    assert (v["field"]["tp"], v["field"]["fp"], v["field"]["fn"]) == (3, 3, 0)
    c = cal["confidence"]
    assert c["n_leaves"] == 45 and c["n_docs"] == 5
    assert c["accuracy"] == pytest.approx(42 / 45)
    at_09 = next(t for t in c["thresholds"] if t["threshold"] == 0.9)
    assert at_09["review_share"] == pytest.approx(0.2)  # only d1 is routed to review
    assert at_09["kept_leaf_accuracy"] == pytest.approx(35 / 36)
    assert calibration_from_rows([{"id": "d0", "prediction": GOLD}], gold, schema) is None


def test_summary_from_a_file_plots_and_markdown(tmp_path: Path) -> None:
    schema = load_schema("vat_invoice")
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _rows(schema)))
    summary = calibration_summary(pred, {f"d{i}": GOLD for i in range(5)}, schema)
    assert summary["confidence"]["ece"] > 0
    metrics = {"systems": {"sys A": {"calibration": summary}, "b": {"calibration": None}}}
    (png,) = write_calibration_plots(metrics, tmp_path)
    assert png.name == "reliability_sys_A.png"
    assert Image.open(png).size[0] > 300
    md = calibration_markdown(metrics)
    assert "### sys A" in md and "ECE" in md and "plots/reliability_sys_A.png" in md
    assert "precision 1.000, recall 1.000" in md
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    assert calibration_summary(tmp_path / "bad.jsonl", {}, schema) is None


def test_the_scorer_reports_calibration(tmp_path: Path) -> None:
    """eval.score → metrics.json 'calibration' per system, the diagram, the report section."""
    from eval.score import ScoreSettings, score_files, write_outputs

    schema = load_schema("vat_invoice")
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "image": f"d{i}.jpg", "doc_type": "vat_invoice",
                        "fields": GOLD}, ensure_ascii=False) + "\n"
            for i in range(5)
        ),
        encoding="utf-8",
    )  # fmt: skip
    pred = tmp_path / "sys.jsonl"
    rows = [{**r, "image": f"{r['id']}.jpg", "system": "sys"} for r in _rows(schema)]
    pred.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    metrics, systems = score_files(
        [pred], gold_path=gold, settings=ScoreSettings(bootstrap=0, workers=1)
    )
    (name,) = metrics["systems"]
    cal = metrics["systems"][name]["calibration"]
    # from the rows the loader kept while reading: what reading the file again gives
    assert cal == calibration_summary(pred, {f"d{i}": GOLD for i in range(5)}, schema)
    assert cal["validation"]["doc"]["precision"] == 1.0
    assert cal["confidence"]["n_leaves"] == 45
    written = write_outputs(metrics, tmp_path / "report", systems)
    names = {p.name for p in written}
    assert f"reliability_{name}.png" in names
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Validation and confidence" in md and "ECE" in md
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["systems"][name][
        "calibration"
    ]["confidence"]["ece"] == pytest.approx(cal["confidence"]["ece"])
