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

Where Donut divides by zero (every gold document empty for F1; an empty gold tree for
nTED) it raises; here F1 is 1.0 when gold and prediction are both empty (0.0 otherwise)
and nTED accuracy is 1.0 when the distance is 0 (0.0 otherwise).

Speed: strings are compared with rapidfuzz's C Levenshtein, every relabel cost is computed
once per tree pair, and the Zhang–Shasha DP is compiled by numba when available
(see ``eval/ted.py``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein
from rapidfuzz.process import cdist

from eval.ted import tree_edit_distance

LEAF = "<leaf>"
_LEAF_NODE = object()  # marks a leaf child in `_children`


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
    tp = sum((Counter(p) & Counter(g)).values())
    return DonutF1Counts(tp=tp, n_pred=len(p), n_gold=len(g))


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
@dataclass
class DonutTree:
    """A Donut tree in post-order: node labels, leaf flags and texts, lmd, keyroots."""

    labels: list[str]
    is_leaf: np.ndarray  # bool
    texts: list[str]  # label with every "<leaf>" removed (leaves only; "" otherwise)
    lmd: list[int]
    keyroots: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def node_cost(self) -> np.ndarray:
        """Insert/remove cost per node: text length for leaves, 1 otherwise."""
        lengths = np.fromiter((len(t) for t in self.texts), dtype=np.int64, count=len(self.texts))
        return np.where(self.is_leaf, lengths, 1)


def _children(data: Any, label: str) -> tuple[str, list[tuple[Any, str]] | None]:
    """(label, children as (data, label)) following ``construct_tree_from_dict``."""
    if isinstance(data, dict):
        return label, [(v, k) for k, v in data.items()]
    if isinstance(data, list):
        if all(isinstance(item, dict) for item in data):
            return label, [(item, "<subtree>") for item in data]
        return label, [(_LEAF_NODE, f"{LEAF}{item}") for item in data]
    raise ValueError(f"Donut tree: unexpected {type(data).__name__} under {label!r}")


def build_tree(normalized: Any) -> DonutTree:
    """Donut's ``construct_tree_from_dict`` (on an already normalised value), in post-order."""
    labels: list[str] = []
    lmd: list[int] = []
    # iterative post-order: (data, label, children, next child index, first leaf index)
    stack: list[list[Any]] = []
    label, kids = _children(normalized, "<root>")
    stack.append([label, kids, 0, -1])
    while stack:
        top = stack[-1]
        label, kids, k, first = top
        if kids is not None and k < len(kids):
            top[2] += 1
            child_data, child_label = kids[k]
            if child_data is _LEAF_NODE:
                # a <leaf>value node: no children
                idx = len(labels)
                labels.append(child_label)
                lmd.append(idx)
                if top[3] < 0:
                    top[3] = idx
                continue
            _, child_kids = _children(child_data, child_label)
            stack.append([child_label, child_kids, 0, -1])
            continue
        stack.pop()
        idx = len(labels)
        labels.append(label)
        leftmost = first if first >= 0 else idx
        lmd.append(leftmost)
        if stack and stack[-1][3] < 0:
            stack[-1][3] = leftmost
    last_with_lmd: dict[int, int] = {}
    for i, left in enumerate(lmd):
        last_with_lmd[left] = i
    is_leaf = np.fromiter((LEAF in lb for lb in labels), dtype=bool, count=len(labels))
    texts = [lb.replace(LEAF, "") if leaf else "" for lb, leaf in zip(labels, is_leaf, strict=True)]
    return DonutTree(labels, is_leaf, texts, lmd, sorted(last_with_lmd.values()))


def update_costs(a: DonutTree, b: DonutTree) -> np.ndarray:
    """Donut's ``update_cost`` for every node pair, as an (len(a), len(b)) int64 array."""
    n1, n2 = len(a), len(b)
    cost = np.empty((n1, n2), dtype=np.int64)
    len_a = np.fromiter((len(t) for t in a.texts), dtype=np.int64, count=n1)
    len_b = np.fromiter((len(t) for t in b.texts), dtype=np.int64, count=n2)
    la, lb = a.is_leaf, b.is_leaf
    # non-leaf vs non-leaf: label inequality
    vocab: dict[str, int] = {}
    ids_a = np.fromiter((vocab.setdefault(x, len(vocab)) for x in a.labels), np.int64, n1)
    ids_b = np.fromiter((vocab.setdefault(x, len(vocab)) for x in b.labels), np.int64, n2)
    cost[:] = ids_a[:, None] != ids_b[None, :]
    # one side a leaf: 1 + that leaf's length
    cost[np.ix_(~la, lb)] = 1 + len_b[lb][None, :]
    cost[np.ix_(la, ~lb)] = 1 + len_a[la][:, None]
    ia, ib = np.flatnonzero(la), np.flatnonzero(lb)
    if len(ia) and len(ib):
        ta = [a.texts[i] for i in ia]
        tb = [b.texts[j] for j in ib]
        cost[np.ix_(ia, ib)] = cdist(ta, tb, scorer=Levenshtein.distance, dtype=np.int64)
    return cost


def donut_ted(pred_tree: DonutTree, gold_tree: DonutTree, *, compiled: bool | None = None) -> int:
    """Zhang–Shasha distance from ``pred_tree`` to ``gold_tree`` with Donut's costs."""
    return tree_edit_distance(
        pred_tree.lmd,
        pred_tree.keyroots,
        gold_tree.lmd,
        gold_tree.keyroots,
        pred_tree.node_cost,
        gold_tree.node_cost,
        update_costs(pred_tree, gold_tree),
        compiled=compiled,
    )


def donut_nted_accuracy(pred: Any, gold: Any, *, compiled: bool | None = None) -> float:
    """``max(0, 1 - TED(pred, gold) / TED(empty, gold))`` on Donut-normalised trees."""
    gold_tree = build_tree(normalize_dict(gold))
    pred_tree = build_tree(normalize_dict(pred))
    # TED(<root> alone, gold) = inserting every gold node but the root.
    denom = int(gold_tree.node_cost[:-1].sum())
    dist = donut_ted(pred_tree, gold_tree, compiled=compiled)
    if denom == 0:
        return 1.0 if dist == 0 else 0.0
    return max(0.0, 1.0 - dist / denom)
