"""`parse_model_output` never raises and stays fast, whatever the text (hypothesis)."""

from __future__ import annotations

import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_tools.parsing import ParseLimits, parse_model_output

METHODS = {"strict", "embedded", "repaired", "failed"}
SMALL = ParseLimits(max_chars=20_000, max_depth=8, max_number_chars=20, max_repair_chars=2_000)

json_alphabet = st.sampled_from(
    [*'{}[]",:\\ \n0123456789.eE+-truefalsnul`xyz发票', "\ud800", "\\u", "```json\n"]
)
jsonish = st.lists(json_alphabet, max_size=400).map("".join)
leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
values = st.recursive(
    leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def _check(text: str, limits: ParseLimits | None = None) -> None:
    t0 = time.perf_counter()
    out = parse_model_output(text, limits=limits) if limits else parse_model_output(text)
    assert time.perf_counter() - t0 < 2.0
    assert out.report.method in METHODS
    assert out.raw == text
    if out.report.method == "failed":
        assert out.value is None and out.report.error
    else:
        json.dumps(out.value)  # the value is safe to walk and serialise (depth bounded)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=2000))
def test_any_text(text: str) -> None:
    _check(text)


@settings(max_examples=400, deadline=None)
@given(jsonish)
def test_json_like_text(text: str) -> None:
    _check(text)
    _check(text, SMALL)


@settings(max_examples=200, deadline=None)
@given(values, st.sampled_from(["", "Here: ", "```json\n"]), st.integers(0, 40))
def test_real_json_wrapped_and_cut(value: object, prefix: str, cut: int) -> None:
    text = prefix + json.dumps(value, ensure_ascii=False)
    _check(text)
    _check(text[: max(0, len(text) - cut)])  # truncated, as with finish_reason == "length"


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6000), st.sampled_from(["[", '{"a":', '[{"k":', "1", '"', "{"]))
def test_repeated_prefixes(n: int, unit: str) -> None:
    _check(unit * n)
