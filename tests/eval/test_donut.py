"""Donut JSON F1 / nTED accuracy: hand-computed cases and equality with Donut's own code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.donut import (
    _LABEL_IDS,
    LEAF,
    DonutTree,
    _tree,
    donut_f1,
    donut_f1_counts,
    donut_nted_accuracy,
    donut_scores,
    flatten,
    normalize_dict,
    tree_of,
)
from eval.ted import HAVE_NUMBA
from tests.eval.donut_reference import JSONParseEvaluator
from tests.eval.strategies import DOCS, JSON_VALUES

REF = JSONParseEvaluator()


def test_normalize_dict_follows_donut() -> None:
    data = {"bb": "x ", "a": {"c": 0, "d": ["1", 2, True, None, " ", [3]]}, "e": "", "f": []}
    # keys sorted by (len, key); falsy values dropped; dict values wrapped in a list;
    # non-dict lists keep str/int/float items as stripped strings
    assert normalize_dict(data) == {"a": [{"d": ["1", "2"]}], "bb": ["x"]}
    assert normalize_dict("  ") == [""]
    assert normalize_dict(0) == {}


def test_flatten_repeats_keys_for_list_items() -> None:
    data = {"menu": [{"name": ["cake"], "count": ["2"]}, {"name": ["juice"], "count": ["1"]}]}
    assert flatten(data) == [
        ("menu.name", "cake"),
        ("menu.count", "2"),
        ("menu.name", "juice"),
        ("menu.count", "1"),
    ]


def test_f1_hand_computed() -> None:
    gold = {"a": "1", "b": ["x", "y"]}
    pred = {"a": "1", "b": ["x", "z"], "c": "3"}
    # gold pairs: a=1, b=x, b=y ; pred pairs: a=1, b=x, b=z, c=3 -> TP 2, FP 2, FN 1
    c = donut_f1_counts(pred, gold)
    assert (c.tp, c.n_pred, c.n_gold) == (2, 4, 3)
    assert donut_f1([pred], [gold]) == pytest.approx(2 / (2 + 3 / 2))
    assert REF.cal_f1([pred], [gold]) == donut_f1([pred], [gold])


def test_nted_hand_computed() -> None:
    # gold tree: <root> -> a -> <leaf>abc ; TED(empty, gold) = 1 (key) + 3 (leaf) = 4
    assert donut_nted_accuracy({"a": "abd"}, {"a": "abc"}) == pytest.approx(1 - 1 / 4)
    assert donut_nted_accuracy({"a": "abc"}, {"a": "abc"}) == 1.0
    # key renamed: relabel a->b costs 1
    assert donut_nted_accuracy({"b": "abc"}, {"a": "abc"}) == pytest.approx(1 - 1 / 4)
    # nothing predicted: the whole gold must be inserted -> 0
    assert donut_nted_accuracy({}, {"a": "abc"}) == 0.0


def test_tree_post_order_and_keyroots() -> None:
    t = tree_of({"a": "x", "bb": ["y", "z"]})
    assert t.labels == ["<leaf>x", "a", "<leaf>y", "<leaf>z", "bb", "<root>"]
    assert t.lmd.tolist() == [0, 0, 2, 3, 2, 0]
    assert t.keyroots.tolist() == [3, 4, 5]
    assert t.texts == ["x", "y", "z"]
    assert t.node_cost.tolist() == [1, 1, 1, 1, 1, 1]
    assert t.label[t.is_leaf].tolist() == [0, 1, 2]  # a leaf's label is its index in texts


def test_mirror_reverses_every_sibling_order() -> None:
    from eval.ted import _mirrored_cells, mirrored, relevant_cells

    t = tree_of({"a": "xy", "bb": ["y", "zzz"]})
    lmd, keyroots, cost, leaf, label = mirrored(t.lmd, t.node_cost, t.is_leaf, t.label)
    # mirrored: <root> -> bb -> (zzz, y), a -> xy; post-order zzz, y, bb, xy, a, <root>
    assert lmd.tolist() == [0, 1, 0, 3, 3, 0]
    assert keyroots.tolist() == [1, 4, 5]
    assert cost.tolist() == [3, 1, 1, 2, 1, 1]
    assert leaf.tolist() == [True, True, False, True, False, False]
    assert [t.texts[i] for i in label[leaf]] == ["zzz", "y", "xy"]
    # subtree size + 1 per keyroot: left zzz, bb, <root> (1, 3, 6); right y, a, <root> (1, 2, 6)
    assert relevant_cells(t.lmd, t.keyroots) == 2 + 4 + 7
    assert relevant_cells(lmd, keyroots) == _mirrored_cells(t.lmd) == 2 + 3 + 7


def test_empty_gold_does_not_divide_by_zero() -> None:
    assert donut_f1([{}], [{}]) == 1.0
    assert donut_f1([{"a": "1"}], [{}]) == 0.0
    # Donut's cal_acc gives 0 for an empty gold tree (numpy nan/-inf through max(0, .))
    assert donut_nted_accuracy({}, {}) == 0.0 == REF.cal_acc({}, {})
    assert donut_nted_accuracy({"a": "1"}, {}) == 0.0 == REF.cal_acc({"a": "1"}, {})


def test_real_vlm_labels_match_reference(vat_invoices: Path) -> None:
    golds = [json.loads(x)["fields"] for x in (vat_invoices / "ground_truth.jsonl").open()]
    preds = [
        json.loads((vat_invoices / "vlm_labels" / f"b{i}.json").read_text())["data"]
        for i in range(3)
    ]
    for p, g in zip(preds, golds, strict=True):
        ref = REF.cal_acc(p, g)
        assert donut_nted_accuracy(p, g) == ref
        assert donut_nted_accuracy(p, g, compiled=False) == ref
        assert 0.5 < ref < 0.8  # these labels use other schemas: far from perfect
    assert donut_f1(preds, golds) == REF.cal_f1(preds, golds)


@settings(max_examples=150, deadline=None)
@given(pred=JSON_VALUES, gold=DOCS)
def test_nted_equals_donut_reference(pred: object, gold: dict) -> None:
    ours = donut_nted_accuracy(pred, gold)
    ours_py = donut_nted_accuracy(pred, gold, compiled=False)
    assert ours == ours_py
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = REF.cal_acc(pred, gold)
    assert ours == ref


@settings(max_examples=150, deadline=None)
@given(pred=DOCS, gold=DOCS)
def test_f1_counts_equal_donut_reference(pred: dict, gold: dict) -> None:
    c, acc = donut_scores(pred, gold)
    assert acc == donut_nted_accuracy(pred, gold)
    if c.n_gold + c.n_pred == 0:
        with pytest.raises(ZeroDivisionError):
            REF.cal_f1([pred], [gold])
        return
    assert donut_f1([pred], [gold]) == REF.cal_f1([pred], [gold])


def test_numba_is_used_when_installed() -> None:
    pytest.importorskip("numba")
    assert HAVE_NUMBA


@settings(max_examples=150, deadline=None)
@given(a=JSON_VALUES, b=JSON_VALUES)
def test_compiled_distance_equals_the_python_loop(a: object, b: object) -> None:
    from eval.donut import donut_ted

    ta, tb = tree_of(a), tree_of(b)
    assert donut_ted(ta, tb) == donut_ted(ta, tb, compiled=False)
    assert donut_ted(ta, ta) == 0


@settings(max_examples=200, deadline=None)
@given(a=JSON_VALUES | DOCS, b=JSON_VALUES | DOCS)
def test_left_and_right_decompositions_give_one_distance(a: object, b: object) -> None:
    from eval.donut import donut_ted

    ta, tb = tree_of(a), tree_of(b)
    left = donut_ted(ta, tb, decomposition="left")
    assert donut_ted(ta, tb, decomposition="right") == left
    assert donut_ted(ta, tb, decomposition="right", compiled=False) == left
    assert donut_ted(tb, ta, decomposition="right") == donut_ted(tb, ta, decomposition="left")


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES | DOCS)
def test_tree_flat_is_flatten(value: object) -> None:
    """The (key path, value) pairs collected while building the tree are ``flatten``'s."""
    assert tree_of(value).flat == flatten(normalize_dict(value))


@settings(max_examples=150, deadline=None)
@given(pred=JSON_VALUES | DOCS, gold=DOCS, same=st.booleans())
def test_donut_scores_equal_the_separate_metrics(pred: object, gold: dict, same: bool) -> None:
    """``donut_scores`` (one normalisation per side, a shortcut for equal trees) gives what
    ``donut_f1_counts`` and ``donut_nted_accuracy`` give."""
    from eval.donut import donut_f1_counts, donut_scores

    if same:
        pred = json.loads(json.dumps(gold))
    counts, nted = donut_scores(pred, gold)
    assert counts == donut_f1_counts(pred, gold)
    assert nted == donut_nted_accuracy(pred, gold)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES | DOCS)
def test_one_pass_tree_equals_normalise_then_build(value: object) -> None:
    """``tree_of`` (normalising while emitting nodes) is the tree of the two steps."""
    a, b = tree_of(value), _two_step_tree(normalize_dict(value))
    assert a.labels == b.labels and a.flat == b.flat and a.texts == b.texts
    for name in ("lmd", "keyroots", "is_leaf", "label", "node_cost"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist(), name


def _two_step_tree(normalized: object) -> DonutTree:
    """The oracle for ``tree_of``: Donut's ``construct_tree_from_dict`` on an already
    normalised value, visited plainly, then every node's arrays derived from its label."""
    labels: list[str] = []
    lmd: list[int] = []
    flat: list[tuple[str, object]] = []

    def visit(data: object, label: str, path: str) -> int:
        first = -1
        if isinstance(data, dict):
            for key, value in data.items():
                left = visit(value, key, f"{path}.{key}" if path else key)
                first = left if first < 0 else first
        elif isinstance(data, list):
            if all(isinstance(item, dict) for item in data):
                for item in data:
                    left = visit(item, "<subtree>", path)
                    first = left if first < 0 else first
            else:
                for item in data:
                    first = len(labels) if first < 0 else first
                    labels.append(f"{LEAF}{item}")
                    lmd.append(len(labels) - 1)
                    flat.append((path, item))
        labels.append(label)
        lmd.append(len(labels) - 1 if first < 0 else first)
        return lmd[-1]

    visit(normalized, "<root>", "")
    leaf_flags = [LEAF in lb for lb in labels]
    texts = [lb.replace(LEAF, "") for lb, leaf in zip(labels, leaf_flags, strict=True) if leaf]
    positions = iter(range(len(texts)))
    label_of = [
        next(positions) if leaf else _LABEL_IDS.setdefault(lb, len(_LABEL_IDS))
        for lb, leaf in zip(labels, leaf_flags, strict=True)
    ]
    lengths = iter(len(t) for t in texts)
    cost = [next(lengths) if leaf else 1 for leaf in leaf_flags]
    last_with_lmd = dict(zip(lmd, range(len(lmd)), strict=True))  # keyroots by definition
    return _tree(
        labels, lmd, sorted(last_with_lmd.values()), leaf_flags, label_of, cost, texts, flat
    )


@settings(max_examples=300, deadline=None)
@given(
    pred=st.lists(st.sampled_from([("a", "1"), ("a", "2"), ("b", "1"), ("", "")]), max_size=8),
    gold=st.lists(st.sampled_from([("a", "1"), ("a", "2"), ("b", "1"), ("", "")]), max_size=8),
)
def test_matched_pairs_are_the_multiset_intersection(pred: list, gold: list) -> None:
    from collections import Counter

    from eval.donut import _matched

    assert _matched(pred, gold) == sum((Counter(pred) & Counter(gold)).values())
