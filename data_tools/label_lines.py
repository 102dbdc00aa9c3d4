"""Text-line labels for PaddleOCR recognition: PP-OCR finds the lines, a VLM reads them twice.

    python -m data_tools.label_lines --config configs/label/text_lines.yaml [key=value ...]
                                     [--retry-failed] [--limit N]

The recipe of ERNIE-4.5's text-line labeling: PP-OCRv6 detection (the offline ONNX weights from
the ``rapidocr`` wheel, ``data_tools.ppocr``) finds the text lines of every image; each line is
cut out with a perspective crop (rotated upright when it stands vertical); the VLM reads every
crop twice with two different prompts; reads that agree (after text normalisation) and are not
empty become a PaddleOCR recognition label. Outputs in ``out_dir``:

``crops/<image id>/<n>.jpg``   the line crops
``rec_gt.txt``                 ``crops/<id>/<n>.jpg<TAB>text`` (PaddleOCR ``SimpleDataSet``,
                               ``data_dir`` = ``out_dir``)
``lines_disagree.jsonl``       crops whose two reads differ: ``{"id", "crop", "reads"}``
``lines_done.jsonl``           one line per finished image with its counts
``lines_failures.jsonl``       images that could not be done (stage ``detection``: the image
                               does not decode or detection failed; ``read``: reads that kept
                               failing), with the reason
``lines_summary.json``         the run's counts and the config used (secrets redacted)

It runs on the run harness (``data_tools.runner``), like ``data_tools.label``: one run per
``out_dir`` (lock), an image counts as done only once its line is in ``lines_done.jsonl``
(appended, fsynced, after its ``rec_gt.txt`` / ``lines_disagree.jsonl`` lines); a rerun drops
torn last lines, removes the labels of unfinished images from ``rec_gt.txt`` /
``lines_disagree.jsonl`` and continues; failed images are redone with ``--retry-failed``. Images
are found as ``data_tools.label`` finds them (a folder, a glob, a list file; the id is the path
below the folder without its suffix). Exit codes (README "Exit codes"): 0 all done, 1 some
images failed (listed in ``lines_failures.jsonl``), 2 bad input or config, 3 fatal endpoint
error (wrong key, endpoint unreachable), 130 interrupted; finished images are always kept.

Library use: ``LinesConfig.from_yaml(path, overrides)``; ``await label_lines(cfg,
detector=None) -> runner.RunSummary`` (``counters``: lines, agreed, disagreed, empty, calls);
a detector is any ``Callable[[np.ndarray BGR], list[(poly, score)]]`` (default:
:class:`PPOCRLineDetector`). :func:`crop_line` is the perspective crop.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import io
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from data_tools.config import ConfigError, load_config, to_dict
from data_tools.jsonl import (
    JsonlError,
    atomic_write_bytes,
    atomic_write_text,
    dumps_line,
    read_jsonl,
)
from data_tools.label import (
    ImageItem,
    LabelConfigError,
    add_run_arguments,
    discover_images,
    run_overrides,
)
from data_tools.llm_client import (
    AsyncChatClient,
    EndpointConfig,
    FatalLLMError,
    LLMError,
    preflight,
    user_message,
)
from data_tools.normalize import normalize_text
from data_tools.runner import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    BadInput,
    Item,
    ItemFailed,
    Output,
    RunFiles,
    RunSummary,
    exit_message,
    run_items,
)

log = logging.getLogger(__name__)

REC_GT, DISAGREE, DONE, FAILURES, SUMMARY, LOCK = (
    "rec_gt.txt",
    "lines_disagree.jsonl",
    "lines_done.jsonl",
    "lines_failures.jsonl",
    "lines_summary.json",
    ".label_lines.lock",
)
COUNTERS = ("lines", "agreed", "disagreed", "empty", "calls")  # RunSummary.counters
LINE_PROMPTS = [
    "识别图片中的这一行文字，按原样输出文字内容本身，不要添加解释、引号或其他内容。",
    "Transcribe the single line of text in this image exactly as printed, character for "
    "character. Output only the text itself.",
]

Poly = list[tuple[float, float]]
Detector = Callable[[np.ndarray], list[tuple[Poly, float]]]


# ---------------------------------------------------------------- config
@dataclass
class LinesConfig:
    images: str | list[str]
    out_dir: str
    client: EndpointConfig
    prompts: list[str] | None = None
    concurrency: int = 32  # VLM requests in flight (client.max_concurrency unless set)
    image_workers: int = 2  # images in progress (detection of one overlaps reads of another)
    min_det_score: float = 0.5
    min_line_height: int = 8
    max_lines_per_image: int = 0  # 0: all
    max_tokens: int = 256
    temperature: float | None = None
    crop_quality: int = 95
    det: dict[str, Any] | None = None  # extra kwargs for paddleocr.TextDetection
    retry_failed: bool = False
    limit: int | None = None
    progress: bool = True
    fsync: bool = True
    base_dir: str = "."

    def __post_init__(self) -> None:
        prompts = self.prompts or LINE_PROMPTS
        if len(prompts) < 2:
            raise LabelConfigError("text-line mode needs two prompts (each crop is read twice)")
        if self.concurrency < 1 or self.image_workers < 1:
            raise LabelConfigError("concurrency and image_workers must be >= 1")
        if self.client.max_concurrency is None:
            self.client.max_concurrency = self.concurrency

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: Sequence[str] = ()) -> LinesConfig:
        """The recipe ``path`` with dotted ``key=value`` overrides (``data_tools.config``)."""
        try:
            return load_config(cls, path, overrides)
        except ConfigError as exc:
            raise LabelConfigError(str(exc)) from None

    def path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(self.base_dir) / q


# ---------------------------------------------------------------- detection and crops
class PPOCRLineDetector:
    """PP-OCRv6 small text detection (offline ONNX) → ``[(poly, score)]``."""

    def __init__(self, **kwargs: Any) -> None:
        from data_tools.ppocr import create_text_detector

        self._det = create_text_detector(**kwargs)

    def __call__(self, bgr: np.ndarray) -> list[tuple[Poly, float]]:
        out: list[tuple[Poly, float]] = []
        for res in self._det.predict(bgr):
            for poly, score in zip(res["dt_polys"], res["dt_scores"], strict=True):
                out.append(([(float(x), float(y)) for x, y in poly], float(score)))
        return out


def order_points(poly: Sequence[Sequence[float]]) -> np.ndarray:
    """Four corners as top-left, top-right, bottom-right, bottom-left (float32)."""
    pts = np.asarray(poly, dtype=np.float32).reshape(-1, 2)
    if len(pts) != 4:  # a polygon: its minimum-area rectangle
        import cv2

        pts = cv2.boxPoints(cv2.minAreaRect(pts)).astype(np.float32)
    s, d = pts.sum(axis=1), np.diff(pts, axis=1).ravel()
    return np.array(
        [pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]],
        dtype=np.float32,
    )


def crop_line(img: np.ndarray, poly: Sequence[Sequence[float]]) -> np.ndarray:
    """Perspective crop of one text line; a line standing vertical is turned upright."""
    import cv2

    tl, tr, br, bl = order_points(poly)
    w = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)) + 0.5)
    h = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)) + 0.5)
    w, h = max(w, 1), max(h, 1)
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(np.stack([tl, tr, br, bl]), dst)
    crop = cv2.warpPerspective(
        img, m, (w, h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if h / w >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def load_bgr(path: Path) -> np.ndarray:
    """The image as an upright BGR array (EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            return np.asarray(im)[:, :, ::-1].copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: does not decode as an image ({exc})") from None


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


_FENCE = re.compile(r"^```\w*\s*|\s*```$")


def clean_read(text: str) -> str:
    """A VLM's read of one line: fences, surrounding quotes and line breaks removed."""
    s = _FENCE.sub("", text.strip()).strip()
    for q in ('"', "'", "“", "”", "「", "」", "`"):
        if len(s) >= 2 and s.startswith(q) and s.endswith(q if q not in "“「" else "”」"):
            s = s[1:-1].strip()
    return re.sub(r"\s*[\r\n\t]+\s*", " ", s).strip()


def reads_agree(a: str, b: str) -> bool:
    na, nb = normalize_text(a), normalize_text(b)
    return bool(na) and na == nb


# ---------------------------------------------------------------- resume
def _crop_owner(rel: str) -> str:
    """``crops/<id>/<n>.jpg`` → ``<id>`` (ids may contain slashes)."""
    return rel.removeprefix("crops/").rsplit("/", 1)[0]


def _keep_finished(out: Path, done: set[str]) -> None:
    """Remove the labels of images that are not in lines_done.jsonl (a crash mid-image)."""
    gt = out / REC_GT
    if gt.exists():
        lines = gt.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = [ln for ln in lines if _crop_owner(ln.split("\t", 1)[0]) in done]
        if len(keep) != len(lines):
            atomic_write_text(gt, "".join(keep))
            log.info("%s: removed %d line(s) of unfinished images", gt, len(lines) - len(keep))
    dis = out / DISAGREE
    if dis.exists():
        try:
            rows = [obj for _, obj in read_jsonl(dis)]
        except JsonlError as exc:
            raise LabelConfigError(f"{exc}; fix or remove that line, then rerun") from None
        keep_rows = [r for r in rows if r.get("id") in done]
        if len(keep_rows) != len(rows):
            atomic_write_text(dis, "".join(dumps_line(r) for r in keep_rows))
            log.info("%s: removed %d row(s) of unfinished images", dis, len(rows) - len(keep_rows))


# ---------------------------------------------------------------- one image
async def _gather_or_cancel(coros: list[Any]) -> list[Any]:
    """``asyncio.gather`` that cancels the others when one fails."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class LineLabeler:
    """Detects, crops and reads the lines of one image (the run harness's per-item work)."""

    def __init__(self, cfg: LinesConfig, client: AsyncChatClient, counters: Counter[str]) -> None:
        self.cfg = cfg
        self.client = client
        self.counters = counters
        self.out = cfg.path(cfg.out_dir)
        self.prompts = (cfg.prompts or LINE_PROMPTS)[:2]
        self.detector: Detector | None = None
        self.det_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # one model

    async def load_detector(self) -> None:
        """The PP-OCR detector (once); one that does not load is bad config (exit 2)."""
        if self.detector is None:
            kwargs = dict(self.cfg.det or {})
            loop = asyncio.get_running_loop()
            try:
                self.detector = await loop.run_in_executor(
                    self.det_pool, lambda: PPOCRLineDetector(**kwargs)
                )
            except Exception as exc:
                raise LabelConfigError(
                    f"the text detector did not load with det={kwargs} "
                    f"({type(exc).__name__}: {exc}); check `det` in the config and that "
                    "the rapidocr wheel is installed (make setup)"
                ) from None

    def detect_and_crop(self, path: Path) -> list[tuple[int, bytes]]:
        """The JPEG crops of ``path``'s lines, numbered in reading order."""
        cfg = self.cfg
        img = load_bgr(path)
        assert self.detector is not None
        found = [(poly, sc) for poly, sc in self.detector(img) if sc >= cfg.min_det_score]
        # reading order: top to bottom, then left to right
        found.sort(key=lambda ps: (min(y for _, y in ps[0]), min(x for x, _ in ps[0])))
        crops: list[tuple[int, bytes]] = []
        for poly, _ in found:
            c = crop_line(img, poly)
            if min(c.shape[:2]) < cfg.min_line_height:
                continue
            crops.append((len(crops), encode_jpeg(c, cfg.crop_quality)))
            if cfg.max_lines_per_image and len(crops) >= cfg.max_lines_per_image:
                break
        return crops

    async def read(self, crop: bytes) -> list[str]:
        """The crop read once with each prompt."""

        async def one(prompt: str) -> str:
            self.counters["calls"] += 1
            res = await self.client.chat(
                [user_message(prompt, [(crop, "image/jpeg")])],
                max_tokens=self.cfg.max_tokens,
                temperature=self.cfg.temperature,
            )
            return clean_read(res.text)

        return await _gather_or_cancel([one(p) for p in self.prompts])

    def _write_crops(self, image_id: str, crops: list[tuple[int, bytes]]) -> list[str]:
        crop_dir = self.out / "crops" / image_id
        crop_dir.mkdir(parents=True, exist_ok=True)
        rels = []
        for n, data in crops:
            rel = f"crops/{image_id}/{n:04d}.jpg"
            atomic_write_bytes(self.out / rel, data, fsync=False)  # a rerun remakes it
            rels.append(rel)
        return rels

    async def __call__(self, item: Item) -> Output:
        image: ImageItem = item.payload
        where = {"image": str(image.path)}
        loop = asyncio.get_running_loop()
        try:
            crops = await loop.run_in_executor(self.det_pool, self.detect_and_crop, image.path)
        except Exception as exc:
            raise ItemFailed("detection", f"{type(exc).__name__}: {exc}", **where) from None
        try:
            reads = await _gather_or_cancel([self.read(data) for _, data in crops])
        except FatalLLMError:
            raise
        except LLMError as exc:
            raise ItemFailed("read", exc.reason, **where) from None
        rels = await asyncio.to_thread(self._write_crops, image.id, crops)
        gt_lines, dis_rows, n_empty = [], [], 0
        for rel, (a, b) in zip(rels, reads, strict=True):
            if reads_agree(a, b):
                gt_lines.append(f"{rel}\t{a}\n")
            elif not normalize_text(a) and not normalize_text(b):
                n_empty += 1
            else:
                dis_rows.append({"id": image.id, "crop": rel, "reads": [a, b]})
        self.counters.update(
            lines=len(crops), agreed=len(gt_lines), disagreed=len(dis_rows), empty=n_empty
        )
        side: list[tuple[Path, str]] = []
        if gt_lines:
            side.append((self.out / REC_GT, "".join(gt_lines)))
        if dis_rows:
            side.append((self.out / DISAGREE, "".join(dumps_line(r) for r in dis_rows)))
        row = {
            "id": image.id,
            **where,
            "lines": len(crops),
            "agreed": len(gt_lines),
            "disagreed": len(dis_rows),
            "empty": n_empty,
        }
        return Output(rows=[row], side=side)


# ---------------------------------------------------------------- the run
async def label_lines(
    cfg: LinesConfig,
    *,
    detector: Detector | None = None,
    client: AsyncChatClient | None = None,
) -> RunSummary:
    """Label the text lines of every image not done yet (the run harness,
    ``data_tools.runner``); ``counters`` holds lines / agreed / disagreed / empty / calls."""
    out = cfg.path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = RunFiles(
        out=out / DONE,
        failures=out / FAILURES,
        summary=out / SUMMARY,
        side=(out / REC_GT, out / DISAGREE),
        lock_file=out / LOCK,
    )
    items = [Item.single(it.id, payload=it) for it in discover_images(cfg)]  # type: ignore[arg-type]
    counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
    own_client = client is None
    client = client or AsyncChatClient(cfg.client)
    labeler = LineLabeler(cfg, client, counters)
    labeler.detector = detector

    async def before_start() -> None:  # only when there is work: the endpoint, then the model
        await preflight(client)
        await labeler.load_detector()

    try:
        return await run_items(
            items,
            labeler,
            files,
            workers=cfg.image_workers,
            retry_failed=cfg.retry_failed,
            limit=cfg.limit,
            progress=cfg.progress,
            desc="label-lines",
            unit="img",
            fsync=cfg.fsync,
            counters=counters,
            prepare=lambda state: _keep_finished(out, state.done),
            before_start=before_start,
            config=to_dict(cfg),
        )
    finally:
        labeler.det_pool.shutdown(wait=True)
        if own_client:
            await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_tools.label_lines",
        description="PP-OCR text-line crops read twice by a VLM → PaddleOCR rec labels.",
    )
    add_run_arguments(ap, "configs/label/text_lines.yaml")
    args = ap.parse_intermixed_args(argv)  # overrides may stand before and after the flags
    try:
        cfg = LinesConfig.from_yaml(args.config, run_overrides(args))
        s = asyncio.run(label_lines(cfg))
    except BadInput as exc:
        log.error("error: %s", exc)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        log.warning("interrupted; finished images are saved, rerun to continue")
        return EXIT_INTERRUPTED
    (log.error if s.exit_code else log.info)("%s", exit_message(s, "image"))
    return s.exit_code


if __name__ == "__main__":
    sys.exit(main())
