"""Batch prediction: a folder of images, a labels file or an SFT file in, predictions.jsonl out.

    python -m inference.predict --backend paddlex --model-dir outputs/model \\
        --input data/invoices/ --out outputs/predictions.jsonl [--query 发票号码,开票日期] \\
        [--excel outputs/predictions.xlsx]
    python -m inference.predict --backend openai --server-url http://127.0.0.1:8118/v1 \\
        --input labels.jsonl --out predictions.jsonl --concurrency 16

Inputs (``--input``):

* a folder: every image under it (jpg, jpeg, png, bmp, webp, tif, tiff), id = relative
  path without suffix;
* a labels file (``{"id", "image", "fields", ...}`` per line): id and image from it;
* an SFT file (ERNIEKit ``image_info``/``text_info`` or PaddleFormers ``messages``): every
  prompt of every record, id = image file stem.

Each (id, prompt) pair is one prediction; ``--query`` (repeatable) replaces the prompts
(default ``OCR:{}`` for folders and labels files, the file's own prompts for SFT files).

One line per prediction (DESIGN.md §3), appended as it finishes, so a crash or Ctrl-C
loses nothing: rerunning the same command skips the pairs already in ``--out`` (a torn
last line is dropped first). Calls that fail on the backend side (server down, timeouts)
are not written and are retried by the next run; an unreadable image is written with the
error in ``parse.error``.

``--excel`` writes the batch report a finance team opens: one row per invoice, one column
per field (schema order), a status (ok / repaired / truncated / failed / error) and the
errors; a second sheet lists every prediction with its prompt and raw output.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_tools.images import IMAGE_SUFFIXES, find_images, visual_tokens
from data_tools.jsonl import JsonlError, append_jsonl, drop_torn_tail, read_jsonl
from data_tools.prompts import FULL_PROMPT
from data_tools.records import LabelFormatError, LabelRecord, resolve_image
from data_tools.schema import Schema, load_schema
from inference.backends import BACKENDS, BackendConfig, BackendError, BackendUnavailable
from inference.extractor import Extractor, QueryError, query_from_text, resolve_query
from inference.imaging import ImageError, ImageOptions

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


class InputError(ValueError):
    """An --input that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Job:
    id: str
    image: Path
    prompt: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.prompt)


# ---------------------------------------------------------------- inputs


def _sft_prompts(obj: dict[str, Any], where: str) -> tuple[str, list[str]]:
    """(image, prompts) of one ERNIEKit or PaddleFormers SFT record."""
    if "text_info" in obj:
        images = [i.get("image_url") for i in obj.get("image_info") or [] if isinstance(i, dict)]
        prompts = [
            t["text"]
            for t in obj["text_info"]
            if isinstance(t, dict) and t.get("tag") == "mask" and isinstance(t.get("text"), str)
        ]
    elif "messages" in obj:
        images = list(obj.get("images") or [])
        prompts = [
            m["content"].replace("<image>", "")
            for m in obj["messages"]
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
        ]
    else:
        raise InputError(f"{where}: neither a label record nor an SFT record")
    if len(images) != 1 or not isinstance(images[0], str):
        raise InputError(f"{where}: expected exactly one image, found {len(images)}")
    if not prompts:
        raise InputError(f"{where}: no prompt (mask / user turn) in the record")
    return images[0], prompts


def load_jobs(input_path: Path, queries: Sequence[str] | None) -> list[Job]:
    """Every (id, image, prompt) of `input_path`, in input order; see the module docstring."""
    if input_path.is_dir():
        images = find_images(input_path)
        if not images:
            raise InputError(f"{input_path}: no images ({', '.join(IMAGE_SUFFIXES)})")
        prompts = list(queries or [FULL_PROMPT])
        return [
            Job(p.relative_to(input_path).with_suffix("").as_posix(), p.resolve(), q)
            for p in images
            for q in prompts
        ]
    if not input_path.is_file():
        raise InputError(f"{input_path}: no such file or folder")
    jobs: list[Job] = []
    try:
        for lineno, obj in read_jsonl(input_path):
            where = f"{input_path}:{lineno}"
            if "fields" in obj and "id" in obj:
                try:
                    rec = LabelRecord.from_dict(obj, where=where)
                except LabelFormatError as e:
                    raise InputError(str(e)) from None
                image = resolve_image(rec.image, input_path)
                jobs.extend(Job(rec.id, image, q) for q in (queries or [FULL_PROMPT]))
            else:
                image_str, prompts = _sft_prompts(obj, where)
                image = resolve_image(image_str, input_path)
                jobs.extend(Job(image.stem, image, q) for q in (queries or prompts))
    except JsonlError as e:
        raise InputError(str(e)) from None
    if not jobs:
        raise InputError(f"{input_path}: no records")
    seen: set[tuple[str, str]] = set()
    unique = []
    for j in jobs:
        if j.key not in seen:
            seen.add(j.key)
            unique.append(j)
    return unique


def done_keys(out: Path) -> set[tuple[str, str]]:
    """(id, prompt) pairs already in `out` (after dropping a torn last line)."""
    if not out.exists():
        return set()
    if drop_torn_tail(out):
        log.warning("%s: dropped a torn last line left by an interrupted run", out)
    keys = set()
    for _, row in read_jsonl(out):
        keys.add((str(row.get("id")), str(row.get("prompt"))))
    return keys


# ---------------------------------------------------------------- rows


def prediction_row(job: Job, system: str, extraction: Any) -> dict[str, Any]:
    w, h = extraction.model_image_size
    usage = dict(extraction.usage)
    if w and h:
        usage.setdefault("image_tokens", visual_tokens(h, w, min_pixels=w * h, max_pixels=w * h))
    return {
        "id": job.id,
        "image": str(job.image),
        "system": system,
        "prompt": extraction.prompt,
        "raw_output": extraction.raw_output,
        "prediction": extraction.fields,
        "parse": extraction.parse.to_dict(),
        "latency_s": round(extraction.latency_s, 4),
        "usage": usage,
    }


def error_row(job: Job, system: str, error: str) -> dict[str, Any]:
    return {
        "id": job.id,
        "image": str(job.image),
        "system": system,
        "prompt": job.prompt,
        "raw_output": "",
        "prediction": None,
        "parse": {
            "method": "failed",
            "truncated": False,
            "duplicate_keys": [],
            "conflicting_duplicate_keys": [],
            "error": error,
        },
        "latency_s": 0.0,
        "usage": {},
    }


# ---------------------------------------------------------------- the run


@dataclass
class RunSummary:
    total: int
    skipped: int
    written: int
    image_errors: int
    backend_errors: int


async def run_jobs(
    extractor: Extractor,
    jobs: Sequence[Job],
    out: Path,
    *,
    system: str,
    concurrency: int,
    progress: bool = True,
) -> RunSummary:
    """Run the jobs not yet in `out`, appending each row as it finishes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_keys(out)
    todo = [j for j in jobs if j.key not in done]
    summary = RunSummary(len(jobs), len(jobs) - len(todo), 0, 0, 0)
    if summary.skipped:
        log.info("resuming: %d of %d already in %s", summary.skipped, len(jobs), out)
    sem = asyncio.Semaphore(max(1, concurrency))
    bar = tqdm(total=len(todo), desc="predict", unit="img", disable=not progress)

    async def one(job: Job) -> None:
        async with sem:
            try:
                extraction = await extractor.aextract(job.image, job.prompt)
            except ImageError as e:
                append_jsonl(out, error_row(job, system, f"image: {e}"))
                summary.image_errors += 1
                summary.written += 1
            except BackendUnavailable:
                raise
            except BackendError as e:
                log.warning("%s (%s): %s", job.id, job.prompt[:40], e)
                summary.backend_errors += 1
            else:
                append_jsonl(out, prediction_row(job, system, extraction))
                summary.written += 1
            bar.update(1)

    tasks = [asyncio.create_task(one(j)) for j in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        bar.close()
        await extractor.aclose()
    return summary


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


def _status(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    errors: list[str] = []
    worst = "ok"
    rank = {"ok": 0, "repaired": 1, "truncated": 2, "failed": 3, "error": 4}
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


def write_excel(predictions: Path, xlsx: Path, schema: Schema | None = None) -> int:
    """The finance team's report of a predictions file; returns the number of invoices."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill

    by_id: dict[str, list[dict[str, Any]]] = {}
    for _, row in read_jsonl(predictions):
        by_id.setdefault(str(row.get("id")), []).append(row)

    invoices = []
    columns = _schema_columns(schema)
    for doc_id, rows in by_id.items():
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
        status, errors = _status(rows)
        latency = sum(float(r.get("latency_s") or 0) for r in rows)
        invoices.append((doc_id, rows[0].get("image", ""), status, errors, latency, merged))

    wb = Workbook()
    ws = wb.active
    ws.title = "invoices"
    header = ["id", "image", "status", "errors", "latency_s", *columns]
    ws.append(header)
    fills = {
        "ok": "C6EFCE",
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

    xlsx.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{xlsx.name}.", suffix=".tmp", dir=xlsx.parent)
    os.close(fd)
    try:
        wb.save(tmp)
        os.replace(tmp, xlsx)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(invoices)


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inference.predict",
        description="Run an extractor over images / labels / SFT records; write predictions.jsonl.",
    )
    p.add_argument("--backend", choices=BACKENDS, required=True)
    p.add_argument("--model-dir", help="model dir (paddlex, paddlex-pipeline, transformers)")
    p.add_argument(
        "--server-url",
        action="append",
        default=[],
        help="OpenAI-compatible base URL ending in /v1 (openai; repeat for round robin)",
    )
    p.add_argument("--api-model", help="model name the server serves (openai)")
    p.add_argument("--model-name", default="PaddleOCR-VL-0.9B", help="PaddleX model name")
    p.add_argument("--device", default="cpu", help="cpu | gpu:0 | cuda (transformers)")
    p.add_argument("--input", type=Path, required=True, help="image folder, labels or SFT JSONL")
    p.add_argument(
        "--query",
        action="append",
        help='keys "发票号码,开票日期", a JSON request, or a prompt "OCR:{...}" (repeatable)',
    )
    p.add_argument("--out", type=Path, required=True, help="predictions.jsonl (appended)")
    p.add_argument("--excel", type=Path, help="also write the batch report (.xlsx)")
    p.add_argument("--system", help="system name in the rows (default backend:model)")
    p.add_argument("--schema", default="vat_invoice", help="schema name or YAML ('none': off)")
    p.add_argument("--concurrency", type=int, help="calls in flight (default: backend's own)")
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--min-pixels", type=int, default=ImageOptions.min_pixels)
    p.add_argument("--max-pixels", type=int, default=ImageOptions.max_pixels)
    p.add_argument(
        "--char-density",
        type=float,
        help="downscale to about this many ink pixels per character (e.g. 50; never upscales)",
    )
    p.add_argument("--timeout-s", type=float, default=120.0, help="per call (openai)")
    p.add_argument("--max-attempts", type=int, default=4, help="tries per call (openai)")
    p.add_argument("--limit", type=int, help="only the first N (id, prompt) pairs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _normalise_queries(texts: Sequence[str] | None, schema: Schema | None) -> list[str] | None:
    """Every --query as its final prompt text (so resume keys are stable)."""
    if not texts:
        return None
    prompts = []
    for text in texts:
        prompt, _ = resolve_query(query_from_text(text), schema)
        prompts.append(prompt)
    return prompts


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        schema = None if args.schema.lower() == "none" else load_schema(args.schema)
        queries = _normalise_queries(args.query, schema)
        jobs = load_jobs(args.input, queries)
        if args.limit:
            jobs = jobs[: args.limit]
        backend_cfg = BackendConfig(
            backend=args.backend,
            model_dir=args.model_dir,
            model_name=args.model_name,
            device=args.device,
            server_urls=args.server_url,
            api_model=args.api_model,
            max_concurrency=args.concurrency or 8,
            timeout_s=args.timeout_s,
            max_attempts=args.max_attempts,
            max_new_tokens=args.max_new_tokens,
        )
        image_options = ImageOptions(
            min_pixels=args.min_pixels, max_pixels=args.max_pixels, char_density=args.char_density
        )
        extractor = Extractor.from_config(backend_cfg, image_options=image_options, schema=schema)
    except (InputError, QueryError, BackendUnavailable, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    system = args.system or f"{extractor.backend.name}:{extractor.backend.model_name}"
    concurrency = args.concurrency or extractor.backend.max_parallel
    log.info("%d prediction(s) for %s with %s → %s", len(jobs), args.input, system, args.out)
    try:
        summary = asyncio.run(
            run_jobs(
                extractor,
                jobs,
                args.out,
                system=system,
                concurrency=concurrency,
                progress=not args.no_progress,
            )
        )
    except BackendUnavailable as e:
        log.error("stopped: %s (finished predictions are kept in %s)", e, args.out)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; rerun the same command to continue")
        return 130
    finally:
        extractor.close()
    log.info(
        "done: %d written, %d already there, %d unreadable image(s), %d backend failure(s)",
        summary.written,
        summary.skipped,
        summary.image_errors,
        summary.backend_errors,
    )
    if args.excel:
        n = write_excel(args.out, args.excel, schema)
        log.info("wrote %s (%d invoices)", args.excel, n)
    if summary.backend_errors:
        log.error(
            "%d call(s) failed on the backend and were not written; rerun the same command "
            "to retry them",
            summary.backend_errors,
        )
        return 1
    return 0


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a predictions file (for notebooks and the scorer)."""
    for _, row in read_jsonl(path):
        yield row


if __name__ == "__main__":
    sys.exit(main())
