"""Donut's JSON F1 and nTED accuracy, the numbers ``clovaai/donut``'s ``JSONParseEvaluator`` gives.

Both metrics first pass gold and prediction through Donut's ``normalize_dict``:

* a falsy value (``""``, ``0``, ``[]``, ``{}``, ``None``, ``False``) becomes ``{}`` and a
  dict key whose value normalises to something empty is dropped;
* dict keys are sorted by ``(len(key), key)``; every dict value becomes a list (a dict
  value becomes a one-item list of that dict);
* a list of dicts keeps its non-empty normalised dicts; any other list keeps only its
  ``str``/``int``/``float`` items, as ``str(item).strip()``, dropping empty ones (``bool``,
  ``None``, nested lists and dicts inside such a list are dropped);
* any other scalar becomes ``[str(value).strip()]``.

**JSON F1** (``cal_f1``, corpus level, micro): each document is flattened to
``(dotted.key.path, value)`` pairs; a predicted pair is a true positive when it is still
in the gold multiset (matched pairs are removed); ``F1 = TP / (TP + (FP + FN) / 2)``.

**nTED accuracy** (``cal_acc``, per document, then averaged): the normalised dict is
turned into an ordered tree (``<root>`` -> key nodes -> ``<subtree>`` per list-of-dict item
-> ... -> ``<leaf>value`` nodes); ``acc = max(0, 1 - TED(pred, gold) / TED(empty, gold))``
with Zhang–Shasha costs: insert/remove a leaf = its string length, any other node = 1;
relabel leaf->leaf = Levenshtein distance, leaf<->non-leaf = 1 + leaf length,
non-leaf->non-leaf = 0 if labels are equal else 1. A node is a leaf when its label
contains ``<leaf>`` (all ``<leaf>`` marks are removed to get its text), as in Donut.

Empty gold: Donut's ``cal_f1`` raises ZeroDivisionError when no document has a gold or
predicted pair; here it is 1.0 when both sides are empty. Donut's ``cal_acc`` divides
numpy floats, so a gold tree that normalises to nothing gives ``nan`` or ``-inf`` and
``max(0, ...)`` turns both into 0.0 - even for an empty prediction. We keep that: a gold
answer that is empty after ``normalize_dict`` scores 0.0 nTED accuracy, exactly as Donut.

Speed: each tree is turned into integer arrays once; leaf texts are compared with
rapidfuzz's C Levenshtein, once per leaf pair; the Zhang–Shasha DP, with Donut's relabel
costs computed inline, is compiled by numba when available and runs on the trees
mirrored when that needs fewer cells (see ``eval/ted.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from eval.ted import tree_edit_distance

LEAF = "<leaf>"


# ---------------------------------------------------------------- normalisation
def normalize_dict(data: Any) -> Any:
    """Donut's ``JSONParseEvaluator.normalize_dict``, same output for any JSON value."""
    if not data:
        return {}
    if isinstance(data, dict):
        new_data: Any = {}
        for key in sorted(data.keys(), key=lambda k: (len(k), k)):
            value = normalize_dict(data[key])
            if value:
                if not isinstance(value, list):
                    value = [value]
                new_data[key] = value
        return new_data
    if isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            out = []
            for item in data:
                item = normalize_dict(item)
                if item:
                    out.append(item)
            return out
        return [
            str(item).strip()
            for item in data
            if type(item) in (str, int, float) and str(item).strip()
        ]
    return [str(data).strip()]


def flatten(data: Any) -> list[tuple[str, Any]]:
    """Donut's ``flatten``: ``(dotted.key, value)`` for every leaf; list items share the key."""
    out: list[tuple[str, Any]] = []

    def walk(value: Any, key: str) -> None:
        if type(value) is dict:
            for child_key, child_value in value.items():
                walk(child_value, f"{key}.{child_key}" if key else child_key)
        elif type(value) is list:
            for item in value:
                walk(item, key)
        else:
            out.append((key, value))

    walk(data, "")
    return out


# ---------------------------------------------------------------- F1
@dataclass(frozen=True)
class DonutF1Counts:
    """Per-document counts whose corpus sums give Donut's F1."""

    tp: int
    n_pred: int
    n_gold: int

    @property
    def fn_or_fp(self) -> int:
        return (self.n_pred - self.tp) + (self.n_gold - self.tp)


def donut_f1_counts(pred: Any, gold: Any) -> DonutF1Counts:
    """TP = size of the multiset intersection of flattened (key, value) pairs."""
    p = flatten(normalize_dict(pred))
    g = flatten(normalize_dict(gold))
    return DonutF1Counts(tp=_matched(p, g), n_pred=len(p), n_gold=len(g))


def _matched(pred: list[Any], gold: list[Any]) -> int:
    """Size of the multiset intersection: ``sum((Counter(pred) & Counter(gold)).values())``,
    as the gold count minus what the prediction leaves unmatched (one Counter, not three)."""
    left = Counter(gold)
    left.subtract(pred)
    return len(gold) - sum(n for n in left.values() if n > 0)


def donut_f1_from_counts(tp: float, fn_or_fp: float) -> float:
    """``TP / (TP + (FN + FP) / 2)``; 1.0 when there is nothing to find and nothing found."""
    denom = tp + fn_or_fp / 2
    return 1.0 if denom == 0 else tp / denom


def donut_f1(preds: list[Any], golds: list[Any]) -> float:
    """Corpus-level (micro) Donut F1 over aligned lists of predictions and golds."""
    tp = err = 0
    for pred, gold in zip(preds, golds, strict=True):
        c = donut_f1_counts(pred, gold)
        tp += c.tp
        err += c.fn_or_fp
    return donut_f1_from_counts(tp, err)


# ---------------------------------------------------------------- trees
# Non-leaf label -> id, shared by every tree this process builds (equal labels, equal ids);
# as large as the set of distinct dict keys scored.
_LABEL_IDS: dict[str, int] = {}


# A dict's keys (as a tuple) -> Donut's order of them, ``(len(key), key)``: documents of one
# schema repeat the same key sets. Bounded; past the bound orders are computed, not kept.
_KEY_ORDERS: dict[tuple[Any, ...], list[Any]] = {}
_KEY_ORDERS_MAX = 50_000


def _key_order(data: dict[Any, Any]) -> list[Any]:
    names = tuple(data)
    order = _KEY_ORDERS.get(names)
    if order is None:
        order = sorted(names, key=lambda k: (len(k), k))
        if len(_KEY_ORDERS) < _KEY_ORDERS_MAX:
            _KEY_ORDERS[names] = order
    return order


@dataclass
class DonutTree:
    """A Donut tree in post-order, as the arrays ``eval.ted.tree_edit_distance`` takes."""

    labels: list[str]
    lmd: np.ndarray  # int64: leftmost leaf descendant of each node
    keyroots: np.ndarray  # int64, sorted
    is_leaf: np.ndarray  # bool
    label: np.ndarray  # int64: a leaf's index in ``texts``; another node's label id
    node_cost: np.ndarray  # int64: insert/remove cost, a leaf's text length or 1
    texts: list[str]  # the leaves' texts in post-order (their label with "<leaf>" removed)
    flat: list[tuple[str, Any]] = field(default_factory=list)  # ``flatten`` of the same value

    def __len__(self) -> int:
        return len(self.labels)


def tree_of(value: Any) -> DonutTree:
    """Donut's ``construct_tree_from_dict(normalize_dict(value))``, in post-order, built in
    one pass over the raw value (the tests check it against the two steps).

    Children follow ``construct_tree_from_dict``: a dict's keys in order; a list of dicts
    gives one ``<subtree>`` node per item; any other list gives ``<leaf>item`` nodes. A node
    is a leaf when its label contains ``<leaf>`` (Donut's rule, even for a dict key); its
    text is the label with every ``<leaf>`` removed. Donut's normalisation is applied while
    the nodes are emitted: dict keys in
    ``(len, key)`` order; a value that normalises to nothing (a falsy value, an empty
    dict or list after dropping, a list with no kept item) emits no node and its key
    is dropped; a dict value becomes one ``<subtree>``; a list of dicts gives a
    ``<subtree>`` per non-empty item; any other list keeps its ``str``/``int``/``float``
    items as stripped, non-empty strings; any other scalar is one leaf ``str(v).strip()``.
    """
    labels: list[str] = []
    lmd: list[int] = []
    flat: list[tuple[str, Any]] = []
    leaf_flags: list[bool] = []
    label_of: list[int] = []  # a leaf's index in texts; another node's label id
    cost: list[int] = []
    texts: list[str] = []
    keyroots: list[int] = []  # every child but a parent's first, then the root: in order
    ids = _LABEL_IDS

    def keys(data: dict[Any, Any], path: str) -> int:
        """Emit a dict's kept keys; the leftmost leaf index, -1 if none was kept."""
        first = -1
        for key in _key_order(data):
            value = data[key]
            if type(value) is str and key in ids:
                # the common case, inline: a known key (no "<leaf>" in it) above one leaf
                if not value:
                    continue
                text = value.strip()
                left = len(lmd)
                labels.append(LEAF + text)
                labels.append(key)
                lmd.append(left)
                lmd.append(left)
                flat.append((f"{path}.{key}" if path else key, text))
                if LEAF in text:
                    text = text.replace(LEAF, "")
                leaf_flags.append(True)
                leaf_flags.append(False)
                label_of.append(len(texts))
                label_of.append(ids[key])
                texts.append(text)
                cost.append(len(text))
                cost.append(1)
            elif type(value) is str:
                if not value:
                    continue
                left = leaf(value.strip(), f"{path}.{key}" if path else key)
                close(key, left)
            else:
                left = member(value, key, f"{path}.{key}" if path else key)
                if left < 0:
                    continue  # nothing kept
            if first < 0:
                first = left
            else:  # a later sibling: the node just closed is a keyroot
                keyroots.append(len(lmd) - 1)
        return first

    def close(label: str, first: int) -> int:
        """Emit an inner node (a key, ``<subtree>`` or ``<root>``) above ``first``."""
        idx = len(labels)
        left = idx if first < 0 else first
        labels.append(label)
        lmd.append(left)
        label_id = ids.get(label)  # labels with "<leaf>" in them are never given an id
        if label_id is not None:
            leaf_flags.append(False)
            label_of.append(label_id)
            cost.append(1)
        elif LEAF in label:  # a key containing "<leaf>": a leaf by Donut's rule
            text = label.replace(LEAF, "")
            leaf_flags.append(True)
            label_of.append(len(texts))
            texts.append(text)
            cost.append(len(text))
        else:
            label_id = ids[label] = len(ids)
            leaf_flags.append(False)
            label_of.append(label_id)
            cost.append(1)
        return left

    def member(value: Any, key: str, path: str) -> int:
        """Emit ``key`` and its normalised value, or nothing (-1) when that is empty."""
        if not value:
            return -1
        start = len(labels)
        if isinstance(value, dict):
            first = keys(value, path)
            if len(labels) == start:
                return -1
            first = close("<subtree>", first)
        elif isinstance(value, list):
            first = items(value, path)
            if len(labels) == start:
                return -1
        else:
            first = leaf(str(value).strip(), path)
        return close(key, first)

    def leaf(text: str, path: str) -> int:
        idx = len(labels)
        labels.append(LEAF + text)
        lmd.append(idx)
        flat.append((path, text))
        node_text = text.replace(LEAF, "") if LEAF in text else text
        leaf_flags.append(True)
        label_of.append(len(texts))
        texts.append(node_text)
        cost.append(len(node_text))
        return idx

    def items(data: list[Any], path: str) -> int:
        """Emit a list's normalised items; the leftmost leaf index, -1 if none."""
        first = -1
        if all(isinstance(item, dict) for item in data):
            for item in data:
                if not item:
                    continue
                start = len(labels)
                left = keys(item, path)
                if len(labels) == start:
                    continue
                left = close("<subtree>", left)
                if first < 0:
                    first = left
                else:
                    keyroots.append(len(lmd) - 1)
            return first
        for item in data:
            if type(item) in (str, int, float):
                text = str(item).strip()
                if text:
                    left = leaf(text, path)
                    if first < 0:
                        first = left
                    else:
                        keyroots.append(left)
        return first

    if not value:
        close("<root>", -1)
    elif isinstance(value, dict):
        close("<root>", keys(value, ""))
    elif isinstance(value, list):
        close("<root>", items(value, ""))
    else:
        close("<root>", leaf(str(value).strip(), ""))
    keyroots.append(len(lmd) - 1)
    return _tree(labels, lmd, keyroots, leaf_flags, label_of, cost, texts, flat)


def _tree(
    labels: list[str],
    lmd: list[int],
    keyroots: list[int],
    leaf_flags: list[bool],
    label_of: list[int],
    cost: list[int],
    texts: list[str],
    flat: list[tuple[str, Any]],
) -> DonutTree:
    """The ``DonutTree`` of per-node lists. ``keyroots``, sorted: the root and every node
    that is not its parent's first child (the highest node of each leftmost path)."""
    return DonutTree(
        labels,
        np.array(lmd, dtype=np.int64),
        np.array(keyroots, dtype=np.int64),
        np.array(leaf_flags, dtype=bool),
        np.array(label_of, dtype=np.int64),
        np.array(cost, dtype=np.int64),
        texts,
        flat,
    )


def donut_ted(
    pred_tree: DonutTree,
    gold_tree: DonutTree,
    *,
    compiled: bool | None = None,
    decomposition: str = "auto",
) -> int:
    """Zhang–Shasha distance from ``pred_tree`` to ``gold_tree`` with Donut's costs
    (``decomposition``: see ``eval.ted.tree_edit_distance``)."""
    a, b = pred_tree, gold_tree
    if a.texts and b.texts:
        leaf_dist = cdist(a.texts, b.texts, scorer=Levenshtein.distance, dtype=np.int64)
    else:
        leaf_dist = np.zeros((len(a.texts), len(b.texts)), dtype=np.int64)
    return tree_edit_distance(
        a.lmd, a.keyroots, b.lmd, b.keyroots, a.node_cost, b.node_cost,
        a.is_leaf, b.is_leaf, a.label, b.label, leaf_dist,
        compiled=compiled, decomposition=decomposition,
    )  # fmt: skip


def donut_nted_accuracy(pred: Any, gold: Any, *, compiled: bool | None = None) -> float:
    """``max(0, 1 - TED(pred, gold) / TED(empty, gold))`` on Donut-normalised trees."""
    return _nted_trees(tree_of(pred), tree_of(gold), compiled)


def donut_scores(pred: Any, gold: Any) -> tuple[DonutF1Counts, float]:
    """F1 counts and nTED accuracy of one document, each side normalised into its tree once."""
    pred_tree, gold_tree = tree_of(pred), tree_of(gold)
    fp, fg = pred_tree.flat, gold_tree.flat  # flatten() of the normalised values (tested)
    if fp == fg and pred_tree.labels == gold_tree.labels and (pred_tree.lmd == gold_tree.lmd).all():
        # the same tree (post-order labels and leftmost leaves fix it): TED 0, all pairs matched
        n = len(fg)
        nted = 0.0 if int(gold_tree.node_cost[:-1].sum()) == 0 else 1.0
        return DonutF1Counts(n, n, n), nted
    return DonutF1Counts(_matched(fp, fg), len(fp), len(fg)), _nted_trees(
        pred_tree, gold_tree, None
    )


def _nted_trees(pred_tree: DonutTree, gold_tree: DonutTree, compiled: bool | None) -> float:
    # TED(<root> alone, gold) = inserting every gold node but the root.
    denom = int(gold_tree.node_cost[:-1].sum())
    if denom == 0:
        return 0.0  # Donut: max(0, 1 - x / 0.0) with numpy floats is 0 (nan or -inf)
    dist = donut_ted(pred_tree, gold_tree, compiled=compiled)
    return max(0.0, 1.0 - dist / denom)
