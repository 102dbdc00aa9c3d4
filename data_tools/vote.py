"""Repeat-and-vote: combine k labels of one image leaf by leaf.

The double-prediction check used for PP-OCR text-line labels, applied per field: the same image
is labeled k times with different prompts; every leaf (a string at a path such as
``货物或应税劳务、服务[1].金额``) is compared across the k answers *after normalisation by its
field type* (``¥2987.18`` = ``2987.18``, ``2016年06月12日`` = ``2016-06-12``, whitespace in
Chinese text ignored), and the most common normalised value wins; on a tie the earliest answer
(the primary prompt) wins. A leaf missing from an answer counts as ``""``.

``agreement`` = leaves on which all answers agree / leaves compared, where leaves that are
empty in every answer are not compared (they would inflate the score). A label with nothing to
compare has agreement 0.

API: ``vote(answers, schema=None) -> VoteResult``; ``flatten(fields) -> dict[path, str]``
(paths are tuples of keys and list indices); ``path_label(path)``; ``set_path(obj, path, v)``.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data_tools.normalize import normalize_value
from data_tools.schema import Schema

Path_ = tuple[str | int, ...]


@dataclass
class Disagreement:
    path: str
    values: list[str]  # raw values, one per answer ("" when missing)
    chosen: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "values": self.values, "chosen": self.chosen}


@dataclass
class VoteResult:
    fields: dict[str, Any]
    agreement: float
    n_compared: int
    n_agreed: int
    disagreements: list[Disagreement] = field(default_factory=list)

    def to_meta(self, max_disagreements: int = 50) -> dict[str, Any]:
        return {
            "agreement": round(self.agreement, 4),
            "leaves_compared": self.n_compared,
            "leaves_agreed": self.n_agreed,
            "disagreements": [d.to_dict() for d in self.disagreements[:max_disagreements]],
        }


def flatten(value: Any, prefix: Path_ = ()) -> dict[Path_, str]:
    """Leaves of a label: ``{("购买方", "名称"): "...", ("货物…", 0, "金额"): "..."}``.

    An empty dict or list is a leaf with value ``""`` (so "missing" and "empty" compare equal).
    """
    out: dict[Path_, str] = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out.update(flatten(v, (*prefix, k)))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            out.update(flatten(v, (*prefix, i)))
    elif prefix:
        out[prefix] = "" if value in (None, {}, []) else str(value)
    return out


def path_label(path: Path_) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s


def _type_path(path: Path_) -> tuple[str, ...]:
    return tuple(p for p in path if isinstance(p, str))


def set_path(obj: dict[str, Any], path: Path_, value: Any) -> None:
    """Set ``value`` at ``path``, creating dicts/lists on the way (lists padded with ``{}``)."""
    node: Any = obj
    for i, key in enumerate(path):
        last = i == len(path) - 1
        nxt = path[i + 1] if not last else None
        if isinstance(key, int):
            while len(node) <= key:
                node.append({} if not isinstance(nxt, int) else [])
            if last:
                node[key] = value
            else:
                if not isinstance(node[key], dict | list):
                    node[key] = [] if isinstance(nxt, int) else {}
                node = node[key]
        else:
            if last:
                node[key] = value
            else:
                if not isinstance(node.get(key), dict | list):
                    node[key] = [] if isinstance(nxt, int) else {}
                node = node[key]


def vote(answers: Sequence[dict[str, Any]], schema: Schema | None = None) -> VoteResult:
    """Combine ``answers`` (already canonicalised) leaf by leaf; see the module docstring."""
    if not answers:
        raise ValueError("vote() needs at least one answer")
    flats = [flatten(a) for a in answers]
    paths: list[Path_] = []
    seen: set[Path_] = set()
    for f in flats:
        for p in f:
            if p not in seen:
                seen.add(p)
                paths.append(p)

    fields = copy.deepcopy(dict(answers[0]))
    n_compared = n_agreed = 0
    disagreements: list[Disagreement] = []
    for path in paths:
        raw = [f.get(path, "") for f in flats]
        ftype = schema.field_type(_type_path(path)) if schema is not None else "text"
        norm = [normalize_value(v, ftype) for v in raw]
        if all(n == "" for n in norm):
            continue
        n_compared += 1
        if len(set(norm)) == 1:
            n_agreed += 1
            continue
        counts = Counter(norm)
        best = max(counts.values())
        winner = next(i for i, n in enumerate(norm) if counts[n] == best)
        if winner != 0 or path not in flats[0]:
            set_path(fields, path, raw[winner])
        disagreements.append(Disagreement(path_label(path), raw, raw[winner]))
    agreement = n_agreed / n_compared if n_compared else 0.0
    return VoteResult(fields, agreement, n_compared, n_agreed, disagreements)
