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


# ---------------------------------------------------------------- bounds (issue 12)

import json  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from data_tools.parsing import (  # noqa: E402
    REPAIR_SKIPPED,
    JsonLimitError,
    ParseLimits,
    json_depth,
    json_size,
    loads_bounded,
)
from tests.eval.strategies import JSON_VALUES  # noqa: E402


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 3000, "nested deeper than 64"),
        ("[" * 3000 + "]" * 3000, "nested deeper than 64"),
        ('{"a":' * 200 + "1" + "}" * 200, "nested deeper than 64"),
        ("1" * 5000, "number literal of 5000 characters"),
        ('{"a": ' + "9" * 5000 + "}", "number literal of 5000 characters"),
        ('{"a": 1.' + "5" * 300 + "}", "number literal of 302 characters"),
        ("x" * 1_000_001, "over the limit of 1000000"),
        ("prose " + "[" * 3000 + " more", "nested deeper than 64"),
    ],
)
def test_hostile_outputs_fail_with_the_bound_named(text: str, reason: str) -> None:
    out = parse_model_output(text)
    assert out.report.method == "failed" and out.value is None
    assert reason in out.report.error


def test_repair_is_skipped_past_its_limit_and_says_so() -> None:
    text = '{"a": "' + "y" * 300_000  # unclosed: json_repair would take seconds
    t0 = time.perf_counter()
    out = parse_model_output(text)
    assert time.perf_counter() - t0 < 1.0
    assert out.report.method == "failed" and out.report.repair_skipped
    assert out.report.error.startswith(REPAIR_SKIPPED)
    # the same output under a larger repair limit is repaired
    small = parse_model_output('{"a": "' + "y" * 500, limits=ParseLimits(max_repair_chars=1000))
    assert small.report.method == "repaired" and not small.report.repair_skipped


def test_depth_at_the_limit_is_fine() -> None:
    ok = "[" * 64 + "]" * 64
    assert parse_model_output(ok).report.method == "strict"
    assert parse_model_output("[" * 65 + "]" * 65).report.method == "failed"
    assert json_depth([[[]]], 10) == 3 and json_depth("x", 10) == 0


def test_loads_bounded() -> None:
    assert loads_bounded(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    with pytest.raises(JsonLimitError, match="deeper than 64"):
        loads_bounded("[" * 100000)
    with pytest.raises(JsonLimitError, match="number literal"):
        loads_bounded("[" + "1" * 200 + "]")
    with pytest.raises(json.JSONDecodeError, match="not UTF-8"):
        loads_bounded(b'"\xff"')
    with pytest.raises(JsonLimitError, match="characters"):
        loads_bounded("[]" * 10, ParseLimits(max_chars=5))


def test_deep_unclosed_text_is_not_handed_to_json_repair() -> None:
    t0 = time.perf_counter()
    out = parse_model_output("{" * 6000)  # json_repair alone: 2.2 s here, superlinear
    assert time.perf_counter() - t0 < 0.5
    assert out.report.method == "failed" and "nested deeper than 64" in out.report.error


def _size_reference(value: object) -> tuple[int, int]:
    """(depth, leaves) written plainly (recursive): the oracle for ``json_size``."""
    if isinstance(value, dict | list):
        children = list(value.values()) if isinstance(value, dict) else value
        sizes = [_size_reference(c) for c in children]
        return 1 + max((d for d, _ in sizes), default=0), sum(n for _, n in sizes)
    return 0, 1


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, bound=st.integers(1, 4))
def test_json_size_is_depth_and_leaves(value: object, bound: int) -> None:
    depth, leaves = _size_reference(value)
    assert json_size(value) == (depth, leaves)
    assert (json_size(value, max_depth=bound)[0] > bound) == (depth > bound)
    assert (json_size(value, max_leaves=bound)[1] > bound) == (leaves > bound)


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES, how=st.sampled_from(["strict", "fenced", "truncated"]))
def test_parsed_output_carries_the_whole_size_of_its_value(value: object, how: str) -> None:
    """``ParsedOutput.size`` is ``json_size(value)`` (what the scorer's limits then reuse
    instead of walking the value again), whichever way the value was found."""
    text = json.dumps({"k": value}, ensure_ascii=False)
    if how == "fenced":
        text = f"Here:\n```json\n{text}\n```"
    elif how == "truncated":
        text = text[: max(2, len(text) * 2 // 3)]
    parsed = parse_model_output(text)
    if parsed.value is None:
        assert parsed.size is None
    else:
        assert parsed.size == json_size(parsed.value)
