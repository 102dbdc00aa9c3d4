"""Read gold labels and prediction files into ``Sample`` lists.

Native predictions (``predictions.jsonl``, one record per document x prompt)::

    {"id", "image", "system", "prompt", "raw_output", "prediction", "parse": {...},
     "latency_s", "stage_latency_s": {"ocr": s, "llm": s}, "usage", "finish_reason"}

``raw_output`` (a string) is re-parsed with ``data_tools.parsing`` so every system is
judged by the same parser; a record without it is taken as already parsed
(``prediction``, method ``given``). ``prompt`` defaults to ``OCR:{}``. A gold document
with no record for a system becomes a ``missing`` sample scored as ``{}``.

``--input-format megemini`` reads the published PaddleOCR-VL-KIE prediction files
(``sample_id, image_path, ground_truth, prediction[, accuracy]``): the gold comes from the
file itself and the prompt is the one their script sent (the gold's key skeleton).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.jsonl import JsonlError, read_jsonl
from data_tools.parsing import parse_model_output
from data_tools.prompts import FULL_PROMPT, PromptError, parse_prompt, project
from data_tools.records import read_labels, resolve_image
from eval.scoring import Sample

log = logging.getLogger(__name__)

INPUT_FORMATS = ("native", "megemini")


class InputError(ValueError):
    """A gold or prediction file that cannot be scored; the message names file:line."""


@dataclass
class GoldDoc:
    id: str
    fields: dict[str, Any]
    doc_type: str = "unknown"
    source: str = "unknown"
    image: str = ""  # absolute path, to match predictions made from SFT files (no ids there)


def read_gold(path: str | Path) -> dict[str, GoldDoc]:
    """Canonical labels (``labels.jsonl``); ``meta.source`` (or ``meta.dataset``) is the source."""
    out: dict[str, GoldDoc] = {}
    for rec in read_labels(path):
        meta = rec.meta or {}
        source = str(meta.get("source") or meta.get("dataset") or "unknown")
        image = str(resolve_image(rec.image, path))
        out[rec.id] = GoldDoc(rec.id, rec.fields, rec.doc_type or "unknown", source, image)
    return out


def _request(prompt: str, where: str) -> dict[str, Any]:
    try:
        return parse_prompt(prompt)
    except PromptError as exc:
        raise InputError(f"{where}: prompt {prompt[:60]!r} is not a KIE prompt: {exc}") from None


def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None  # NaN -> None


def sample_from_record(row: dict[str, Any], gold: GoldDoc, where: str) -> Sample:
    """One native prediction record -> Sample (gold projected on the record's prompt)."""
    prompt = row.get("prompt") or FULL_PROMPT
    if not isinstance(prompt, str):
        raise InputError(f"{where}: 'prompt' must be a string")
    request = _request(prompt, where)
    parse = row.get("parse") if isinstance(row.get("parse"), dict) else {}
    raw = row.get("raw_output")
    if isinstance(raw, str):
        parsed = parse_model_output(raw, finish_reason=row.get("finish_reason"))
        value, method = parsed.value, parsed.report.method
        truncated = parsed.report.truncated or bool(parse.get("truncated"))
        dups = parsed.report.duplicate_keys
        conflicts = parsed.report.conflicting_duplicate_keys
    elif "prediction" in row and row["prediction"] is not None:
        value, method = row["prediction"], "given"
        truncated = bool(parse.get("truncated"))
        dups = list(parse.get("duplicate_keys") or [])
        conflicts = list(parse.get("conflicting_duplicate_keys") or [])
    else:
        value, method, truncated, dups, conflicts = None, "failed", False, [], []
    stages = row.get("stage_latency_s") if isinstance(row.get("stage_latency_s"), dict) else {}
    return Sample(
        id=gold.id,
        prompt=prompt,
        gold=project(gold.fields, request),
        value=value,
        method=method,
        request=request,
        truncated=truncated,
        duplicate_keys=list(dups),
        conflicting_duplicate_keys=list(conflicts),
        doc_type=gold.doc_type,
        source=gold.source,
        latency_s=_float_or_none(row.get("latency_s")),
        stage_latency_s={
            str(k): f for k, v in stages.items() if (f := _float_or_none(v)) is not None
        },
        raw_output=raw if isinstance(raw, str) else None,
    )


def missing_sample(gold: GoldDoc) -> Sample:
    return Sample(
        id=gold.id,
        prompt=FULL_PROMPT,
        gold=gold.fields,
        value=None,
        method="missing",
        doc_type=gold.doc_type,
        source=gold.source,
    )


def read_predictions(path: str | Path, gold: dict[str, GoldDoc]) -> list[Sample]:
    """Native predictions -> samples, in gold order; missing documents filled in."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prediction file not found: {path}")
    by_key: dict[tuple[str, str], Sample] = {}
    by_image = {d.image: d for d in gold.values() if d.image}
    unknown = 0
    try:
        for lineno, row in read_jsonl(path):
            where = f"{path}:{lineno}"
            doc_id = row.get("id")
            if not isinstance(doc_id, str | int):
                raise InputError(f"{where}: record has no 'id'")
            doc = gold.get(str(doc_id))
            if doc is None and isinstance(row.get("image"), str):
                # predictions made from an SFT file carry the image, not the label id
                doc = by_image.get(str(Path(row["image"]).expanduser().resolve()))
            if doc is None:
                unknown += 1
                continue
            s = sample_from_record(row, doc, where)
            if s.key in by_key:
                log.warning(
                    "%s: second record for id %s and this prompt; the last wins", where, doc_id
                )
            by_key[s.key] = s
    except JsonlError as exc:
        raise InputError(str(exc)) from None
    if unknown:
        log.warning(
            "%s: %d records match no gold document (by id or image); ignored", path, unknown
        )
    have = {k[0] for k in by_key}
    out = sorted(by_key.values(), key=lambda s: (s.id, s.prompt))
    out.extend(missing_sample(d) for d in gold.values() if d.id not in have)
    n_missing = sum(1 for d in gold.values() if d.id not in have)
    if n_missing:
        log.warning("%s: %d gold documents have no prediction; scored as {}", path, n_missing)
    return out


# ---------------------------------------------------------------- megemini format
_MEGEMINI_SOURCES = (
    ("FATURA/", "FATURA"),
    ("SROIE_2019_with_labels/", "SROIE"),
    ("wildreceipt/", "wildreceipt"),
    ("cord-v2/", "CORD-v2"),
    ("xfund/", "xfund"),
    ("nutritional-data-poie-1/", "nutritional"),
    ("SIBR/", "SIBR"),
)


def megemini_source(image_path: str) -> str:
    url = str(image_path).replace("\\", "/")
    for pattern, name in _MEGEMINI_SOURCES:
        if pattern in url:
            return name
    return "unknown"


def megemini_request(gold: Any) -> dict[str, Any]:
    """The request their script sent (``construct_paddleocr_prompt``): the gold's skeleton."""

    def build(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: build(x) for k, x in v.items()}
        if isinstance(v, list):
            if v and isinstance(v[0], dict):
                inner = build(v[0])
                return [inner] if inner else []
            return []
        return ""

    return build(gold) if isinstance(gold, dict) else {}


def read_megemini(path: str | Path) -> tuple[dict[str, GoldDoc], list[Sample]]:
    """PaddleOCR-VL-KIE ``predictions.jsonl`` -> (gold from the file, samples)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prediction file not found: {path}")
    gold: dict[str, GoldDoc] = {}
    samples: list[Sample] = []
    try:
        for lineno, row in read_jsonl(path):
            where = f"{path}:{lineno}"
            for key in ("sample_id", "ground_truth", "prediction"):
                if key not in row:
                    raise InputError(f"{where}: megemini record lacks {key!r}")
            gt = row["ground_truth"]
            if not isinstance(gt, dict):
                raise InputError(f"{where}: 'ground_truth' must be an object")
            doc = GoldDoc(
                id=str(row["sample_id"]),
                fields=gt,
                doc_type="unknown",
                source=megemini_source(row.get("image_path", "")),
            )
            gold[doc.id] = doc
            request = megemini_request(gt)
            try:
                prompt = "OCR:" + json.dumps(request, ensure_ascii=False, separators=(",", ":"))
                parse_prompt(prompt)
            except PromptError:
                request, prompt = {}, FULL_PROMPT
            pred = row["prediction"]
            samples.append(
                Sample(
                    id=doc.id,
                    prompt=prompt,
                    gold=gt,
                    value=pred,
                    method="given" if pred is not None else "failed",
                    request=request,
                    doc_type=doc.doc_type,
                    source=doc.source,
                    latency_s=_float_or_none(row.get("latency_s")),
                )
            )
    except JsonlError as exc:
        raise InputError(str(exc)) from None
    return gold, samples
