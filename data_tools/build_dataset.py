"""Canonical labels → PaddleOCR-VL prompt-SFT data (ERNIEKit or PaddleFormers JSONL).

    python -m data_tools.build_dataset --labels labels.jsonl --out-dir data/sft \\
        --variants-per-image 6 --val-ratio 0.1 --seed 42 [--format erniekit|paddleformers] \\
        [--split hash|source] [--image-root /mnt/data/invoices] [--skip-bad] \\
        [--include-needs-review] [--include-qa-failures] [--config configs/dataset/vat_invoice.yaml]

For every image: one full `OCR:{}` record plus N-1 distinct partial or structured
prompts, drawn with a generator seeded by (seed, record id) so an image's prompts do not
depend on the rest of the file. Every SFT record carries its label record's `id`.

The split is by image (records sharing an image always land together):

* `--split hash` (default): the `val_ratio` share of images with the smallest seeded
  hashes goes to val, so adding images later does not reshuffle the ones already split;
* `--split source`: the split the converter took from the published dataset
  (`meta.split`: train → train; val, dev, test → val), never re-split, so scores are
  comparable with published numbers.

Left out, and counted in `stats.json`: records the labeler flagged (`meta.needs_review`;
`--include-needs-review` keeps them) and records that failed label QA
(`meta.qa.verdict: fail`, written by `python -m data_tools.qa`; `--include-qa-failures`
keeps them).

Outputs, published together (built in a temp folder beside D, then swapped into place,
so a reader or a crash sees the old dataset or the new one, never a mix):

    D/train.jsonl  D/val.jsonl  D/split.json (ids on each side)  D/stats.json
    D/val.labels.jsonl   the val images' label records: the gold for scoring
    D/val.requests.jsonl one {id, image, prompt} per val prompt: what to ask a model
                         (python -m inference.predict --input D/val.requests.jsonl)

PDF and OFD pages: a record whose `image` is a PDF or OFD file names one page of it
(`meta.source.page` when present, else `file.pdf#p2` = page 2, plain `file.pdf` = page 1).
That page is rendered once (`data_tools.documents`, at the model's `max_pixels`) into
`D/pages/<record id>.png`, published with the rest, and the SFT records, `val.requests.jsonl`
and `val.labels.jsonl` point at the PNG. A document that cannot be read, or a page it does
not have, is a bad image (listed; `--skip-bad` leaves it out). Records from pages of one
document land on the same side of the split.

Same inputs and seed → byte-identical files (rendered pages included).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
import statistics
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_tools.config import ConfigError, load_config
from data_tools.documents import DOCUMENT_SUFFIXES, DocumentError, DocumentOptions, load_pages
from data_tools.images import MAX_PIXELS, MIN_PIXELS, BadImageError, check_image, visual_tokens
from data_tools.jsonl import dumps_line
from data_tools.prompts import FULL_PROMPT, answer_text, build_prompt, placeholder_for, project
from data_tools.records import LabelFormatError, LabelRecord, read_labels
from data_tools.review import apply_reviewed
from data_tools.sft import FORMATS, record_line, request_row

log = logging.getLogger("data_tools.build_dataset")

VARIANT_KINDS = ("full", "key", "keys", "structured")
DEFAULT_KIND_WEIGHTS = {"key": 0.4, "keys": 0.3, "structured": 0.3}
SPLIT_MODES = ("hash", "source")
# meta.split values of the published datasets → our two sides
SOURCE_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "val",
    "testing": "val",
}
OUTPUTS = (
    "train.jsonl",
    "val.jsonl",
    "split.json",
    "stats.json",
    "val.labels.jsonl",
    "val.requests.jsonl",
)
PAGES_DIR = "pages"  # D/pages/<record id>.png: the PDF/OFD pages the records point at
# "file.pdf#p2": page 2 of a document named in a label record's image
_PAGE_REF = re.compile(r"(.+\.(?:pdf|ofd))#p(\d+)", re.IGNORECASE)


@dataclass
class BuildConfig:
    variants_per_image: int = 6
    val_ratio: float = 0.1
    seed: int = 42
    format: str = "erniekit"
    split: str = "hash"  # hash: seeded share of images; source: the records' meta.split
    image_root: str | None = None
    skip_bad: bool = False
    check_images: bool = True
    include_needs_review: bool = False  # records the labeler flagged (meta.needs_review)
    include_qa_failures: bool = False  # records label QA failed (meta.qa.verdict: fail)
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    max_keys: int = 5  # most top-level keys in one multi-key prompt
    # how partial variants are drawn; a kind not named keeps its default weight, 0 turns it off
    kind_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_KIND_WEIGHTS))

    def __post_init__(self) -> None:
        self.kind_weights = {**DEFAULT_KIND_WEIGHTS, **self.kind_weights}
        self.validate()

    def validate(self) -> None:
        if self.variants_per_image < 1:
            raise ValueError("--variants-per-image must be >= 1 (1 = only the full OCR:{} record)")
        if not 0.0 <= self.val_ratio < 1.0:
            raise ValueError("--val-ratio must be in [0, 1)")
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {self.format!r}")
        if self.split not in SPLIT_MODES:
            raise ValueError(f"--split must be one of {SPLIT_MODES}, got {self.split!r}")
        if self.min_pixels <= 0 or self.max_pixels < self.min_pixels:
            raise ValueError("min_pixels must be > 0 and <= max_pixels")
        unknown = set(self.kind_weights) - set(VARIANT_KINDS[1:])
        if unknown:
            raise ValueError(f"unknown variant kinds {sorted(unknown)}; use {VARIANT_KINDS[1:]}")


@dataclass
class Sample:
    """One image with its truth, resolved and checked."""

    record: LabelRecord
    image_abs: str  # where the image is on this machine (absolute, normalised)
    image_out: str  # the path written into the SFT file
    labels_file: Path
    size: tuple[int, int] | None = None  # (width, height) when checked
    split: str = "train"
    document: str | None = None  # a PDF/OFD record: the document (absolute); image_abs = its page
    page: int | None = None  # ... and the 1-based page rendered from it
    problem: str | None = None  # a page reference that cannot be used (reported as a bad image)
    source: dict[str, Any] | None = None  # {document, page, n_pages, kind} once rendered

    @property
    def group(self) -> str:
        """What the split keeps together: the image, or the whole document of a page."""
        return self.document or self.image_abs


@dataclass
class LoadReport:
    """What `load_samples` left out, and why."""

    needs_review: int = 0
    qa_failures: int = 0
    qa_failed_rules: Counter[str] = field(default_factory=Counter)


# ---------------------------------------------------------------- prompt variants


def _kind_table(cfg: BuildConfig, has_containers: bool) -> tuple[list[str], list[float]]:
    kinds = [k for k in cfg.kind_weights if cfg.kind_weights[k] > 0]
    if not has_containers and "structured" in kinds:
        kinds.remove("structured")
    cum, total = [], 0.0
    for k in kinds:
        total += cfg.kind_weights[k]
        cum.append(total)
    return kinds, cum


_PLACEHOLDER_TAG = {str: "s", dict: "o", list: "l"}


def sample_requests(
    fields: dict[str, Any],
    n: int,
    rng: random.Random,
    cfg: BuildConfig,
    prompt_cache: dict[tuple[tuple[str, str], ...], str] | None = None,
) -> list[tuple[str, dict[str, Any], str]]:
    """N-1 distinct (kind, request, prompt) triples besides the full request; fewer if the
    record has too few fields to make N-1 different prompts.

    `prompt_cache` (shared across records) remembers the prompt of each top-level key
    request: most documents of a dataset share their keys, so most prompts repeat."""
    keys = list(fields)
    placeholders = {k: placeholder_for(v) for k, v in fields.items()}
    containers = [
        k
        for k, v in fields.items()
        if (isinstance(v, dict) and v) or (isinstance(v, list) and v and isinstance(v[0], dict))
    ]
    kinds, cum_weights = _kind_table(cfg, bool(containers))
    seen = {FULL_PROMPT}
    out: list[tuple[str, dict[str, Any], str]] = []
    if not keys or not kinds:
        return out
    attempts = 0
    while len(out) < n - 1 and attempts < 30 * n:
        attempts += 1
        kind = rng.choices(kinds, cum_weights=cum_weights)[0]
        if kind == "key":
            k = rng.choice(keys)
            request = {k: placeholders[k]}
        elif kind == "keys":
            if len(keys) < 2:
                continue
            chosen = rng.sample(keys, rng.randint(2, min(cfg.max_keys, len(keys))))
            request = {k: placeholders[k] for k in chosen}
        else:  # structured: sub-keys of one container, maybe with a few plain keys
            ck = rng.choice(containers)
            value = fields[ck]
            sub_source = value if isinstance(value, dict) else {}
            for item in value if isinstance(value, list) else []:  # the union of the items' keys
                for k, v in item.items():
                    sub_source.setdefault(k, v)
            sub_keys = list(sub_source)
            chosen = rng.sample(sub_keys, rng.randint(1, len(sub_keys)))
            sub = {k: placeholder_for(sub_source[k]) for k in chosen}
            request = {ck: sub if isinstance(value, dict) else [sub]}
            others = [k for k in keys if k != ck]
            if others and rng.random() < 0.3:
                for k in rng.sample(others, rng.randint(1, min(2, len(others)))):
                    request[k] = placeholders[k]
        if kind == "structured" or prompt_cache is None:
            prompt = build_prompt(request)
        else:
            sig = tuple((k, _PLACEHOLDER_TAG[type(v)]) for k, v in request.items())
            prompt = prompt_cache.get(sig) or prompt_cache.setdefault(sig, build_prompt(request))
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append((kind, request, prompt))
    return out


# ---------------------------------------------------------------- inputs


def _image_out(record: LabelRecord, image_abs: str, base: str, image_root: str | None) -> str:
    if image_root is None:
        return image_abs
    rel = os.path.expanduser(record.image)
    if os.path.isabs(rel):
        rel = os.path.relpath(image_abs, base)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise ValueError(
                f"image {record.image!r} (id {record.id}) is outside the labels folder {base}, "
                "so it cannot be rewritten under --image-root; store it relative"
            )
    return os.path.join(image_root, os.path.normpath(rel))


def _split_rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def split_groups(keys: Sequence[str], val_ratio: float, seed: int) -> set[str]:
    """The group keys that go to val: the `round(ratio * n)` smallest seeded hashes
    (at least one when the ratio is > 0 and there are two groups or more)."""
    if val_ratio <= 0 or len(keys) < 2:
        return set()
    n_val = min(len(keys) - 1, max(1, round(val_ratio * len(keys))))
    ranked = sorted(keys, key=lambda k: _split_rank(seed, k))
    return set(ranked[:n_val])


def _left_out(rec: LabelRecord, cfg: BuildConfig, report: LoadReport) -> bool:
    """Count and leave out a record flagged for review or failed by QA (unless kept)."""
    if rec.meta.get("needs_review") and not cfg.include_needs_review:
        report.needs_review += 1
        return True
    qa = rec.meta.get("qa")
    if isinstance(qa, dict) and qa.get("verdict") == "fail" and not cfg.include_qa_failures:
        report.qa_failures += 1
        hard = qa.get("hard") if isinstance(qa.get("hard"), list) else []
        report.qa_failed_rules.update({str(h).split(":", 1)[0] for h in hard})
        return True
    return False


def document_page(rec: LabelRecord) -> tuple[str, int | None, str | None]:
    """(path, page, problem) of a record's image: page None when it is not a PDF/OFD.

    The page is `meta.source.page` when present, else the `#pN` of `file.pdf#pN`, else 1;
    `problem` says why the reference cannot be used (a bad page number, or the two
    disagreeing)."""
    m = _PAGE_REF.fullmatch(rec.image)
    path, ref = (m.group(1), int(m.group(2))) if m else (rec.image, None)
    if not path.lower().endswith(DOCUMENT_SUFFIXES):
        return rec.image, None, None
    source = rec.meta.get("source")
    meta_page = source.get("page") if isinstance(source, dict) else None
    if meta_page is not None:
        if isinstance(meta_page, bool) or not isinstance(meta_page, int) or meta_page < 1:
            problem = f"meta.source.page is {meta_page!r}; give a page number from 1"
            return path, None, f"{rec.image}: {problem}"
        if ref is not None and ref != meta_page:
            problem = f"the image names page {ref} but meta.source.page is {meta_page}"
            return path, None, f"{rec.image}: {problem}; make them agree"
        return path, meta_page, None
    if ref is not None and ref < 1:
        return path, None, f"{rec.image}: pages are numbered from 1 (write {path}#p1)"
    return path, ref or 1, None


def load_samples(labels_files: Sequence[Path], cfg: BuildConfig) -> tuple[list[Sample], LoadReport]:
    """Resolved samples, and what was left out (review flags, QA failures)."""
    samples: list[Sample] = []
    report = LoadReport()
    seen_ids: dict[str, Path] = {}
    for lf in labels_files:
        base = str(Path(lf).resolve().parent)  # once per file, not per record
        for rec in apply_reviewed(read_labels(lf), Path(lf).parent):  # reviewed.jsonl wins
            if _left_out(rec, cfg, report):
                continue
            if rec.id in seen_ids:
                raise LabelFormatError(
                    f"{lf}: id {rec.id!r} also in {seen_ids[rec.id]}; ids must be unique across files"
                )
            seen_ids[rec.id] = lf
            path, page, problem = document_page(rec)
            image_abs = os.path.normpath(os.path.join(base, os.path.expanduser(path)))
            if page is not None or problem is not None:  # a PDF/OFD: rendered into D/pages
                if cfg.image_root is not None:
                    raise ValueError(
                        f"{lf}: id {rec.id}: {rec.image!r} is a PDF/OFD, whose page is rendered "
                        "into the dataset folder, not found under --image-root; build on the "
                        "training machine without --image-root, or label the rendered pages "
                        "(python -m data_tools.label stores PNGs)"
                    )
                samples.append(
                    Sample(
                        rec,
                        image_abs,
                        image_abs,
                        lf,
                        document=image_abs,
                        page=page,
                        problem=problem,
                    )
                )
                continue
            try:
                image_out = _image_out(rec, image_abs, base, cfg.image_root)
            except ValueError as exc:
                raise ValueError(f"{lf}: {exc}") from None
            samples.append(Sample(rec, image_abs, image_out, lf))
    return samples, report


def check_samples(samples: list[Sample], workers: int = 4) -> list[str]:
    """Decode every distinct image once; fill sizes; return `file: id: problem` lines."""
    unique = sorted({s.image_abs for s in samples})

    def check(path: str) -> tuple[str, tuple[int, int] | str]:
        try:
            info = check_image(path)
            return path, (info.width, info.height)
        except BadImageError as exc:
            return path, str(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(pool.map(check, unique))
    problems = []
    for s in samples:
        r = results[s.image_abs]
        if isinstance(r, str):
            problems.append(f"{s.labels_file}: id {s.record.id}: {r}")
        else:
            s.size = r
    return problems


def _page_file_name(record_id: str) -> str:
    """`<record id>.png` where the id is a safe file name, else a cleaned id + its hash."""
    if re.fullmatch(r"[\w-][\w.-]{0,99}", record_id):
        return f"{record_id}.png"
    clean = re.sub(r"[^\w.-]", "_", record_id)[:80].lstrip(".") or "page"
    return f"{clean}-{hashlib.sha256(record_id.encode()).hexdigest()[:10]}.png"


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def render_pages(
    samples: list[Sample], write_dir: Path, final_dir: Path, max_pixels: int, workers: int = 4
) -> list[str]:
    """Render each distinct (document, page) the PDF/OFD samples name once, as a PNG in
    `write_dir` (named after the first of its record ids); point the samples at the same
    name in `final_dir` (where it is published). Returns `file: id: problem` lines."""
    groups: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        if s.document is not None and s.page is not None and s.problem is None:
            groups.setdefault((s.document, s.page), []).append(s)
    names = {key: _page_file_name(min(s.record.id for s in g)) for key, g in groups.items()}
    if groups:
        write_dir.mkdir()

    def render(key: tuple[str, int]) -> tuple[tuple[str, int], dict[str, Any] | str]:
        doc, number = key
        options = DocumentOptions(max_pixels=max_pixels, pages=(number,), text_layer=False)
        try:
            (page,) = load_pages(doc, options=options)
        except DocumentError as exc:
            return key, str(exc)
        buf = io.BytesIO()
        page.image.save(buf, "PNG")  # no timestamp chunk: the same page gives the same bytes
        _write_file(write_dir / names[key], buf.getvalue())
        return key, {
            "size": page.image.size,
            "source": {"document": doc, "page": number, "n_pages": page.n_pages, "kind": page.kind},
        }

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(pool.map(render, sorted(groups)))
    if groups:
        _fsync_dir(write_dir)
    problems = []
    for s in samples:
        if s.document is None:
            continue
        key = (s.document, s.page or 0)  # page is set whenever there is no problem
        r = s.problem if s.problem is not None else results[key]
        if isinstance(r, str):
            problems.append(f"{s.labels_file}: id {s.record.id}: {r}")
            continue
        s.image_abs = s.image_out = str(final_dir / names[key])
        s.size, s.source = r["size"], r["source"]
    return problems


def assign_source_splits(samples: list[Sample]) -> Counter[str]:
    """Set each sample's side from its `meta.split`; returns the counts of the values seen.

    Raises `ValueError` naming the records without a usable split, or an image whose
    records sit on both sides."""
    seen: Counter[str] = Counter()
    missing: list[str] = []
    unknown: list[str] = []
    for s in samples:
        raw = s.record.meta.get("split")
        side = SOURCE_SPLITS.get(raw.strip().lower()) if isinstance(raw, str) else None
        if raw is None:
            missing.append(f"{s.labels_file}: id {s.record.id}")
        elif side is None:
            unknown.append(f"{s.labels_file}: id {s.record.id}: meta.split {raw!r}")
        else:
            s.split = side
            seen[raw] += 1
    if missing:
        raise ValueError(
            f"--split source: {len(missing)} record(s) have no meta.split (first: "
            f"{missing[0]}); convert the dataset with python -m data_tools.convert, which keeps "
            "the published split, or use --split hash"
        )
    if unknown:
        raise ValueError(
            f"--split source: {len(unknown)} record(s) with a meta.split that is not one of "
            f"{sorted(SOURCE_SPLITS)} (first: {unknown[0]})"
        )
    sides: dict[str, tuple[str, str]] = {}
    for s in samples:
        prev = sides.setdefault(s.group, (s.split, s.record.id))
        if prev[0] != s.split:
            raise ValueError(
                f"--split source: image {s.group} is in {prev[0]} (id {prev[1]}) and in "
                f"{s.split} (id {s.record.id}); one image cannot be on both sides"
            )
    return seen


# ---------------------------------------------------------------- publishing


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux `renameat2(RENAME_EXCHANGE)`); False where the
    system or file system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ours(name: str) -> bool:
    """An entry the builder writes (or a temp file an older builder left)."""
    return name in OUTPUTS or name == PAGES_DIR or (name.startswith(".") and name.endswith(".tmp"))


def _carry_over(old: Path, new: Path) -> list[str]:
    """Hard-link (or copy) the entries of `old` that the builder does not write into `new`,
    so a rebuild keeps them; returns their names."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    kept = []
    for entry in sorted(os.listdir(old)):
        if _ours(entry):
            continue
        src, dst = old / entry, new / entry
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True, copy_function=link)
        elif src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            link(str(src), str(dst))
        kept.append(entry)
    return kept


def _recover(out_dir: Path) -> None:
    """Undo what an interrupted publish left: restore a dataset set aside, drop temp dirs."""
    parent, name = out_dir.parent, out_dir.name
    olds = sorted(parent.glob(f".{name}.old-*"))
    if olds and not out_dir.exists():
        os.rename(olds.pop(), out_dir)
        log.warning("%s: restored the dataset an interrupted build had set aside", out_dir)
    for p in [*olds, *parent.glob(f".{name}.new-*")]:
        shutil.rmtree(p, ignore_errors=True)


@contextmanager
def publishing(out_dir: Path) -> Iterator[Path]:
    """A fresh folder to write the dataset into; on success it replaces `out_dir` in one
    step (files there that the builder does not write are kept), on error it vanishes.

    A kill at any moment leaves `out_dir` holding the old dataset or the new one; the next
    build cleans up what the kill left beside it. One build per `out_dir` at a time (a lock
    file `.NAME.lock` beside it)."""
    out_dir = Path(os.path.realpath(out_dir))  # a symlinked folder is rebuilt where it points
    parent, name = out_dir.parent, out_dir.name
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir} exists and is not a folder")
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / f".{name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another build is writing {out_dir}; wait for it to finish") from None
        _recover(out_dir)
        tmp = parent / f".{name}.new-{os.getpid()}"  # unique: _recover() just cleared them
        try:
            os.mkdir(tmp)  # the umask's mode, as any folder the user makes
            yield tmp
            if out_dir.exists():
                kept = _carry_over(out_dir, tmp)
                if kept:
                    log.info("%s: kept %s (not written by the builder)", out_dir, ", ".join(kept))
            _fsync_dir(tmp)
            if not out_dir.exists():
                os.rename(tmp, out_dir)
            elif not _rename_exchange(tmp, out_dir):
                aside = parent / f".{name}.old-{os.getpid()}"
                os.rename(out_dir, aside)  # a kill right here: _recover() restores it next run
                os.rename(tmp, out_dir)
            _fsync_dir(parent)
        finally:
            _recover(out_dir)


def _write_lines(path: Path, lines: Iterator[str] | list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(lines)
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------- build


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)

    def pct(p: float) -> float:
        return values[min(len(values) - 1, int(p * (len(values) - 1) + 0.5))]

    return {
        "min": values[0],
        "mean": round(statistics.fmean(values), 2),
        "p50": pct(0.5),
        "p95": pct(0.95),
        "max": values[-1],
    }


def build(labels_files: Sequence[Path], out_dir: Path, cfg: BuildConfig) -> dict[str, Any]:
    """Build the dataset; returns the stats written to `out_dir/stats.json`."""
    cfg.validate()
    labels_files = [Path(p) for p in labels_files]
    samples, report = load_samples(labels_files, cfg)
    if not samples:
        raise ValueError(
            f"no usable label records in {', '.join(map(str, labels_files))} "
            f"({report.needs_review} flagged meta.needs_review, {report.qa_failures} failed QA: "
            "left out unless --include-needs-review / --include-qa-failures)"
        )

    # pages of PDF/OFD records are rendered into the folder being published
    final_dir = Path(os.path.realpath(out_dir))
    with publishing(out_dir) as tmp:
        stats, outputs = _compose(samples, report, labels_files, cfg, tmp, final_dir)
        for name, lines in outputs:
            _write_lines(tmp / name, lines)
    return stats


def _compose(
    samples: list[Sample],
    report: LoadReport,
    labels_files: list[Path],
    cfg: BuildConfig,
    tmp: Path,
    final_dir: Path,
) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Check the images, render the document pages into `tmp`; the stats and the
    (file name, lines) of every output."""
    images = [s for s in samples if s.document is None]
    bad: list[str] = check_samples(images) if cfg.check_images else []
    bad += render_pages(samples, tmp / PAGES_DIR, final_dir / PAGES_DIR, cfg.max_pixels)
    if bad and not cfg.skip_bad:
        listing = "\n  ".join(bad[:50]) + ("\n  ..." if len(bad) > 50 else "")
        raise BadImageError(
            f"{len(bad)} record(s) with a missing or broken image:\n  {listing}\n"
            "Fix the paths (relative paths resolve against the labels file's folder; a PDF/OFD "
            "page is file.pdf#p2 or meta.source.page) or pass --skip-bad to leave these "
            "records out."
        )
    if bad:
        log.warning("skipping %d record(s) with bad images (--skip-bad)", len(bad))
    # kept: what was checked or rendered, and the unchecked images under --no-image-check
    samples = [
        s for s in samples if s.size is not None or (s.document is None and not cfg.check_images)
    ]
    if not samples:
        raise BadImageError("every record has a missing or broken image; nothing to build")

    source_splits: Counter[str] = Counter()
    if cfg.split == "source":
        source_splits = assign_source_splits(samples)
    else:
        groups = sorted({s.group for s in samples})
        val_groups = split_groups(groups, cfg.val_ratio, cfg.seed)
        for s in samples:
            s.split = "val" if s.group in val_groups else "train"

    fmt = cfg.format
    train_lines: list[str] = []
    val_lines: list[str] = []
    request_lines: list[str] = []
    kind_list: list[str] = []
    requested_keys: list[str] = []
    present_keys: list[str] = []
    answer_chars: list[float] = []
    short_of_variants = 0
    prompt_cache: dict[tuple[tuple[str, str], ...], str] = {}
    for s in samples:
        rid, fields = s.record.id, s.record.fields
        present_keys.extend(k for k, v in fields.items() if v not in ("", [], {}))
        rng = random.Random(f"{cfg.seed}:{rid}")
        variants = [("full", {}, FULL_PROMPT)]
        variants += sample_requests(fields, cfg.variants_per_image, rng, cfg, prompt_cache)
        if len(variants) < cfg.variants_per_image:
            short_of_variants += 1
        lines = val_lines if s.split == "val" else train_lines
        for kind, request, prompt in variants:
            answer = answer_text(project(fields, request))
            kind_list.append(kind)
            requested_keys.extend(request or fields)
            answer_chars.append(len(answer))
            lines.append(record_line(fmt, s.image_out, prompt, answer, rid))
            if s.split == "val":
                request_lines.append(dumps_line(request_row(rid, s.image_abs, prompt)))

    kinds, requested, present = Counter(kind_list), Counter(requested_keys), Counter(present_keys)
    # shuffle train (seeded) so an image's variants are not adjacent; val stays in file order
    random.Random(cfg.seed).shuffle(train_lines)

    train_ids = sorted({s.record.id for s in samples if s.split == "train"})
    val_ids = sorted({s.record.id for s in samples if s.split == "val"})
    images = {
        side: len({s.image_abs for s in samples if s.split == side}) for side in ("train", "val")
    }
    sizes = [s.size for s in samples if s.size is not None]
    distinct_sizes = {s.image_abs: s.size for s in samples if s.size is not None}
    tokens = [
        visual_tokens(h, w, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        for (w, h) in distinct_sizes.values()
    ]
    rendered = Counter(
        src["kind"] for src in {s.image_abs: s.source for s in samples if s.source}.values()
    )
    stats = {
        "format": fmt,
        "config": {
            "variants_per_image": cfg.variants_per_image,
            "split": cfg.split,
            "val_ratio": cfg.val_ratio if cfg.split == "hash" else None,
            "seed": cfg.seed,
            "image_root": cfg.image_root,
            "check_images": cfg.check_images,
            "include_needs_review": cfg.include_needs_review,
            "include_qa_failures": cfg.include_qa_failures,
            "min_pixels": cfg.min_pixels,
            "max_pixels": cfg.max_pixels,
        },
        "labels": [str(p) for p in labels_files],
        "records": {"train": len(train_lines), "val": len(val_lines)},
        "images": images,
        "source_splits": dict(sorted(source_splits.items())),
        "skipped_bad_images": bad,
        "rendered_pages": dict(sorted(rendered.items())),
        "skipped_needs_review": report.needs_review,
        "skipped_qa_failures": report.qa_failures,
        "qa_failed_rules": dict(sorted(report.qa_failed_rules.items())),
        "images_short_of_variants": short_of_variants,
        "variant_kinds": dict(sorted(kinds.items())),
        "field_frequency": {
            "requested": dict(requested.most_common()),
            "non_empty_in_labels": dict(present.most_common()),
        },
        "answer_chars": _percentiles(answer_chars),
        "image_width": _percentiles([float(w) for w, _ in sizes]),
        "image_height": _percentiles([float(h) for _, h in sizes]),
        "visual_tokens_per_image": _percentiles([float(t) for t in tokens]),
    }

    def gold(s: Sample) -> str:
        """The val image's label record, image path absolute (a rendered page: its PNG, with
        where it came from in meta.source)."""
        rec = dict(s.record.to_dict(), image=s.image_abs)
        src = s.record.meta.get("source")
        if s.source is not None and (src is None or isinstance(src, dict)):
            rec["meta"] = dict(s.record.meta, source={**(src or {}), **s.source})
        return dumps_line(rec)

    outputs: list[tuple[str, Any]] = [
        ("train.jsonl", train_lines),
        ("val.jsonl", val_lines),
        ("val.requests.jsonl", request_lines),
        ("split.json", [dumps_line({"train": train_ids, "val": val_ids})]),
        # the gold for scoring predictions on val: its label records, image paths absolute
        ("val.labels.jsonl", (gold(s) for s in samples if s.split == "val")),
        ("stats.json", [json_pretty(stats)]),
    ]
    return stats, outputs


def json_pretty(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


# ---------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_tools.build_dataset",
        description="Build PaddleOCR-VL prompt-SFT JSONL (ERNIEKit or PaddleFormers) from canonical labels.",
    )
    p.add_argument("--labels", nargs="+", required=True, type=Path, help="labels.jsonl file(s)")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--config", type=Path, help="YAML with defaults for the options below")
    p.add_argument(
        "--variants-per-image", type=int, help="records per image, the full one included"
    )
    p.add_argument("--val-ratio", type=float, help="share of images for val (--split hash)")
    p.add_argument("--seed", type=int)
    p.add_argument("--format", choices=FORMATS)
    p.add_argument(
        "--split",
        choices=SPLIT_MODES,
        help="hash: a seeded val_ratio share of images (default); source: the published "
        "split the converter kept in meta.split (train → train; val/dev/test → val)",
    )
    p.add_argument("--image-root", help="rewrite image paths under this folder (training machine)")
    p.add_argument("--skip-bad", action="store_true", default=None, help="leave out bad images")
    p.add_argument("--no-image-check", dest="check_images", action="store_false", default=None)
    p.add_argument(
        "--include-needs-review",
        action="store_true",
        default=None,
        help="keep records the labeler flagged for review (meta.needs_review); left out by default",
    )
    p.add_argument(
        "--include-qa-failures",
        action="store_true",
        default=None,
        help="keep records label QA failed (meta.qa.verdict: fail); left out by default",
    )
    p.add_argument("--min-pixels", type=int)
    p.add_argument("--max-pixels", type=int)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides after the flags (max_keys=3 kind_weights.key=0.5)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    flags = [
        (name, getattr(args, name))
        for name in BuildConfig.__dataclass_fields__
        if getattr(args, name, None) is not None
    ]
    return load_config(BuildConfig, args.config, [*args.overrides, *flags])


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        stats = build(args.labels, args.out_dir, cfg)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    r, i = stats["records"], stats["images"]
    print(
        f"wrote {args.out_dir}/train.jsonl ({r['train']} records, {i['train']} images) and "
        f"val.jsonl ({r['val']} records, {i['val']} images) in {stats['format']} format "
        f"({stats['config']['split']} split); variant kinds {stats['variant_kinds']}; "
        f"stats in {args.out_dir}/stats.json"
    )
    left_out = [
        f"{stats['skipped_needs_review']} flagged for review",
        f"{stats['skipped_qa_failures']} failed QA",
    ]
    if stats["skipped_needs_review"] or stats["skipped_qa_failures"]:
        print(f"left out {' and '.join(left_out)} (see stats.json)")
    if stats["skipped_bad_images"]:
        print(
            f"skipped {len(stats['skipped_bad_images'])} record(s) with bad images:",
            file=sys.stderr,
        )
        for line in stats["skipped_bad_images"]:
            print(f"  {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
