import json

import pytest

from data_tools.schema import CanonicalizeReport, SchemaError, load_schema


@pytest.fixture(scope="module")
def schema():
    return load_schema("vat_invoice")


def test_types_and_paths(schema):
    assert schema.field_type(("发票代码",)) == "code"
    assert schema.field_type(("购买方", "纳税人识别号")) == "id"
    assert schema.field_type(("销售方", "地址、电话")) == "text"
    assert schema.field_type(("货物或应税劳务、服务", "金额")) == "amount"
    assert schema.field_type(("货物或应税劳务、服务", "[]", "税率")) == "percent"
    assert schema.field_type(("价税合计（大写）",)) == "amount_in_words"
    assert schema.field_type(("no", "such")) == "text"
    assert ("发票号码",) in schema.required
    assert ("货物或应税劳务、服务", "[]", "金额") in schema.leaf_paths()


def test_skeleton(schema):
    sk = schema.skeleton()
    assert sk["发票号码"] == ""
    assert sk["购买方"] == {"名称": "", "纳税人识别号": "", "地址、电话": "", "开户行及账号": ""}
    assert list(sk["货物或应税劳务、服务"][0]) == [
        "名称",
        "规格型号",
        "单位",
        "数量",
        "单价",
        "金额",
        "税率",
        "税额",
    ]


def test_canonicalize_aliases_groups_hoisting_and_flat_items(schema):
    raw = {
        "发票信息": {"发票编号": "12271524", "发票代码": "4400154130", "机器编号": ""},
        "购买方信息": {"名称": "A", "地址电话": "addr"},
        "合计": {"金额": "¥1", "价税合计（小写）": "¥1.17"},
        "规格型号": "X",
        "货物或应税劳务服务名称": "thing",
        "金额": "1",
        "新字段": "kept",
    }
    report = CanonicalizeReport()
    out = schema.canonicalize(raw, report)
    assert out == {
        "发票代码": "4400154130",
        "发票号码": "12271524",
        "购买方": {"名称": "A", "地址、电话": "addr"},
        "货物或应税劳务、服务": [{"名称": "thing", "规格型号": "X", "金额": "1"}],
        "合计": {"金额": "¥1"},
        "价税合计（小写）": "¥1.17",
        "新字段": "kept",
    }
    assert "发票信息" in report.flattened_groups
    assert "机器编号" in report.dropped
    assert "新字段" in report.unknown
    assert "合计.价税合计（小写）→价税合计（小写）" in report.moved
    assert raw["发票信息"]["发票编号"] == "12271524"  # the input is not modified


def test_canonicalize_single_object_items_and_continuation_rows(schema):
    out = schema.canonicalize({"货物或应税劳务、服务信息": {"名称": "A", "金额": "1"}})
    assert out == {"货物或应税劳务、服务": [{"名称": "A", "金额": "1"}]}
    rows = [{"名称": "小米 红米3", "金额": "1"}, {"名称": "双卡双待", "金额": "", "税额": ""}]
    out = schema.canonicalize({"货物或应税劳务、服务": rows})
    assert out["货物或应税劳务、服务"] == [{"名称": "小米 红米3 双卡双待", "金额": "1"}]


def test_ground_truth_is_canonical(schema, vat_invoices):
    for line in (vat_invoices / "ground_truth.jsonl").read_text(encoding="utf-8").splitlines():
        fields = json.loads(line)["fields"]
        report = CanonicalizeReport()
        assert schema.canonicalize(fields, report) == fields
        assert report.to_dict() == {}


def test_raw_vlm_labels_canonicalise_to_one_schema(schema, vat_invoices):
    keysets = []
    for name in ("b0", "b1", "b2"):
        raw = json.loads((vat_invoices / "vlm_labels" / f"{name}.json").read_text(encoding="utf-8"))
        out = schema.canonicalize(raw["data"])
        assert set(out) <= set(schema.fields), name
        items = out["货物或应税劳务、服务"]
        assert isinstance(items, list) and all(isinstance(i, dict) for i in items), name
        assert all(set(i) <= set(schema.fields["货物或应税劳务、服务"].fields) for i in items)
        for party in ("购买方", "销售方"):
            assert set(out[party]) == {"名称", "纳税人识别号", "地址、电话", "开户行及账号"}
        keysets.append(set(out) - {"合计", "备注"})  # b2's label has neither
    assert keysets[0] == keysets[1] == keysets[2]


def test_bad_schema_messages(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("fields:\n  a: {type: money}\n", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"fields\.a: unknown type 'money'"):
        load_schema(p)
    with pytest.raises(SchemaError, match=r"bundled schemas: .*vat_invoice"):
        load_schema("nope")
