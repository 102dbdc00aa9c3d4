"""Auto-label document images with a large VLM (ERNIE-4.5-VL) behind an OpenAI-compatible API.

    python -m data_tools.label --config configs/label/vat_invoice.yaml [key=value ...]
                               [--retry-failed] [--limit N] [--dry-run]

Images, PDFs and OFDs (a folder, a glob, a file, a list file or a YAML list) →
``OUT/labels.jsonl`` (canonical records), ``OUT/failures.jsonl`` (image, reason),
``OUT/needs_review.jsonl`` and ``OUT/summary.json``. Overrides use dotted keys with YAML values:
``client.base_urls=[http://gpu1:8180/v1,http://gpu2:8180/v1] votes=3 concurrency=64``.

Documents: a PDF / OFD gives one item per selected page (``pages``, ``max_pages``; see
``data_tools.documents``), id ``<doc id>#p<N>``. The page is rendered once, at the model's
pixel budget, to ``OUT/pages/<doc id>/p<N>.png`` (temp file + rename; a rerun reuses it);
the record's ``image`` is that PNG and ``meta.source`` says ``{"document", "page",
"n_pages", "kind"}``, so the dataset builder and the trainers read it like any image
record. A document that cannot be read is a failure row of stage ``document`` (the reason
names the file and the page), never an abort.

What happens to one image
-------------------------
1. It is read (inside the worker: images are streamed, at most ``concurrency`` are held),
   EXIF-rotated, and downscaled to ``max_image_side`` as JPEG when larger.
2. It is labeled ``votes`` times, each with a different prompt (``prompts`` in the config,
   ``{skeleton}`` is replaced by the schema's JSON skeleton; ``mode: free`` uses prompts without
   a skeleton for unknown documents). An answer that does not parse strictly, was truncated
   (``finish_reason: length``; the next try doubles ``max_tokens``), needed ``json_repair`` or has
   conflicting duplicate keys is asked again, up to ``answer_attempts`` times. HTTP-level
   retries (429 with Retry-After, 5xx, timeouts, connection errors; backoff with jitter; round
   robin over ``client.base_urls``) live in ``data_tools.llm_client``. A 400 about the image
   re-encodes it as a smaller JPEG (``shrink_factor``) up to ``image_shrink_attempts`` times.
   401/403 stop the run at once (exit 3); finished work is kept.
3. Each answer is canonicalised through the schema's aliases, then the answers are voted leaf
   by leaf after normalisation (``data_tools.vote``); disagreements go to ``meta``.
4. QA (``data_tools.qa``) checks the voted label. The record is appended to ``labels.jsonl``
   (one whole line, fsynced); when agreement < ``agreement_threshold`` or QA has a hard
   failure (``review_on_qa_fail``) it is also listed in ``needs_review.jsonl`` and
   ``meta.needs_review`` is true, so a dataset builder can leave it out.

Crash safety and resume: the output files are append-only; a rerun drops a torn last line,
skips images already in ``labels.jsonl`` and images in ``failures.jsonl`` (unless
``--retry-failed``), and rebuilds ``needs_review.jsonl`` from ``labels.jsonl``. A lock file
stops two runs writing into one output folder.

Exit codes: 0 every image labeled; 1 some images failed (see failures.jsonl); 2 bad config or
input; 3 fatal endpoint error (401/403).

Library use: ``LabelConfig.from_yaml(path, overrides)`` then ``run(config) -> RunSummary`` (or
``await label_images(config)``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import datetime as dt
import io
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from data_tools.config import ConfigError, apply_overrides, build, load_yaml, redact, to_dict
from data_tools.documents import (
    DOCUMENT_SUFFIXES,
    INPUT_SUFFIXES,
    DocumentError,
    DocumentOptions,
    count_pages,
    find_documents,
    load_pages,
    page_id_for,
    select_pages,
)
from data_tools.images import IMAGE_SUFFIXES, find_images, is_image_file
from data_tools.jsonl import atomic_writer, dumps_line, read_jsonl, write_jsonl_atomic
from data_tools.llm_client import (
    AsyncChatClient,
    ChatResult,
    EndpointConfig,
    FatalLLMError,
    LLMError,
    RequestRejected,
    preflight,
    user_message,
)
from data_tools.parsing import ParsedOutput, parse_model_output
from data_tools.qa import check_fields
from data_tools.records import LabelRecord, validate_fields
from data_tools.runner import (
    BadInput,
    Item,
    ItemFailed,
    Output,
    RunFiles,
    RunState,
    RunSummary,
    exit_message,
    run_items,
)
from data_tools.schema import CanonicalizeReport, Schema, load_schema
from data_tools.vote import vote

log = logging.getLogger(__name__)

LABELS, FAILURES, REVIEW, SUMMARY, LOCK = (
    "labels.jsonl",
    "failures.jsonl",
    "needs_review.jsonl",
    "summary.json",
    ".label.lock",
)
PAGES = "pages"  # rendered PDF / OFD pages: out_dir/pages/<doc id>/p<N>.png

SCHEMA_PROMPTS = [
    "请识别图片中的{doc_name}，按下面的 JSON 模板逐项填写票面上印刷的内容。\n"
    "要求：只输出一个 JSON 对象，键名和层级与模板完全一致，不增不减；所有值都是字符串，"
    "按票面原样抄写（保留货币符号、小数位和标点）；票面上没有或看不清的字段填空字符串；"
    "列表中的每个对象对应票面上的一行（包括折扣行）。\n模板：{skeleton}",
    "You are a meticulous data-entry clerk. Transcribe the {doc_name} in the image into exactly "
    "this JSON structure, keeping its keys and nesting: {skeleton}\n"
    "Output the JSON object only, without markdown. Every value is a string copied character "
    'for character as printed; use "" for a field that is absent or unreadable; give one '
    "list entry per printed table row, discount rows included.",
]
FREE_PROMPTS = [
    "提取图片中{doc_name}的全部关键信息，输出一个嵌套 JSON 对象：键用票面上印刷的字段名，"
    "值为票面原文字符串，表格的每一行输出为列表中的一个对象。只输出 JSON。",
    "Read the {doc_name} in the image and return all of its key information as one nested "
    "JSON object: keys are the field names printed on the document, values the printed text "
    "as strings, table rows a list of objects. Output JSON only, no markdown.",
]


class LabelConfigError(BadInput):
    """A config or input that cannot be used; the message says which key and what to do."""


# ---------------------------------------------------------------- config
@dataclass
class LabelConfig:
    images: str | list[str]
    out_dir: str
    client: EndpointConfig
    schema: str | None = "vat_invoice"
    mode: str = "schema"  # "schema" | "free"
    doc_type: str | None = None
    doc_name: str = "文档"
    votes: int = 2
    agreement_threshold: float = 1.0
    review_on_qa_fail: bool = True
    qa: bool = True
    concurrency: int = 16
    max_image_side: int = 2048
    jpeg_quality: int = 90
    shrink_factor: float = 0.6
    image_shrink_attempts: int = 2
    answer_attempts: int = 3
    max_tokens: int = 4096
    max_tokens_cap: int = 16384
    temperature: float | None = None
    prompts: list[str] | None = None
    system_prompt: str | None = None
    image_paths: str = "relative"  # "relative" (to out_dir) | "absolute"
    pages: str | None = None  # PDF / OFD pages to label, 1-based ("1", "1,3-4"); None: all
    max_pages: int = 20  # refuse longer documents (a failure row; select pages to label them)
    retry_failed: bool = False
    limit: int | None = None
    progress: bool = True
    fsync: bool = True
    base_dir: str = "."  # relative paths in the config resolve against this

    def __post_init__(self) -> None:
        if self.mode not in ("schema", "free"):
            raise LabelConfigError(f"mode must be 'schema' or 'free', got {self.mode!r}")
        if self.mode == "schema" and not self.schema:
            raise LabelConfigError("mode 'schema' needs a schema (e.g. schema: vat_invoice)")
        if self.votes < 1:
            raise LabelConfigError(f"votes must be >= 1, got {self.votes}")
        if self.concurrency < 1:
            raise LabelConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if not 0.0 <= self.agreement_threshold <= 1.0:
            raise LabelConfigError("agreement_threshold must be in [0, 1]")
        if self.image_paths not in ("relative", "absolute"):
            raise LabelConfigError("image_paths must be 'relative' or 'absolute'")
        if self.answer_attempts < 1:
            raise LabelConfigError("answer_attempts must be >= 1")
        prompts = self.prompts or []
        if self.mode == "schema" and any("{skeleton}" not in p for p in prompts):
            raise LabelConfigError("every prompt in schema mode must contain {skeleton}")
        try:
            self.document_options()
        except ValueError as exc:
            raise LabelConfigError(
                f"pages / max_pages: {exc} (pages is 1-based, e.g. pages='1' or '1,3-4')"
            ) from None

    def document_options(self) -> DocumentOptions:
        """How PDF / OFD pages are selected and rendered (at the model's pixel budget)."""
        return DocumentOptions(pages=self.pages, max_pages=self.max_pages, text_layer=False)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> LabelConfig:
        d = copy.deepcopy(dict(d))
        if isinstance(d.get("client"), dict):
            d["client"].setdefault("max_concurrency", d.get("concurrency", 16))
        try:
            return build(cls, d, source=where)
        except ConfigError as exc:
            raise LabelConfigError(str(exc)) from None

    @classmethod
    def from_yaml(
        cls, path: str | Path | None, overrides: Sequence[str] = (), base: dict | None = None
    ) -> LabelConfig:
        data: dict[str, Any] = copy.deepcopy(base or {})
        if path is not None:
            path = Path(path)
            try:
                data.update(load_yaml(path))
            except ConfigError as exc:
                raise LabelConfigError(str(exc)) from None
        try:
            apply_overrides(data, overrides)
        except ConfigError as exc:
            raise LabelConfigError(str(exc)) from None
        return cls.from_dict(data, where=str(path or "config"))

    def path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(self.base_dir) / q

    def to_dict(self) -> dict[str, Any]:
        """The config fit to write: keys, userinfo in URLs and header values masked."""
        return to_dict(self)


# ---------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ImageItem:
    """One thing to label: an image file, or page ``page`` of a PDF / OFD at ``path``.

    A page's ``id`` is ``page_id_for(doc_id, page, kind)`` (``doc#pN``); ``error`` is set
    when the document could not be opened at discovery (the item becomes a failure row)."""

    id: str
    path: Path
    kind: str = "image"  # "image" | "pdf" | "ofd"
    page: int | None = None  # 1-based page number (documents only)
    n_pages: int | None = None  # pages in the document (before selection)
    doc_id: str | None = None  # the document's id (documents only)
    error: str | None = None  # why the document cannot be read (documents only)


def _id_for(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def _doc_kind(path: Path) -> str:
    """ "pdf" | "ofd" for a document file (by suffix, any case), else "image"."""
    suffix = path.suffix.lower()
    return suffix[1:] if suffix in DOCUMENT_SUFFIXES else "image"


def discover_images(cfg: LabelConfig, *, documents: bool = False) -> list[ImageItem]:
    """The images named by ``cfg.images``, with unique ids (path below the root, no suffix).

    With ``documents`` (the labeler; ``label_lines`` reads images only) PDF and OFD files are
    accepted wherever an image is (folder, glob, file, list file) and give one item per
    selected page (``cfg.pages`` / ``cfg.max_pages``), id ``doc#pN``. A document that cannot
    be opened or has too many pages gives one item carrying the reason, so that it ends up in
    the failures file instead of stopping the run.
    """
    specs = cfg.images if isinstance(cfg.images, list) else [cfg.images]
    suffixes = INPUT_SUFFIXES if documents else IMAGE_SUFFIXES
    what = "image, PDF or OFD" if documents else "image"
    items: list[ImageItem] = []
    for spec in specs:
        spec = str(spec)
        if any(c in spec for c in "*?["):
            base = cfg.path(".")
            matches = sorted(p for p in base.glob(spec) if p.suffix.lower() in suffixes)
            if not matches:
                raise LabelConfigError(
                    f"images: the pattern {spec!r} matches no {what} under {base}"
                )
            root = base / Path(spec.split("*", 1)[0]).parent
            items += [ImageItem(_id_for(p, root), p) for p in matches]
            continue
        p = cfg.path(spec)
        if p.is_dir():
            found = find_documents(p) if documents else find_images(p)
            if not found:
                raise LabelConfigError(f"images: no {what} ({', '.join(suffixes)}) in {p}")
            items += [ImageItem(_id_for(q, p), q) for q in found]
        elif is_image_file(p) or (documents and p.is_file() and _doc_kind(p) != "image"):
            items.append(ImageItem(p.stem, p))
        elif p.is_file() and p.suffix.lower() == ".jsonl":
            for lineno, obj in read_jsonl(p):
                if "image" not in obj:
                    raise LabelConfigError(f"{p}:{lineno}: no 'image' key")
                q = Path(obj["image"])
                q = q if q.is_absolute() else p.parent / q
                items.append(ImageItem(str(obj.get("id") or _id_for(q, p.parent)), q))
        elif p.is_file():
            for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                q = Path(line.split("\t", 1)[0])
                q = q if q.is_absolute() else p.parent / q
                if not q.is_file():
                    raise LabelConfigError(f"{p}:{lineno}: {what} not found: {q}")
                items.append(ImageItem(_id_for(q, p.parent), q))
        else:
            raise LabelConfigError(
                f"images: {p} is not a folder, an {what} file, a list file or a glob pattern"
            )
    if documents:
        items = _expand_documents(items, cfg)
    seen: dict[str, tuple[Path, int | None]] = {}
    for it in items:
        where = (it.path.resolve(), it.page)
        if it.id in seen and seen[it.id] != where:
            raise LabelConfigError(
                f"two inputs get the id {it.id!r}: {seen[it.id][0]} and {it.path}; "
                "label them from one root folder or rename one"
            )
        seen[it.id] = where
    unique = {it.id: it for it in items}
    return list(unique.values())


def _expand_documents(items: list[ImageItem], cfg: LabelConfig) -> list[ImageItem]:
    """Each PDF / OFD item → one item per selected page (pages are counted, not rendered)."""
    options = cfg.document_options()
    out: list[ImageItem] = []
    for it in items:
        kind = _doc_kind(it.path)
        if kind == "image":
            out.append(it)
            continue
        doc = Path(it.id)
        if doc.is_absolute() or ".." in doc.parts or not it.id.strip("/"):
            raise LabelConfigError(
                f"{it.path}: the id {it.id!r} cannot name a folder under pages/; "
                "give the document a relative id without '..'"
            )
        try:
            n_pages = count_pages(it.path, options=options)
            numbers = select_pages(n_pages, options, str(it.path))
        except (ValueError, OSError) as exc:  # DocumentError, or a reader bug on a hostile file
            if not isinstance(exc, DocumentError):
                exc = DocumentError(f"{it.path}: cannot be read ({type(exc).__name__}: {exc})")
            first = options.pages[0] if options.pages else 1
            out.append(
                ImageItem(
                    page_id_for(it.id, first, kind),
                    it.path,
                    kind,
                    first,
                    None,
                    it.id,
                    error=str(exc),
                )
            )
            continue
        out += [
            ImageItem(page_id_for(it.id, n, kind), it.path, kind, n, n_pages, it.id)
            for n in numbers
        ]
    return out


# ---------------------------------------------------------------- image encoding
@dataclass
class EncodedImage:
    data: bytes
    mime: str
    width: int
    height: int
    shrunk: int = 0


def encode_image(path: Path, max_side: int, quality: int) -> EncodedImage:
    """The bytes to send: the file as is when it is a JPEG/PNG within ``max_side`` and upright,
    else a re-encoded JPEG. Raises ``ValueError`` for a file that does not decode."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            orientation = im.getexif().get(0x0112, 1)
            w, h = im.size
            if (
                fmt in ("JPEG", "PNG")
                and orientation == 1
                and (not max_side or max(w, h) <= max_side)
            ):
                im.load()  # a truncated file fails here, before any call is spent
                return EncodedImage(data, f"image/{fmt.lower()}", w, h)
            im.load()
            im2 = ImageOps.exif_transpose(im)
            return _to_jpeg(im2, max_side, quality)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: does not decode as an image ({exc})") from None


def _to_jpeg(im: Image.Image, max_side: int, quality: int) -> EncodedImage:
    if max_side and max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize(
            (max(1, round(im.width * scale)), max(1, round(im.height * scale))),
            Image.Resampling.LANCZOS,
        )
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    return EncodedImage(buf.getvalue(), "image/jpeg", im.width, im.height)


def shrink_image(img: EncodedImage, factor: float, quality: int) -> EncodedImage:
    with Image.open(io.BytesIO(img.data)) as im:
        im.load()
        side = max(28, int(max(im.size) * factor))
        out = _to_jpeg(im, side, min(quality, 85))
    out.shrunk = img.shrunk + 1
    return out


# ---------------------------------------------------------------- outputs
# ---------------------------------------------------------------- labeling one image
class ImageFailed(Exception):
    def __init__(self, stage: str, reason: str, attempts: int = 0) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        self.attempts = attempts


@dataclass
class VoteAnswer:
    prompt_index: int
    fields: dict[str, Any]
    parsed: ParsedOutput
    result: ChatResult
    canon: dict[str, list[str]]
    rejected: list[str] = field(default_factory=list)


def _stringify(value: Any) -> Any:
    """Model answers sometimes carry numbers/null: make every leaf a string."""
    if isinstance(value, dict):
        return {str(k): _stringify(v) for k, v in value.items() if str(k)}
    if isinstance(value, list):
        items = [_stringify(v) for v in value]
        if any(isinstance(v, dict) for v in items):
            items = [v if isinstance(v, dict) else {"值": v} for v in items]
        return items
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _ImageState:
    """The encoded image shared by the votes of one image (one shrink at a time)."""

    def __init__(self, img: EncodedImage) -> None:
        self.img = img
        self.lock = asyncio.Lock()


@dataclass
class Counters:
    ok: int = 0
    failed: int = 0
    review: int = 0
    calls: int = 0
    http_attempts: int = 0
    answer_retries: int = 0


def build_prompts(cfg: LabelConfig, schema: Schema | None) -> list[str]:
    """The prompt of each vote variant, with ``{skeleton}`` and ``{doc_name}`` filled in."""
    skeleton = json.dumps(schema.skeleton(), ensure_ascii=False) if schema else "{}"
    templates = cfg.prompts or (SCHEMA_PROMPTS if cfg.mode == "schema" else FREE_PROMPTS)
    return [
        t.replace("{skeleton}", skeleton).replace("{doc_name}", cfg.doc_name) for t in templates
    ]


class Labeler:
    """Labels images with one client; see the module docstring."""

    def __init__(self, cfg: LabelConfig, client: AsyncChatClient, schema: Schema | None) -> None:
        self.cfg = cfg
        self.client = client
        self.schema = schema
        self.out_dir = cfg.path(cfg.out_dir)
        self.counters = Counters()
        self.prompts = build_prompts(cfg, schema)
        self.doc_type = cfg.doc_type or (schema.doc_type if schema else "unknown")
        self.doc_options = cfg.document_options()

    def prompt_for_vote(self, i: int) -> tuple[int, str]:
        """Vote ``i`` uses prompt ``i mod len(prompts)``."""
        j = i % len(self.prompts)
        return j, self.prompts[j]

    async def _one_vote(self, i: int, state: _ImageState) -> VoteAnswer:
        cfg = self.cfg
        pidx, prompt = self.prompt_for_vote(i)
        max_tokens = cfg.max_tokens
        rejected: list[str] = []
        attempts = 0
        while True:
            img = state.img
            messages: list[dict[str, Any]] = []
            if cfg.system_prompt:
                messages.append({"role": "system", "content": cfg.system_prompt})
            messages.append(user_message(prompt, [(img.data, img.mime)]))
            self.counters.calls += 1
            try:
                res = await self.client.chat(
                    messages, max_tokens=max_tokens, temperature=cfg.temperature
                )
            except RequestRejected as exc:
                self.counters.http_attempts += exc.attempts
                if exc.status in (400, 413) and img.shrunk < cfg.image_shrink_attempts:
                    await self._shrink(state, img)
                    rejected.append(f"HTTP {exc.status} on a {img.width}x{img.height} image")
                    continue
                raise ImageFailed(
                    "request",
                    f"vote {i + 1}: request rejected (HTTP {exc.status}: {exc.reason})"
                    + (f" after {img.shrunk} smaller re-encodings" if img.shrunk else ""),
                    exc.attempts,
                ) from None
            except FatalLLMError:
                raise
            except LLMError as exc:
                self.counters.http_attempts += exc.attempts
                raise ImageFailed("request", f"vote {i + 1}: {exc.reason}", exc.attempts) from None
            self.counters.http_attempts += res.attempts
            attempts += 1
            parsed = parse_model_output(res.text, finish_reason=res.finish_reason)
            rep = parsed.report
            problem = None
            if rep.truncated:
                problem = f"truncated answer (finish_reason={res.finish_reason})"
                max_tokens = min(max_tokens * 2, cfg.max_tokens_cap)
            elif not rep.ok:
                problem = f"no JSON in the answer ({rep.error})"
            elif rep.method == "repaired":
                problem = f"answer is broken JSON, only json_repair could read it ({rep.error})"
            elif rep.conflicting_duplicate_keys:
                problem = f"conflicting duplicate keys {rep.conflicting_duplicate_keys}"
            elif not isinstance(parsed.value, dict) or not parsed.value:
                problem = "answer is not a non-empty JSON object"
            if problem is None:
                fields_ = _stringify(parsed.value)
                canon_rep = CanonicalizeReport()
                if self.schema is not None:
                    fields_ = self.schema.canonicalize(fields_, canon_rep)
                try:
                    validate_fields(fields_)
                except ValueError as exc:
                    problem = f"answer breaks the label contract ({exc})"
                else:
                    return VoteAnswer(pidx, fields_, parsed, res, canon_rep.to_dict(), rejected)
            rejected.append(problem)
            if attempts >= cfg.answer_attempts:
                raise ImageFailed(
                    "answer",
                    f"vote {i + 1}: no usable answer in {attempts} tries: " + "; ".join(rejected),
                    attempts,
                )
            self.counters.answer_retries += 1

    async def _shrink(self, state: _ImageState, seen: EncodedImage) -> None:
        async with state.lock:
            if state.img is seen:  # another vote may have shrunk it already
                state.img = await asyncio.to_thread(
                    shrink_image, seen, self.cfg.shrink_factor, self.cfg.jpeg_quality
                )
                log.info(
                    "re-encoded an image after a 400: %dx%d → %dx%d (%d bytes)",
                    seen.width,
                    seen.height,
                    state.img.width,
                    state.img.height,
                    len(state.img.data),
                )

    def _image_field(self, path: Path) -> str:
        if self.cfg.image_paths == "absolute":
            return str(path.resolve())
        return Path(os.path.relpath(path.resolve(), self.out_dir.resolve())).as_posix()

    def page_png(self, item: ImageItem) -> Path:
        """Where page ``item.page`` of a document is kept: ``out_dir/pages/<doc id>/p<N>.png``."""
        return self.out_dir / PAGES / str(item.doc_id) / f"p{item.page}.png"

    def render_page(self, item: ImageItem) -> Path:
        """The page's PNG, rendered (at the model's pixel budget) unless a previous run left
        one at least as new as the document; written atomically (temp file + rename).
        Raises ``DocumentError`` (the message names the file and the page) or ``OSError``."""
        png = self.page_png(item)
        try:
            if png.is_file() and png.stat().st_mtime_ns >= item.path.stat().st_mtime_ns:
                return png
        except OSError:
            pass  # the document is gone: load_pages says so
        options = dataclasses.replace(self.doc_options, pages=(item.page,))
        (page,) = load_pages(item.path, doc_id=item.doc_id, options=options)
        with atomic_writer(png, binary=True, fsync=self.cfg.fsync) as f:
            page.image.save(f, format="PNG")
        return png

    def _document_reason(self, item: ImageItem, msg: str) -> str:
        page = f"page {item.page}"
        where = msg if page in msg else f"{msg} ({page} of {item.path})"
        return (
            f"{where}; repair or re-export the document (or change pages / max_pages), "
            "then rerun with --retry-failed"
        )

    async def _page_image(self, item: ImageItem) -> Path:
        """The image file to send for ``item``: the image itself, or the rendered page."""
        if item.kind == "image":
            return item.path
        if item.error is not None:
            raise ImageFailed("document", self._document_reason(item, item.error))
        try:
            return await asyncio.to_thread(self.render_page, item)
        except DocumentError as exc:
            raise ImageFailed("document", self._document_reason(item, str(exc))) from None
        except OSError as exc:
            raise ImageFailed(
                "document",
                f"{item.path} page {item.page}: the rendered page cannot be written to "
                f"{self.page_png(item)} ({exc.strerror or exc}); free disk space or fix the "
                "permissions of out_dir, then rerun with --retry-failed",
            ) from None

    async def label_one(self, item: ImageItem) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(label record, review row or None); raises ``ImageFailed`` / ``FatalLLMError``."""
        t0 = time.monotonic()
        image_path = await self._page_image(item)
        try:
            img = await asyncio.to_thread(
                encode_image, image_path, self.cfg.max_image_side, self.cfg.jpeg_quality
            )
        except ValueError as exc:
            raise ImageFailed("image", str(exc)) from None
        state = _ImageState(img)
        tasks = [asyncio.create_task(self._one_vote(i, state)) for i in range(self.cfg.votes)]
        try:
            answers: list[VoteAnswer] = list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        voted = vote([a.fields for a in answers], self.schema)
        qa = (
            check_fields(voted.fields, self.schema, doc_type=self.doc_type, canonical=True)
            if self.cfg.qa and self.schema is not None
            else None
        )
        reasons: list[str] = []
        if voted.agreement < self.cfg.agreement_threshold:
            reasons.append(
                f"agreement {voted.agreement:.3f} < {self.cfg.agreement_threshold} "
                f"({len(voted.disagreements)} leaf(s) differ)"
            )
        if qa is not None and not qa.passed and self.cfg.review_on_qa_fail:
            reasons.append("qa: " + ", ".join(qa.failed_rules()))
        usage: dict[str, int] = {}
        for a in answers:
            for k, v in (a.result.usage or {}).items():
                if isinstance(v, int):
                    usage[k] = usage.get(k, 0) + v
        st = state.img
        meta: dict[str, Any] = {
            "labeler": {
                "model": answers[0].result.model or self.client.config.model,
                "mode": self.cfg.mode,
                "schema": self.schema.name if self.schema else None,
                "votes": self.cfg.votes,
                "prompt_indices": [a.prompt_index for a in answers],
            },
            **voted.to_meta(),
            "parse": [a.parsed.report.to_dict() for a in answers],
            "rejected_answers": [r for a in answers for r in a.rejected],
            "canonicalize": answers[0].canon,
            "http_attempts": sum(a.result.attempts for a in answers),
            "latency_s": round(time.monotonic() - t0, 3),
            "usage": usage,
            "image_sent": {"width": st.width, "height": st.height, "bytes": len(st.data)}
            | ({"shrunk": st.shrunk} if st.shrunk else {}),
            "needs_review": bool(reasons),
            "labeled_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if qa is not None:
            meta["qa"] = qa.to_dict()
        if reasons:
            meta["review_reasons"] = reasons
        if item.kind != "image":
            meta["source"] = {
                "document": self._image_field(item.path),
                "page": item.page,
                "n_pages": item.n_pages,
                "kind": item.kind,
            }
        rec = LabelRecord(
            id=item.id,
            image=self._image_field(image_path),
            doc_type=self.doc_type,
            fields=voted.fields,
            meta=meta,
        ).to_dict()
        return rec, (_review_row(rec) if reasons else None)


def _review_row(rec: dict[str, Any]) -> dict[str, Any]:
    meta = rec.get("meta", {})
    return {
        "id": rec["id"],
        "image": rec["image"],
        "reasons": meta.get("review_reasons", []),
        "agreement": meta.get("agreement"),
        "disagreements": meta.get("disagreements", []),
        "qa_hard": (meta.get("qa") or {}).get("hard", []),
    }


# ---------------------------------------------------------------- the run
async def label_images(cfg: LabelConfig, *, client: AsyncChatClient | None = None) -> RunSummary:
    """Label every image of ``cfg`` not done yet (the run harness, ``data_tools.runner``).

    ``needs_review.jsonl`` is a view of ``labels.jsonl``: rebuilt under the lock at every
    start, so a crash between the two appends can neither lose nor duplicate a row.
    """
    schema = load_schema(cfg.schema) if cfg.schema else None
    out_dir = cfg.path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_p, review_p = out_dir / LABELS, out_dir / REVIEW
    files = RunFiles(
        out=labels_p,
        failures=out_dir / FAILURES,
        summary=out_dir / SUMMARY,
        lock_file=out_dir / LOCK,
    )

    def rebuild_review(state: RunState) -> None:
        reviews = [
            _review_row(obj)
            for _, obj in (read_jsonl(labels_p) if labels_p.exists() else [])
            if (obj.get("meta") or {}).get("needs_review")
        ]
        write_jsonl_atomic(review_p, reviews)

    items = [Item.single(it.id, payload=it) for it in discover_images(cfg, documents=True)]
    own_client = client is None
    client = client or AsyncChatClient(cfg.client)
    labeler = Labeler(cfg, client, schema)
    c = labeler.counters
    counters: Counter[str] = Counter()

    async def work(item: Item) -> Output:
        image: ImageItem = item.payload
        try:
            rec, review = await labeler.label_one(image)
        except ImageFailed as exc:
            where: dict[str, Any] = {"image": labeler._image_field(image.path)}
            if image.kind != "image":
                where |= {"document": where["image"], "page": image.page}
            raise ItemFailed(exc.stage, exc.reason, **where) from None
        finally:
            counters.update(
                calls=c.calls - counters["calls"],
                http_attempts=c.http_attempts - counters["http_attempts"],
                answer_retries=c.answer_retries - counters["answer_retries"],
            )
        counters["needs_review"] += review is not None
        side = [(review_p, dumps_line(review))] if review is not None else []
        return Output(rows=[rec], side=side)

    async def check_endpoint() -> None:
        await preflight(client)

    try:
        # more workers than request slots: while one post-processes an answer (parse, vote,
        # QA, append), another already waits on the client's semaphore with its image ready
        return await run_items(
            items,
            work,
            files,
            workers=cfg.concurrency + max(2, cfg.concurrency // 2),
            retry_failed=cfg.retry_failed,
            limit=cfg.limit,
            progress=cfg.progress,
            desc="label",
            unit="img",
            fsync=cfg.fsync,
            counters=counters,
            prepare=rebuild_review,
            before_start=check_endpoint,
            config=cfg.to_dict(),
        )
    finally:
        if own_client:
            await client.aclose()


def run(cfg: LabelConfig) -> RunSummary:
    return asyncio.run(label_images(cfg))


# ---------------------------------------------------------------- CLI
def add_run_arguments(ap: argparse.ArgumentParser, recipes: str) -> None:
    """The options shared by the labeling CLIs (`label`, `label_lines`)."""
    ap.add_argument("--config", type=Path, help=f"YAML recipe ({recipes})")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, dotted keys, YAML values")
    ap.add_argument("--retry-failed", action="store_true", help="redo the images in failures")
    ap.add_argument("--limit", type=int, help="at most N new images")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--log-level", default="INFO")


def run_overrides(args: argparse.Namespace) -> list[str]:
    """Set up logging and turn the shared flags into config overrides."""
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    extra = list(args.overrides)
    if args.retry_failed:
        extra.append("retry_failed=true")
    if args.limit is not None:
        extra.append(f"limit={args.limit}")
    if args.no_progress:
        extra.append("progress=false")
    return extra


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_tools.label",
        description="Auto-label images with a VLM behind an OpenAI-compatible endpoint.",
    )
    add_run_arguments(ap, "configs/label/*.yaml")
    ap.add_argument("--dry-run", action="store_true", help="show the plan and the prompts, stop")
    args = ap.parse_args(argv)
    try:
        cfg = LabelConfig.from_yaml(args.config, run_overrides(args))
        if args.dry_run:
            schema = load_schema(cfg.schema) if cfg.schema else None
            items = discover_images(cfg, documents=True)
            prompts = build_prompts(cfg, schema)
            pages = [it for it in items if it.kind != "image"]
            print(
                f"{len(items) - len(pages)} image(s), {len(pages)} document page(s) "
                f"→ {cfg.path(cfg.out_dir)}"
            )
            for it in pages:
                if it.error:
                    print(f"  cannot be read (will be a failure row): {it.error}")
            print(f"endpoint(s): {redact(cfg.client.base_urls)}  model: {cfg.client.model}")
            for i in range(cfg.votes):
                j = i % len(prompts)
                print(f"--- vote {i + 1} (prompt {j}):\n{prompts[j]}")
            return 0
        summary = run(cfg)
    except BadInput as exc:
        log.error("error: %s", exc)
        return 2
    except KeyboardInterrupt:
        log.warning("interrupted; finished images are saved, rerun to continue")
        return 130
    (log.error if summary.exit_code else log.info)("%s", exit_message(summary, "image"))
    log.info("%.1f images/s", summary.items_per_s)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
