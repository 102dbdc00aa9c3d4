"""PaddleOCR-VL-KIE accuracy and ANLS / ANLS*: hand-computed values, package equality."""

from __future__ import annotations

import json

import pytest
from anls_star import anls_score
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.anls import anls, anls_star
from eval.kie_accuracy import kie_accuracy
from tests.eval.strategies import DOCS, JSON_VALUES


def test_kie_accuracy_follows_the_published_rules() -> None:
    gold = {
        "total": "507.82",  # str equality: "¥507.82" is wrong
        "date": "2016",
        "buyer": {"name": "A", "tax": "1"},  # dict: all gold sub-keys recursively
        "items": [{"n": "x"}, {"n": "y"}],  # list: equal after sorting by JSON
        "tags": ["b", "a"],
    }
    pred = {
        "total": "¥507.82",
        "date": 2016,  # str(2016) == "2016"
        "buyer": {"name": "A", "tax": "1", "extra": "ignored"},
        "items": [{"n": "y"}, {"n": "x"}],
        "tags": ["a", "b"],
        "invented": "not penalised",
    }
    assert kie_accuracy(gold, pred) == pytest.approx(4 / 5)
    # one typo in one item zeroes the whole list; a missing key is None
    assert (
        kie_accuracy({"items": [{"n": "x"}, {"n": "y"}]}, {"items": [{"n": "x"}, {"n": "z"}]})
        == 0.0
    )
    assert kie_accuracy({"a": "None"}, {}) == 1.0  # str(None) == "None": their quirk
    # an empty gold dict is never correct (0/0 -> 0.0 in their compare_results)
    assert kie_accuracy({"a": {}, "b": "1"}, {"a": {}, "b": "1"}) == 0.5
    assert kie_accuracy({}, {}) == 0.0
    # inside lists, dicts compare by ==: an extra key makes the item wrong
    assert kie_accuracy({"l": [{"a": "1"}]}, {"l": [{"a": "1", "b": ""}]}) == 0.0


def test_anls_threshold() -> None:
    assert anls("abcd", "abcd") == 1.0
    assert anls("abcd", "abce") == pytest.approx(0.75)
    assert anls("abcd", "axyd") == 0.0  # NLD 0.5 is not < 0.5
    assert anls("", "") == 1.0
    assert anls("abc", "") == 0.0


def test_anls_star_hand_computed() -> None:
    # two keys: one exact (1), one at NLD 1/4 (0.75); mean 0.875
    assert anls_star({"a": "abcd", "b": "x"}, {"a": "abce", "b": "x"}) == pytest.approx(0.875)
    # a hallucinated key adds a 0 to the mean
    assert anls_star({"a": "x"}, {"a": "x", "b": "y"}) == pytest.approx(0.5)


@settings(max_examples=200, deadline=None)
@given(gold=DOCS, pred=JSON_VALUES)
def test_anls_star_equals_the_package(gold: dict, pred: object) -> None:
    try:
        expected = anls_score(gold, pred)
    except Exception as exc:  # the package rejects some inputs; so must we
        with pytest.raises(type(exc)):
            anls_star(gold, pred)
        return
    assert anls_star(gold, pred) == expected
    # parsed JSON needs no conversion copy (the scorer's case); neither side is modified
    before = json.dumps([gold, pred], sort_keys=True)
    assert anls_star(gold, pred, plain_json=True) == expected
    assert json.dumps([gold, pred], sort_keys=True) == before


LOOK_ALIKES = st.sampled_from([1, 1.0, True, "1", "A", " a ", "a", "", None, 0, False])


def _near_copy(value: object, swap: list[bool], alike: list[object]) -> object:
    """``value`` rebuilt with some leaves replaced by look-alikes (the flags, in leaf order)."""
    if isinstance(value, dict):
        return {k: _near_copy(v, swap, alike) for k, v in value.items()}
    if isinstance(value, list):
        return [_near_copy(v, swap, alike) for v in value]
    if swap and swap.pop():
        return alike.pop() if alike else None
    return value


@settings(max_examples=200, deadline=None)
@given(
    gold=DOCS,
    swap=st.lists(st.booleans(), max_size=25),
    alike=st.lists(LOOK_ALIKES, max_size=25),
)
def test_anls_star_on_near_copies_equals_the_package(
    gold: dict, swap: list[bool], alike: list[object]
) -> None:
    """A prediction that mostly copies the gold (the common case, where equal leaves score
    1 without a distance) with some leaves swapped for look-alikes: 1 == 1.0 == True
    compare equal in Python but are different texts; case and spaces are not."""
    pred = _near_copy(gold, swap, alike)
    for g, p in ((gold, pred), ({"items": [gold, gold]}, {"items": [pred, gold]})):
        try:
            expected = anls_score(g, p)
        except Exception:
            continue  # rejected inputs: test_anls_star_equals_the_package covers them
        assert anls_star(g, p, plain_json=True) == expected


# ---------------------------------------------------------------- long lists, both paths
LIKE = st.sampled_from(["a", "A", " a ", "b", "ab", "abc", "abd", "", None, 1, 1.0, True, "1"])
ITEMS = st.dictionaries(st.sampled_from(["x", "y", "z", "w"]), LIKE, max_size=4)
LONG_LISTS = st.lists(ITEMS | LIKE, min_size=8, max_size=14)


@pytest.mark.parametrize("vector_min", [0, 10**9], ids=["vectorised", "per-pair"])
@settings(max_examples=60, deadline=None)
@given(gold=LONG_LISTS, pred=LONG_LISTS, tail=JSON_VALUES)
def test_anls_star_long_lists_equal_the_package(
    vector_min: int, gold: list, pred: list, tail: object
) -> None:
    """Ties (equal items, case-only differences, 1 == 1.0 == True) in long lists of leaves
    and flat dicts: the vectorised pair matrix and the package's matching give its value."""
    import eval.anls as anls_module

    saved = anls_module._VECTOR_MIN_PAIRS
    anls_module._VECTOR_MIN_PAIRS = vector_min
    try:
        g = {"items": gold, "t": tail}
        p = {"items": pred + gold[: len(gold) // 2], "t": tail}
        assert anls_star(g, p) == anls_score(g, p)
        assert anls_star(gold, pred) == anls_score(gold, pred)
    finally:
        anls_module._VECTOR_MIN_PAIRS = saved


def test_assignment_is_the_packages_on_ties() -> None:
    """The matching handed to munkres' kernel as an array is the one its public call gives."""
    import numpy as np
    from munkres import Munkres, make_cost_matrix

    from eval.anls import _assignment

    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = (int(x) for x in rng.integers(1, 10, size=2))
        avg = rng.choice([0.0, 0.25, 0.5, 1.0, float(np.nextafter(1.0, 2.0))], size=(n, m))
        assert _assignment(avg) == Munkres().compute(make_cost_matrix(avg.tolist()))
        # arbitrary means too: the cost matrix numpy makes is make_cost_matrix's, float for float
        avg = rng.random((n, m)) * rng.choice([1e-9, 1.0, 3.0])
        assert (avg.max() - avg).tolist() == make_cost_matrix(avg.tolist())
        assert _assignment(avg) == Munkres().compute(make_cost_matrix(avg.tolist()))


@settings(max_examples=500, deadline=None)
@given(a=st.text(alphabet="ab c1¥.发", max_size=10), b=st.text(alphabet="ab c1¥.发", max_size=10))
def test_leaf_score_is_the_packages_division(a: str, b: str) -> None:
    """rapidfuzz's normalized distance is the package's ``float(dist) / float(longest)``."""
    from rapidfuzz.distance import Levenshtein

    from eval.anls import ANLS_TAU, _leaf_score

    longest = max(len(a), len(b))
    value = 0.0 if longest == 0 else float(Levenshtein.distance(a, b)) / float(longest)
    score = 1 - value
    assert _leaf_score(a, b) == (0.0 if score < ANLS_TAU else score)


@settings(max_examples=300, deadline=None)
@given(
    a=st.lists(JSON_VALUES, max_size=4), b=st.lists(JSON_VALUES, max_size=4), how=st.integers(0, 2)
)
def test_kie_list_verdict_is_the_published_sorted_comparison(a: list, b: list, how: int) -> None:
    """The length, equality and membership shortcuts never change the published sorted-list
    verdict (``how``: 1 = the gold reversed, 2 = reversed with one item repeated over
    another, so every item is in the gold but the multisets differ)."""
    import json

    from eval.kie_accuracy import _lists_equal

    if how and a:
        b = list(reversed(a))
        if how == 2:
            b[0] = b[-1]

    def key(x: object) -> str:
        return json.dumps(x, sort_keys=True, ensure_ascii=False)

    assert _lists_equal(a, b) == (sorted(a, key=key) == sorted(b, key=key))
