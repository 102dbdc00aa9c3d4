"""A faithful pure-Python copy of Donut's scoring, to check ``eval.donut`` against.

It mirrors three published pieces line by line, with no speed-ups:

* ``clovaai/donut`` ``donut/util.py`` ``JSONParseEvaluator`` (``normalize_dict``,
  ``flatten``, ``cal_f1``, ``construct_tree_from_dict``, ``update_cost``,
  ``insert_and_remove_cost``, ``cal_acc``);
* the ``zss`` package's ``AnnotatedTree`` and ``distance`` (Zhang–Shasha, float tables);
* ``nltk.edit_distance`` with its defaults (unit costs, no transpositions).

Only the tests import it; it is the slow reference the benchmark compares against.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np


# ---------------------------------------------------------------- nltk.edit_distance
def _edit_dist_init(len1: int, len2: int) -> list[list[int]]:
    lev = [[0] * len2 for _ in range(len1)]
    for i in range(len1):
        lev[i][0] = i
    for j in range(len2):
        lev[0][j] = j
    return lev


def _edit_dist_step(lev, i, j, s1, s2, substitution_cost=1):
    c1 = s1[i - 1]
    c2 = s2[j - 1]
    a = lev[i - 1][j] + 1
    b = lev[i][j - 1] + 1
    c = lev[i - 1][j - 1] + (substitution_cost if c1 != c2 else 0)
    d = c + 1  # transpositions are off by default
    lev[i][j] = min(a, b, c, d)


def edit_distance(s1: str, s2: str) -> int:
    len1, len2 = len(s1), len(s2)
    lev = _edit_dist_init(len1 + 1, len2 + 1)
    for i in range(1, len1 + 1):
        for j in range(1, len2 + 1):
            _edit_dist_step(lev, i, j, s1, s2)
    return lev[len1][len2]


# ---------------------------------------------------------------- zss
class Node:
    def __init__(self, label: str, children: list[Node] | None = None) -> None:
        self.label = label
        self.children = children or []

    @staticmethod
    def get_children(node: Node) -> list[Node]:
        return node.children

    def addkid(self, node: Node, before: bool = False) -> Node:
        if before:
            self.children.insert(0, node)
        else:
            self.children.append(node)
        return self


class AnnotatedTree:
    def __init__(self, root: Node, get_children) -> None:
        self.get_children = get_children
        self.root = root
        self.nodes: list[Node] = []
        self.ids: list[int] = []
        self.lmds: list[int] = []
        stack = [(root, collections.deque())]
        pstack = []
        j = 0
        while stack:
            n, anc = stack.pop()
            nid = j
            for c in self.get_children(n):
                a = collections.deque(anc)
                a.appendleft(nid)
                stack.append((c, a))
            pstack.append(((n, nid), anc))
            j += 1
        lmds: dict[int, int] = {}
        keyroots: dict[int, int] = {}
        i = 0
        while pstack:
            (n, nid), anc = pstack.pop()
            self.nodes.append(n)
            self.ids.append(nid)
            if not self.get_children(n):
                lmd = i
                for a in anc:
                    if a not in lmds:
                        lmds[a] = i
                    else:
                        break
            else:
                lmd = lmds[nid]
            self.lmds.append(lmd)
            keyroots[lmd] = i
            i += 1
        self.keyroots = sorted(keyroots.values())


def zss_distance(A, B, get_children, insert_cost, remove_cost, update_cost) -> float:
    A, B = AnnotatedTree(A, get_children), AnnotatedTree(B, get_children)
    treedists = np.zeros((len(A.nodes), len(B.nodes)), float)

    def treedist(i: int, j: int) -> None:
        Al, Bl, An, Bn = A.lmds, B.lmds, A.nodes, B.nodes
        m = i - Al[i] + 2
        n = j - Bl[j] + 2
        fd = np.zeros((m, n), float)
        ioff = Al[i] - 1
        joff = Bl[j] - 1
        for x in range(1, m):
            fd[x][0] = fd[x - 1][0] + remove_cost(An[x + ioff])
        for y in range(1, n):
            fd[0][y] = fd[0][y - 1] + insert_cost(Bn[y + joff])
        for x in range(1, m):
            for y in range(1, n):
                node1 = An[x + ioff]
                node2 = Bn[y + joff]
                if Al[i] == Al[x + ioff] and Bl[j] == Bl[y + joff]:
                    fd[x][y] = min(
                        fd[x - 1][y] + remove_cost(node1),
                        fd[x][y - 1] + insert_cost(node2),
                        fd[x - 1][y - 1] + update_cost(node1, node2),
                    )
                    treedists[x + ioff][y + joff] = fd[x][y]
                else:
                    p = Al[x + ioff] - 1 - ioff
                    q = Bl[y + joff] - 1 - joff
                    fd[x][y] = min(
                        fd[x - 1][y] + remove_cost(node1),
                        fd[x][y - 1] + insert_cost(node2),
                        fd[p][q] + treedists[x + ioff][y + joff],
                    )

    for i in A.keyroots:
        for j in B.keyroots:
            treedist(i, j)
    return treedists[-1][-1]


# ---------------------------------------------------------------- JSONParseEvaluator
class JSONParseEvaluator:
    @staticmethod
    def flatten(data: dict) -> list:
        flatten_data = []

        def _flatten(value, key=""):
            if type(value) is dict:
                for child_key, child_value in value.items():
                    _flatten(child_value, f"{key}.{child_key}" if key else child_key)
            elif type(value) is list:
                for value_item in value:
                    _flatten(value_item, key)
            else:
                flatten_data.append((key, value))

        _flatten(data)
        return flatten_data

    @staticmethod
    def update_cost(node1: Node, node2: Node) -> int:
        label1 = node1.label
        label2 = node2.label
        label1_leaf = "<leaf>" in label1
        label2_leaf = "<leaf>" in label2
        if label1_leaf and label2_leaf:
            return edit_distance(label1.replace("<leaf>", ""), label2.replace("<leaf>", ""))
        if not label1_leaf and label2_leaf:
            return 1 + len(label2.replace("<leaf>", ""))
        if label1_leaf and not label2_leaf:
            return 1 + len(label1.replace("<leaf>", ""))
        return int(label1 != label2)

    @staticmethod
    def insert_and_remove_cost(node: Node) -> int:
        label = node.label
        if "<leaf>" in label:
            return len(label.replace("<leaf>", ""))
        return 1

    def normalize_dict(self, data: Any) -> Any:
        if not data:
            return {}
        if isinstance(data, dict):
            new_data = {}
            for key in sorted(data.keys(), key=lambda k: (len(k), k)):
                value = self.normalize_dict(data[key])
                if value:
                    if not isinstance(value, list):
                        value = [value]
                    new_data[key] = value
        elif isinstance(data, list):
            if all(isinstance(item, dict) for item in data):
                new_data = []
                for item in data:
                    item = self.normalize_dict(item)
                    if item:
                        new_data.append(item)
            else:
                new_data = [
                    str(item).strip()
                    for item in data
                    if type(item) in {str, int, float} and str(item).strip()
                ]
        else:
            new_data = [str(data).strip()]
        return new_data

    def cal_f1(self, preds: list, answers: list) -> float:
        total_tp, total_fn_or_fp = 0, 0
        for pred, answer in zip(preds, answers):  # noqa: B905
            pred, answer = (
                self.flatten(self.normalize_dict(pred)),
                self.flatten(self.normalize_dict(answer)),
            )
            for field in pred:
                if field in answer:
                    total_tp += 1
                    answer.remove(field)
                else:
                    total_fn_or_fp += 1
            total_fn_or_fp += len(answer)
        return total_tp / (total_tp + total_fn_or_fp / 2)

    def construct_tree_from_dict(self, data: Any, node_name: str | None = None) -> Node:
        if node_name is None:
            node_name = "<root>"
        node = Node(node_name)
        if isinstance(data, dict):
            for key, value in data.items():
                node.addkid(self.construct_tree_from_dict(value, key))
        elif isinstance(data, list):
            if all(isinstance(item, dict) for item in data):
                for item in data:
                    node.addkid(self.construct_tree_from_dict(item, "<subtree>"))
            else:
                for item in data:
                    node.addkid(Node(f"<leaf>{item}"))
        else:
            raise Exception(data, node_name)
        return node

    def cal_acc(self, pred: Any, answer: Any) -> float:
        pred = self.construct_tree_from_dict(self.normalize_dict(pred))
        answer = self.construct_tree_from_dict(self.normalize_dict(answer))
        kw = dict(
            get_children=Node.get_children,
            insert_cost=self.insert_and_remove_cost,
            remove_cost=self.insert_and_remove_cost,
            update_cost=self.update_cost,
        )
        return max(
            0,
            1
            - (
                zss_distance(pred, answer, **kw)
                / zss_distance(self.construct_tree_from_dict(self.normalize_dict({})), answer, **kw)
            ),
        )
