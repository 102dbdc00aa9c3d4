import json

import pytest

from data_tools.prompts import (
    FULL_PROMPT,
    PromptError,
    answer_text,
    build_prompt,
    parse_prompt,
    project,
    request_for_keys,
    requested_paths,
)

FIELDS = {
    "发票号码": "12271524",
    "购买方": {"名称": "深圳市购机汇网络有限公司", "纳税人识别号": "440300083885931"},
    "货物或应税劳务、服务": [
        {"名称": "红米3", "金额": "2987.18", "税额": "507.82"},
        {"名称": "折扣", "金额": "-1776.07", "税额": "-301.93"},
    ],
    "标签": ["a", "b"],
}


def test_build_prompt_matches_published_convention():
    assert build_prompt({}) == FULL_PROMPT
    assert build_prompt({"发票号码": ""}) == 'OCR:{"发票号码":""}'
    req = {"购买方": {"名称": ""}, "货物或应税劳务、服务": [{"名称": "", "金额": ""}]}
    assert (
        build_prompt(req)
        == 'OCR:{"购买方":{"名称":""},"货物或应税劳务、服务":[{"名称":"","金额":""}]}'
    )


def test_request_for_keys_is_type_aware():
    assert request_for_keys(
        FIELDS, ["标签", "购买方", "发票号码", "货物或应税劳务、服务", "nope"]
    ) == {
        "标签": [],
        "购买方": {},
        "发票号码": "",
        "货物或应税劳务、服务": [],
        "nope": "",
    }


def test_project_full_partial_and_structured():
    assert project(FIELDS, {}) == FIELDS
    assert project(FIELDS, {"发票号码": ""}) == {"发票号码": "12271524"}
    ans = project(
        FIELDS, {"货物或应税劳务、服务": [{"金额": "", "名称": ""}], "购买方": {"名称": ""}}
    )
    assert ans == {
        "货物或应税劳务、服务": [
            {"金额": "2987.18", "名称": "红米3"},
            {"金额": "-1776.07", "名称": "折扣"},
        ],
        "购买方": {"名称": "深圳市购机汇网络有限公司"},
    }
    # keys in the request's order, not the document's
    assert list(ans) == ["货物或应税劳务、服务", "购买方"]
    assert list(ans["货物或应税劳务、服务"][0]) == ["金额", "名称"]


def test_project_missing_keys_get_placeholders():
    ans = project(FIELDS, {"备注": "", "x": {}, "y": [], "z": {"a": ""}, "w": [{"a": ""}]})
    assert ans == {"备注": "", "x": {}, "y": [], "z": {"a": ""}, "w": []}
    sub = project(FIELDS, {"购买方": {"名称": "", "开户行及账号": ""}})
    assert sub == {"购买方": {"名称": "深圳市购机汇网络有限公司", "开户行及账号": ""}}


def test_placeholders_are_not_shared_objects():
    a = project({}, {"x": {}})
    b = project({}, {"x": {}})
    a["x"]["k"] = 1
    assert b == {"x": {}}


@pytest.mark.parametrize(
    "request_",
    [
        {},
        {"发票号码": ""},
        {"购买方": {}, "标签": []},
        {"购买方": {"名称": ""}, "货物或应税劳务、服务": [{"名称": "", "金额": ""}]},
    ],
)
def test_parse_prompt_roundtrip(request_):
    assert parse_prompt(build_prompt(request_)) == request_


def test_parse_prompt_tolerates_spacing():
    assert parse_prompt(' OCR: {"a": "", "b": [ {"c": ""} ]} ') == {"a": "", "b": [{"c": ""}]}


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("OCR:", "text recognition"),
        ("Table Recognition:", "must start with 'OCR:'"),
        ('OCR:{"a":', "not valid JSON"),
        ('OCR:{"a":"x"}', "placeholder must be"),
        ('OCR:{"a":[{"b":""},{"c":""}]}', "one object"),
        ('OCR:{"a":"","a":""}', "duplicate key"),
        ("OCR:[]", "must be a JSON object"),
    ],
)
def test_parse_prompt_errors(prompt, message):
    with pytest.raises(PromptError, match=message):
        parse_prompt(prompt)


def test_requested_paths():
    req = {"a": "", "b": {"c": "", "d": {}}, "e": [{"f": ""}], "g": []}
    assert requested_paths(req) == [("a",), ("b", "c"), ("b", "d"), ("e", "[]", "f"), ("g",)]
    assert requested_paths({}) == []


def test_answer_text_is_plain_json_dumps():
    ans = {"金额": "¥2987.18", "x": [{"a": "b"}]}
    assert answer_text(ans) == json.dumps(ans, ensure_ascii=False)
    assert "\\u" not in answer_text(ans)
