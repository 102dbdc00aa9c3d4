import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools.records import (
    LabelFormatError,
    LabelRecord,
    read_labels,
    resolve_image,
    validate_fields,
    write_labels,
)


def test_roundtrip(tmp_path):
    recs = [
        LabelRecord("a", "img/a.jpg", "vat_invoice", {"k": "v", "items": [{"x": "1"}]}, {"m": 1}),
        LabelRecord("b", "img/b.jpg", "vat_invoice", {"tags": ["x", "y"]}),
    ]
    p = tmp_path / "labels.jsonl"
    assert write_labels(p, recs) == 2
    assert read_labels(p) == recs


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"image": "a.jpg", "fields": {}}', r"labels\.jsonl:2: missing required key 'id'"),
        (
            '{"id": "x", "image": "a.jpg", "fields": {"n": 5}}',
            r":2: fields\.n: values must be strings",
        ),
        (
            '{"id": "x", "image": "a.jpg", "fields": {"l": ["a", {"b": "c"}]}}',
            r"fields\.l: a list mixes",
        ),
        ('{"id": "x", "image": "a.jpg", "fields": {"l": [1]}}', r"fields\.l: list items must be"),
        (
            '{"id": "a", "image": "a.jpg", "fields": {}}',
            r":2: duplicate id 'a' \(first on line 1\)",
        ),
        (
            '{"id": "x", "image": "a.jpg", "fields": {}, "extra": 1}',
            r"unknown top-level keys \['extra'\]",
        ),
        ("not json", r"labels\.jsonl:2: not valid JSON"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    p = tmp_path / "labels.jsonl"
    p.write_text('{"id": "a", "image": "a.jpg", "fields": {}}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(LabelFormatError, match=message):
        read_labels(p)


def test_validate_nested_path_in_message():
    with pytest.raises(LabelFormatError, match=r"fields\.items\[1\]\.amount"):
        validate_fields({"items": [{"amount": "1"}, {"amount": 2.5}]})


def test_resolve_image_relative_to_labels_file(tmp_path):
    labels = tmp_path / "sub" / "labels.jsonl"
    assert resolve_image("img/a.jpg", labels) == (tmp_path / "sub" / "img" / "a.jpg").resolve()
    assert resolve_image("/abs/a.jpg", labels) == resolve_image("/abs/a.jpg", tmp_path)


def test_missing_file_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        read_labels(tmp_path / "nope.jsonl")


def _valid_reference(value: object, top: bool = True) -> bool:
    """The label rules, written plainly (recursive): the oracle for the fast check."""
    if top and not isinstance(value, dict):
        return False
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and k and _valid_reference(v, False) for k, v in value.items()
        )
    if isinstance(value, list):
        if not (all(type(v) is str for v in value) or all(type(v) is dict for v in value)):
            return False
        return all(_valid_reference(v, False) for v in value)
    return False


_TREES = st.recursive(
    st.text(max_size=2) | st.integers() | st.none() | st.booleans(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=2), c, max_size=3),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(fields=st.dictionaries(st.text(max_size=2), _TREES, max_size=4))
def test_validate_fields_accepts_exactly_the_valid_trees(fields: dict) -> None:
    """The path-free fast check must not let through what the rules reject (nor the reverse)."""
    try:
        validate_fields(fields)
        accepted = True
    except LabelFormatError:
        accepted = False
    assert accepted == _valid_reference(fields)


def test_validate_fields_accepts_deep_valid_trees() -> None:
    deep: dict = {"a": "x"}
    for _ in range(5000):
        deep = {"k": deep}
    validate_fields(deep)  # iterative: no RecursionError on a valid tree
