"""The canonical label record: one invoice image and its nested JSON truth.

    {"id": str, "image": str, "doc_type": str, "fields": {...}, "meta": {...}}

`fields` holds strings, dicts of fields, lists of strings and lists of dicts, nested
as deep as the document needs. `meta` holds provenance (labeler, prompts, votes, QA).
An `image` path that is relative resolves against the folder of the labels file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.jsonl import JsonlError, read_jsonl, write_jsonl_atomic


class LabelFormatError(ValueError):
    """A label record that breaks the contract; the message says where and what."""


@dataclass
class LabelRecord:
    id: str
    image: str
    doc_type: str
    fields: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "image": self.image,
            "doc_type": self.doc_type,
            "fields": self.fields,
        }
        if self.meta:
            out["meta"] = self.meta
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> LabelRecord:
        prefix = f"{where}: " if where else ""
        for key in ("id", "image", "fields"):
            if key not in d:
                raise LabelFormatError(f"{prefix}missing required key {key!r}")
        for key in ("id", "image"):
            if not isinstance(d[key], str) or not d[key]:
                raise LabelFormatError(f"{prefix}{key!r} must be a non-empty string")
        doc_type = d.get("doc_type", "unknown")
        if not isinstance(doc_type, str):
            raise LabelFormatError(f"{prefix}'doc_type' must be a string")
        meta = d.get("meta", {}) or {}
        if not isinstance(meta, dict):
            raise LabelFormatError(f"{prefix}'meta' must be an object")
        validate_fields(d["fields"], where=where)
        unknown = set(d) - {"id", "image", "doc_type", "fields", "meta"}
        if unknown:
            raise LabelFormatError(
                f"{prefix}unknown top-level keys {sorted(unknown)}; put extra data under 'meta'"
            )
        return cls(id=d["id"], image=d["image"], doc_type=doc_type, fields=d["fields"], meta=meta)


def _valid_tree(fields: dict[Any, Any]) -> bool:
    """``validate_fields``'s rules, checked without building paths (iterative, any depth):
    True when the tree is valid; False sends it to the walk that names the problem."""
    stack: list[Any] = [fields]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            continue
        if isinstance(value, dict):
            for k in value:
                if type(k) is not str or not k:
                    return False
            stack.extend(value.values())
        elif isinstance(value, list):
            kinds = {type(v) for v in value}
            if not kinds <= {str, dict} or len(kinds) > 1:
                return False
            if dict in kinds:
                stack.extend(value)
        else:
            return False
    return True


def validate_fields(fields: Any, where: str = "") -> None:
    """Check the value tree: dict at the top; leaves are strings; lists hold all strings or all dicts."""
    prefix = f"{where}: " if where else ""
    if not isinstance(fields, dict):
        raise LabelFormatError(f"{prefix}'fields' must be an object, got {type(fields).__name__}")
    if _valid_tree(fields):
        return  # the walk below only runs to name what is wrong, and where

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            return
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str) or not k:
                    raise LabelFormatError(f"{prefix}fields{path}: keys must be non-empty strings")
                walk(v, f"{path}.{k}")
            return
        if isinstance(value, list):
            kinds = {type(v) for v in value}
            if kinds - {str, dict}:
                bad = next(v for v in value if not isinstance(v, (str, dict)))
                raise LabelFormatError(
                    f"{prefix}fields{path}: list items must be strings or objects, got "
                    f"{type(bad).__name__} ({bad!r}); quote numbers as strings"
                )
            if len(kinds) > 1:
                raise LabelFormatError(
                    f"{prefix}fields{path}: a list mixes strings and objects; use one kind"
                )
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
            return
        raise LabelFormatError(
            f"{prefix}fields{path}: values must be strings, objects or lists, got "
            f"{type(value).__name__} ({value!r}); write numbers as they are printed, quoted"
        )

    for k, v in fields.items():
        if not isinstance(k, str) or not k:
            raise LabelFormatError(f"{prefix}fields: keys must be non-empty strings")
        walk(v, f".{k}")


def read_labels(path: str | Path) -> list[LabelRecord]:
    """Read and validate a labels file; ids must be unique. Errors name `file:line`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    records: list[LabelRecord] = []
    seen: dict[str, int] = {}
    try:
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            rec = LabelRecord.from_dict(obj, where=where)
            if rec.id in seen:
                raise LabelFormatError(
                    f"{where}: duplicate id {rec.id!r} (first on line {seen[rec.id]}); ids must be unique"
                )
            seen[rec.id] = lineno
            records.append(rec)
    except JsonlError as exc:
        raise LabelFormatError(str(exc)) from None
    return records


def write_labels(path: str | Path, records: Iterable[LabelRecord]) -> int:
    """Write records atomically (temp file + rename)."""
    return write_jsonl_atomic(path, (r.to_dict() for r in records))


def resolve_image(image: str, labels_path: str | Path) -> Path:
    """An image path as stored in a labels file → absolute path (relative = next to the file)."""
    p = Path(image).expanduser()
    if not p.is_absolute():
        p = Path(labels_path).resolve().parent / p
    return p.resolve()
