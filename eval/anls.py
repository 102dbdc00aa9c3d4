"""ANLS per leaf and ANLS* per document.

``anls(gold, pred)`` (Biten et al., 2019): ``1 - NLD`` where ``NLD = Levenshtein(gold, pred)
/ max(len(gold), len(pred))``, set to 0 when ``NLD >= tau`` (``tau = 0.5``); two empty
strings score 1. The scorer applies it to the type-normalised strings of one leaf.

``anls_star(gold, pred)`` (Peer et al., 2024) is the number ``anls_star.anls_score`` gives
(package 1.0.1): dicts penalise missing and extra keys, lists are matched one-to-one by
the Hungarian method on the mean score of each item pair (an exact-equal pair wins a tie
by one ulp), leaves are ANLS on lower-cased, whitespace-collapsed strings, ``None`` in the
gold means "no answer expected". The score is ``sum(leaf scores) / pairwise length``.

It is computed here without the package's object trees, and fast for long lists:

* the item-pair score matrix of a list is vectorised: lists of leaves and lists of flat
  dicts (leaf or null values; invoice line items) get their leaf distances from
  rapidfuzz's ``cdist`` and their per-pair sums from numpy, term by term in the
  package's order, so every float is the one the package computes;
* the matching is the package's own solver (``munkres``, which breaks ties its own way),
  given the cost matrix as an array instead of nested lists;
* leaf scores of the matched pairs are then summed in the package's order (Python
  ``sum``, left to right).

The tests check equality (``==``) with ``anls_star.anls_score`` on arbitrary JSON and on
long lists in both the vectorised and the per-pair path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rapidfuzz.distance import Levenshtein

ANLS_TAU = 0.5
_normalized_distance = Levenshtein.normalized_distance
_VECTOR_MIN_PAIRS = 100  # below this many item pairs the per-pair loop is faster (measured)
_NONEY: tuple[Any, ...] = (None, {}, [], "")  # the package's ANLSNone.check_if_none values
# the vectorised sums assume Python's float ``sum`` adds left to right (3.11; 3.12 compensates)
PLAIN_FLOAT_SUM = sum([1e100, 1.0, -1e100]) == 0.0


def anls(gold: str, pred: str, tau: float = ANLS_TAU) -> float:
    """Thresholded normalised Levenshtein similarity of two strings."""
    if gold == pred:
        return 1.0
    longest = max(len(gold), len(pred))
    nld = Levenshtein.distance(gold, pred) / longest
    return 0.0 if nld >= tau else 1.0 - nld


def _jsonable(value: Any) -> Any:
    """ANLS* accepts str/int/float/bool/None/list/dict; tuples are gold-only options."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def anls_star(gold: Any, pred: Any, *, plain_json: bool = False) -> float:
    """``anls_star.anls_score(gold, pred)``: the same value, near-linear in list length.

    ``plain_json``: both values are already made of dict, list, str, int, float, bool and
    None only (what ``json.loads`` returns: the scorer's gold and predictions), so the
    copy that turns tuples and other objects into those is skipped (it changes nothing
    then; neither value is modified either way).
    """
    if not plain_json:
        gold, pred = _jsonable(gold), _jsonable(pred)
    if isinstance(gold, list) and all(isinstance(x, str) for x in gold) and isinstance(pred, str):
        gold = tuple(gold)  # the package's ST-VQA compatibility rule
        if not gold:
            raise ValueError("Expected at least 1 valid ground truth option")
    values, _, length = _Scorer().nls(gold, pred)
    return (sum(values) / length) if length > 0 else 1.0


# ---------------------------------------------------------------- the tree walk
def _length(v: Any) -> int:
    """The package's ``len`` of a tree: leaves (a null counts 1; tuples: the longest option)."""
    if isinstance(v, dict):
        return sum(_length(x) for x in v.values())
    if isinstance(v, list):
        return sum(_length(x) for x in v)
    if isinstance(v, tuple):
        return max(_length(x) for x in v)
    return 1


def _is_leaf(v: Any) -> bool:
    return isinstance(v, (str, int, float))  # bool is an int


def _text(v: Any) -> str:
    return " ".join(str(v).strip().lower().split())


def _leaf_score(a: str, b: str) -> float:
    """The package's ``1 - dist / max(len)`` (0 for two empty strings), thresholded at tau.

    rapidfuzz's ``normalized_distance`` is that same float division, done in C (tested
    equal on 200,000 random pairs; the package-equality tests cover it as well).
    """
    score = 1 - _normalized_distance(a, b)
    return 0.0 if score < ANLS_TAU else score


def _mean(values: Sequence[float], length: int) -> float:
    return (sum(values) / length) if length > 0 else 1.0


Result = tuple[list[float], Any, int]  # (leaf scores in order, closest gold, pairwise length)


class _Scorer:
    """One ANLS* computation; memoises leaf texts."""

    def __init__(self) -> None:
        self._texts: dict[Any, str] = {}

    def text(self, v: Any) -> str:
        key = v if type(v) is str else (type(v), v)  # 1, 1.0 and True hash alike
        t = self._texts.get(key)
        if t is None:
            t = self._texts[key] = _text(v)
        return t

    def nls(self, g: Any, p: Any) -> Result:
        """(``nls_list``, closest gold, ``pairwise_len``) of gold ``g`` against prediction ``p``.

        A missing dict key is passed as ``None``, as the package's ``ANLSNone``.
        """
        if isinstance(g, dict):
            if not isinstance(p, dict):
                return [0.0], g, max(_length(g), _length(p))
            return self._dict(g, p)
        if isinstance(g, list):
            if not isinstance(p, list):
                return [0.0], g, max(_length(g), _length(p))
            return self._list(g, p)
        if isinstance(g, tuple):
            return self._tuple(g, p)
        length = max(1, _length(p))
        if g is None:
            return ([1.0], p, length) if p in _NONEY else ([0.0], None, length)
        if not _is_leaf(p):
            return [0.0], g, length
        if g == p and type(g) is type(p):  # the same text, so 1 - 0 (1 == True: hence type)
            return [1.0], g, length
        return [_leaf_score(self.text(g), self.text(p))], g, length

    def _dict(self, g: dict[Any, Any], p: dict[Any, Any]) -> Result:
        values: list[float] = []
        chosen: dict[Any, Any] = {}
        length = 0
        for k in [*g, *(k for k in p if k not in g)]:
            gv, pv = g.get(k), p.get(k)
            if type(gv) is str and type(pv) is str:  # most keys: nls of two leaves, inline
                values.append(1.0 if gv == pv else _leaf_score(self.text(gv), self.text(pv)))
                length += 1
                chosen[k] = gv
                continue
            if k not in g and pv in _NONEY:  # a predicted-only null key: length only
                length += max(1, _length(pv))
                continue
            v, c, n = self.nls(gv, pv)
            values.extend(v)
            length += n
            if k in p or c not in _NONEY:
                chosen[k] = c
        return values, chosen, length

    def _tuple(self, g: tuple[Any, ...], p: Any) -> Result:
        best: Result | None = None
        best_key: tuple[float, int] | None = None
        for option in g:
            v, c, n = self.nls(option, p)
            key = (_mean(v, n), 1 if c == p else 0)
            if best_key is None or key > best_key:  # max(): the first of equal options
                best, best_key = (v, c, n), key
        assert best is not None  # tuples are never empty (checked by anls_star)
        return best

    def _list(self, g: list[Any], p: list[Any]) -> Result:
        pairs: dict[tuple[int, int], Result] = {}
        if g and p:
            avg = self._avg_matrix(g, p, pairs)
            indexes = _assignment(avg)
        else:
            indexes = []
        values: list[float] = []
        length = 0
        chosen_by_col: list[tuple[Any, int]] = []
        for i, j in indexes:
            r = pairs.get((i, j)) or self.nls(g[i], p[j])
            values.extend(r[0])
            length += r[2]
            chosen_by_col.append((r[1], j))
        chosen_by_col.sort(key=lambda x: x[1])
        rows = {i for i, _ in indexes}
        cols = {j for _, j in indexes}
        chosen = [c for c, _ in chosen_by_col]
        chosen.extend(g[i] for i in range(len(g)) if i not in rows)
        length += sum(_length(g[i]) for i in range(len(g)) if i not in rows)
        length += sum(_length(p[j]) for j in range(len(p)) if j not in cols)
        return values, chosen, length

    # ------------------------------------------------------------ the pair matrix
    def _avg_matrix(self, g: list[Any], p: list[Any], pairs: dict[tuple[int, int], Result]) -> Any:
        """The package's ``avg_mat``: mean score per item pair, +1 ulp for exact pairs."""
        import numpy as np

        avg = np.empty((len(g), len(p)))
        done = np.zeros((len(g), len(p)), dtype=bool)
        if PLAIN_FLOAT_SUM and len(g) * len(p) >= _VECTOR_MIN_PAIRS:
            self._vector_blocks(g, p, avg, done)
        todo = np.argwhere(~done).tolist() if done.any() else _all_pairs(len(g), len(p))
        flat_g = [PLAIN_FLOAT_SUM and _signature(x) is not None for x in g]
        flat_p = [PLAIN_FLOAT_SUM and _signature(x) is not None for x in p]
        for i, j in todo:
            gi, pj = g[i], p[j]
            if flat_g[i] and flat_p[j]:
                a = self._flat_mean(gi, pj)
                exact = _flat_exact(gi, pj)
            else:
                r = pairs[(i, j)] = self.nls(gi, pj)
                a = _mean(r[0], r[2])
                exact = pj == r[1]
            avg[i, j] = math.nextafter(a, math.inf) if exact else a
        return avg

    def _flat_mean(self, g: dict[Any, Any], p: dict[Any, Any]) -> float:
        """``sum(nls_list) / pairwise_len`` of two flat dicts (leaf or null values), inline.

        The same terms in the same order as ``_dict``; the running total is ``sum()``'s
        (int 0, then float additions left to right: ``PLAIN_FLOAT_SUM``).
        """
        total: float = 0
        length = 0
        for k, gv in g.items():
            pv = p.get(k)
            length += 1
            if gv is None:
                total += 1.0 if pv in _NONEY else 0.0
            elif pv is None:
                total += 0.0
            elif gv == pv and type(gv) is type(pv):  # as in nls
                total += 1.0
            else:
                total += _leaf_score(self.text(gv), self.text(pv))
        for k, pv in p.items():
            if k not in g:
                length += 1
                if pv not in _NONEY:
                    total += 0.0
        return (total / length) if length > 0 else 1.0

    def _vector_blocks(self, g: list[Any], p: list[Any], avg: Any, done: Any) -> None:
        """Fill the leaf x leaf and flat-dict x flat-dict parts of ``avg`` with numpy."""
        g_leaf = [i for i, x in enumerate(g) if _is_leaf(x)]
        p_leaf = [j for j, x in enumerate(p) if _is_leaf(x)]
        if g_leaf and p_leaf:
            self._leaf_block(g, p, g_leaf, p_leaf, avg, done)
        g_sigs = _group(g, _signature)
        p_sigs = _group(p, _signature)
        if not g_sigs or not p_sigs:
            return
        per_key: dict[Any, Any] = {}  # key -> leaf scores of every flat gold x flat pred item

        def key_scores(k: Any) -> Any:
            out = per_key.get(k)
            if out is None:
                import numpy as np

                rows = [i for sig, r in g_sigs.items() if dict(sig).get(k) in ("L", "E") for i in r]
                cols = [j for sig, c in p_sigs.items() if dict(sig).get(k) in ("L", "E") for j in c]
                out = per_key[k] = np.zeros(avg.shape)
                if rows and cols:
                    out[np.ix_(rows, cols)] = self._scores(
                        [g[i][k] for i in rows], [p[j][k] for j in cols]
                    )
            return out

        for gsig, rows in g_sigs.items():
            for psig, cols in p_sigs.items():
                self._dict_block(g, p, gsig, psig, rows, cols, avg, done, key_scores)

    def _scores(self, a: Sequence[Any], b: Sequence[Any]) -> Any:
        """Leaf score matrix of two sequences of leaves (the package's per-leaf floats)."""
        import numpy as np
        from rapidfuzz.process import cdist

        ta = [self.text(x) for x in a]
        tb = [self.text(x) for x in b]
        dist = cdist(ta, tb, scorer=Levenshtein.distance, dtype=np.int64, workers=1)
        la = np.fromiter((len(t) for t in ta), dtype=np.int64, count=len(ta))
        lb = np.fromiter((len(t) for t in tb), dtype=np.int64, count=len(tb))
        longest = np.maximum(la[:, None], lb[None, :]).astype(np.float64)
        value = np.zeros(dist.shape)
        np.divide(dist.astype(np.float64), longest, out=value, where=longest > 0)
        score = 1 - value
        score[score < ANLS_TAU] = 0.0
        return score

    def _leaf_block(
        self,
        g: list[Any],
        p: list[Any],
        rows: list[int],
        cols: list[int],
        avg: Any,
        done: Any,
    ) -> None:
        import numpy as np

        block = self._scores([g[i] for i in rows], [p[j] for j in cols])  # mean of one = itself
        pairs = _equal_pairs([(g[i],) for i in rows], [(p[j],) for j in cols], in_dict=False)
        for i_, j_ in pairs:
            block[i_, j_] = math.nextafter(block[i_, j_], math.inf)
        ix = np.ix_(rows, cols)
        avg[ix] = block
        done[ix] = True

    def _dict_block(
        self,
        g: list[Any],
        p: list[Any],
        gsig: tuple[tuple[Any, str], ...],
        psig: tuple[tuple[Any, str], ...],
        rows: list[int],
        cols: list[int],
        avg: Any,
        done: Any,
        key_scores: Callable[[Any], Any],
    ) -> None:
        """Pairs of flat dicts with one gold and one predicted key signature."""
        import numpy as np

        gkinds, pkinds = dict(gsig), dict(psig)
        shape = (len(rows), len(cols))
        ix = np.ix_(rows, cols)
        acc: Any = 0  # sum(): int 0, then one term at a time in the package's order
        for k, gk in gsig:
            pk = pkinds.get(k)  # None = key absent
            if gk == "N":
                term: Any = 0.0 if pk == "L" else 1.0
            elif pk in ("L", "E"):
                term = key_scores(k)[ix]
            else:
                term = 0.0  # a gold leaf against a null or an absent key
            acc = acc + term
        for k, pk in psig:
            if k not in gkinds and pk == "L":
                acc = acc + 0.0  # a predicted-only key with a value scores 0
        length = len(gkinds.keys() | pkinds.keys())
        if length > 0:
            block = np.broadcast_to(np.asarray(acc, dtype=np.float64) / length, shape).copy()
        else:
            block = np.ones(shape)
        keys = _exact_keys(gsig, pkinds)
        if keys is not None:  # prediction == closest gold is possible: compare the values
            ga = [tuple(g[i][k] for k in keys) for i in rows]
            pa = [tuple(p[j][k] for k in keys) for j in cols]
            for i_, j_ in _equal_pairs(ga, pa, in_dict=True):
                block[i_, j_] = math.nextafter(block[i_, j_], math.inf)
        avg[ix] = block
        done[ix] = True


def _exact_keys(gsig: tuple[tuple[Any, str], ...], pkinds: dict[Any, str]) -> list[Any] | None:
    """When can a flat prediction equal the closest gold of its pair? None: never; else the
    keys whose values must be equal.

    The closest gold keeps every gold leaf; a null gold key becomes the prediction's
    null-like value, and is dropped (like an empty gold string) when the key is absent; a
    predicted-only key is never in it (null-like: skipped; else: None).
    """
    gkinds = dict(gsig)
    if not pkinds.keys() <= gkinds.keys():
        return None
    keys = []
    for k, gk in gsig:
        pk = pkinds.get(k)
        if gk == "N":
            if pk == "L":
                return None
        elif pk is None:
            if gk != "E":
                return None
        elif pk == "N":
            return None
        else:
            keys.append(k)
    return keys


def _flat_exact(g: dict[Any, Any], p: dict[Any, Any]) -> bool:
    """``p == closest gold`` for two flat dicts, without building the closest gold (see
    ``_exact_keys``)."""
    for k in p:
        if k not in g:
            return False
    for k, gv in g.items():
        if k in p:
            pv = p[k]
            if gv is None:
                if pv not in _NONEY:
                    return False
            elif pv is None or (pv is not gv and pv != gv):  # dict == : identity first
                return False
        elif gv is not None and gv != "":
            return False
    return True


def _all_pairs(n: int, m: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(m)]


def _signature(x: Any) -> tuple[tuple[Any, str], ...] | None:
    """Keys and kinds of a flat dict (L leaf, E empty string, N null); None if not flat."""
    if not isinstance(x, dict):
        return None
    sig = []
    for k, v in x.items():
        if v is None:
            sig.append((k, "N"))
        elif _is_leaf(v):
            sig.append((k, "E" if v == "" else "L"))
        else:
            return None
    return tuple(sig)


def _group(items: list[Any], signature: Any) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for i, x in enumerate(items):
        sig = signature(x)
        if sig is not None:
            out.setdefault(sig, []).append(i)
    return out


def _equal_key(values: tuple[Any, ...], in_dict: bool) -> tuple[Any, ...] | None:
    """A hashable key under which tuples of leaves are equal iff ``==`` says so.

    NaN: a bare ``==`` never holds (``in_dict=False``: no key); inside a dict or tuple
    ``==`` compares identity first, so there the same NaN object is equal to itself.
    """
    if not any(isinstance(v, float) and v != v for v in values):
        return values
    if not in_dict:
        return None
    return tuple(("nan", id(v)) if isinstance(v, float) and v != v else v for v in values)


def _equal_pairs(
    a: list[tuple[Any, ...]], b: list[tuple[Any, ...]], *, in_dict: bool
) -> list[tuple[int, int]]:
    """Index pairs (i, j) with ``a[i] == b[j]``, in hash time (1 == 1.0 == True, as ``==``)."""
    by_key: dict[Any, list[int]] = {}
    for i, t in enumerate(a):
        key = _equal_key(t, in_dict)
        if key is not None:
            by_key.setdefault(key, []).append(i)
    out = []
    for j, t in enumerate(b):
        key = _equal_key(t, in_dict)
        if key is not None:
            out.extend((i, j) for i in by_key.get(key, ()))
    return out


# ---------------------------------------------------------------- the matching
def _assignment(avg: Any) -> list[tuple[int, int]]:
    """``Munkres().compute(make_cost_matrix(avg))``, the package's matching, sorted by row.

    For 16 cells or more munkres 3.0.0 hands the cost matrix to its C kernel; we hand it the
    same matrix as a numpy array (no per-cell Python validation, which is most of its time).
    Anything else (fewer cells, another munkres, no kernel, a declined problem) takes the
    public ``compute``, given the cost matrix made by numpy: the same floats as
    ``make_cost_matrix``, whose per-cell checks were most of a small matching's time.
    """
    import munkres

    n, m = avg.shape
    cost = avg.max() - avg  # make_cost_matrix: max(matrix) - value, cell by cell (all finite)
    if munkres.__version__ == "3.0.0" and n * m >= 16:
        from munkres import _native

        transposed = n > m  # munkres solves rows <= columns
        got = _native.solve_array(cost.T.copy() if transposed else cost)
        if got is not None and got is not _native.FAILED:
            r2c = got[0].tolist()
            if transposed:
                return sorted((c, r) for r, c in enumerate(r2c))
            return list(enumerate(r2c))
    pairs = munkres.Munkres().compute(cost.tolist())  # the same floats as make_cost_matrix's
    return [(int(i), int(j)) for i, j in pairs]
