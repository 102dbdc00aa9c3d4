"""Batch prediction: a folder of images, a labels / SFT / requests file in, predictions.jsonl out.

    python -m inference.predict --backend paddlex --model-dir outputs/model \\
        --input data/invoices/ --out outputs/predictions.jsonl [--query 发票号码,开票日期] \\
        [--excel outputs/predictions.xlsx]
    python -m inference.predict --backend ocr-llm --server-url http://127.0.0.1:8180/v1 \\
        --input data/invoices/ --out outputs/baseline/predictions.jsonl
    python -m inference.predict --config configs/predict/ocr_llm.yaml input=DIR out=FILE

Every option is a key of :class:`PredictConfig` (``--config`` YAML, then ``key=value``
overrides with dotted keys, then the flags, which are shorthands for overrides).

Inputs (``input``):

* a folder: every image under it, id = its path below the folder without suffix;
* a labels file (``{"id", "image", "fields", ...}`` per line): id and image from it;
* an SFT file (ERNIEKit or PaddleFormers) or a requests file (``val.requests.jsonl``,
  ``{"id", "image", "prompt"}`` per line, written by the dataset builder): the record id,
  image and prompts from it (``data_tools.sft.read_requests``).

Each (id, prompt) pair is one prediction row (``data_tools.predictions``); ``--query``
(repeatable) replaces the prompts (default ``OCR:{}`` for folders and labels files, the
file's own prompts for SFT / requests files). An image is decoded and prepared once for all
its prompts.

The run is the project's run harness (``data_tools.runner``): rows are appended as they
finish, a rerun of the same command continues where the last stopped, an image that cannot
be read or a call that keeps failing goes to ``<out stem>.failures.jsonl`` with its reason
and is redone by ``--retry-failed``; exit codes 0 / 1 / 2 / 3 as in the README.

``--excel`` writes the batch report a finance team opens: one row per invoice, one column
per field (schema order), a status (ok / repaired / truncated / failed / error) and the
errors; a second sheet lists every prediction with its prompt and raw output.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.config import ConfigError, load_config
from data_tools.images import IMAGE_SUFFIXES, is_image_file, visual_tokens
from data_tools.jsonl import JsonlError, atomic_writer, read_jsonl, write_jsonl_atomic
from data_tools.paddleocr_vl import MODEL_NAME
from data_tools.predictions import PredictionRow, read_predictions, row_key
from data_tools.prompts import FULL_PROMPT
from data_tools.records import LabelFormatError, LabelRecord, resolve_image
from data_tools.runner import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    BadInput,
    FatalError,
    Item,
    ItemFailed,
    Output,
    RunFiles,
    exit_message,
    run_items,
)
from data_tools.schema import Schema, load_schema

log = logging.getLogger("inference.predict")

ROW_KEYS = (
    "id",
    "image",
    "system",
    "prompt",
    "raw_output",
    "prediction",
    "parse",
    "latency_s",
    "usage",
)


class InputError(BadInput):
    """An input that cannot be read; the message names the file and line."""


# ---------------------------------------------------------------- config
@dataclass
class ImageSettings:
    """How images are prepared (``inference.imaging.ImageOptions``)."""

    min_pixels: int = 147384
    max_pixels: int = 28 * 28 * 3600
    char_density: float | None = None


@dataclass
class PredictConfig:
    input: str
    out: str
    backend: Any = None  # inference.backends.BackendConfig (built lazily: imports are heavy)
    queries: list[str] = field(default_factory=list)
    schema: str | None = "vat_invoice"
    system: str | None = None
    excel: str | None = None
    concurrency: int | None = None  # calls in flight (default: the backend's own)
    image: ImageSettings = field(default_factory=ImageSettings)
    pages: str | None = None  # PDF / OFD pages to read, 1-based ("1", "1,3-4"); None: all
    max_pages: int = 20  # refuse longer documents (select pages to read them)
    review_threshold: float | None = None  # fields under this confidence go to review
    retry_failed: bool = False
    limit: int | None = None
    progress: bool = True


def load_predict_config(path: str | None, overrides: Sequence[Any]) -> PredictConfig:
    """`PredictConfig` with `backend` typed as `BackendConfig` (imported here, not at start-up)."""
    from inference.backends import BackendConfig

    typed = dataclasses.make_dataclass(
        "PredictConfig",
        [("backend", BackendConfig, field(default_factory=BackendConfig))],
        bases=(PredictConfig,),
    )
    return load_config(typed, path, overrides)


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Job:
    """One image (or one page of a PDF / OFD) of the input and the prompts to ask about it."""

    id: str
    image: Path
    prompts: tuple[str, ...]
    page: int | None = None  # 1-based page of a PDF / OFD; None for an image

    def item(self) -> Item:
        keys = tuple(row_key(self.id, p) for p in self.prompts)
        return Item(id=self.id, keys=keys, payload=self)


Triple = tuple[str, Path, str]  # (record id, image or document, prompt)


def _is_document(path: Path) -> bool:
    from data_tools.documents import DOCUMENT_SUFFIXES

    return path.suffix.lower() in DOCUMENT_SUFFIXES


def _pages(doc_id: str, path: Path, options: Any) -> list[tuple[str, int | None]]:
    """(job id, page) for every selected page of a document; an image is its own page.

    A document that cannot be opened becomes one job whose run lists it as a failure (its
    reason in the failures file), so one bad file never stops a batch."""
    from data_tools.documents import (
        DocumentError,
        DocumentOptions,
        count_pages,
        page_id_for,
        select_pages,
    )

    if not _is_document(path):
        return [(doc_id, None)]
    options = options or DocumentOptions()
    kind = path.suffix.lower().lstrip(".")
    try:
        numbers = select_pages(count_pages(path, options=options), options, str(path))
    except DocumentError:
        return [(page_id_for(doc_id, 1, kind), 1)]
    return [(page_id_for(doc_id, n, kind), n) for n in numbers]


def load_page(path: Path, number: int, options: Any = None) -> Any:
    """Page `number` of a PDF / OFD, rendered alone (``data_tools.documents``)."""
    import dataclasses as dc

    from data_tools.documents import DocumentOptions, load_pages

    options = dc.replace(options or DocumentOptions(), pages=(number,))
    (page,) = load_pages(path, options=options)
    return page


def _group(triples: Sequence[Triple], doc_options: Any = None) -> list[Job]:
    """(id, image, prompt) triples → one job per (id, image) page, prompts de-duplicated."""
    order: dict[tuple[str, Path], list[str]] = {}
    for id_, image, prompt in triples:
        prompts = order.setdefault((id_, image), [])
        if prompt not in prompts:
            prompts.append(prompt)
    ids: dict[str, Path] = {}
    jobs = []
    for (id_, image), prompts in order.items():
        if id_ in ids and ids[id_] != image:
            raise InputError(
                f"id {id_!r} names two images ({ids[id_]} and {image}); ids must be unique"
            )
        ids[id_] = image
        for job_id, page in _pages(id_, image, doc_options):
            jobs.append(Job(job_id, image, tuple(prompts), page))
    return jobs


def load_jobs(
    input_path: Path, queries: Sequence[str] | None, doc_options: Any = None
) -> list[Job]:
    """Every (id, image, prompts) of `input_path`, in input order; see the module docstring.

    PDF and OFD files (in a folder, or named by a labels / requests file) give one job per
    selected page (``doc_options``: ``data_tools.documents.DocumentOptions``), id
    ``<doc id>#p<N>``."""
    from data_tools.documents import find_documents
    from data_tools.sft import SftFormatError, read_requests

    if input_path.is_dir():
        images = find_documents(input_path)
        if not images:
            raise InputError(f"{input_path}: no images ({', '.join(IMAGE_SUFFIXES)}), PDF or OFD")
        prompts = list(queries or [FULL_PROMPT])
        return _group(
            [
                (p.relative_to(input_path).with_suffix("").as_posix(), p.resolve(), q)
                for p in images
                for q in prompts
            ],
            doc_options,
        )
    if is_image_file(input_path) or (input_path.is_file() and _is_document(input_path)):
        triples = [(input_path.stem, input_path.resolve(), q) for q in queries or [FULL_PROMPT]]
        return _group(triples, doc_options)
    if not input_path.is_file():
        raise InputError(f"{input_path}: no such file or folder")
    triples: list[Triple] = []
    try:
        first = next(read_jsonl(input_path), None)
        if first is None:
            raise InputError(f"{input_path}: no records")
        if "fields" in first[1] and "id" in first[1]:
            for lineno, obj in read_jsonl(input_path):
                rec = LabelRecord.from_dict(obj, where=f"{input_path}:{lineno}")
                image = resolve_image(rec.image, input_path)
                triples += [(rec.id, image, q) for q in queries or [FULL_PROMPT]]
        else:
            for req in read_requests(input_path):
                image = resolve_image(req.image, input_path)
                # records written before SFT files carried ids: the image stem, as before
                triples.append((req.id or image.stem, image, req.prompt))
            if queries:
                triples = [(i, im, q) for i, im, _ in dict.fromkeys(triples) for q in queries]
    except (JsonlError, LabelFormatError, SftFormatError) as e:
        raise InputError(str(e)) from None
    return _group(triples, doc_options)


# ---------------------------------------------------------------- rows
def prediction_row(
    job: Job, system: str, extraction: Any, schema: Schema | None = None
) -> PredictionRow:
    """The row of one extraction; with a schema, its validation (the QA rules on the fields)."""
    from data_tools.validation import validation_dict

    w, h = extraction.model_image_size
    usage = dict(extraction.usage)
    if w and h:
        usage.setdefault("image_tokens", visual_tokens(h, w, min_pixels=w * h, max_pixels=w * h))
    info = dict(extraction.info)
    stage = info.pop("stage_latency_s", None)
    return PredictionRow(
        id=job.id,
        image=str(job.image),
        system=system,
        prompt=extraction.prompt,
        raw_output=extraction.raw_output,
        prediction=extraction.fields,
        parse=extraction.parse.to_dict(),
        latency_s=extraction.latency_s,
        usage=usage,
        stage_latency_s=stage,
        page=job.page,
        validation=validation_dict(extraction.fields, schema, request=extraction.request),
        confidence=extraction.confidence,
        info=info or None,
    )


# ---------------------------------------------------------------- the run
async def predict_jobs(
    extractor: Any,
    jobs: Sequence[Job],
    out: Path,
    *,
    system: str,
    concurrency: int,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
    config: Any = None,
    doc_options: Any = None,
) -> Any:
    """Run the jobs not yet in `out` through `extractor` (the run harness does the rest)."""
    from data_tools.documents import DocumentError
    from inference.backends import BackendError, BackendUnavailable
    from inference.imaging import ImageError

    files = RunFiles.beside(out, row_key=lambda r: row_key(str(r.get("id")), str(r.get("prompt"))))
    counters: Counter[str] = Counter()
    sem = asyncio.Semaphore(max(1, concurrency))

    async def prepare(job: Job) -> Any:
        """The job's image (or its page, with the document's own text layer) prepared once."""
        if job.page is None:
            return await extractor.aprepare(job.image)
        page = await asyncio.to_thread(load_page, job.image, job.page, doc_options)
        prepared = await extractor.aprepare(page.image)
        if page.text_layer is not None and page.text_layer.lines:
            prepared.image.info["text_layer"] = page.text_layer  # the ocr-llm backend reads it
        return prepared

    async def work(item: Item) -> Output:
        job: Job = item.payload
        prompts = [k.split("\t", 1)[1] for k in item.keys]
        try:
            prepared = await prepare(job)
        except (ImageError, DocumentError) as e:
            raise ItemFailed("image", str(e), image=str(job.image)) from None
        rows = []
        for prompt in prompts:
            async with sem:
                try:
                    extraction = await extractor.aextract(prepared, prompt)
                except BackendUnavailable as e:
                    raise FatalError(str(e)) from None
                except BackendError as e:
                    raise ItemFailed("backend", str(e), image=str(job.image)) from None
            counters[f"parse_{extraction.parse.method}"] += 1
            row = prediction_row(job, system, extraction, extractor.schema)
            if row.validation is not None and not row.validation["passed"]:
                counters["validation_failed"] += 1
            rows.append(row.to_dict())
        return Output(rows=rows)

    try:
        return await run_items(
            [j.item() for j in jobs],
            work,
            files,
            workers=max(1, concurrency) + 1,
            retry_failed=retry_failed,
            limit=limit,
            progress=progress,
            desc="predict",
            unit="image",
            counters=counters,
            before_start=extractor.backend.apreflight,
            config=config,
        )
    finally:
        await extractor.aclose()


# ---------------------------------------------------------------- duplicates
def duplicates_path(predictions: Path) -> Path:
    return predictions.with_name(predictions.name.removesuffix(".jsonl") + ".duplicates.jsonl")


def report_duplicates(predictions: Path, jobs: Sequence[Job] = ()) -> int:
    """Flag documents that repeat an earlier one (same invoice code + number, or the same
    file) in ``<stem>.duplicates.jsonl``: the double-reimbursement check. Earlier = earlier
    in the input (``jobs`` order; file order for rows not among them). Returns the count."""
    from data_tools.duplicates import find_duplicates

    order = {j.id: i for i, j in enumerate(jobs)}
    rows = [row for _, row in read_jsonl(predictions)] if predictions.exists() else []
    rows.sort(key=lambda r: order.get(str(r.get("id")), len(order)))
    dups = find_duplicates(rows)
    write_jsonl_atomic(
        duplicates_path(predictions), [{"id": doc, **d.to_dict()} for doc, d in dups.items()]
    )
    return len(dups)


# ---------------------------------------------------------------- review routing
def review_path(predictions: Path) -> Path:
    return predictions.with_name(predictions.name.removesuffix(".jsonl") + ".review.jsonl")


def review_reasons(row: dict[str, Any], threshold: float | None = None) -> list[str]:
    """Why a prediction row should be looked at by a person: a failed validation rule, or
    (with `threshold`) a field whose confidence is below it."""
    reasons = [
        f"validation {f.get('rule')}: {f.get('message')}"
        for f in (row.get("validation") or {}).get("failed", [])
    ]
    leaves = (row.get("confidence") or {}).get("leaves") or {}
    if threshold is not None:
        low = sorted(k for k, v in leaves.items() if v is not None and v < threshold)
        if low:
            reasons.append(f"confidence below {threshold:g}: {', '.join(low)}")
    return reasons


def route_review(predictions: Path, threshold: float | None = None) -> int:
    """Write ``<stem>.review.jsonl``: one line per document (page) to review, with its
    reasons (failed validation; fields under the confidence `threshold`). Returns the count."""
    by_id: dict[str, list[str]] = {}
    if predictions.exists():
        for _, row in read_jsonl(predictions):
            reasons = review_reasons(row, threshold)
            if reasons:
                by_id.setdefault(str(row.get("id")), []).extend(reasons)
    write_jsonl_atomic(
        review_path(predictions), [{"id": i, "reasons": r} for i, r in sorted(by_id.items())]
    )
    return len(by_id)


# ---------------------------------------------------------------- the Excel report


def _flatten(value: Any, prefix: str, out: dict[str, list[str]]) -> None:
    """Leaf columns: `a.b` for objects; list items joined by newlines in one column."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for item in value:
            _flatten(item, prefix, out)
        out.setdefault(prefix, [])
    else:
        out.setdefault(prefix, []).append("" if value is None else str(value))


def _schema_columns(schema: Schema | None) -> list[str]:
    if schema is None:
        return []
    return [".".join(k for k in path if k != "[]") for path in schema.leaf_paths()]


def _status(
    rows: list[dict[str, Any]], review_threshold: float | None = None
) -> tuple[str, list[str]]:
    errors: list[str] = []
    worst = "ok"
    rank = {"ok": 0, "review": 1, "repaired": 2, "truncated": 3, "failed": 4, "error": 5}
    for row in rows:
        parse = row.get("parse") or {}
        method = parse.get("method")
        status = "ok"
        if method == "failed":
            err = parse.get("error") or "no JSON in the output"
            status = "error" if str(err).startswith("image:") else "failed"
            errors.append(f"{row.get('prompt')}: {err}")
        elif parse.get("truncated"):
            status = "truncated"
            errors.append(f"{row.get('prompt')}: output truncated (max tokens)")
        elif method == "repaired":
            status = "repaired"
            errors.append(f"{row.get('prompt')}: JSON repaired ({parse.get('error')})")
        if parse.get("conflicting_duplicate_keys"):
            errors.append(f"duplicate keys {parse['conflicting_duplicate_keys']}")
        for reason in review_reasons(row, review_threshold):
            status = max(status, "review", key=rank.__getitem__)
            errors.append(f"{row.get('prompt')}: {reason}")
        if rank[status] > rank[worst]:
            worst = status
    return worst, errors


def _safe_cell(value: str) -> str:
    """Excel must show text, never run it: cells are capped and formulas defused."""
    value = value[:32000]
    if value.startswith(("=", "+", "@")) or (value.startswith("-") and not _is_number(value)):
        return "'" + value
    return value


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
    except ValueError:
        return False
    return True


def write_excel(
    predictions: Path,
    xlsx: Path,
    schema: Schema | None = None,
    review_threshold: float | None = None,
) -> int:
    """The finance team's report of a predictions file; returns the number of invoices."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill

    by_id: dict[str, list[dict[str, Any]]] = {}
    for _, row in read_jsonl(predictions):
        by_id.setdefault(str(row.get("id")), []).append(row)

    from data_tools.documents import document_id_of

    duplicate_of: dict[str, str] = {}
    if duplicates_path(predictions).exists():
        for _, row in read_jsonl(duplicates_path(predictions)):
            duplicate_of[str(row.get("id"))] = (
                f"duplicate of {row.get('duplicate_of')} ({row.get('by')})"
            )
    failures = RunFiles.beside(predictions).failures
    failed: dict[str, list[str]] = {}
    if failures.exists():
        for _, row in read_jsonl(failures):
            doc_id = str(row.get("id"))
            if doc_id not in by_id:
                failed.setdefault(doc_id, []).append(f"{row.get('stage')}: {row.get('reason')}")
                by_id.setdefault(doc_id, [])
                failed[doc_id] = list(dict.fromkeys(failed[doc_id]))
                failed.setdefault(doc_id + "\0image", [str(row.get("image", ""))])

    invoices = []
    columns = _schema_columns(schema)
    for doc_id, rows in by_id.items():
        if not rows:  # failed before any prediction: listed with its reasons
            image = failed.get(doc_id + "\0image", [""])[0]
            invoices.append((doc_id, image, "error", failed.get(doc_id, []), 0.0, {}))
            continue
        merged: dict[str, list[str]] = {}
        for row in rows:
            if isinstance(row.get("prediction"), dict):
                flat: dict[str, list[str]] = {}
                _flatten(row["prediction"], "", flat)
                for k, v in flat.items():
                    if v or k not in merged:
                        merged[k] = v
        for k in merged:
            if k not in columns:
                columns.append(k)
        status, errors = _status(rows, review_threshold)
        if document_id_of(doc_id) in duplicate_of:
            errors = [duplicate_of[document_id_of(doc_id)], *errors]
        latency = sum(float(r.get("latency_s") or 0) for r in rows)
        invoices.append((doc_id, rows[0].get("image", ""), status, errors, latency, merged))

    wb = Workbook()
    ws = wb.active
    ws.title = "invoices"
    header = ["id", "image", "status", "errors", "latency_s", *columns]
    ws.append(header)
    fills = {
        "ok": "C6EFCE",
        "review": "FFEB9C",
        "repaired": "FFEB9C",
        "truncated": "FFEB9C",
        "failed": "FFC7CE",
        "error": "FFC7CE",
    }
    for doc_id, image, status, errors, latency, merged in invoices:
        values = ["\n".join(merged.get(c, [])) for c in columns]
        ws.append(
            [
                _safe_cell(doc_id),
                _safe_cell(str(image)),
                status,
                _safe_cell("\n".join(errors)),
                round(latency, 3),
                *(_safe_cell(v) for v in values),
            ]
        )
        ws.cell(ws.max_row, 3).fill = PatternFill("solid", fgColor=fills[status])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    ws.freeze_panes = "C2"
    ws.auto_filter.ref = ws.dimensions
    for i, name in enumerate(header, start=1):
        width = 12 if name in ("status", "latency_s") else min(40, max(10, len(name) * 2 + 2))
        ws.column_dimensions[ws.cell(1, i).column_letter].width = width

    raw = wb.create_sheet("predictions")
    raw.append(["id", "prompt", "parse", "truncated", "error", "latency_s", "raw_output"])
    for doc_id, rows in by_id.items():
        for r in rows:
            parse = r.get("parse") or {}
            raw.append(
                [
                    _safe_cell(doc_id),
                    _safe_cell(str(r.get("prompt", ""))),
                    parse.get("method"),
                    bool(parse.get("truncated")),
                    _safe_cell(str(parse.get("error") or "")),
                    r.get("latency_s"),
                    _safe_cell(str(r.get("raw_output", ""))),
                ]
            )
    for cell in raw[1]:
        cell.font = Font(bold=True)

    with atomic_writer(xlsx, binary=True) as fh:
        wb.save(fh)
    return len(invoices)


# ---------------------------------------------------------------- CLI
FLAGS: dict[str, str] = {
    # flag dest -> config key (a flag is a shorthand for an override)
    "backend": "backend.backend",
    "model_dir": "backend.model_dir",
    "model_name": "backend.model_name",
    "device": "backend.device",
    "max_new_tokens": "backend.max_new_tokens",
    "input": "input",
    "out": "out",
    "excel": "excel",
    "system": "system",
    "schema": "schema",
    "concurrency": "concurrency",
    "min_pixels": "image.min_pixels",
    "max_pixels": "image.max_pixels",
    "char_density": "image.char_density",
    "limit": "limit",
    "pages": "pages",
    "review_threshold": "review_threshold",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inference.predict",
        description="Run an extractor over images / labels / SFT / requests; write predictions.jsonl.",
    )
    p.add_argument("--config", help="predict YAML (configs/predict/*.yaml); flags override it")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides, dotted keys (backend.ocr.preset=server)"
    )
    p.add_argument(
        "--backend", help="paddlex | paddlex-pipeline | transformers | openai | ocr-llm | fake"
    )
    p.add_argument("--model-dir", help="model dir (paddlex, paddlex-pipeline, transformers)")
    p.add_argument(
        "--server-url",
        action="append",
        default=[],
        help="OpenAI-compatible base URL ending in /v1 (openai: the VLM; ocr-llm: the LLM; repeat for round robin)",
    )
    p.add_argument("--api-model", help="model name the server serves (openai, ocr-llm)")
    p.add_argument("--model-name", help=f"PaddleX model name (default {MODEL_NAME})")
    p.add_argument("--device", help="cpu | gpu:0 | cuda (transformers)")
    p.add_argument("--input", help="image folder or image, labels, SFT or requests JSONL")
    p.add_argument(
        "--query",
        action="append",
        help='keys "发票号码,开票日期", a JSON request, or a prompt "OCR:{...}" (repeatable)',
    )
    p.add_argument("--out", help="predictions.jsonl (appended; a rerun continues)")
    p.add_argument("--excel", help="also write the batch report (.xlsx)")
    p.add_argument("--system", help="system name in the rows (default backend:model)")
    p.add_argument("--schema", help="schema name or YAML ('none': off)")
    p.add_argument("--concurrency", type=int, help="calls in flight (default: backend's own)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--min-pixels", type=int)
    p.add_argument("--max-pixels", type=int)
    p.add_argument(
        "--char-density",
        type=float,
        help="downscale to about this many ink pixels per character (e.g. 50; never upscales)",
    )
    p.add_argument("--timeout-s", type=float, help="per call (openai, ocr-llm)")
    p.add_argument("--max-attempts", type=int, help="tries per call (openai, ocr-llm)")
    p.add_argument(
        "--review-threshold",
        type=float,
        help="route documents with a field under this confidence to <out>.review.jsonl "
        "(with backend.confidence=true); failed validation always routes",
    )
    p.add_argument("--pages", help='PDF / OFD pages to read, 1-based: "1" or "1,3-4" (default all)')
    p.add_argument(
        "--retry-failed", action="store_true", help="redo the items in the failures file"
    )
    p.add_argument("--limit", type=int, help="only the first N images still to do")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _overrides(args: argparse.Namespace) -> list[Any]:
    out: list[Any] = list(args.overrides)
    for dest, key in FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            out.append((key, value))
    if args.query:
        out.append(("queries", list(args.query)))
    if args.retry_failed:
        out.append(("retry_failed", True))
    if args.no_progress:
        out.append(("progress", False))
    return out


def _normalise_queries(texts: Sequence[str], schema: Schema | None) -> list[str] | None:
    """Every query as its final prompt text (so resume keys are stable)."""
    from inference.extractor import query_from_text, resolve_query

    if not texts:
        return None
    return [resolve_query(query_from_text(text), schema)[0] for text in texts]


def _apply_endpoint_flags(cfg: PredictConfig, args: argparse.Namespace) -> None:
    from data_tools.llm_client import endpoint_from_flags

    b = cfg.backend
    if args.server_url or args.api_model:
        b.endpoint = endpoint_from_flags(b.endpoint, args.server_url, args.api_model, b.model_name)
    if b.endpoint is not None:
        if args.timeout_s is not None:
            b.endpoint.timeout_s = args.timeout_s
        if args.max_attempts is not None:
            b.endpoint.max_attempts = args.max_attempts
        if cfg.concurrency:
            b.endpoint.max_concurrency = cfg.concurrency


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from inference.backends import BackendUnavailable
    from inference.extractor import Extractor, QueryError
    from inference.imaging import ImageOptions

    try:
        cfg = load_predict_config(args.config, _overrides(args))
        if not cfg.input or not cfg.out:
            raise ConfigError("input and out are required (--input DIR|FILE --out FILE.jsonl)")
        _apply_endpoint_flags(cfg, args)
        schema = None if (cfg.schema or "none").lower() == "none" else load_schema(cfg.schema)
        queries = _normalise_queries(cfg.queries, schema)
        from data_tools.documents import DocumentOptions, parse_page_spec

        doc_options = DocumentOptions(
            max_pixels=cfg.image.max_pixels,
            pages=parse_page_spec(cfg.pages),
            max_pages=cfg.max_pages,
        )
        jobs = load_jobs(Path(cfg.input), queries, doc_options)
        image_options = ImageOptions(
            min_pixels=cfg.image.min_pixels,
            max_pixels=cfg.image.max_pixels,
            char_density=cfg.image.char_density,
        )
        extractor = Extractor.from_config(cfg.backend, image_options=image_options, schema=schema)
    except (BadInput, QueryError, BackendUnavailable, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return EXIT_BAD_INPUT
    out = Path(cfg.out)
    system = cfg.system or f"{extractor.backend.name}:{extractor.backend.model_name}"
    concurrency = cfg.concurrency or extractor.backend.max_parallel
    n_rows = sum(len(j.prompts) for j in jobs)
    log.info("%d image(s), %d prediction(s) with %s → %s", len(jobs), n_rows, system, out)
    try:
        summary = asyncio.run(
            predict_jobs(
                extractor,
                jobs,
                out,
                system=system,
                concurrency=concurrency,
                retry_failed=cfg.retry_failed,
                limit=cfg.limit,
                progress=cfg.progress,
                config=cfg,
                doc_options=doc_options,
            )
        )
    except BadInput as e:
        log.error("%s", e)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        log.error("interrupted; finished predictions are kept in %s; rerun to continue", out)
        return EXIT_INTERRUPTED
    finally:
        extractor.close()
    (log.error if summary.exit_code else log.info)("%s", exit_message(summary, "image"))
    n_review = route_review(out, cfg.review_threshold)
    if n_review:
        log.warning(
            "%d document(s) to review (validation, confidence): %s", n_review, review_path(out)
        )
    n_dup = report_duplicates(out, jobs)
    if n_dup:
        log.warning("%d document(s) repeat an earlier one: %s", n_dup, duplicates_path(out))
    if cfg.excel:
        n = write_excel(out, Path(cfg.excel), schema, cfg.review_threshold)
        log.info("wrote %s (%d invoices)", cfg.excel, n)
    return summary.exit_code


def iter_rows(path: Path) -> list[PredictionRow]:
    """The rows of a predictions file (for notebooks and the scorer)."""
    return read_predictions(path)


if __name__ == "__main__":
    sys.exit(main())
