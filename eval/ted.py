"""Zhang–Shasha ordered tree edit distance with Donut's cost model, over plain arrays.

Trees come in post-order, as arrays of one integer per node:

* ``lmd[i]``: the post-order index of node ``i``'s leftmost leaf descendant; ``keyroots``:
  the sorted keyroots;
* ``cost[i]``: removing (first tree) or inserting (second tree) node ``i``: a leaf's text
  length, 1 for any other node;
* ``leaf[i]``: whether node ``i`` is a leaf; ``label[i]``: for a leaf its position among
  the tree's leaves, for any other node an id of its label (equal labels, equal ids).

Relabelling node ``i`` of the first tree into node ``j`` of the second costs (Donut's
``update_cost``): leaf -> leaf the edit distance of their texts, given as the flattened
``leaf_dist[label1[i] * n_leaves2 + label2[j]]`` (computed beforehand by rapidfuzz, C);
leaf <-> non-leaf 1 + the leaf's text length; non-leaf -> non-leaf 0 if the labels are
equal, else 1.

Precomputing the leaf distances once per tree pair is what makes this fast: the classic
implementation (the ``zss`` package Donut uses) calls a Python cost function - with a
pure-Python string edit distance inside - for every cell of every forest table,
recomputing the same pair many times. When numba is installed the DP is compiled as well,
together with the small helpers that choose the decomposition and mirror a tree, into one
kernel (``_compiled_ted``: one call per tree pair; loaded from numba's on-disk cache after
the first run); without numba the same functions run as Python (same numbers, many times
slower). Both trees are mirrored first when the DP needs fewer cells on the mirrored pair
(``tree_edit_distance``'s ``decomposition``).

Reference: K. Zhang and D. Shasha, "Simple fast algorithms for the editing distance
between trees and related problems", SIAM J. Computing 18(6), 1989.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np


def _zhang_shasha(lmd1, keyroots1, lmd2, keyroots2, cost1, cost2, leaf1, leaf2, label1, label2,
                  leaf_dist, n_leaves2, td, fd):  # fmt: skip
    """Fill ``td`` (n1*n2 tree distances) and return the distance of the two whole trees.

    ``fd`` is a scratch buffer of at least (n1+1)*(n2+1) cells. Works on numpy arrays
    (compiled by numba) and on Python lists alike. The left neighbour of a forest cell is
    carried in a local (``left``) instead of being re-read from ``fd``. Every index goes
    through ``_index`` (see there): compiled, index arithmetic is unsigned, wrapping
    modulo 2**64 where ``joff`` / ``ioff`` are -1, which the final indices never are.
    """
    one = _index(1)
    n1 = _index(len(lmd1))
    n2 = _index(len(lmd2))
    n_leaves2 = _index(n_leaves2)
    for a in range(len(keyroots1)):
        i = _index(keyroots1[a])
        li = _index(lmd1[i])
        m = i - li + one + one
        ioff = li - one
        for b in range(len(keyroots2)):
            j = _index(keyroots2[b])
            lj = _index(lmd2[j])
            n = j - lj + one + one
            joff = lj - one
            if m == n == one + one + one and leaf1[li] and leaf2[lj]:
                # a parent above one leaf on both sides (most keyroot pairs of Donut's trees):
                # this pair's 2 x 2 forest table, written out
                ca = cost1[li]
                cA = cost1[i]
                cb = cost2[lj]
                cB = cost2[j]
                la = _index(label1[li])
                lA = _index(label1[i])
                u_ab = leaf_dist[la * n_leaves2 + _index(label2[lj])]
                u_aB = leaf_dist[la * n_leaves2 + _index(label2[j])] if leaf2[j] else 1 + ca
                if leaf1[i]:
                    u_Ab = leaf_dist[lA * n_leaves2 + _index(label2[lj])]
                    u_AB = leaf_dist[lA * n_leaves2 + _index(label2[j])] if leaf2[j] else 1 + cA
                elif leaf2[j]:
                    u_Ab = 1 + cb
                    u_AB = 1 + cB
                else:
                    u_Ab = 1 + cb
                    u_AB = 0 if lA == _index(label2[j]) else 1
                ab = min(min(cb + ca, ca + cb), u_ab)
                aB = min(min(cb + cB + ca, ab + cB), cb + u_aB)
                Ab = min(min(ab + cA, ca + cA + cb), ca + u_Ab)
                td[li * n2 + lj] = ab
                td[li * n2 + j] = aB
                td[i * n2 + lj] = Ab
                td[i * n2 + j] = min(min(aB + cA, Ab + cB), ab + u_AB)
                continue
            fd[0] = 0
            for x in range(one, m):
                fd[x * n] = fd[(x - one) * n] + cost1[x + ioff]
            for y in range(one, n):
                fd[y] = fd[y - one] + cost2[y + joff]
            for x in range(one, m):
                xi = x + ioff
                row = x * n
                prev = row - n
                dx = cost1[xi]
                base = xi * n2
                left = fd[row]
                if _index(lmd1[xi]) == li:  # xi on the keyroot's leftmost path: tree distances
                    is_leaf = leaf1[xi]
                    lab = _index(label1[xi])
                    for y in range(one, n):
                        yj = y + joff
                        d = min(fd[prev + y] + dx, left + cost2[yj])
                        if _index(lmd2[yj]) == lj:
                            if is_leaf:
                                if leaf2[yj]:
                                    upd = leaf_dist[lab * n_leaves2 + _index(label2[yj])]
                                else:
                                    upd = 1 + dx
                            elif leaf2[yj]:
                                upd = 1 + cost2[yj]
                            else:
                                upd = 0 if lab == _index(label2[yj]) else 1
                            d = min(d, fd[prev + y - one] + upd)
                            td[base + yj] = d
                        else:
                            d = min(d, fd[_index(lmd2[yj]) - one - joff] + td[base + yj])
                        fd[row + y] = d
                        left = d
                else:
                    p = (_index(lmd1[xi]) - one - ioff) * n
                    for y in range(one, n):
                        yj = y + joff
                        d = fd[p + _index(lmd2[yj]) - one - joff] + td[base + yj]
                        d = min(fd[prev + y] + dx, d)
                        d = min(d, left + cost2[yj])
                        fd[row + y] = d
                        left = d
    return td[(n1 - one) * n2 + (n2 - one)]


def _index(value):  # fmt: skip
    """An array index. In Python the value itself; in compiled code (``_jit`` registers
    this) the same bits as an unsigned integer, because numba checks every signed index
    for a negative value to wrap around, which made up ~40 % of the DP's time."""
    return value


def relevant_cells(lmd, keyroots) -> int:  # fmt: skip
    """Sum over the keyroots of (subtree size + 1): the DP fills, for a tree pair, the
    product of this number for the two trees (the forest tables of every keyroot pair)."""
    total = 0
    for k in keyroots:
        total += k - lmd[k] + 2
    return total


def _mirrored_cells(lmd) -> int:  # fmt: skip
    """``relevant_cells`` of the mirrored tree (see ``mirrored``), without building it."""
    n = len(lmd)
    total = 0
    for i in range(n):
        if i == n - 1 or lmd[i + 1] == i + 1:
            total += i - lmd[i] + 2
    return total


def mirrored(lmd, cost, leaf, label):  # fmt: skip
    """The tree with every node's children reversed: ``(lmd, keyroots, cost, leaf, label)``.

    The mirrored post-order is the original pre-order reversed; node ``i`` comes at
    pre-order position ``lmd[i] + depth[i]`` and its subtree keeps its size, so it lands
    at ``n - 1 - lmd[i] - depth[i]`` with its leftmost leaf ``size - 1`` before it. The
    mirrored keyroots are the root and every node that is not its parent's last child (a
    parent follows its last child directly in post-order, and ``i + 1`` is the parent of
    ``i`` exactly when ``i + 1`` is not a leaf). ``depth[i]``, the number of ``j > i``
    with ``lmd[j] <= i``, is summed on the way from counts of the ``lmd`` values.
    """
    n = len(lmd)
    count = np.zeros(n, dtype=np.int64)
    for j in range(n):
        count[lmd[j]] += 1
    m_lmd = np.empty(n, dtype=np.int64)
    m_cost = np.empty_like(cost)
    m_leaf = np.empty_like(leaf)
    m_label = np.empty_like(label)
    is_keyroot = np.zeros(n, dtype=np.bool_)
    depth = 0
    for i in range(n):
        depth += count[i] - 1
        o = n - 1 - lmd[i] - depth
        m_lmd[o] = o - (i - lmd[i])
        m_cost[o] = cost[i]
        m_leaf[o] = leaf[i]
        m_label[o] = label[i]
        if i == n - 1 or lmd[i + 1] == i + 1:
            is_keyroot[o] = True
    return m_lmd, np.flatnonzero(is_keyroot), m_cost, m_leaf, m_label


def _decomposition(lmd1, keyroots1, lmd2, keyroots2):  # fmt: skip
    """1 (left paths) or 2 (both trees mirrored: right paths), whichever fills fewer DP
    cells; the left paths on a tie."""
    right = _mirrored_cells(lmd1) * _mirrored_cells(lmd2)
    return 2 if right < relevant_cells(lmd1, keyroots1) * relevant_cells(lmd2, keyroots2) else 1


def _oriented(lmd1, keyroots1, lmd2, keyroots2, cost1, cost2, leaf1, leaf2, label1, label2,
              mode):  # fmt: skip
    """The ten tree arrays for the DP: as given (``mode`` 1, left paths) or both trees
    mirrored (2, right paths); 0 chooses (``_decomposition``). Compiled or Python alike."""
    if mode == 0:
        mode = _decomposition(lmd1, keyroots1, lmd2, keyroots2)
    if mode == 2:
        lmd1, keyroots1, cost1, leaf1, label1 = mirrored(lmd1, cost1, leaf1, label1)
        lmd2, keyroots2, cost2, leaf2, label2 = mirrored(lmd2, cost2, leaf2, label2)
    return lmd1, keyroots1, lmd2, keyroots2, cost1, cost2, leaf1, leaf2, label1, label2


def _compiled_ted(lmd1, keyroots1, lmd2, keyroots2, cost1, cost2, leaf1, leaf2, label1, label2,
                  leaf_dist, n_leaves2, mode):  # fmt: skip
    """The whole distance in one compiled call (numba only: one dispatch, no boxing of the
    mirrored arrays)."""
    trees = _oriented(lmd1, keyroots1, lmd2, keyroots2, cost1, cost2, leaf1, leaf2, label1,
                      label2, mode)  # fmt: skip
    n1 = len(trees[0])
    n2 = len(trees[2])
    td = np.zeros(n1 * n2, dtype=np.int64)
    fd = np.zeros((n1 + 1) * (n2 + 1), dtype=np.int64)
    return _zhang_shasha(*trees, leaf_dist, n_leaves2, td, fd)


def _python_ted(trees: tuple, leaf_dist: np.ndarray, mode: int) -> int:
    """The same steps as ``_compiled_ted``, as Python over lists (tests; no numba)."""
    lists = [np.asarray(x).tolist() for x in _oriented(*trees, mode)]
    n1, n2 = len(lists[0]), len(lists[2])
    td, fd = [0] * (n1 * n2), [0] * ((n1 + 1) * (n2 + 1))
    dist = np.asarray(leaf_dist).reshape(-1).tolist()
    return int(_zhang_shasha(*lists, dist, leaf_dist.shape[1], td, fd))


HAVE_NUMBA = importlib.util.find_spec("numba") is not None
_compiled: dict[str, Any] = {}


def _jit(fn: Any) -> Any:
    """``fn`` compiled by numba (compiled, or loaded from numba's cache, on first use)."""
    if fn.__name__ not in _compiled:
        import numba

        if not _compiled:
            _register_helpers()
        _compiled[fn.__name__] = numba.njit(cache=True, nogil=True)(fn)
    return _compiled[fn.__name__]


def _register_helpers() -> None:
    """Make this module's helpers callable from compiled code (they stay plain Python
    functions when called from Python); compiled, ``_index(v)`` is ``v`` as uint64 (a
    no-op in machine code)."""
    from numba.extending import overload, register_jitable

    for helper in (_zhang_shasha, relevant_cells, _mirrored_cells, mirrored, _decomposition,
                   _oriented):  # fmt: skip
        register_jitable(helper)

    @overload(_index)
    def _unsigned(value):  # no annotations: numba compares this signature with the lambda's
        return lambda value: np.uint64(value)


def tree_edit_distance(
    lmd1: np.ndarray,
    keyroots1: np.ndarray,
    lmd2: np.ndarray,
    keyroots2: np.ndarray,
    cost1: np.ndarray,
    cost2: np.ndarray,
    leaf1: np.ndarray,
    leaf2: np.ndarray,
    label1: np.ndarray,
    label2: np.ndarray,
    leaf_dist: np.ndarray,
    *,
    compiled: bool | None = None,
    decomposition: str = "auto",
) -> int:
    """Exact ordered tree edit distance between two post-order trees (module docstring).

    Integer arrays are int64, ``leaf`` arrays bool, ``leaf_dist`` an int64 array of shape
    (leaves of tree 1, leaves of tree 2). ``compiled=None`` uses numba when available;
    ``False`` forces the Python loop (tests compare the two).

    ``decomposition``: Zhang–Shasha follows leftmost paths; run on both trees mirrored
    it follows rightmost paths, with the same distance (reversing every sibling order in
    both trees maps edit scripts one to one, at the same costs) but other subproblems.
    ``"auto"`` takes the one with fewer DP cells (``relevant_cells``): on invoices, whose
    largest key (the line items) sorts last, the right paths need ~28% fewer.
    ``"left"`` / ``"right"`` force one (tests compare them).
    """
    n1, n2 = len(lmd1), len(lmd2)
    if n1 == 0 or n2 == 0:
        raise ValueError("trees must have at least one node (the root)")
    mode = _DECOMPOSITIONS.get(decomposition)
    if mode is None:
        raise ValueError(f"decomposition must be auto, left or right, not {decomposition!r}")
    use_numba = HAVE_NUMBA if compiled is None else (compiled and HAVE_NUMBA)
    trees = (lmd1, keyroots1, lmd2, keyroots2, cost1, cost2, leaf1, leaf2, label1, label2)
    if not use_numba:
        return _python_ted(trees, leaf_dist, mode)
    dist = np.ascontiguousarray(leaf_dist, dtype=np.int64)
    return int(_jit(_compiled_ted)(*trees, dist.reshape(-1), dist.shape[1], mode))


_DECOMPOSITIONS = {"auto": 0, "left": 1, "right": 2}
