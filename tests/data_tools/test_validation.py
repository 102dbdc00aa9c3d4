"""Validation on predictions: the QA rules name the rule, the fields and what is wrong."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from data_tools.schema import load_schema
from data_tools.validation import validate_prediction, validation_dict

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "vat_invoices"
needs_shared = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"{FIXTURES} absent")


@pytest.fixture(scope="module")
def schema():
    return load_schema("vat_invoice")


def _truth(id_: str) -> dict:
    for line in (FIXTURES / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["id"] == id_:
            return rec["fields"]
    raise KeyError(id_)


@pytest.mark.shared
@needs_shared
def test_the_raw_b1_label_is_flagged_by_name(schema) -> None:
    raw = json.loads((FIXTURES / "vlm_labels" / "b1.json").read_text(encoding="utf-8"))["data"]
    v = validate_prediction(raw, schema, request={})
    assert not v.passed
    by_rule = {f.rule: f for f in v.failed}
    assert set(by_rule) == {"invoice_code", "invoice_number", "sums.amount", "sums.tax"}
    assert by_rule["invoice_code"].fields == ["发票代码"]
    assert "swapped with 发票号码" in by_rule["invoice_code"].message
    assert by_rule["invoice_number"].fields == ["发票号码"]
    assert by_rule["sums.amount"].fields == ["货物或应税劳务、服务[].金额", "合计.金额"]
    assert (
        "2987.18" in by_rule["sums.amount"].message and "1211.11" in by_rule["sums.amount"].message
    )
    assert by_rule["sums.tax"].fields == ["货物或应税劳务、服务[].税额", "合计.税额"]
    d = v.to_dict()
    assert d["passed"] is False and {f["rule"] for f in d["failed"]} == set(by_rule)
    assert "canonical" not in d["rules"]  # key spelling is not a validation failure
    json.dumps(d, ensure_ascii=False)  # row-ready


@pytest.mark.shared
@needs_shared
def test_the_hand_checked_truth_passes(schema) -> None:
    for id_ in ("b0", "b1", "b2"):
        v = validate_prediction(_truth(id_), schema, request={})
        assert v.passed, (id_, v.failed)
        assert "required" in v.rules and "total_in_words" in v.rules


@pytest.mark.shared
@needs_shared
def test_each_rule_on_a_broken_prediction(schema) -> None:
    pred = copy.deepcopy(_truth("b1"))
    pred["价税合计（大写）"] = "壹仟肆佰壹拾捌圆整"  # 1418 ≠ 1417.00
    pred["销售方"]["纳税人识别号"] = "91440101664041243X"  # wrong check character
    pred["开票日期"] = "2016年13月12日"
    pred["货物或应税劳务、服务"][0]["数量"] = "6"  # 6 x 597.44 ≠ 2987.18
    v = validate_prediction(pred, schema, request={})
    by_rule = {f.rule: f for f in v.failed}
    assert by_rule["total_in_words"].fields == ["价税合计（大写）", "价税合计（小写）"]
    assert by_rule["taxpayer_id"].fields == ["销售方.纳税人识别号"]
    assert "expected 'T'" in by_rule["taxpayer_id"].message
    assert by_rule["date"].fields == ["开票日期"]
    assert by_rule["line.qty_x_price"].fields == [
        "货物或应税劳务、服务[0].数量",
        "货物或应税劳务、服务[0].单价",
        "货物或应税劳务、服务[0].金额",
    ]
    pred["合计"]["金额"] = "¥1212.11"
    by_rule = {f.rule: f for f in validate_prediction(pred, schema, request={}).failed}
    assert by_rule["total"].fields == ["合计.金额", "合计.税额", "价税合计（小写）"]
    assert by_rule["values"].fields == ["开票日期"]  # the bad date also fails to read
    pred["合计"]["税额"] = "abc"
    values = [f for f in validate_prediction(pred, schema, request={}).failed if f.rule == "values"]
    assert [f.fields for f in values] == [["开票日期"], ["合计.税额"]]


def test_required_runs_only_when_everything_was_asked(schema) -> None:
    partial = {"发票号码": "12270242"}
    assert validate_prediction(partial, schema, request={"发票号码": ""}).passed
    # a requested key the model did not find ("") is a miss, not a malformed number
    not_found = {"发票号码": "", "购买方": {"名称": "深圳市购机汇网络有限公司", "纳税人识别号": ""}}
    assert validate_prediction(not_found, schema, request={"发票号码": "", "购买方": {}}).passed
    v = validate_prediction(partial, schema, request={})
    assert not v.passed
    assert {f.rule for f in v.failed} == {"required"}
    assert ["发票代码"] in [f.fields for f in v.failed]


def test_unparsed_output_and_no_schema(schema) -> None:
    v = validate_prediction(None, schema)
    assert not v.passed and v.failed[0].rule == "parse"
    assert validation_dict({"发票号码": "1"}, None) is None
    assert validate_prediction({"发票号码": "1"}, schema).to_dict()["passed"] is False
