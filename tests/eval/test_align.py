"""Leaf alignment: normalisation by type, Hungarian matching, outcome per leaf."""

from __future__ import annotations

import pytest

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


def test_vectorised_pair_matrix_equals_the_per_pair_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long lists (cdist + numpy) align exactly as the per-pair loop does, ties included."""
    import random

    import eval.align as align_module

    rng = random.Random(0)
    values = ["1.00", "¥1.00", "apple", "aple", "", None, "pear", 2, "2016年06月12日"]

    def item() -> object:
        r = rng.random()
        if r < 0.15:
            return rng.choice(values)
        if r < 0.2:
            return [rng.choice(values)]
        d = {k: rng.choice(values) for k in ("name", "amount", "date") if rng.random() < 0.8}
        if rng.random() < 0.2:
            d["sub"] = {"x": rng.choice(values)}
        return d

    def key(res: object) -> object:
        leaves = [
            (lf.field, lf.outcome, lf.anls, repr(lf.gold), repr(lf.pred)) for lf in res.leaves
        ]
        return leaves, (res.rows.exact, res.rows.gold, res.rows.pred)

    for _ in range(150):
        gold = {"items": [item() for _ in range(rng.randint(8, 16))]}
        pred = {"items": [item() for _ in range(rng.randint(8, 16))] + gold["items"][:4]}
        monkeypatch.setattr(align_module, "VECTOR_MIN_PAIRS", 10**9)
        slow = key(align(gold, pred, _norm()))
        monkeypatch.setattr(align_module, "VECTOR_MIN_PAIRS", 0)
        assert key(align(gold, pred, _norm())) == slow
