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
recomputing the same pair many times. When numba is installed the DP is compiled as well
(one function, loaded from numba's on-disk cache after the first run); without numba the
same function runs as Python on lists (same numbers, many times slower).

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
    carried in a local (``left``) instead of being re-read from ``fd``.
    """
    n1 = len(lmd1)
    n2 = len(lmd2)
    for a in range(len(keyroots1)):
        i = keyroots1[a]
        li = lmd1[i]
        m = i - li + 2
        ioff = li - 1
        for b in range(len(keyroots2)):
            j = keyroots2[b]
            lj = lmd2[j]
            n = j - lj + 2
            joff = lj - 1
            fd[0] = 0
            for x in range(1, m):
                fd[x * n] = fd[(x - 1) * n] + cost1[x + ioff]
            for y in range(1, n):
                fd[y] = fd[y - 1] + cost2[y + joff]
            for x in range(1, m):
                xi = x + ioff
                row = x * n
                prev = row - n
                dx = cost1[xi]
                base = xi * n2
                left = fd[row]
                if lmd1[xi] == li:  # xi on the keyroot's leftmost path: tree distances
                    is_leaf = leaf1[xi]
                    lab = label1[xi]
                    for y in range(1, n):
                        yj = y + joff
                        d = min(fd[prev + y] + dx, left + cost2[yj])
                        if lmd2[yj] == lj:
                            if is_leaf:
                                if leaf2[yj]:
                                    upd = leaf_dist[lab * n_leaves2 + label2[yj]]
                                else:
                                    upd = 1 + dx
                            elif leaf2[yj]:
                                upd = 1 + cost2[yj]
                            else:
                                upd = 0 if lab == label2[yj] else 1
                            d = min(d, fd[prev + y - 1] + upd)
                            td[base + yj] = d
                        else:
                            d = min(d, fd[lmd2[yj] - 1 - joff] + td[base + yj])
                        fd[row + y] = d
                        left = d
                else:
                    p = (lmd1[xi] - 1 - ioff) * n
                    for y in range(1, n):
                        yj = y + joff
                        d = min(fd[prev + y] + dx, fd[p + lmd2[yj] - 1 - joff] + td[base + yj])
                        d = min(d, left + cost2[yj])
                        fd[row + y] = d
                        left = d
    return td[(n1 - 1) * n2 + (n2 - 1)]


HAVE_NUMBA = importlib.util.find_spec("numba") is not None
_compiled_fn: Any = None


def compiled_dp() -> Any:
    """The numba-compiled DP (numba imported and the function compiled, or loaded from
    numba's cache, on first use)."""
    global _compiled_fn
    if _compiled_fn is None:
        import numba

        _compiled_fn = numba.njit(cache=True, nogil=True)(_zhang_shasha)
    return _compiled_fn


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
) -> int:
    """Exact ordered tree edit distance between two post-order trees (module docstring).

    Integer arrays are int64, ``leaf`` arrays bool, ``leaf_dist`` an int64 array of shape
    (leaves of tree 1, leaves of tree 2). ``compiled=None`` uses numba when available;
    ``False`` forces the Python loop (tests compare the two).
    """
    n1, n2 = len(lmd1), len(lmd2)
    if n1 == 0 or n2 == 0:
        raise ValueError("trees must have at least one node (the root)")
    n_leaves2 = leaf_dist.shape[1]
    use_numba = HAVE_NUMBA if compiled is None else (compiled and HAVE_NUMBA)
    trees = (lmd1, keyroots1, lmd2, keyroots2, cost1, cost2, leaf1, leaf2, label1, label2)
    if use_numba:
        dist = np.ascontiguousarray(leaf_dist, dtype=np.int64).reshape(-1)
        td = np.zeros(n1 * n2, dtype=np.int64)
        fd = np.zeros((n1 + 1) * (n2 + 1), dtype=np.int64)
        return int(compiled_dp()(*trees, dist, n_leaves2, td, fd))
    lists = [np.asarray(x).tolist() for x in trees]
    dist_list = np.asarray(leaf_dist).reshape(-1).tolist()
    td_list, fd_list = [0] * (n1 * n2), [0] * ((n1 + 1) * (n2 + 1))
    return int(_zhang_shasha(*lists, dist_list, n_leaves2, td_list, fd_list))
