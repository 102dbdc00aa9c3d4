"""Leaf-by-leaf voting after normalisation."""

from __future__ import annotations

from data_tools.schema import load_schema
from data_tools.vote import flatten, path_label, set_path, vote

SCHEMA = load_schema("vat_invoice")


def test_flatten_and_paths() -> None:
    f = {"a": "1", "b": {"c": "2"}, "d": [{"e": "3"}, {"e": "4"}], "s": ["x"], "z": {}}
    flat = flatten(f)
    assert flat == {
        ("a",): "1",
        ("b", "c"): "2",
        ("d", 0, "e"): "3",
        ("d", 1, "e"): "4",
        ("s", 0): "x",
        ("z",): "",
    }
    assert path_label(("d", 1, "e")) == "d[1].e"
    obj: dict = {}
    for p, v in flat.items():
        set_path(obj, p, v)
    assert obj["d"] == [{"e": "3"}, {"e": "4"}] and obj["s"] == ["x"]


def test_normalised_values_agree() -> None:
    a = {
        "开票日期": "2016年06月12日",
        "合计": {"金额": "¥2987.18"},
        "购买方": {"名称": "深圳 市A公司"},
    }
    b = {"开票日期": "2016-06-12", "合计": {"金额": "2,987.180"}, "购买方": {"名称": "深圳市A公司"}}
    r = vote([a, b], SCHEMA)
    assert r.agreement == 1.0 and r.n_compared == 3
    assert r.fields == a  # the primary answer's raw text is kept
    # without the schema the date and the amount are plain text and differ
    assert vote([a, b]).n_agreed == 1


def test_disagreement_and_empty_leaves() -> None:
    a = {"发票号码": "12270242", "备注": "", "复核": "张雪"}
    b = {"发票号码": "12270243", "备注": "", "复核": "张雪"}
    r = vote([a, b], SCHEMA)
    assert (r.n_compared, r.n_agreed) == (2, 1)  # 备注 empty in both: not compared
    assert r.agreement == 0.5
    (d,) = r.disagreements
    assert (d.path, d.values, d.chosen) == ("发票号码", ["12270242", "12270243"], "12270242")
    assert r.fields["发票号码"] == "12270242"


def test_majority_of_three_wins_and_missing_rows_count() -> None:
    row = {"名称": "手机", "金额": "2987.18"}
    a = {"发票代码": "4400154130", "货物或应税劳务、服务": [row]}
    b = {
        "发票代码": "4400154180",
        "货物或应税劳务、服务": [row, {"名称": "折扣", "金额": "-1776.07"}],
    }
    c = {
        "发票代码": "4400154180",
        "货物或应税劳务、服务": [row, {"名称": "折扣", "金额": "-1776.07"}],
    }
    r = vote([a, b, c], SCHEMA)
    assert r.fields["发票代码"] == "4400154180"
    assert r.fields["货物或应税劳务、服务"][1] == {"名称": "折扣", "金额": "-1776.07"}
    assert {d.path for d in r.disagreements} == {
        "发票代码",
        "货物或应税劳务、服务[1].名称",
        "货物或应税劳务、服务[1].金额",
    }
    assert a["货物或应税劳务、服务"] == [row]  # inputs untouched


def test_nothing_to_compare_is_zero_agreement() -> None:
    assert vote([{"a": ""}, {"a": ""}]).agreement == 0.0
