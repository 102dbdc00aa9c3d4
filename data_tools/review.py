"""Human review of labels and predictions: what to review, and ``reviewed.jsonl``.

    from data_tools.review import load_review_items, reviewed_record, append_reviewed

    items = load_review_items("outputs/labels/vat/needs_review.jsonl", schema)  # or predictions
    rec = reviewed_record(items[0], edited_fields, action="edit")
    append_reviewed(items[0].reviewed_path, rec)          # one whole line, fsynced
    apply_reviewed(read_labels(labels), labels.parent)    # reviewed wins (build_dataset)

Two sources: a labels run's ``needs_review.jsonl`` (the labeler's disagreements and QA
failures; the record itself comes from ``labels.jsonl`` beside it) or a predictions file
(rows that fail validation, parse badly or have a leaf below the confidence threshold).
A review is appended to ``reviewed.jsonl`` in the source's folder as a canonical label
record (`data_tools.records`): the same id, the image path as the source wrote it (so it
resolves against the same folder), the reviewed fields, and ``meta.reviewed`` (action,
time, source, the validation of the reviewed fields). The record carries no
``needs_review`` flag and no stale ``qa`` verdict: a person has checked it. The file is an
append-only log: the last review of an id wins, a torn last line (a crash) is ignored.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.confidence import path_label
from data_tools.jsonl import JsonlError, append_jsonl, drop_torn_tail, read_jsonl
from data_tools.prompts import PromptError, parse_prompt
from data_tools.records import LabelFormatError, LabelRecord, read_labels, resolve_image
from data_tools.schema import Schema
from data_tools.validation import validate_prediction

log = logging.getLogger(__name__)

REVIEWED = "reviewed.jsonl"
NEEDS_REVIEW = "needs_review.jsonl"
LABELS = "labels.jsonl"
DEFAULT_THRESHOLD = 0.9


class ReviewError(ValueError):
    """A review source or a reviewed record that cannot be used; the message says where."""


@dataclass
class ReviewItem:
    id: str
    image: str  # as the source wrote it
    image_path: Path  # resolved
    doc_type: str
    fields: dict[str, Any]
    reasons: list[str] = field(default_factory=list)
    candidates: dict[str, list[str]] = field(default_factory=dict)  # leaf label → vote values
    flagged: dict[str, list[str]] = field(default_factory=dict)  # leaf/field → messages
    confidence: dict[str, float | None] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # "needs_review" | "predictions"
    reviewed: dict[str, Any] | None = None  # the last review, when there is one

    def to_dict(self) -> dict[str, Any]:
        leaves = []
        for path, value in _leaf_items(self.reviewed_fields):
            label = path_label(path)
            leaves.append(
                {
                    "path": list(path),
                    "label": label,
                    "value": value,
                    "candidates": self.candidates.get(label, []),
                    "flags": list(
                        dict.fromkeys(
                            self.flagged.get(label, []) + self.flagged.get(_field(label), [])
                        )
                    ),
                    "confidence": self.confidence.get(label),
                }
            )
        return {
            "id": self.id,
            "image": self.image,
            "doc_type": self.doc_type,
            "fields": self.reviewed_fields,
            "original_fields": self.fields,
            "reasons": self.reasons,
            "leaves": leaves,
            "source": self.source,
            "reviewed": self.reviewed is not None,
        }

    @property
    def reviewed_fields(self) -> dict[str, Any]:
        if self.reviewed is not None:
            return self.reviewed["fields"]
        return self.fields


def _field(label: str) -> str:
    return re.sub(r"\[\d+\]", "[]", label)


def _leaf_items(value: Any, path: tuple = ()) -> Iterable[tuple[tuple, Any]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaf_items(v, (*path, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaf_items(v, (*path, i))
    elif path:
        yield (
            path,
            "" if value in (None, {}, []) else value if isinstance(value, str) else str(value),
        )


# ---------------------------------------------------------------- reading reviewed.jsonl


def read_reviewed(path: str | Path) -> dict[str, LabelRecord]:
    """The last review of every id in a reviewed.jsonl (missing file: none).

    A torn last line (a crash during an append) is skipped with a warning; a bad line in
    the middle is an error naming file:line.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, LabelRecord] = {}
    lines = path.read_bytes().split(b"\n")
    torn = lines[-1].strip() != b""  # no trailing newline: the last append did not finish
    try:
        for lineno, obj in read_jsonl(path):
            try:
                rec = LabelRecord.from_dict(obj, where=f"{path}:{lineno}")
            except LabelFormatError as e:
                raise ReviewError(str(e)) from None
            out[rec.id] = rec
    except JsonlError as e:
        if torn and str(e).startswith(f"{path}:{len(lines)}:"):
            log.warning("%s: ignoring a torn last line (an interrupted save)", path)
            return out
        raise ReviewError(str(e)) from None
    return out


def apply_reviewed(records: Iterable[LabelRecord], folder: str | Path) -> list[LabelRecord]:
    """`records` with every id reviewed in ``folder/reviewed.jsonl`` replaced (reviewed wins)."""
    reviewed = read_reviewed(Path(folder) / REVIEWED)
    out = [reviewed.get(r.id, r) for r in records]
    if reviewed:
        n = sum(1 for r in out if "reviewed" in r.meta)
        log.info("%s: %d reviewed record(s) replace the labeler's", Path(folder) / REVIEWED, n)
    return out


def append_reviewed(path: str | Path, record: LabelRecord) -> None:
    """Append one reviewed record (one write, fsynced: a crash loses at most this line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(path)  # an earlier crash's half line must not glue onto this one
    append_jsonl(path, record.to_dict())


# ---------------------------------------------------------------- review sources


def load_review_items(
    source: str | Path,
    schema: Schema | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[ReviewItem]:
    """The items of a review source (see the module doc), with their last review if any."""
    source = Path(source)
    if not source.is_file():
        raise ReviewError(f"{source}: no such file")
    if source.name == NEEDS_REVIEW:
        items = _from_needs_review(source)
    else:
        items = _from_predictions(source, schema, threshold)
    reviewed = read_reviewed(source.parent / REVIEWED)
    for it in items:
        rec = reviewed.get(it.id)
        if rec is not None:
            it.reviewed = {"fields": rec.fields, **(rec.meta.get("reviewed") or {})}
        if schema is not None:
            _flag(it, schema)
    return items


def _flag(item: ReviewItem, schema: Schema) -> None:
    v = validate_prediction(item.reviewed_fields, schema, doc_type=item.doc_type, request={})
    for fail in v.failed:
        for f in fail.fields or ["(document)"]:
            item.flagged.setdefault(f, []).append(f"{fail.rule}: {fail.message}")


def _read(path: Path) -> list[tuple[int, dict]]:
    try:
        return list(read_jsonl(path))
    except JsonlError as e:
        raise ReviewError(str(e)) from None


def _from_needs_review(source: Path) -> list[ReviewItem]:
    labels_path = source.parent / LABELS
    if not labels_path.is_file():
        raise ReviewError(f"{source}: no {LABELS} beside it to take the records from")
    try:
        records = {r.id: r for r in read_labels(labels_path)}
    except LabelFormatError as e:
        raise ReviewError(str(e)) from None
    items = []
    for lineno, row in _read(source):
        rec = records.get(str(row.get("id")))
        if rec is None:
            log.warning("%s:%d: id %r not in %s; skipped", source, lineno, row.get("id"), LABELS)
            continue
        candidates: dict[str, list[str]] = {}
        for d in row.get("disagreements") or rec.meta.get("disagreements") or []:
            if isinstance(d, Mapping) and isinstance(d.get("path"), str):
                vals = [str(v) for v in d.get("values") or []]
                candidates[d["path"]] = list(dict.fromkeys(vals))
        reasons = [str(r) for r in row.get("reasons") or []]
        reasons += [f"qa: {h}" for h in row.get("qa_hard") or []]
        items.append(
            ReviewItem(
                id=rec.id,
                image=rec.image,
                image_path=resolve_image(rec.image, labels_path),
                doc_type=rec.doc_type,
                fields=rec.fields,
                reasons=reasons,
                candidates=candidates,
                meta=rec.meta,
                source="needs_review",
            )
        )
    return items


def _request_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The request a prediction row answered (``{}`` for everything), None if unknown."""
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        return None
    try:
        return parse_prompt(prompt)
    except PromptError:
        return None


def _from_predictions(source: Path, schema: Schema | None, threshold: float) -> list[ReviewItem]:
    items: dict[str, ReviewItem] = {}
    for _, row in _read(source):
        doc_id = str(row.get("id"))
        pred = row.get("prediction")
        reasons = []
        parse = row.get("parse") if isinstance(row.get("parse"), Mapping) else {}
        if not isinstance(pred, dict):
            reasons.append(f"parse: {parse.get('error') or 'no JSON object'}")
            pred = {}
        val = row.get("validation")
        if not isinstance(val, Mapping) and schema is not None and pred:
            val = validate_prediction(pred, schema, request=_request_of(row)).to_dict()
        if isinstance(val, Mapping) and not val.get("passed", True):
            reasons += [
                f"validation {f.get('rule')}: {f.get('message')}" for f in val.get("failed", [])
            ]
        conf = row.get("confidence") if isinstance(row.get("confidence"), Mapping) else {}
        leaves = conf.get("leaves") if isinstance(conf.get("leaves"), Mapping) else {}
        low = sorted(k for k, v in leaves.items() if isinstance(v, (int, float)) and v < threshold)
        if low:
            reasons.append(f"confidence below {threshold:g}: {', '.join(low)}")
        dup = row.get("duplicate_of")
        if dup:
            reasons.append(f"duplicate of {dup}")
        if not reasons:
            continue
        image = str(row.get("image") or "")
        item = items.get(doc_id)
        if item is None:
            items[doc_id] = ReviewItem(
                id=doc_id,
                image=image,
                image_path=resolve_image(image, source) if image else source,
                doc_type=str(row.get("doc_type") or (schema.doc_type if schema else "unknown")),
                fields=copy.deepcopy(pred),
                reasons=reasons,
                confidence={k: v for k, v in leaves.items() if isinstance(v, (int, float))},
                meta={"system": row.get("system"), "prompt": row.get("prompt")},
                source="predictions",
            )
        else:  # another prompt of the same document: its keys fill the gaps
            for k, v in pred.items():
                item.fields.setdefault(k, copy.deepcopy(v))
            item.reasons += reasons
    return list(items.values())


def reviewed_record(
    item: ReviewItem,
    fields: dict[str, Any],
    *,
    action: str = "edit",
    schema: Schema | None = None,
    reviewer: str = "ui",
) -> LabelRecord:
    """The canonical label record of a review (raises `ReviewError` for bad fields)."""
    if action not in ("accept", "edit"):
        raise ReviewError(f"action must be 'accept' or 'edit', got {action!r}")
    meta = {
        k: v
        for k, v in item.meta.items()
        if k not in ("needs_review", "review_reasons", "qa", "reviewed")
    }
    reviewed: dict[str, Any] = {
        "action": action,
        "by": reviewer,
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": item.source,
        "reasons": item.reasons,
        "changed": action == "edit" and fields != item.fields,
    }
    if schema is not None:
        reviewed["validation"] = validate_prediction(
            fields, schema, doc_type=item.doc_type, request={}
        ).to_dict()
    meta["reviewed"] = reviewed
    try:
        return LabelRecord.from_dict(
            {
                "id": item.id,
                "image": item.image,
                "doc_type": item.doc_type,
                "fields": fields,
                "meta": meta,
            },
            where=f"review of {item.id}",
        )
    except LabelFormatError as e:
        raise ReviewError(str(e)) from None


def reviewed_path(source: str | Path) -> Path:
    """Where the reviews of a source go: ``reviewed.jsonl`` beside it."""
    return Path(source).parent / REVIEWED
