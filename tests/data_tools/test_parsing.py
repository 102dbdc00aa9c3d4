from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools.parsing import parse_model_output


def test_strict():
    out = parse_model_output('{"发票号码": "12271524"}')
    assert out.value == {"发票号码": "12271524"}
    assert out.report.method == "strict"
    assert out.report.strict_valid and out.report.ok
    assert out.report.duplicate_keys == [] and out.report.truncated is False


def test_fenced_and_embedded():
    fenced = parse_model_output('Here you go:\n```json\n{"a": "1"}\n```\nDone.')
    assert (fenced.value, fenced.report.method) == ({"a": "1"}, "embedded")
    embedded = parse_model_output('The answer is {"a": {"b": "2"}} as requested.')
    assert (embedded.value, embedded.report.method) == ({"a": {"b": "2"}}, "embedded")
    assert embedded.raw.startswith("The answer")


def test_duplicate_keys_recorded_with_conflicts():
    out = parse_model_output('{"a": "1", "b": "x", "a": "2", "b": "x"}')
    assert out.report.method == "strict"
    assert out.report.duplicate_keys == ["a", "b"]
    assert out.report.conflicting_duplicate_keys == ["a"]
    assert out.value == {"a": "2", "b": "x"}  # the last wins, as json.loads does


def test_truncated_output_is_repaired_and_flagged():
    text = '{"发票号码": "12271524", "购买方": {"名称": "深圳市购机'
    out = parse_model_output(text, finish_reason="length")
    assert out.report.method == "repaired"
    assert out.report.truncated is True
    assert out.value["发票号码"] == "12271524"
    assert out.report.error  # why strict parsing failed is kept


def test_truncation_from_token_budget():
    assert parse_model_output('{"a": "1"}', max_new_tokens=8, n_tokens=8).report.truncated
    assert not parse_model_output('{"a": "1"}', max_new_tokens=8, n_tokens=7).report.truncated


def test_unclosed_fence_is_repaired():
    out = parse_model_output('```json\n{"a": "1", "b": "2')
    assert out.report.method == "repaired"
    assert out.value == {"a": "1", "b": "2"}


def test_failures_never_raise():
    for text in ("", None, "   ", "no json here at all", "```\n```"):
        out = parse_model_output(text)
        assert out.value is None
        assert out.report.method == "failed"
        assert not out.report.ok


def test_report_to_dict():
    d = parse_model_output('{"a": 1}').report.to_dict()
    assert d == {
        "method": "strict",
        "truncated": False,
        "duplicate_keys": [],
        "conflicting_duplicate_keys": [],
        "error": None,
    }


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_never_crashes(text):
    out = parse_model_output(text)
    assert out.report.method in ("strict", "embedded", "repaired", "failed")
    assert out.raw == text
