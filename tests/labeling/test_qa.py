"""Label QA: hard VAT rules, on the real fixtures and on crafted mistakes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from data_tools import qa
from data_tools.convert import ConvertConfig, convert
from data_tools.records import read_labels
from data_tools.schema import load_schema
from tests.labeling.conftest import BASE_TRUTH

SCHEMA = load_schema("vat_invoice")


def _check(fields: dict) -> qa.QAResult:
    return qa.check_fields(fields, SCHEMA)


def _rules(res: qa.QAResult) -> set[str]:
    return set(res.failed_rules())


def test_ground_truth_passes(vat_invoices: Path, tmp_path: Path) -> None:
    rc = qa.main(
        ["--labels", str(vat_invoices / "ground_truth.jsonl"), "--out", str(tmp_path / "q.jsonl")]
    )
    assert rc == 0
    rows = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert r["meta"]["qa"]["verdict"] == "pass", r["meta"]["qa"]
        assert r["meta"]["qa"]["hard"] == []
        assert "sums.amount" in r["meta"]["qa"]["rules"]


def test_raw_vlm_label_b1_fails_with_named_reasons(vat_invoices: Path, tmp_path: Path) -> None:
    labels = tmp_path / "vlm.jsonl"
    convert("vat_ner", vat_invoices / "vlm_labels", labels, ConvertConfig(image_dir=vat_invoices))
    out = tmp_path / "vlm.qa.jsonl"
    assert qa.main(["--labels", str(labels), "--out", str(out)]) == 1
    verdicts = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        verdicts[r["id"]] = r["meta"]["qa"]
    b1 = next(v for k, v in verdicts.items() if k.endswith("b1"))
    failed = {h.split(":", 1)[0] for h in b1["hard"]}
    assert {"invoice_code", "invoice_number", "sums.amount", "sums.tax"} <= failed
    text = " ".join(b1["hard"])
    assert "swapped" in text and "1776.07" in text and "301.93" in text
    # b0 and b2 carry reading errors QA cannot see (dropped characters), not rule breaks
    assert all(v["verdict"] == "pass" for k, v in verdicts.items() if not k.endswith("b1"))


def test_default_out_name_and_no_out(tmp_path: Path) -> None:
    labels = tmp_path / "L.jsonl"
    labels.write_text(
        json.dumps(
            {"id": "a", "image": "a.jpg", "doc_type": "vat_invoice", "fields": BASE_TRUTH},
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    assert qa.main(["--labels", str(labels)]) == 0
    assert (tmp_path / "L.qa.jsonl").is_file()
    assert qa.main(["--labels", str(tmp_path / "missing.jsonl")]) == 2


def test_clean_label_passes_every_rule() -> None:
    res = _check(BASE_TRUTH)
    assert res.passed, res.hard
    assert res.skipped == [] and res.soft == []
    assert res.rules == list(qa.VAT_RULES)


@pytest.mark.parametrize(
    ("path", "value", "rule"),
    [
        (("发票代码",), "12270242", "invoice_code"),
        (("发票代码",), "440015413", "invoice_code"),
        (("发票号码",), "4400154130", "invoice_number"),
        (("开票日期",), "2016年13月12日", "date"),
        (("开票日期",), "1975年01月01日", "date"),
        (("销售方", "纳税人识别号"), "91440101664041243X", "taxpayer_id"),
        (("合计", "金额"), "¥1211.11", "sums.amount"),
        (("合计", "税额"), "¥205.89", "sums.tax"),
        (("价税合计（小写）",), "¥3495.50", "total"),
        (("价税合计（大写）",), "叁仟肆佰玖拾陆圆整", "total_in_words"),
        (("价税合计（大写）",), "三千多元", "total_in_words"),
        (("购买方", "名称"), "", "required"),
        (("合计", "金额"), "abc", "values"),
    ],
)
def test_each_hard_rule_catches_its_mistake(path: tuple[str, ...], value: str, rule: str) -> None:
    f = copy.deepcopy(BASE_TRUTH)
    node = f
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    res = _check(f)
    assert rule in _rules(res), res.hard
    assert not res.passed


def test_line_rules() -> None:
    f = copy.deepcopy(BASE_TRUTH)
    f["货物或应税劳务、服务"][0]["数量"] = "6"
    assert _rules(_check(f)) == {"line.qty_x_price"}
    # a unit price rounded to 2 decimals stays within the tolerance (5 x 0.005)
    f = copy.deepcopy(BASE_TRUTH)
    f["货物或应税劳务、服务"][0]["单价"] = "597.44"
    assert _check(f).passed
    # a tax-inclusive unit price is accepted
    f["货物或应税劳务、服务"][0]["单价"] = "699.00"
    assert _check(f).passed
    # the tax rate check is a warning only
    f = copy.deepcopy(BASE_TRUTH)
    f["货物或应税劳务、服务"][0]["税率"] = "13%"
    res = _check(f)
    assert res.passed and any(s.startswith("line.tax_rate") for s in res.soft)


def test_discount_line_makes_b1_add_up() -> None:
    f = copy.deepcopy(BASE_TRUTH)
    f["货物或应税劳务、服务"].append(
        {"名称": "折扣(59.456%)", "规格型号": "", "单位": "", "数量": "", "单价": "",
         "金额": "-1776.07", "税率": "17%", "税额": "-301.93"}
    )  # fmt: skip
    f["合计"] = {"金额": "¥1211.11", "税额": "¥205.89"}
    f["价税合计（小写）"] = "¥1417.00"
    f["价税合计（大写）"] = "壹仟肆佰壹拾柒圆整"
    assert _check(f).passed


def test_fully_digital_invoice_and_tax_free_lines() -> None:
    f = copy.deepcopy(BASE_TRUTH)
    f["发票代码"] = ""
    f["发票号码"] = "24442000000012345678"
    assert _check(f).passed
    f = copy.deepcopy(BASE_TRUTH)
    f["货物或应税劳务、服务"][0].update({"税率": "免税", "税额": "***"})
    f["合计"]["税额"] = "***"
    f["价税合计（小写）"] = "¥2987.18"
    f["价税合计（大写）"] = "贰仟玖佰捌拾柒圆壹角捌分"
    assert _check(f).passed, _check(f).hard


def test_check_characters() -> None:
    assert qa.is_valid_uscc("91440101664041243T")
    assert qa.uscc_check_char("91440101664041243") == "T"
    assert not qa.is_valid_uscc("91440101664041243Y")
    assert not qa.is_valid_uscc("9144010166404124IT")  # I is not in the alphabet
    assert qa.is_valid_resident_id("11010519491231002X")
    f = copy.deepcopy(BASE_TRUTH)
    f["购买方"]["纳税人识别号"] = "11010519491231002X"  # an individual's ID number
    assert _check(f).passed


def test_aliased_fields_are_checked_and_flagged() -> None:
    f = copy.deepcopy(BASE_TRUTH)
    f["发票编号"] = f.pop("发票号码")
    res = _check(f)
    assert res.passed
    assert any(s.startswith("canonical") for s in res.soft)


def test_other_schemas_get_generic_rules_only(tmp_path: Path) -> None:
    schema_file = tmp_path / "receipt.yaml"
    schema_file.write_text(
        "name: receipt\nfields:\n  shop: {type: text, required: true}\n  total: {type: amount}\n",
        encoding="utf-8",
    )
    s = load_schema(schema_file)
    assert qa.check_fields({"shop": "A", "total": "3.00"}, s).rules == list(qa.GENERIC_RULES)
    res = qa.check_fields({"total": "x"}, s)
    assert _rules(res) == {"required", "values"}


def test_types_rule_catches_wrong_shapes() -> None:
    f = copy.deepcopy(BASE_TRUTH)
    f["合计"] = "abc"
    res = _check(f)
    assert "types" in _rules(res)
    assert any(
        h.startswith("types: 合计 is a string ('abc'") and "an object" in h for h in res.hard
    )
    f = copy.deepcopy(BASE_TRUTH)
    f[qa.ITEMS] = "办公用品 1 100.00"
    res = _check(f)
    assert any(h.startswith(f"types: {qa.ITEMS} is a string") for h in res.hard), res.hard
    f = copy.deepcopy(BASE_TRUTH)
    f[qa.ITEMS] = [*f[qa.ITEMS], "a stray line"]
    n = len(f[qa.ITEMS]) - 1
    assert any(h.startswith(f"types: {qa.ITEMS}[{n}] is a string") for h in _check(f).hard)
    f = copy.deepcopy(BASE_TRUTH)
    f["购买方"]["名称"] = ["A", "B"]
    assert any(h.startswith("types: 购买方.名称 is a list") for h in _check(f).hard)
    # an empty string where an object belongs: a warning, not a failure
    f = copy.deepcopy(BASE_TRUTH)
    f["合计"] = ""
    res = _check(f)
    assert "types" not in _rules(res)
    assert "types: 合计 is an empty string; the schema wants an object (empty: {})" in res.soft
    assert _check(BASE_TRUTH).passed and "types" in _check(BASE_TRUTH).rules


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


def _qa_rows(path: Path) -> dict[str, dict]:
    return {
        r["id"]: r["meta"]["qa"]
        for r in (json.loads(line) for line in path.read_text("utf-8").splitlines())
    }


def test_schema_auto_and_none(tmp_path: Path) -> None:
    receipts = [
        {"id": f"r{i}", "image": f"r{i}.jpg", "doc_type": "receipt", "fields": f}
        for i, f in enumerate(
            [
                {"company": "A", "total": "9.00"},
                {"company": "B", "total": "3.10"},
                {"company": "C", "total": ["1.00", "2.00"]},  # a type flip
                {"company": "", "total": ""},  # nothing in it
            ]
        )
    ]
    vat = {"id": "v", "image": "v.jpg", "doc_type": "vat_invoice", "fields": BASE_TRUTH}
    labels = _write(tmp_path / "mixed.jsonl", [*receipts, vat])
    out = tmp_path / "q.jsonl"
    # auto: the VAT record gets the VAT rules, the receipts the schema-free ones
    assert qa.main(["--labels", str(labels), "--out", str(out)]) == 1
    rows = _qa_rows(out)
    assert "sums.amount" in rows["v"]["rules"] and rows["v"]["verdict"] == "pass"
    assert rows["r0"]["verdict"] == "pass" and "required" not in rows["r0"]["rules"]
    assert rows["r3"]["verdict"] == "fail" and rows["r3"]["hard"][0].startswith("nonempty:")
    flip = [s for s in rows["r2"]["soft"] if s.startswith("key_types:")]
    assert flip and "total is a list here but a string in 2 other record(s)" in flip[0]
    assert not any(s.startswith("key_types") for s in rows["r0"]["soft"])
    # none: schema-free checks only, also on the VAT record
    assert qa.main(["--labels", str(labels), "--out", str(out), "--schema", "none"]) == 1
    rows = _qa_rows(out)
    assert rows["v"]["rules"] == ["nonempty", "key_types"]
    # a schema named explicitly applies to every record: receipts then fail `required`
    assert qa.main(["--labels", str(labels), "--out", str(out), "--schema", "vat_invoice"]) == 1
    assert "required" in {h.split(":")[0] for h in _qa_rows(out)["r0"]["hard"]}
    assert qa.main(["--labels", str(labels), "--schema", "no_such_schema"]) == 2


def test_sroie_sample_passes_the_schema_free_checks(shared_fixtures: Path, tmp_path: Path) -> None:
    src = shared_fixtures / "public_kie" / "sroie" / "train" / "entities"
    labels = tmp_path / "sroie.jsonl"
    convert("sroie", src, labels, ConvertConfig(allow_missing_images=True))
    assert qa.main(["--labels", str(labels), "--out", str(tmp_path / "q.jsonl")]) == 0
    rows = _qa_rows(tmp_path / "q.jsonl")
    assert len(rows) == 6 and all(v["verdict"] == "pass" for v in rows.values())
    # auto takes the schema the converter canonicalised through (meta.canonicalize.schema)
    meta = read_labels(labels)[0].meta
    if isinstance(meta.get("canonicalize"), dict):
        assert all("types" in v["rules"] for v in rows.values())
    # the VAT schema forced on receipts fails every one of them on `required`
    assert qa.main(["--labels", str(labels), "--no-out", "--schema", "vat_invoice"]) == 1
