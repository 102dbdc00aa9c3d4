"""Align a predicted JSON value with the gold one, leaf by leaf, and judge every leaf.

* dicts are aligned by key (gold keys in gold order, then predicted-only keys);
* lists (of dicts or of strings) by Hungarian matching
  (``scipy.optimize.linear_sum_assignment``) on item similarity: for two scalars 1 if
  their normalised values are equal, else their normalised Levenshtein similarity; for two
  dicts the mean of that over the union of their (flattened) leaf keys; 0 across kinds.
  Pairs with similarity 0 stay unmatched;
* a value of the wrong kind (a string where the gold has a dict, ...) is treated as
  absent for the gold side and as predicted-only for the prediction side.

Each leaf gets one outcome, from the normalised values (``data_tools.normalize``, type
from the schema at the leaf's key path):

=================  ===================================================
``tp``             gold not empty, prediction equal
``wrong``          gold not empty, prediction not empty and different
``miss``           gold not empty, prediction empty or absent
``hallucinated``   gold empty or absent, prediction not empty
``tn``             both empty (not counted in any rate)
=================  ===================================================

A leaf's *field* is its key path with list items marked ``[]``:
``购买方.名称``, ``货物或应税劳务、服务[].金额``, ``tags[]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from eval.anls import PLAIN_FLOAT_SUM, anls

TP, WRONG, MISS, HALLUCINATED, TN = "tp", "wrong", "miss", "hallucinated", "tn"
OUTCOMES = (TP, WRONG, MISS, HALLUCINATED)
ITEM = "[]"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


@dataclass(slots=True)
class Leaf:
    """One judged leaf."""

    field: str
    ftype: str
    gold: Any
    pred: Any
    outcome: str
    anls: float
    line_item: bool  # inside a list of objects


@dataclass
class RowStats:
    """Rows of lists of objects: matched rows that are entirely right, and row counts."""

    exact: int = 0
    gold: int = 0
    pred: int = 0


class Normalizer:
    """``normalize_value`` with a per-run memo (values repeat across systems and rows)."""

    def __init__(
        self, normalize: Callable[[Any, str], str], type_of: Callable[[tuple[str, ...]], str]
    ) -> None:
        self._normalize = normalize
        self._type_of = type_of
        self._values: dict[tuple[str, str], str] = {}
        self._types: dict[tuple[str, ...], str] = {}
        self._fields: dict[tuple[str, ...], tuple[str, str]] = {}
        self._children: dict[tuple[str, ...], _ChildTypes] = {}

    def ftype(self, path: tuple[str, ...]) -> str:
        t = self._types.get(path)
        if t is None:
            t = self._types[path] = self._type_of(tuple(p for p in path if p != ITEM))
        return t

    def child_types(self, path: tuple[str, ...]) -> dict[str, str]:
        """key -> type of ``(*path, key)``: a dict's leaves looked up by key alone."""
        types = self._children.get(path)
        if types is None:
            types = self._children[path] = _ChildTypes(self, path)
        return types

    def leaf_info(self, path: tuple[str, ...]) -> tuple[str, str]:
        """(type, field name) of a leaf path: one lookup per leaf."""
        info = self._fields.get(path)
        if info is None:
            info = self._fields[path] = (self.ftype(path), field_name(path))
        return info

    def value(self, value: Any, ftype: str) -> str:
        if type(value) is str:  # the common case first
            text = value
        elif value is MISSING or value is None:
            return ""
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        elif isinstance(value, (int, float)):
            text = repr(value) if isinstance(value, float) else str(value)
        else:  # a dict or list where a leaf was expected: compare its JSON text
            import json

            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        key = (text, ftype)
        out = self._values.get(key)
        if out is None:
            out = self._values[key] = self._normalize(text, ftype)
        return out


class _ChildTypes(dict[str, str]):
    """``Normalizer.child_types``: filled on first use of each key."""

    def __init__(self, norm: Normalizer, path: tuple[str, ...]) -> None:
        super().__init__()
        self._norm = norm
        self._path = path

    def __missing__(self, key: str) -> str:
        t = self[key] = self._norm.ftype((*self._path, key))
        return t


@dataclass
class Alignment:
    leaves: list[Leaf] = field(default_factory=list)
    rows: RowStats = field(default_factory=RowStats)


def field_name(path: tuple[str, ...]) -> str:
    """A leaf path as the report names it: ``a.b``, ``items[].name``."""
    out = ""
    for p in path:
        if p == ITEM:
            out += ITEM
        else:
            out = f"{out}.{p}" if out else p
    return out


def align(gold: Any, pred: Any, norm: Normalizer) -> Alignment:
    """Judge every leaf of ``gold`` and ``pred`` (any JSON values)."""
    result = Alignment()
    _align(gold, pred, (), norm, result, False)
    return result


def _is_scalar(v: Any) -> bool:
    return not isinstance(v, (dict, list)) and v is not MISSING


def _align(
    g: Any, p: Any, path: tuple[str, ...], norm: Normalizer, out: Alignment, in_row: bool
) -> None:
    if isinstance(g, dict):
        if isinstance(p, dict):
            for k, gv in g.items():
                pv = p.get(k, MISSING)
                if type(gv) is str and (type(pv) is str or pv is MISSING):  # most leaves
                    _leaf(gv, pv, (*path, k), norm, out, in_row)
                else:
                    _align(gv, pv, (*path, k), norm, out, in_row)
            for k, pv in p.items():
                if k not in g:
                    _align(MISSING, pv, (*path, k), norm, out, in_row)
        else:
            for k, gv in g.items():
                _align(gv, MISSING, (*path, k), norm, out, in_row)
            if p is not MISSING:
                _align(MISSING, p, path, norm, out, in_row)
        return
    if isinstance(g, list):
        if isinstance(p, list):
            _align_lists(g, p, path, norm, out, in_row)
        else:
            _align_lists(g, [], path, norm, out, in_row)
            if p is not MISSING:
                _align(MISSING, p, path, norm, out, in_row)
        return
    # g is a scalar or MISSING
    if isinstance(p, dict):
        if g is not MISSING:
            _leaf(g, MISSING, path, norm, out, in_row)
        for k, pv in p.items():
            _align(MISSING, pv, (*path, k), norm, out, in_row)
        return
    if isinstance(p, list):
        if g is not MISSING:
            _leaf(g, MISSING, path, norm, out, in_row)
        _align_lists([], p, path, norm, out, in_row)
        return
    _leaf(g, p, path, norm, out, in_row)


def _leaf(
    g: Any, p: Any, path: tuple[str, ...], norm: Normalizer, out: Alignment, in_row: bool
) -> None:
    ftype, name = norm.leaf_info(path)
    gn = norm.value(g, ftype)
    pn = norm.value(p, ftype)
    if gn:
        if gn == pn:
            outcome, score = TP, 1.0
        elif pn:
            outcome, score = WRONG, anls(gn, pn)
        else:
            outcome, score = MISS, 0.0
    else:
        outcome, score = (HALLUCINATED, 0.0) if pn else (TN, 1.0)
    out.leaves.append(  # positional: Leaf's field order (name, type, gold, pred, ...)
        Leaf(
            name,
            ftype,
            None if g is MISSING else g,
            None if p is MISSING else p,
            outcome,
            score,
            in_row,
        )
    )


# ---------------------------------------------------------------- lists
def _flat_leaves(v: Any, path: tuple[str, ...], norm: Normalizer) -> dict[tuple[str, ...], str]:
    """Flattened normalised leaves of one list item (nested lists become one sorted string)."""
    out: dict[tuple[str, ...], str] = {}
    if type(v) is dict and not any(isinstance(x, (dict, list)) for x in v.values()):
        types = norm.child_types(path)  # a flat item (a line item): no walk, no path tuples
        for k, x in v.items():
            out[(k,)] = norm.value(x, types[k])
        return out

    def walk(x: Any, here: tuple[str, ...]) -> None:
        if isinstance(x, dict):
            for k, xv in x.items():
                walk(xv, (*here, k))
        elif isinstance(x, list):
            parts = []
            for item in x:
                sub = _flat_leaves(item, (*here, ITEM), norm)
                parts.extend(f"{'.'.join(k)}={s}" for k, s in sub.items())
            out[here] = "|".join(sorted(parts))
        else:
            out[here] = norm.value(x, norm.ftype((*path, *here)))

    walk(v, ())
    return out


_normalized_similarity = Levenshtein.normalized_similarity


def _scalar_similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    return _normalized_similarity(a, b)


def _item_similarity(
    ga: dict[tuple[str, ...], str] | None, pa: dict[tuple[str, ...], str] | None
) -> float:
    if ga is None or pa is None:
        return 0.0
    total: float = 0  # as sum(): int 0, then the keys' similarities left to right
    n = 0
    for k in {**ga, **pa}:  # gold keys, then predicted-only ones; empty on both: skipped
        a, b = ga.get(k, ""), pa.get(k, "")
        if a == b:
            if a:
                total += 1.0
                n += 1
        elif a and b:
            total += _normalized_similarity(a, b)
            n += 1
        else:
            n += 1  # one side empty: 0
    return total / n if n else 1.0


_LSA: Any = None


def _lsa() -> Any:
    """``scipy.optimize.linear_sum_assignment``, loaded on first use.

    The function lives in the C extension ``scipy.optimize._lsap``; it is loaded from its
    file without running ``scipy/optimize/__init__`` (0.7 s here: most of scipy), which
    gives the very function object ``scipy.optimize`` exports. Anything unexpected takes
    the plain import.
    """
    global _LSA
    if _LSA is None:
        _LSA = _lsap_direct()
    if _LSA is None:
        from scipy.optimize import linear_sum_assignment

        _LSA = linear_sum_assignment
    return _LSA


def _lsap_direct() -> Any:
    import importlib.machinery
    import importlib.util
    import os
    import sys

    name = "scipy.optimize._lsap"
    try:
        if name in sys.modules:
            return sys.modules[name].linear_sum_assignment
        scipy_spec = importlib.util.find_spec("scipy")
        if scipy_spec is None or not scipy_spec.origin:
            return None
        folder = os.path.join(os.path.dirname(scipy_spec.origin), "optimize")
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_lsap" + suffix)
            if os.path.isfile(path):
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    return None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules.setdefault(name, module)
                return module.linear_sum_assignment
    except Exception:  # any surprise: the regular import
        return None
    return None


def warm_up() -> None:
    """Import scipy's assignment solver now, before worker processes fork."""
    _lsa()


VECTOR_MIN_PAIRS = 64  # below this many item pairs the per-pair loop is faster (measured)


def _similarity_matrix(
    gf: list[Any], pf: list[Any], g_kinds: list[str], p_kinds: list[str]
) -> np.ndarray:
    """Item similarity of every (gold, predicted) pair; 0 across kinds.

    Long lists are computed with rapidfuzz's ``cdist`` (one call per leaf key) and numpy,
    adding the per-key terms in the order the per-pair loop adds them, so every value is
    the one ``_item_similarity`` / ``_scalar_similarity`` gives.
    """
    if len(gf) * len(pf) < VECTOR_MIN_PAIRS or not PLAIN_FLOAT_SUM:
        rows = []  # Python floats, one array at the end: cheaper than numpy item writes
        for a, ak in zip(gf, g_kinds, strict=True):
            row = []
            for b, bk in zip(pf, p_kinds, strict=True):
                if ak != bk:
                    row.append(0.0)
                elif ak == "scalar":
                    row.append(_scalar_similarity(a, b) if (a or b) else 1.0)
                else:
                    row.append(_item_similarity(a, b))
            rows.append(row)
        return np.array(rows, dtype=np.float64).reshape(len(gf), len(pf))
    sim = np.zeros((len(gf), len(pf)))
    from rapidfuzz.process import cdist

    def scores(a: list[str], b: list[str]) -> np.ndarray:
        # normalized_similarity is _scalar_similarity: 1 when equal (both empty too), 0
        # against an empty string, else 1 - distance / longer length
        return cdist(a, b, scorer=Levenshtein.normalized_similarity, dtype=np.float64, workers=1)

    rows = [i for i, k in enumerate(g_kinds) if k == "scalar"]
    cols = [j for j, k in enumerate(p_kinds) if k == "scalar"]
    if rows and cols:
        sim[np.ix_(rows, cols)] = scores([gf[i] for i in rows], [pf[j] for j in cols])
    for kind in ("dict", "list"):
        g_groups: dict[tuple[Any, ...], list[int]] = {}
        p_groups: dict[tuple[Any, ...], list[int]] = {}
        for i, k in enumerate(g_kinds):
            if k == kind:
                g_groups.setdefault(tuple(gf[i]), []).append(i)
        for j, k in enumerate(p_kinds):
            if k == kind:
                p_groups.setdefault(tuple(pf[j]), []).append(j)
        for g_keys, rows in g_groups.items():
            for p_keys, cols in p_groups.items():
                in_gold = set(g_keys)
                keys = [*g_keys, *(k for k in p_keys if k not in in_gold)]
                acc: Any = 0  # sum(): int 0, then one key at a time, in key order
                count: Any = 0
                for key in keys:
                    a = [gf[i].get(key, "") for i in rows]
                    b = [pf[j].get(key, "") for j in cols]
                    a_set = np.fromiter((bool(x) for x in a), dtype=bool, count=len(a))
                    b_set = np.fromiter((bool(x) for x in b), dtype=bool, count=len(b))
                    counted = a_set[:, None] | b_set[None, :]  # keys empty on both sides: skipped
                    if not counted.any():
                        continue
                    term = np.where(counted, scores(a, b), 0.0)  # + 0.0 leaves a sum unchanged
                    acc = acc + term
                    count = count + counted
                block = np.ones((len(rows), len(cols)))
                if not isinstance(count, int):
                    has = count > 0
                    block[has] = (acc / np.where(has, count, 1))[has]
                sim[np.ix_(rows, cols)] = block
    return sim


def _align_lists(
    g: list[Any],
    p: list[Any],
    path: tuple[str, ...],
    norm: Normalizer,
    out: Alignment,
    in_row: bool,
) -> None:
    item_path = (*path, ITEM)
    g_dicts = [isinstance(x, dict) for x in g]
    p_dicts = [isinstance(x, dict) for x in p]
    out.rows.gold += sum(g_dicts)
    out.rows.pred += sum(p_dicts)
    if not g or not p:
        for x, is_row in zip(g, g_dicts, strict=True):
            _align(x, MISSING, item_path, norm, out, in_row or is_row)
        for x, is_row in zip(p, p_dicts, strict=True):
            _align(MISSING, x, item_path, norm, out, in_row or is_row)
        return

    def kind(x: Any) -> str:
        return "dict" if isinstance(x, dict) else ("list" if isinstance(x, list) else "scalar")

    def features(x: Any) -> Any:
        if isinstance(x, (dict, list)):
            return _flat_leaves(x, item_path, norm)
        return norm.value(x, norm.ftype(item_path))

    g_kinds, p_kinds = [kind(x) for x in g], [kind(x) for x in p]
    gf, pf = [features(x) for x in g], [features(x) for x in p]
    sim = _similarity_matrix(gf, pf, g_kinds, p_kinds)
    for k in range(min(len(g), len(p))):
        sim[k, k] += 1e-9  # prefer keeping positions on ties
    rows, cols = _lsa()(sim, maximize=True)
    matched_g: set[int] = set()
    matched_p: set[int] = set()
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        if sim[i, j] <= 1e-9:
            continue
        matched_g.add(i)
        matched_p.add(j)
        is_row = g_dicts[i] or p_dicts[j]
        start = len(out.leaves)
        _align(g[i], p[j], item_path, norm, out, in_row or is_row)
        if g_dicts[i] and p_dicts[j]:
            row_leaves = out.leaves[start:]
            if all(lf.outcome in (TP, TN) for lf in row_leaves):
                out.rows.exact += 1
    for i, x in enumerate(g):
        if i not in matched_g:
            _align(x, MISSING, item_path, norm, out, in_row or g_dicts[i])
    for j, x in enumerate(p):
        if j not in matched_p:
            _align(MISSING, x, item_path, norm, out, in_row or p_dicts[j])
