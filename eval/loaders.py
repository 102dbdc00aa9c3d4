"""Read gold labels and prediction files into ``Sample`` lists.

Native predictions (``predictions.jsonl``, one row per document x prompt; the contract is
``data_tools.predictions.PredictionRow``)::

    {"id", "image", "system", "prompt", "raw_output", "prediction", "parse": {...},
     "latency_s", "usage", "stage_latency_s": {"ocr": s, "llm": s}}

Rows are joined to gold on ``(id, prompt)``: ``id`` is the label / SFT / requests record
id that ``inference.predict`` keeps. Only a row whose id is no gold id falls back to its
``image`` (the absolute path, never the stem: two ``inv.jpg`` in different folders stay
two documents) - prediction files written before ids were kept - and the loader says how
many rows it joined that way. Rows lacking the contract's keys (older files) are read
leniently: ``prompt`` defaults to ``OCR:{}``, a row without ``raw_output`` is taken as
already parsed (``prediction``, method ``given``).

``raw_output`` (a string) is re-parsed with ``data_tools.parsing`` so every system is
judged by the same parser. A gold document with no row for a system becomes a ``missing``
sample scored as ``{}``. A prediction past the scorer's limits (``Limits``: raw output
length, JSON leaves, nesting depth) is *refused*: scored as ``{}``, with the reason in
``Sample.error``, and the other samples are scored as usual.

``--input-format megemini`` reads the published PaddleOCR-VL-KIE prediction files
(``sample_id, image_path, ground_truth, prediction[, accuracy]``): the gold comes from the
file itself and the prompt is the one their script sent (the gold's key skeleton).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_tools.jsonl import JsonlError, read_jsonl
from data_tools.parsing import json_size
from data_tools.prompts import FULL_PROMPT, PromptError, parse_prompt, project
from data_tools.records import read_labels, resolve_image

if TYPE_CHECKING:
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
    image: str = ""  # as the labels file writes it: joins old prediction files without ids
    labels_path: Path | None = None  # the labels file (a relative ``image`` is next to it)

    def image_path(self) -> str:
        """The image's absolute, resolved path ("" without an image or a labels file)."""
        if not self.image or self.labels_path is None:
            return ""
        return str(resolve_image(self.image, self.labels_path))


def read_gold(path: str | Path) -> dict[str, GoldDoc]:
    """Canonical labels (``labels.jsonl``); ``meta.source`` (or ``meta.dataset``) is the source.

    Image paths are resolved only when a prediction row needs them (``GoldDoc.image_path``):
    rows are joined by id, and resolving 10,000 paths costs a system call each.
    """
    out: dict[str, GoldDoc] = {}
    labels_path = Path(path).resolve()  # once; images are resolved only when needed
    for rec in read_labels(path):
        meta = rec.meta or {}
        source = str(meta.get("source") or meta.get("dataset") or "unknown")
        doc_type = rec.doc_type or "unknown"
        out[rec.id] = GoldDoc(rec.id, rec.fields, doc_type, source, rec.image, labels_path)
    return out


# ---------------------------------------------------------------- limits
@dataclass(frozen=True)
class Limits:
    """What the scorer accepts from one prediction; past any of them the sample is refused."""

    max_output_chars: int = 1_000_000  # raw model output, before parsing
    max_leaves: int = 20_000  # JSON leaves (strings, numbers, ...) in the parsed prediction
    max_depth: int = 64  # nesting of dicts and lists

    def check_raw(self, raw: str) -> str | None:
        if self.max_output_chars and len(raw) > self.max_output_chars:
            return (
                f"raw output of {len(raw):,} characters exceeds max_output_chars="
                f"{self.max_output_chars:,}; not parsed, scored as {{}}"
            )
        return None

    def check_value(self, value: Any, size: tuple[int, int] | None = None) -> str | None:
        """The first limit ``value`` breaks (``json_size``: any depth, stops at the limit),
        or None. ``size``: its whole (depth, leaves) if already measured (the parser's
        ``ParsedOutput.size``): within both limits, the value is not walked again."""
        if size is not None:
            depth, leaves = size
            if (not self.max_leaves or leaves <= self.max_leaves) and (
                not self.max_depth or depth <= self.max_depth
            ):
                return None
        depth, leaves = json_size(value, max_depth=self.max_depth, max_leaves=self.max_leaves)
        if self.max_leaves and leaves > self.max_leaves:
            return f"prediction has more than max_leaves={self.max_leaves:,} leaves; scored as {{}}"
        if self.max_depth and depth > self.max_depth:
            return f"prediction nests deeper than max_depth={self.max_depth}; scored as {{}}"
        return None


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


def sample_from_record(
    row: dict[str, Any], gold: GoldDoc, where: str, limits: Limits | None = None
) -> Sample:
    """One native prediction row -> Sample (gold projected on the row's prompt)."""
    from data_tools.parsing import parse_model_output
    from eval.scoring import Sample

    limits = limits or Limits()
    prompt = row.get("prompt") or FULL_PROMPT
    if not isinstance(prompt, str):
        raise InputError(f"{where}: 'prompt' must be a string")
    request = _request(prompt, where)
    parse = row.get("parse") if isinstance(row.get("parse"), dict) else {}
    raw = row.get("raw_output")
    if raw == "" and row.get("prediction") is not None:
        raw = None  # a contract row with no raw text: the prediction came parsed
    error = None
    truncated = bool(parse.get("truncated"))
    dups: list[str] = []
    conflicts: list[str] = []
    size = None  # (depth, leaves) of the parsed value, when the parser measured it
    if isinstance(raw, str):
        error = limits.check_raw(raw)
        if error:
            value, method = None, "refused"
        else:
            parsed = parse_model_output(raw, finish_reason=row.get("finish_reason"))
            value, method, size = parsed.value, parsed.report.method, parsed.size
            truncated = parsed.report.truncated or truncated
            dups = parsed.report.duplicate_keys
            conflicts = parsed.report.conflicting_duplicate_keys
    elif "prediction" in row and row["prediction"] is not None:
        value, method = row["prediction"], "given"
        dups = list(parse.get("duplicate_keys") or [])
        conflicts = list(parse.get("conflicting_duplicate_keys") or [])
    else:
        value, method = None, "failed"
    if value is not None and method != "refused":
        error = limits.check_value(value, size)
        if error:
            value, method = None, "refused"
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
        error=error,
    )


def missing_sample(gold: GoldDoc) -> Sample:
    from eval.scoring import Sample

    return Sample(
        id=gold.id,
        prompt=FULL_PROMPT,
        gold=gold.fields,
        value=None,
        method="missing",
        doc_type=gold.doc_type,
        source=gold.source,
    )


@dataclass
class PredictionFile:
    """One native predictions file read against the gold."""

    path: Path
    samples: list[Sample]
    systems: Counter[str] = field(default_factory=Counter)  # the rows' ``system`` values
    by_image: int = 0  # rows joined by image path (no gold id): an old file
    unknown: int = 0  # rows matching no gold document
    refused: list[dict[str, str]] = field(default_factory=list)  # {id, prompt, error}
    # rows as read that carry a confidence or a validation: what eval.calibration judges
    calibration_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def system(self) -> str | None:
        """The rows' system name (the most common one if they differ), None if none."""
        return self.systems.most_common(1)[0][0] if self.systems else None


def _contract_row(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """Rows with every contract key go through ``PredictionRow`` (its checks, its errors)."""
    from data_tools.predictions import REQUIRED, PredictionFormatError, PredictionRow

    if not all(k in obj for k in REQUIRED):
        return obj  # an older row: read leniently
    try:
        row = PredictionRow.from_dict(obj, where=where)
    except PredictionFormatError as exc:
        raise InputError(str(exc)) from None
    out = row.to_dict()
    if "finish_reason" in obj:
        out["finish_reason"] = obj["finish_reason"]
    return out


def read_prediction_file(
    path: str | Path, gold: dict[str, GoldDoc], limits: Limits | None = None
) -> PredictionFile:
    """Native predictions -> samples (sorted by id, prompt), missing documents filled in."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prediction file not found: {path}")
    by_key: dict[tuple[str, str], Sample] = {}
    by_image: dict[str, GoldDoc] | None = None  # built for the first row without a gold id
    result = PredictionFile(path, [])
    try:
        for lineno, obj in read_jsonl(path):
            where = f"{path}:{lineno}"
            if not isinstance(obj, dict):
                raise InputError(f"{where}: a prediction row must be a JSON object")
            if isinstance(obj.get("confidence"), Mapping) or isinstance(
                obj.get("validation"), Mapping
            ):
                result.calibration_rows.append(obj)
            row = _contract_row(obj, where)
            doc_id = row.get("id")
            if not isinstance(doc_id, str | int) or isinstance(doc_id, bool):
                raise InputError(f"{where}: row has no 'id' (the record id predict keeps)")
            if isinstance(row.get("system"), str) and row["system"]:
                result.systems[row["system"]] += 1
            doc = gold.get(str(doc_id))
            if doc is None and isinstance(row.get("image"), str) and row["image"]:
                if by_image is None:
                    by_image = {p: d for d in gold.values() if (p := d.image_path())}
                doc = by_image.get(str(Path(row["image"]).expanduser().resolve()))
                if doc is not None:
                    result.by_image += 1
            if doc is None:
                result.unknown += 1
                continue
            s = sample_from_record(row, doc, where, limits)
            if s.error:
                result.refused.append({"id": s.id, "prompt": s.prompt, "error": s.error})
                if len(result.refused) <= 5:
                    log.warning("%s: sample %s refused: %s", where, s.id, s.error)
            if s.key in by_key:
                log.warning("%s: second row for id %s and this prompt; the last wins", where, s.id)
            by_key[s.key] = s
    except JsonlError as exc:
        raise InputError(str(exc)) from None
    if len(result.refused) > 5:
        log.warning(
            "%s: %d samples refused in all (listed in metrics.json)", path, len(result.refused)
        )
    if result.by_image:
        log.warning(
            "%s: %d rows carry no gold id and were joined to gold by image path (a file "
            "written before predict kept record ids; re-run predict to join by id)",
            path,
            result.by_image,
        )
    if result.unknown:
        log.warning(
            "%s: %d rows match no gold document (by id or image); ignored", path, result.unknown
        )
    have = {k[0] for k in by_key}
    samples = sorted(by_key.values(), key=lambda s: (s.id, s.prompt))
    missing = [d for d in gold.values() if d.id not in have]
    samples.extend(missing_sample(d) for d in missing)
    if missing:
        log.warning("%s: %d gold documents have no prediction; scored as {}", path, len(missing))
    result.samples = samples
    return result


def read_predictions(
    path: str | Path, gold: dict[str, GoldDoc], limits: Limits | None = None
) -> list[Sample]:
    """Native predictions -> samples, in (id, prompt) order; missing documents filled in."""
    return read_prediction_file(path, gold, limits).samples


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


def read_megemini(
    path: str | Path, limits: Limits | None = None
) -> tuple[dict[str, GoldDoc], list[Sample]]:
    """PaddleOCR-VL-KIE ``predictions.jsonl`` -> (gold from the file, samples)."""
    from eval.scoring import Sample

    limits = limits or Limits()
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
            error = limits.check_value(pred) if pred is not None else None
            if error:
                log.warning("%s: sample %s refused: %s", where, doc.id, error)
            samples.append(
                Sample(
                    id=doc.id,
                    prompt=prompt,
                    gold=gt,
                    value=None if error else pred,
                    method="refused" if error else ("given" if pred is not None else "failed"),
                    request=request,
                    doc_type=doc.doc_type,
                    source=doc.source,
                    latency_s=_float_or_none(row.get("latency_s")),
                    error=error,
                )
            )
    except JsonlError as exc:
        raise InputError(str(exc)) from None
    return gold, samples
