"""Zhang–Shasha ordered tree edit distance over precomputed costs.

Trees are given in post-order as two integer arrays each: ``lmd[i]`` (the post-order index
of node ``i``'s leftmost leaf descendant) and the sorted ``keyroots``. Costs come as plain
arrays: ``cost_del[i]`` (removing node ``i`` of the first tree), ``cost_ins[j]`` (inserting
node ``j`` of the second) and ``cost_upd[i * n2 + j]`` (relabelling ``i`` into ``j``).

Precomputing every cost once is what makes this fast: the classic implementation
(the ``zss`` package Donut uses) calls a Python cost function - with a pure-Python string
edit distance inside - for every cell of every forest table, recomputing the same pair
many times. When numba is installed the DP itself is compiled as well; without numba the
same function runs as Python on lists (same numbers, a few times slower).

Reference: K. Zhang and D. Shasha, "Simple fast algorithms for the editing distance
between trees and related problems", SIAM J. Computing 18(6), 1989.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def _zhang_shasha(lmd1, keyroots1, lmd2, keyroots2, cost_del, cost_ins, cost_upd, td, fd):
    """Fill ``td`` (n1*n2 tree distances) and return the distance of the two whole trees.

    ``fd`` is a scratch buffer of at least (n1+1)*(n2+1) cells. Works on numpy arrays
    (compiled by numba) and on Python lists alike.
    """
    n1 = len(lmd1)
    n2 = len(lmd2)
    for a in range(len(keyroots1)):
        i = keyroots1[a]
        li = lmd1[i]
        m = i - li + 2
        for b in range(len(keyroots2)):
            j = keyroots2[b]
            lj = lmd2[j]
            n = j - lj + 2
            ioff = li - 1
            joff = lj - 1
            fd[0] = 0
            for x in range(1, m):
                fd[x * n] = fd[(x - 1) * n] + cost_del[x + ioff]
            for y in range(1, n):
                fd[y] = fd[y - 1] + cost_ins[y + joff]
            for x in range(1, m):
                xi = x + ioff
                lx = lmd1[xi]
                row = x * n
                prev = row - n
                dx = cost_del[xi]
                for y in range(1, n):
                    yj = y + joff
                    d = fd[prev + y] + dx
                    ins = fd[row + y - 1] + cost_ins[yj]
                    if ins < d:
                        d = ins
                    if lx == li and lmd2[yj] == lj:
                        upd = fd[prev + y - 1] + cost_upd[xi * n2 + yj]
                        if upd < d:
                            d = upd
                        fd[row + y] = d
                        td[xi * n2 + yj] = d
                    else:
                        p = lx - 1 - ioff
                        q = lmd2[yj] - 1 - joff
                        sub = fd[p * n + q] + td[xi * n2 + yj]
                        if sub < d:
                            d = sub
                        fd[row + y] = d
    return td[(n1 - 1) * n2 + (n2 - 1)]


def _fill_update_costs(ids_a, ids_b, leaf_a, leaf_b, len_a, len_b, leaf_dist, pos_a, pos_b, out):
    """Donut's relabel cost of every node pair into ``out`` (n1, n2): non-leaf vs non-leaf 0
    if labels are equal else 1; leaf vs non-leaf 1 + the leaf's length; leaf vs leaf their
    edit distance (``leaf_dist[pos_a[i], pos_b[j]]``, computed by rapidfuzz beforehand)."""
    for i in range(len(ids_a)):
        for j in range(len(ids_b)):
            if leaf_a[i]:
                if leaf_b[j]:
                    out[i, j] = leaf_dist[pos_a[i], pos_b[j]]
                else:
                    out[i, j] = 1 + len_a[i]
            elif leaf_b[j]:
                out[i, j] = 1 + len_b[j]
            else:
                out[i, j] = 0 if ids_a[i] == ids_b[j] else 1
    return out


HAVE_NUMBA = importlib.util.find_spec("numba") is not None
_costs_fn: Any = None


def compiled_costs() -> Any:
    """``_fill_update_costs`` compiled by numba (on first use, like ``compiled_dp``)."""
    global _costs_fn
    if _costs_fn is None:
        import numba

        _costs_fn = numba.njit(cache=True, nogil=True)(_fill_update_costs)
    return _costs_fn


_compiled_fn: Any = None


def compiled_dp() -> Any:
    """The numba-compiled DP (numba imported and the function compiled, or loaded from
    numba's cache, on first use: importing numba takes about a second)."""
    global _compiled_fn
    if _compiled_fn is None:
        import numba

        _compiled_fn = numba.njit(cache=True, nogil=True)(_zhang_shasha)
    return _compiled_fn


def tree_edit_distance(
    lmd1: Sequence[int],
    keyroots1: Sequence[int],
    lmd2: Sequence[int],
    keyroots2: Sequence[int],
    cost_del: np.ndarray,
    cost_ins: np.ndarray,
    cost_upd: np.ndarray,
    *,
    compiled: bool | None = None,
) -> int:
    """Exact ordered tree edit distance (integer costs) between two post-order trees.

    ``cost_upd`` is an (n1, n2) array. ``compiled=None`` uses numba when available;
    ``False`` forces the Python loop (tests compare the two).
    """
    n1, n2 = len(lmd1), len(lmd2)
    if n1 == 0 or n2 == 0:
        raise ValueError("trees must have at least one node (the root)")
    use_numba = HAVE_NUMBA if compiled is None else (compiled and HAVE_NUMBA)
    if use_numba:
        td = np.zeros(n1 * n2, dtype=np.int64)
        fd = np.zeros((n1 + 1) * (n2 + 1), dtype=np.int64)
        return int(
            compiled_dp()(
                np.asarray(lmd1, dtype=np.int64),
                np.asarray(keyroots1, dtype=np.int64),
                np.asarray(lmd2, dtype=np.int64),
                np.asarray(keyroots2, dtype=np.int64),
                np.asarray(cost_del, dtype=np.int64),
                np.asarray(cost_ins, dtype=np.int64),
                np.ascontiguousarray(cost_upd, dtype=np.int64).reshape(-1),
                td,
                fd,
            )
        )
    td_list = [0] * (n1 * n2)
    fd_list = [0] * ((n1 + 1) * (n2 + 1))
    return int(
        _zhang_shasha(
            list(lmd1),
            list(keyroots1),
            list(lmd2),
            list(keyroots2),
            np.asarray(cost_del).tolist(),
            np.asarray(cost_ins).tolist(),
            np.asarray(cost_upd).reshape(-1).tolist(),
            td_list,
            fd_list,
        )
    )
