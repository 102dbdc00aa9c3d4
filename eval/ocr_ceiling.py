"""The OCR ceiling: how many gold values occur in the OCR text at all.

    python -m eval.ocr_ceiling --gold labels.jsonl --ocr-cache outputs/ocr_cache \\
        --out outputs/eval/ocr_ceiling [--ocr-config small-onnx] [--schema vat_invoice] \\
        [--run-ocr [--ocr-preset small-onnx|server]]

Per field, the share of non-empty gold leaf values that occur in the PP-OCR text of the
document's image - the best any OCR + LLM pipeline could do with that OCR. The OCR is
read from the cache the OCR + LLM pipeline fills (``inference.ocr_cache``:
``<cache>/<identity>/<sha256[:2]>/<sha256>.json``), looked up by each gold image's
sha256; nothing is OCR'd here unless ``--run-ocr`` asks to (then the ``ocr-llm`` backend's
OCR stage, ``inference.backends.ocr_llm.ocr_files``, fills the cache first for the images
it lacks, and the ceiling reads that preset's identity). An image that is not in the
cache (or not on disk, or that the OCR failed on) is listed in the report with the
reason, not scored and not a crash.

The cache holds one folder per OCR *identity* (preset, options, models). With one
identity in the cache it is used; with several, ``--ocr-config`` picks one by folder name
or prefix (``small-onnx`` = the preset's folders) and an ambiguous choice is an error that
lists them. The report names the identity it read.

Writes ``<out>.json`` and ``<out>.md`` atomically. Exit codes: 0 written, 2 bad input
(unreadable gold, no or ambiguous OCR identity, no labelled image in the cache).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_tools.jsonl import atomic_write_text
from data_tools.normalize import normalize_percent, parse_amount, parse_date, parse_number
from data_tools.records import LabelRecord, read_labels, resolve_image
from eval.align import field_name

if TYPE_CHECKING:
    from data_tools.ppocr import OcrLine

log = logging.getLogger(__name__)

DEFINITION = (
    "share of non-empty gold leaf values that occur in the OCR text: typed match for "
    "amount/number/date/percent, else whitespace-free NFKC substring of the whole "
    "text, or (values with whitespace) every piece inside one OCR line"
)

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_PERCENT = re.compile(r"\d+(?:\.\d+)?\s*%")
_SPACE = re.compile(r"\s+")


class CeilingError(ValueError):
    """Input the OCR ceiling cannot be computed from; the message says what to do."""


def _squash(s: str) -> str:
    return _SPACE.sub("", unicodedata.normalize("NFKC", str(s))).casefold()


@dataclass
class OcrText:
    """The OCR of one image, prepared for value look-ups."""

    text: str
    lines: list[str]
    squashed: str = ""
    squashed_lines: list[str] = field(default_factory=list)
    numbers: set[Decimal] = field(default_factory=set)
    dates: set[str] = field(default_factory=set)
    percents: set[str] = field(default_factory=set)

    @classmethod
    def from_lines(cls, lines: Sequence[OcrLine]) -> OcrText:
        texts = [ln.text for ln in lines]
        full = unicodedata.normalize("NFKC", "\n".join(texts))
        numbers = set()
        for tok in _NUMBER.findall(full):
            d = parse_number(tok)
            if d is not None:
                numbers.add(d)
        dates = {d.isoformat() for t in texts if (d := parse_date(t)) is not None}
        percents = {normalize_percent(p) for p in _PERCENT.findall(full)}
        return cls(
            text=full,
            lines=texts,
            squashed=_squash(full),
            squashed_lines=[_squash(t) for t in texts],
            numbers=numbers,
            dates=dates,
            percents=percents,
        )


def value_in_ocr(value: str, ftype: str, ocr: OcrText) -> bool:
    """Does a gold value occur in the OCR text? (definition in docs/evaluation.md)

    Typed first: an amount/number equals a number printed anywhere, a date equals a date
    on some line, a percent equals a printed percent. Then text: the value without
    whitespace (NFKC, case-folded) is a substring of the whole OCR text without whitespace,
    or - for a value containing whitespace or line breaks (wrapped names, the four lines
    of 密码区) - each whitespace-separated piece occurs within one OCR line.
    """
    if ftype in ("amount", "number"):
        d = parse_amount(value) if ftype == "amount" else parse_number(value)
        if d is not None and d in ocr.numbers:
            return True
    elif ftype == "date":
        d = parse_date(value)
        if d is not None and d.isoformat() in ocr.dates:
            return True
    elif ftype == "percent" and normalize_percent(value) in ocr.percents:
        return True
    s = _squash(value)
    if not s:
        return True
    if s in ocr.squashed:
        return True
    pieces = [_squash(p) for p in str(value).split()]
    if len(pieces) > 1:
        return all(any(p in line for line in ocr.squashed_lines) for p in pieces if p)
    return False


def _gold_leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _gold_leaves(v, (*path, k))
    elif isinstance(value, list):
        for v in value:
            out += _gold_leaves(v, (*path, "[]"))
    elif value is not None and str(value).strip():
        out.append((path, str(value)))
    return out


def ocr_ceiling(
    docs: Sequence[tuple[LabelRecord, list[OcrLine]]], schema: Any | None
) -> dict[str, Any]:
    """Per field: non-empty gold values, how many occur in the OCR text, and the share."""
    per_field: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[dict[str, str]]] = defaultdict(list)
    for rec, lines in docs:
        ocr = OcrText.from_lines(lines)
        for path, value in _gold_leaves(rec.fields):
            plain = tuple(p for p in path if p != "[]")
            ftype = schema.field_type(plain) if schema is not None else "text"
            name = field_name(path)
            row = per_field.setdefault(name, {"type": ftype, "n": 0, "found": 0})
            row["n"] += 1
            if value_in_ocr(value, ftype, ocr):
                row["found"] += 1
            else:
                missing[rec.id].append({"field": name, "gold": value})
    for row in per_field.values():
        row["share"] = row["found"] / row["n"] if row["n"] else None
    n = sum(r["n"] for r in per_field.values())
    found = sum(r["found"] for r in per_field.values())
    return {
        "definition": DEFINITION,
        "n_docs": len(docs),
        "overall": {"n": n, "found": found, "share": found / n if n else None},
        "per_field": per_field,
        "not_found": dict(missing),
    }


def ceiling_markdown(report: dict[str, Any]) -> str:
    o = report["overall"]
    lines = ["# OCR ceiling", "", f"{report['definition']}.", ""]
    if report.get("ocr_identity"):
        lines += [f"OCR: `{report['ocr_identity']}` in `{report.get('ocr_cache', '')}`.", ""]
    lines += [
        f"Documents: {report['n_docs']}; overall {o['found']}/{o['n']} = {(o['share'] or 0):.3f}",
        "",
    ]
    uncached = report.get("uncached") or []
    if uncached:
        lines += [
            f"{len(uncached)} labelled document(s) have no OCR in the cache and are not counted "
            "(listed at the end).",
            "",
        ]
    lines += ["| field | type | found / gold values | share |", "|---|---|---|---|"]
    for name, r in report["per_field"].items():
        lines.append(f"| {name} | {r['type']} | {r['found']} / {r['n']} | {r['share']:.3f} |")
    if report["not_found"]:
        lines += ["", "## Values not found in the OCR text", ""]
        for doc_id, items in report["not_found"].items():
            for it in items:
                gold = it["gold"].replace("\n", "⏎")
                lines.append(f"- `{doc_id}` {it['field']}: {gold}")
    if uncached:
        lines += ["", "## Documents without cached OCR", ""]
        lines += [f"- `{u['id']}` {u['image']}: {u['reason']}" for u in uncached]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command
@dataclass
class Identity:
    """One OCR identity folder of the cache."""

    name: str
    path: Path
    config: dict[str, Any] | None
    n_entries: int


def cache_identities(cache_root: str | Path) -> list[Identity]:
    """The identity folders under an OCR cache root (``<root>/<identity>/<xx>/<sha>.json``)."""
    root = Path(cache_root)
    out: list[Identity] = []
    if not root.is_dir():
        return out
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        entries = list(d.glob("??/*.json"))
        if not entries:
            continue
        config = None
        with contextlib.suppress(OSError, ValueError, AttributeError):  # shown as '?' then
            config = json.loads(entries[0].read_text(encoding="utf-8")).get("config")
        out.append(Identity(d.name, d, config if isinstance(config, dict) else None, len(entries)))
    return out


def choose_identity(cache_root: str | Path, wanted: str | None) -> Identity:
    """The one identity to read: by exact name, else by prefix, else the only one there is."""
    found = cache_identities(cache_root)
    if not found:
        raise CeilingError(
            f"{cache_root}: no OCR cache entries (expected <cache>/<identity>/<xx>/<sha256>.json); "
            "run the OCR + LLM baseline (make baseline ... ARGS=--ocr-only) to fill it"
        )
    listing = "; ".join(
        f"{i.name} ({i.n_entries} entries, preset {(i.config or {}).get('preset', '?')})"
        for i in found
    )
    if wanted:
        exact = [i for i in found if i.name == wanted]
        matches = exact or [i for i in found if i.name.startswith(wanted)]
        if not matches:
            raise CeilingError(
                f"{cache_root}: no OCR identity {wanted!r}; the cache has: {listing}"
            )
    else:
        matches = found
    if len(matches) > 1:
        raise CeilingError(
            f"{cache_root}: {len(matches)} OCR identities match"
            f"{f' {wanted!r}' if wanted else ''}: {listing}; pick one with --ocr-config NAME"
        )
    return matches[0]


def run_ocr(
    gold_path: str | Path, cache_root: str | Path, preset: str, engine: Any = None
) -> tuple[Identity, dict[str, str]]:
    """OCR the labelled gold images into the cache (cached ones are skipped) with the
    ``ocr-llm`` backend's OCR stage; returns its identity and the errors by image path."""
    from inference.backends.ocr_llm import OcrSettings, ocr_files
    from inference.ocr_cache import config_id

    settings = OcrSettings(preset=preset, cache_dir=str(cache_root))
    images = sorted({resolve_image(r.image, gold_path) for r in read_labels(gold_path) if r.fields})
    present = [p for p in images if p.is_file()]
    done = ocr_files(present, settings, engine=engine)
    errors = {str(p): status for p, lines, status in done if lines is None}
    counts = {s: sum(1 for *_, st in done if st == s) for s in ("ocr", "cached")}
    log.info(
        "OCR: %d images read, %d already cached, %d failed",
        counts["ocr"], counts["cached"], len(errors),
    )  # fmt: skip
    ident = settings.identity()
    name = config_id(ident)
    path = Path(cache_root) / name
    return Identity(name, path, ident, len(list(path.glob("??/*.json")))), errors


def load_ocr(
    gold_path: str | Path,
    cache_root: str | Path,
    identity: Identity,
    errors: dict[str, str] | None = None,
) -> tuple[list[tuple[LabelRecord, list[OcrLine]]], list[dict[str, str]]]:
    """(labelled records with their cached OCR lines, the labelled records without)."""
    from inference.ocr_cache import OcrCache, image_sha256

    cache = OcrCache(cache_root, identity.config or {})
    cache.dir = identity.path  # read the chosen identity's folder, whatever its key was
    docs: list[tuple[LabelRecord, list[OcrLine]]] = []
    uncached: list[dict[str, str]] = []
    for rec in read_labels(gold_path):
        if not rec.fields:
            continue
        image = resolve_image(rec.image, gold_path)
        try:
            sha = image_sha256(image)
        except OSError as exc:
            uncached.append({"id": rec.id, "image": str(image), "reason": f"unreadable: {exc}"})
            continue
        hit = cache.get(sha)
        if hit is None:
            reason = (errors or {}).get(str(image)) or f"not in the OCR cache (sha256 {sha[:12]}…)"
            uncached.append({"id": rec.id, "image": str(image), "reason": reason})
            continue
        docs.append((rec, hit.lines))
    docs.sort(key=lambda x: x[0].id)
    return docs, uncached


def run(
    gold: str | Path,
    cache_root: str | Path,
    out: str | Path,
    *,
    ocr_config: str | None = None,
    schema_name: str | None = "vat_invoice",
    ocr_preset: str | None = None,
    engine: Any = None,
) -> dict[str, Any]:
    """Compute the ceiling from gold + cached OCR and write ``<out>.json`` / ``<out>.md``.

    ``ocr_preset`` (``--run-ocr``): OCR what the cache lacks with that preset first and
    read its identity; ``engine`` replaces the OCR engine (tests).
    """
    from data_tools.schema import load_schema

    schema = load_schema(schema_name) if schema_name and schema_name != "none" else None
    errors: dict[str, str] = {}
    if ocr_preset:
        identity, errors = run_ocr(gold, cache_root, ocr_preset, engine)
    else:
        identity = choose_identity(cache_root, ocr_config)
    docs, uncached = load_ocr(gold, cache_root, identity, errors)
    if not docs:
        raise CeilingError(
            f"none of the labelled images of {gold} is in the OCR cache {identity.path} "
            f"({len(uncached)} looked up); run the baseline's OCR on them first"
        )
    report = ocr_ceiling(docs, schema)
    report.update(
        gold=str(gold),
        ocr_cache=str(cache_root),
        ocr_identity=identity.name,
        ocr_config=identity.config,
        uncached=uncached,
    )
    base = str(out).removesuffix(".json")
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(f"{base}.json", json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    atomic_write_text(f"{base}.md", ceiling_markdown(report))
    if uncached:
        log.warning(
            "%d labelled document(s) have no cached OCR and are not counted (listed in %s.md)",
            len(uncached),
            base,
        )
    return report


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m eval.ocr_ceiling", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--gold", required=True, help="canonical labels.jsonl")
    ap.add_argument("--ocr-cache", default="outputs/ocr_cache", help="OCR cache root folder")
    ap.add_argument("--out", default="outputs/eval/ocr_ceiling", help="report path without suffix")
    ap.add_argument(
        "--ocr-config",
        help="OCR identity folder in the cache (name or prefix, e.g. the preset small-onnx); "
        "needed when the cache holds several",
    )
    ap.add_argument("--schema", default="vat_invoice", help="schema name or path; 'none'")
    ap.add_argument(
        "--run-ocr", action="store_true",
        help="OCR the labelled images the cache lacks first (the ocr-llm backend's OCR stage)",
    )  # fmt: skip
    ap.add_argument(
        "--ocr-preset", default="small-onnx", choices=("small-onnx", "server"),
        help="OCR preset for --run-ocr",
    )  # fmt: skip
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        report = run(
            args.gold, args.ocr_cache, args.out, ocr_config=args.ocr_config,
            schema_name=args.schema, ocr_preset=args.ocr_preset if args.run_ocr else None,
        )  # fmt: skip
    except (CeilingError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    o = report["overall"]
    log.info(
        "OCR ceiling (%s): %d/%d gold values = %.3f over %d documents; wrote %s.json, .md",
        report["ocr_identity"], o["found"], o["n"], o["share"] or 0.0, report["n_docs"],
        str(args.out).removesuffix(".json"),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
