"""Leaf alignment: normalisation by type, Hungarian matching, outcome per leaf."""

from __future__ import annotations

from data_tools.normalize import normalize_value
from eval.align import Normalizer, align

TYPES = {
    ("total",): "amount",
    ("date",): "date",
    ("code",): "code",
    ("items", "amount"): "amount",
    ("tags",): "text",
}


def _norm() -> Normalizer:
    return Normalizer(normalize_value, lambda path: TYPES.get(path, "text"))


def outcomes(gold: object, pred: object) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for leaf in align(gold, pred, _norm()).leaves:
        out.setdefault(leaf.field, []).append(leaf.outcome)
    return out


def test_values_are_compared_after_type_normalisation() -> None:
    gold = {
        "total": "¥3,495.00",
        "date": "2016年06月12日",
        "code": "4400 154130",
        "name": "小米 红米",
    }
    pred = {"total": "3495", "date": "2016-06-12", "code": "4400154130", "name": "小米红米"}
    assert outcomes(gold, pred) == {"total": ["tp"], "date": ["tp"], "code": ["tp"], "name": ["tp"]}


def test_missing_wrong_hallucinated_and_empty() -> None:
    gold = {"a": "1", "b": "2", "c": "", "d": "4"}
    pred = {"a": "1", "b": "3", "c": "x", "e": "5", "f": ""}
    assert outcomes(gold, pred) == {
        "a": ["tp"],
        "b": ["wrong"],
        "c": ["hallucinated"],
        "d": ["miss"],
        "e": ["hallucinated"],
        "f": ["tn"],
    }


def test_list_items_are_matched_not_compared_by_position() -> None:
    gold = {"items": [{"name": "apple", "amount": "1.00"}, {"name": "pear", "amount": "2.00"}]}
    pred = {"items": [{"name": "pear", "amount": "2"}, {"name": "aple", "amount": "1.00"}]}
    res = align(gold, pred, _norm())
    got = {(lf.field, lf.gold): lf.outcome for lf in res.leaves}
    assert got == {
        ("items[].name", "apple"): "wrong",
        ("items[].amount", "1.00"): "tp",
        ("items[].name", "pear"): "tp",
        ("items[].amount", "2.00"): "tp",
    }
    assert all(lf.line_item for lf in res.leaves)
    assert (res.rows.exact, res.rows.gold, res.rows.pred) == (1, 2, 2)


def test_extra_and_missing_list_items() -> None:
    gold = {"tags": ["a", "b"]}
    pred = {"tags": ["b", "c", "a"]}
    assert sorted(outcomes(gold, pred)["tags[]"]) == ["hallucinated", "tp", "tp"]
    assert outcomes({"tags": ["a", "b"]}, {"tags": []}) == {"tags[]": ["miss", "miss"]}


def test_wrong_kind_is_absent_plus_invented() -> None:
    gold = {"buyer": {"name": "A"}}
    pred = {"buyer": "A"}
    assert outcomes(gold, pred) == {"buyer.name": ["miss"], "buyer": ["hallucinated"]}


def test_numbers_and_null_in_predictions() -> None:
    gold = {"total": "507.82", "n": "5", "x": "1"}
    pred = {"total": 507.82, "n": 5, "x": None}
    assert outcomes(gold, pred) == {"total": ["tp"], "n": ["tp"], "x": ["miss"]}
