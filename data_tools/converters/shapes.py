"""One type per key across a dataset: find each key's shapes and settle them.

A key path (`("menu", "nm")`; list items are transparent, so the items of a list of objects
share the path of the list) may be a string in one record and a list of strings in
another, or an object in one and a list of objects in another. The builder would then
ask for both `OCR:{"k":""}` and `OCR:{"k":[]}`, teaching the model that a key's shape is a
coin toss. `unify_shapes` promotes such keys to the list form in every record (a string
`"x"` → `["x"]`, an object → a list of one); it never merges or drops values.

A string (or list of strings) here and an object there cannot be reconciled that way.
Formats whose objects are questions with sub-questions (XFUND: a question's own answer
sits under its own text, `{"Anschrift": {"Anschrift": "…", "PLZ": "…"}}`) pass
`wrap=True`: the plain value becomes that object, `{"Anschrift": "…"}` under
`"Anschrift"`. Otherwise such keys are left as they are and reported as conflicts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

TEXT, OBJECT, TEXT_LIST, OBJECT_LIST, EMPTY_LIST = (
    "string",
    "object",
    "list of strings",
    "list of objects",
    "empty list",
)

Path_ = tuple[str, ...]


def shape_of(value: Any) -> str:
    if isinstance(value, str):
        return TEXT
    if isinstance(value, dict):
        return OBJECT
    if isinstance(value, list):
        if not value:
            return EMPTY_LIST
        return OBJECT_LIST if isinstance(value[0], dict) else TEXT_LIST
    return type(value).__name__


def collect_shapes(fields: dict[str, Any], out: dict[Path_, Counter]) -> None:
    """Add the shape of every key path of one record to `out` (path → Counter of shapes)."""

    def walk(value: Any, path: Path_) -> None:
        out.setdefault(path, Counter())[shape_of(value)] += 1
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    for k, v in item.items():
                        walk(v, (*path, k))

    for key, value in fields.items():
        walk(value, (key,))


WRAPPED = "object (plain values under their own key)"


def decide(shapes: Counter, wrap: bool = False) -> str | None:
    """The shape a path must be promoted to, or None (already one shape, or a conflict)."""
    kinds = {s for s in shapes if s != EMPTY_LIST}
    if kinds == {TEXT, TEXT_LIST} or (kinds == {TEXT} and EMPTY_LIST in shapes):
        return TEXT_LIST
    if kinds == {OBJECT, OBJECT_LIST} or (kinds == {OBJECT} and EMPTY_LIST in shapes):
        return OBJECT_LIST
    if wrap and OBJECT in kinds and len(kinds) > 1 and kinds <= {TEXT, TEXT_LIST, OBJECT}:
        return WRAPPED
    return None


def is_conflict(shapes: Counter) -> bool:
    kinds = {s for s in shapes if s != EMPTY_LIST}
    return len(kinds) > 1 and decide(shapes) is None


def _promote(value: Any, target: str, path: Path_) -> tuple[Any, bool]:
    if target == TEXT_LIST and isinstance(value, str):
        return ([value] if value else []), True
    if target == OBJECT_LIST and isinstance(value, dict):
        return [value], True
    if target == WRAPPED and isinstance(value, (str, list)):
        return {path[-1]: value}, True
    return value, False


def apply_promotions(
    fields: dict[str, Any], promote: dict[Path_, str], changed: Counter
) -> dict[str, Any]:
    """`fields` with every path in `promote` in its new shape; counts changes per path."""

    def walk(value: Any, path: Path_) -> Any:
        if path in promote:
            value, did = _promote(value, promote[path], path)
            if did:
                changed[path] += 1
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [
                {k: walk(v, (*path, k)) for k, v in item.items()}
                if isinstance(item, dict)
                else item
                for item in value
            ]
        return value

    return {k: walk(v, (k,)) for k, v in fields.items()}


@dataclass
class ShapeReport:
    shapes: dict[Path_, Counter] = field(default_factory=dict)  # after unification
    promoted: dict[Path_, tuple[str, int]] = field(default_factory=dict)  # path → (to, records)
    conflicts: dict[Path_, dict[str, int]] = field(default_factory=dict)


def unify_shapes(
    records: list[dict[str, Any]], wrap: bool = False
) -> tuple[list[dict[str, Any]], ShapeReport]:
    """Give every key path one shape across `records` (each a `fields` dict). A change can
    give the paths below it new shapes to settle (a wrapped string beside a wrapped list),
    so this runs until nothing changes."""
    promoted: dict[Path_, tuple[str, int]] = {}
    for _ in range(8):
        shapes: dict[Path_, Counter] = {}
        for fields in records:
            collect_shapes(fields, shapes)
        promote = {p: t for p, s in shapes.items() if (t := decide(s, wrap)) is not None}
        changed: Counter = Counter()
        if promote:
            records = [apply_promotions(f, promote, changed) for f in records]
        for p, n in changed.items():
            promoted[p] = (promote[p], promoted.get(p, ("", 0))[1] + n)
        if not changed:
            break
    after: dict[Path_, Counter] = {}
    for fields in records:
        collect_shapes(fields, after)
    report = ShapeReport(
        shapes=after,
        promoted=promoted,
        conflicts={p: dict(s) for p, s in after.items() if is_conflict(s)},
    )
    return records, report


def path_str(path: Path_) -> str:
    return ".".join(path)
