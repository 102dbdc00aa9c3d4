"""Convert public KIE datasets and raw VLM labels into canonical label records.

    python -m data_tools.convert --format F --src PATH --out labels.jsonl \
        [--schema S] [--doc-type T] [--image-dir DIR] [--skip-bad] ...

Formats (one reader each in `data_tools/converters/`; layouts in docs/data.md §5):

=========== =========================================================================
vat_ner     published per-image VLM labels `{"image", "data"}` (schema `vat_invoice`)
wildreceipt WildReceipt close-set / open-set lines (release tar, MMOCR 1.x, PaddleOCR)
sroie       ICDAR 2019 SROIE task-3 key files (ICDAR release or Kaggle layout)
cord        CORD v1/v2: original `valid_line` JSON, `gt_parse` JSON, HF parquet, Donut jsonl
xfund       XFUND / FUNSD question→answer links (or PaddleOCR's KIE label lines)
=========== =========================================================================

Every record goes through the same steps: find its image (`ImageLocator`: as written,
then by relative path and last path parts in `--image-dir` and the reader's folders, then
by name below `--image-dir`), turn `null`/`true`/numbers into strings, canonicalise
through the schema if one applies (the report lands in `meta.canonicalize`), keep the
source's split in `meta.split`, validate the value tree, check the id is unique. Then
every key gets one shape across the dataset (`converters.shapes`: a key that is a string
in one record and a list in another becomes a list everywhere). Image paths are written
relative to the output file when the image lies under its folder, absolute otherwise.
The output is written atomically; a bad input stops the run with `file[:line]: what is
wrong` unless `--skip-bad` lists and skips it. `--report` writes `<out stem>.report.json`
(records in/out, fields and their types, values dropped or emptied and why) and prints
it. Values are never "fixed": a swapped code or a wrong amount stays, label QA catches it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_tools.converters import FORMATS
from data_tools.converters.common import (
    BadItem,
    ConvertError,
    ConvertOptions,
    ImageLocator,
    SourceItem,
)
from data_tools.converters.shapes import (
    EMPTY_LIST,
    ShapeReport,
    is_conflict,
    path_str,
    unify_shapes,
)
from data_tools.jsonl import atomic_write_text
from data_tools.records import LabelFormatError, LabelRecord, validate_fields, write_labels
from data_tools.schema import CanonicalizeReport, Schema, load_schema

log = logging.getLogger(__name__)

DEFAULT = "default"  # --schema: the format's own default (vat_invoice for vat_ner, else none)
NO_SCHEMA = "none"


@dataclass
class ConvertConfig:
    schema: str | None = DEFAULT  # a schema name/path, DEFAULT, or NO_SCHEMA / None
    doc_type: str | None = None  # default: the schema's doc_type, else the format's
    id_prefix: str = ""
    image_dir: Path | None = None
    extract_images_to: Path | None = None  # default: <out folder>/<out stem>_images
    class_list: Path | None = None
    skip_bad: bool = False
    allow_missing_images: bool = False
    absolute_image_paths: bool = False
    report: bool = False  # write <out stem>.report.json


@dataclass
class ConvertSummary:
    format: str
    out: Path
    records: int = 0
    schema: str | None = None
    skipped: list[str] = field(default_factory=list)  # "where: what" per skipped input
    empty: list[str] = field(default_factory=list)  # ids of records with no fields
    missing_images: list[str] = field(default_factory=list)  # ids kept by --allow-missing-images
    items_in: int = 0  # documents the reader yielded (good and bad)
    splits: dict[str, int] = field(default_factory=dict)  # meta.split → records
    dropped: dict[str, int] = field(default_factory=dict)  # reason → values left out
    counts: dict[str, int] = field(default_factory=dict)  # reader counts (items paired, ...)
    shapes: ShapeReport = field(default_factory=ShapeReport)
    empty_values: dict[str, int] = field(default_factory=dict)  # key path → empty leaves
    values: int = 0  # string values (leaves) written, empty ones included
    report_path: Path | None = None

    def report(self) -> dict[str, Any]:
        """The converter report: records in/out, fields and their types, what was left out."""
        return {
            "format": self.format,
            "out": str(self.out),
            "schema": self.schema,
            "records_in": self.items_in,
            "records_out": self.records,
            "skipped": {"count": len(self.skipped), "inputs": self.skipped},
            "records_without_fields": self.empty,
            "records_without_image": self.missing_images,
            "splits": self.splits,
            "fields": {
                path_str(p): dict(sorted(c.items())) for p, c in sorted(self.shapes.shapes.items())
            },
            "type_changes": {
                path_str(p): {"to": to, "records": n} for p, (to, n) in self.shapes.promoted.items()
            },
            "type_conflicts": {path_str(p): c for p, c in self.shapes.conflicts.items()},
            "values": self.values,
            "empty_values": self.empty_values,
            "dropped": self.dropped,
            "counts": self.counts,
        }


def _add(counter: dict[str, int], key: str, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


def count_leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(count_leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_leaves(v) for v in value)
    return 1


def count_empty_leaves(value: Any, path: str, out: dict[str, int]) -> None:
    """Count `""`, `[]` and `{}` values per key path (list items share their list's path)."""
    if isinstance(value, dict):
        if not value and path:
            _add(out, path)
        for k, v in value.items():
            count_empty_leaves(v, f"{path}.{k}" if path else k, out)
    elif isinstance(value, list):
        if not value:
            _add(out, path)
        for v in value:
            if isinstance(v, dict):
                count_empty_leaves(v, path, out)
            elif v == "":
                _add(out, path)
    elif value == "":
        _add(out, path)


# ---------------------------------------------------------------- steps


def coerce_scalars(value: Any, path: str, changed: list[str]) -> Any:
    """Numbers → their printed string; `null` → `""` and booleans → `"true"`/`"false"`
    (those two are listed in `changed`). Other shapes are left for validation."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        changed.append(path)
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        changed.append(path)
        return ""
    if isinstance(value, dict):
        return {str(k): coerce_scalars(v, f"{path}.{k}", changed) for k, v in value.items()}
    if isinstance(value, list):
        return [coerce_scalars(v, f"{path}[{i}]", changed) for i, v in enumerate(value)]
    return value


def stored_image_path(image: Path, out: Path, absolute: bool = False) -> str:
    """Relative to the labels file's folder when the image lies below it, else absolute."""
    image_abs = Path(os.path.abspath(image))
    if not absolute:
        try:
            return image_abs.relative_to(Path(os.path.abspath(out)).parent).as_posix()
        except ValueError:
            pass
    return image_abs.as_posix()


def _missing_image_message(item: SourceItem, tried: list[str]) -> str:
    shown = ", ".join(tried[:6])
    more = f" and {len(tried) - 6} more" if len(tried) > 6 else ""
    return (
        f"image {item.image_refs[0]!r} not found (tried {shown}{more}); pass --image-dir DIR "
        "(the folder holding the images; it is searched by name, recursively), or "
        "--allow-missing-images to keep the record with its expected path"
    )


def _to_record(
    item: SourceItem,
    fmt: str,
    out: Path,
    schema: Schema | None,
    doc_type: str,
    cfg: ConvertConfig,
    summary: ConvertSummary,
    locator: ImageLocator,
) -> LabelRecord:
    """One item → a validated record; raises `ConvertError` naming `item.where`."""
    if not item.id:
        raise ConvertError(f"{item.where}: the source gives this document no id")
    image, tried = locator.locate(item)
    meta: dict[str, Any] = {"source": {"format": fmt, **item.source}}
    if item.split:
        meta["split"] = item.split
    if image is None:
        if not cfg.allow_missing_images or not item.image_refs:
            raise ConvertError(f"{item.where}: {_missing_image_message(item, tried)}")
        image = Path(item.image_refs[0])
        if not image.is_absolute() and item.search_dirs:
            image = item.search_dirs[0] / image
        meta["image_missing"] = True
        summary.missing_images.append(cfg.id_prefix + item.id)
    changed: list[str] = []
    fields = coerce_scalars(item.fields, "", changed)
    if changed:
        meta["coerced"] = [p.lstrip(".") for p in changed]
    if schema is not None:
        report = CanonicalizeReport()
        fields = schema.canonicalize(fields, report)
        meta["canonicalize"] = {"schema": schema.name, **report.to_dict()}
        if report.dropped:
            _add(summary.dropped, f"keys the schema {schema.name} ignores", len(report.dropped))
    if changed:
        _add(summary.dropped, "null/true/false values written as strings", len(changed))
    try:
        validate_fields(fields, where=item.where)
    except LabelFormatError as exc:
        raise ConvertError(f"{exc}; fix the source") from None
    meta.update(item.meta)
    return LabelRecord(
        id=cfg.id_prefix + item.id,
        image=stored_image_path(image, out, cfg.absolute_image_paths),
        doc_type=doc_type,
        fields=fields,
        meta=meta,
    )


# ---------------------------------------------------------------- driver


def convert(
    fmt: str, src: str | Path, out: str | Path, cfg: ConvertConfig | None = None
) -> ConvertSummary:
    """Read `src` in format `fmt`, write canonical label records to `out` (atomically)."""
    cfg = cfg or ConvertConfig()
    if fmt not in FORMATS:
        raise ConvertError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    reader = FORMATS[fmt]
    src, out = Path(src), Path(out)
    if not src.exists():
        raise ConvertError(f"--src {src} does not exist")
    schema_name = reader.DEFAULT_SCHEMA if cfg.schema == DEFAULT else cfg.schema
    schema = load_schema(schema_name) if schema_name and schema_name != NO_SCHEMA else None
    doc_type = cfg.doc_type or (schema.doc_type if schema else reader.DOC_TYPE)
    opts = ConvertOptions(
        image_dir=cfg.image_dir,
        extract_images_to=cfg.extract_images_to or out.parent / f"{out.stem}_images",
        class_list=cfg.class_list,
    )
    summary = ConvertSummary(format=fmt, out=out, schema=schema.name if schema else None)
    locator = ImageLocator(cfg.image_dir)

    def bad(message: str) -> None:
        if not cfg.skip_bad:
            if "--skip-bad" not in message:
                message += " (or pass --skip-bad to skip bad inputs and go on)"
            raise ConvertError(message)
        log.warning("skipped: %s", message)
        summary.skipped.append(message)

    records: list[LabelRecord] = []
    seen: dict[str, str] = {}
    items = tqdm(reader.iter_items(src, opts), desc=f"convert {fmt}", unit="doc", disable=None)
    for item in items:
        summary.items_in += 1
        if isinstance(item, BadItem):
            bad(f"{item}")
            continue
        try:
            rec = _to_record(item, fmt, out, schema, doc_type, cfg, summary, locator)
        except ConvertError as exc:
            bad(str(exc))
            continue
        if rec.id in seen:
            bad(
                f"{item.where}: id {rec.id!r} was already produced by {seen[rec.id]}; ids must "
                "be unique (remove the duplicate, or convert the sources separately with "
                "different --id-prefix values)"
            )
            continue
        seen[rec.id] = item.where
        if not rec.fields:
            summary.empty.append(rec.id)
        for reason, n in item.dropped.items():
            _add(summary.dropped, reason, n)
        for what, n in item.counts.items():
            _add(summary.counts, what, n)
        if item.split:
            _add(summary.splits, item.split)
        records.append(rec)
    if not records:
        raise ConvertError(
            f"no records converted from {src} (format {fmt}: {reader.EXPECTS})"
            + (f"; {len(summary.skipped)} input(s) skipped as bad" if summary.skipped else "")
        )
    if summary.empty:
        log.warning("%d record(s) have no fields, e.g. %s", len(summary.empty), summary.empty[0])
    wrap = bool(getattr(reader, "WRAP_CONFLICTS", False))
    unified, summary.shapes = unify_shapes([r.fields for r in records], wrap=wrap)
    for rec, fields in zip(records, unified, strict=True):
        rec.fields = fields
        count_empty_leaves(fields, "", summary.empty_values)
        summary.values += count_leaves(fields)
    for path, shapes in summary.shapes.conflicts.items():
        log.warning(
            "key %s has several shapes that cannot be unified without changing values: %s",
            path_str(path),
            ", ".join(f"{s} ×{n}" for s, n in shapes.items() if s != EMPTY_LIST),
        )
    summary.records = write_labels(out, records)
    if cfg.report:
        summary.report_path = out.with_name(f"{out.stem}.report.json")
        atomic_write_text(
            summary.report_path,
            json.dumps(summary.report(), ensure_ascii=False, indent=1) + "\n",
        )
    return summary


def format_report(report: dict[str, Any]) -> str:
    """The converter report as lines for a terminal."""
    lines = [
        f"format {report['format']} → {report['out']} (schema {report['schema'] or 'none'})",
        f"records in {report['records_in']}, out {report['records_out']}, "
        f"skipped {report['skipped']['count']}, without fields "
        f"{len(report['records_without_fields'])}, without image "
        f"{len(report['records_without_image'])}",
    ]
    if report["splits"]:
        lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
    lines.append("fields (shape ×values):")
    for path, shapes in report["fields"].items():
        shown = ", ".join(f"{s} ×{n}" for s, n in shapes.items())
        flag = "  ← CONFLICT" if is_conflict(Counter(shapes)) else ""
        lines.append(f"  {path}: {shown}{flag}")
    for path, change in report["type_changes"].items():
        lines.append(f"made one type: {path} → {change['to']} in {change['records']} record(s)")
    lines.append(f"type conflicts left: {len(report['type_conflicts'])}")
    empty = sorted(report["empty_values"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines.append(
        f"values {report['values']}, empty {sum(n for _, n in empty)}"
        + (": " + ", ".join(f"{k} ×{v}" for k, v in empty[:8]) if empty else "")
        + (f", … ({len(empty) - 8} more keys)" if len(empty) > 8 else "")
    )
    for reason, n in report["dropped"].items():
        lines.append(f"left out: {n} × {reason}")
    for what, n in report["counts"].items():
        lines.append(f"count: {what}: {n}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_tools.convert",
        description="Convert a public KIE dataset or raw VLM labels into canonical labels.jsonl.",
    )
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="source format")
    p.add_argument("--src", required=True, type=Path, help="source file or folder")
    p.add_argument("--out", required=True, type=Path, help="labels.jsonl to write")
    p.add_argument(
        "--schema",
        default=DEFAULT,
        help="schema name or YAML path to canonicalise through; 'none' to keep source keys "
        "(default: vat_invoice for vat_ner, none for the others)",
    )
    p.add_argument("--doc-type", help="doc_type of the records (default: schema's, or format's)")
    p.add_argument("--id-prefix", default="", help="prefix for every id (when merging sources)")
    p.add_argument("--image-dir", type=Path, help="folder searched first for the images")
    p.add_argument(
        "--extract-images-to",
        type=Path,
        help="cord parquet: where embedded images are written (default <out stem>_images/)",
    )
    p.add_argument("--class-list", type=Path, help="wildreceipt: class_list.txt to use")
    p.add_argument("--skip-bad", action="store_true", help="skip and list bad inputs")
    p.add_argument(
        "--allow-missing-images",
        action="store_true",
        help="keep records whose image is not found (with the expected path)",
    )
    p.add_argument(
        "--absolute-image-paths", action="store_true", help="always write absolute image paths"
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="write <out stem>.report.json (records in/out, fields and their types, values "
        "dropped or emptied and why) and print it",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    cfg = ConvertConfig(
        schema=args.schema,
        doc_type=args.doc_type,
        id_prefix=args.id_prefix,
        image_dir=args.image_dir,
        extract_images_to=args.extract_images_to,
        class_list=args.class_list,
        skip_bad=args.skip_bad,
        allow_missing_images=args.allow_missing_images,
        absolute_image_paths=args.absolute_image_paths,
        report=args.report,
    )
    try:
        summary = convert(args.format, args.src, args.out, cfg)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary.records} record(s) to {summary.out} "
        f"(format {summary.format}, schema {summary.schema or 'none'})"
    )
    if summary.report_path is not None:
        print(format_report(summary.report()))
        print(f"report: {summary.report_path}")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} bad input(s):", file=sys.stderr)
        for line in summary.skipped:
            print(f"  {line}", file=sys.stderr)
    if summary.missing_images:
        print(
            f"{len(summary.missing_images)} record(s) kept without an image on disk, e.g. "
            f"{summary.missing_images[0]}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
