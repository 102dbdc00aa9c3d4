"""ANLS per leaf and ANLS* per document.

``anls(gold, pred)`` (Biten et al., 2019): ``1 - NLD`` where ``NLD = Levenshtein(gold, pred)
/ max(len(gold), len(pred))``, set to 0 when ``NLD >= tau`` (``tau = 0.5``); two empty
strings score 1. The scorer applies it to the type-normalised strings of one leaf.

``anls_star(gold, pred)`` (Peer et al., 2024): the ``anls_star`` package's
``anls_score`` on the whole gold and predicted JSON (dicts: missing and extra keys
penalised; lists: Hungarian matching; leaves: ANLS on lower-cased, whitespace-collapsed
strings). We build the package's own trees and only give their leaves rapidfuzz's C
Levenshtein instead of the package's pure-Python loop (same integers) and let a list reuse
its Hungarian matching instead of computing it twice; the tests check equality with
``anls_star.anls_score`` on arbitrary JSON.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from anls_star.anls_star import ANLSDict, ANLSLeaf, ANLSList, ANLSTree, ANLSTuple
from rapidfuzz.distance import Levenshtein

ANLS_TAU = 0.5


def anls(gold: str, pred: str, tau: float = ANLS_TAU) -> float:
    """Thresholded normalised Levenshtein similarity of two strings."""
    if gold == pred:
        return 1.0
    longest = max(len(gold), len(pred))
    nld = Levenshtein.distance(gold, pred) / longest
    return 0.0 if nld >= tau else 1.0 - nld


def _memo_hungarian(node: ANLSList) -> Callable[..., Any]:
    """``node._hungarian`` that reuses its matching for the ``pairwise_len`` call.

    The package matches a list twice per comparison: once in ``nls_list`` and again in
    ``pairwise_len(other)`` (called with ``()``, ``[]``), which only reads the matched
    indexes. The matching depends on the two lists alone, not on the key bookkeeping
    arguments, so the second call can return the first call's result.
    """
    compute = node._hungarian
    cache: dict[int, tuple[Any, Any]] = {}

    def hungarian(other: Any, key_hierarchy: tuple[str, ...], key_scores: list[Any]) -> Any:
        hit = cache.get(id(other))
        if hit is not None and hit[0] is other and not key_hierarchy and not key_scores:
            return hit[1]
        result = compute(other, key_hierarchy, key_scores)
        cache[id(other)] = (other, result)
        return result

    return hungarian


def _with_fast_leaves(tree: ANLSTree) -> ANLSTree:
    """Give the package's tree C-speed leaf distances and a memoised list matching.

    Both are instance attributes that shadow the package's methods on this tree only.
    """
    stack: list[ANLSTree] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ANLSLeaf):
            node._levenshtein_distance = Levenshtein.distance  # type: ignore[method-assign]
        elif isinstance(node, ANLSDict):
            stack.extend(node.tree.values())
        elif isinstance(node, ANLSList):
            node._hungarian = _memo_hungarian(node)  # type: ignore[method-assign]
            stack.extend(node.tree)
        elif isinstance(node, ANLSTuple):
            stack.extend(node.tree)
    return tree


def _jsonable(value: Any) -> Any:
    """ANLS* accepts str/int/float/bool/None/list/dict; tuples are gold-only options."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def anls_star(gold: Any, pred: Any) -> float:
    """``anls_star.anls_score(gold, pred)``, same value, C-speed string distance."""
    gold, pred = _jsonable(gold), _jsonable(pred)
    if isinstance(gold, list) and all(isinstance(x, str) for x in gold) and isinstance(pred, str):
        gold = tuple(gold)  # the package's ST-VQA compatibility rule
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gold_tree = _with_fast_leaves(ANLSTree.make_tree(gold, is_gt=True))
        pred_tree = _with_fast_leaves(ANLSTree.make_tree(pred, is_gt=False))
        score, _, _ = gold_tree.anls(pred_tree)
    return float(score)
