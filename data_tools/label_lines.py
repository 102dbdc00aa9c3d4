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
``lines_failures.jsonl``       images that could not be done (detection error, reads that kept
                               failing), with the reason

Resumable like ``data_tools.label``: an image counts as done only once its line is in
``lines_done.jsonl`` (written after its labels); a rerun drops torn last lines, removes the
labels of unfinished images from ``rec_gt.txt`` / ``lines_disagree.jsonl`` and continues.
Exit codes as ``data_tools.label``: 0, 1 (some images failed), 2 (bad input), 3 (401/403).

Library use: ``LinesConfig.from_yaml(path, overrides)``; ``await label_lines(cfg,
detector=None)``; a detector is any ``Callable[[np.ndarray BGR], list[(poly, score)]]``
(default: :class:`PPOCRLineDetector`). :func:`crop_line` is the perspective crop.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import copy
import datetime as dt
import io
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from data_tools.config import ConfigError, apply_overrides, build, load_yaml
from data_tools.images import find_images, is_image_file
from data_tools.jsonl import JsonlError, atomic_write_text, drop_torn_tail, dumps_line, read_jsonl
from data_tools.label import LabelConfigError, add_run_arguments, run_overrides
from data_tools.llm_client import (
    AsyncChatClient,
    EndpointConfig,
    FatalLLMError,
    LLMError,
    preflight,
    user_message,
)
from data_tools.normalize import normalize_text
from data_tools.runner import BadInput, append_text, run_lock, run_workers

log = logging.getLogger(__name__)

REC_GT, DISAGREE, DONE, FAILURES, LOCK = (
    "rec_gt.txt",
    "lines_disagree.jsonl",
    "lines_done.jsonl",
    "lines_failures.jsonl",
    ".label_lines.lock",
)
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
    concurrency: int = 32  # VLM requests in flight
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
    base_dir: str = "."

    def __post_init__(self) -> None:
        prompts = self.prompts or LINE_PROMPTS
        if len(prompts) < 2:
            raise LabelConfigError("text-line mode needs two prompts (each crop is read twice)")
        if self.concurrency < 1 or self.image_workers < 1:
            raise LabelConfigError("concurrency and image_workers must be >= 1")

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: Sequence[str] = ()) -> LinesConfig:
        data: dict[str, Any] = {}
        try:
            if path is not None:
                data = load_yaml(path)
            data = copy.deepcopy(data)
            apply_overrides(data, overrides)
            if isinstance(data.get("client"), dict):
                data["client"].setdefault("max_concurrency", data.get("concurrency", 32))
            return build(cls, data, source=str(path or "config"))
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


# ---------------------------------------------------------------- resume helpers
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
        rows = [obj for _, obj in read_jsonl(dis)]
        keep_rows = [r for r in rows if r.get("id") in done]
        if len(keep_rows) != len(rows):
            atomic_write_text(dis, "".join(dumps_line(r) for r in keep_rows))


def discover(cfg: LinesConfig) -> list[tuple[str, Path]]:
    """(id, path) of every image; ids are paths below the folder without suffix."""
    specs = cfg.images if isinstance(cfg.images, list) else [cfg.images]
    out: dict[str, Path] = {}
    for spec in specs:
        p = cfg.path(str(spec))
        if p.is_dir():
            for q in find_images(p):
                out[q.relative_to(p).with_suffix("").as_posix()] = q
        elif is_image_file(p):
            out[p.stem] = p
        elif p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.startswith("#"):
                    q = Path(line.strip())
                    q = q if q.is_absolute() else p.parent / q
                    out[q.stem] = q
        else:
            raise LabelConfigError(f"images: {p} is neither a folder, an image nor a list file")
    if not out:
        raise LabelConfigError(f"images: no image found in {specs}")
    return list(out.items())


# ---------------------------------------------------------------- the run
@dataclass
class LinesSummary:
    images: int = 0
    done_before: int = 0
    todo: int = 0
    images_done: int = 0
    images_failed: int = 0
    lines: int = 0
    agreed: int = 0
    disagreed: int = 0
    empty: int = 0
    calls: int = 0
    elapsed_s: float = 0.0
    fatal: str | None = None
    exit_code: int = 0


class _ImageFailed(Exception):
    pass


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


async def label_lines(
    cfg: LinesConfig,
    *,
    detector: Detector | None = None,
    client: AsyncChatClient | None = None,
) -> LinesSummary:
    """Label the text lines of every image not done yet; see the module docstring."""
    out = cfg.path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = LinesSummary()
    prompts = cfg.prompts or LINE_PROMPTS
    with run_lock(out / LOCK, "text-line run"):
        for name in (DONE, FAILURES, DISAGREE):
            drop_torn_tail(out / name)
        drop_torn_tail(out / REC_GT, check_json=False)
        try:
            done = (
                {str(o.get("id")) for _, o in read_jsonl(out / DONE)}
                if (out / DONE).exists()
                else set()
            )
            failed = (
                {str(o.get("id")) for _, o in read_jsonl(out / FAILURES)} - done
                if (out / FAILURES).exists()
                else set()
            )
            _keep_finished(out, done)
        except JsonlError as exc:
            raise LabelConfigError(f"{exc}; fix or remove that line, then rerun") from None
        items = discover(cfg)
        s.images = len(items)
        s.done_before = sum(i in done for i, _ in items)
        todo = [(i, p) for i, p in items if i not in done]
        if not cfg.retry_failed:
            todo = [(i, p) for i, p in todo if i not in failed]
        if cfg.limit is not None:
            todo = todo[: cfg.limit]
        s.todo = len(todo)
        log.info("%d image(s), %d done before, %d to do → %s", s.images, s.done_before, s.todo, out)
        if not todo:
            return s

        own_client = client is None
        client = client or AsyncChatClient(cfg.client)
        det_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # one model, one thread
        loop = asyncio.get_running_loop()
        fatal: list[BaseException] = []
        try:
            await preflight(client)
            if detector is None:
                det_kwargs = dict(cfg.det or {})
                detector = await loop.run_in_executor(
                    det_pool, lambda: PPOCRLineDetector(**det_kwargs)
                )
        except FatalLLMError as exc:
            fatal.append(exc)
            todo = []
        except BaseException:
            det_pool.shutdown(wait=False)
            if own_client:
                await client.aclose()
            raise

        bar = tqdm(total=len(todo), unit="img", disable=not cfg.progress, dynamic_ncols=True)
        t0 = time.monotonic()
        queue = iter(todo)

        async def read(crop: bytes) -> list[str]:
            async def one(prompt: str) -> str:
                s.calls += 1
                res = await client.chat(
                    [user_message(prompt, [(crop, "image/jpeg")])],
                    max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature,
                )
                return clean_read(res.text)

            return await _gather_or_cancel([one(p) for p in prompts[:2]])

        def detect_and_crop(path: Path) -> list[tuple[int, bytes]]:
            img = load_bgr(path)
            assert detector is not None
            found = [(poly, score) for poly, score in detector(img) if score >= cfg.min_det_score]
            # number the lines in reading order: top to bottom, then left to right
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

        async def one_image(image_id: str, path: Path) -> None:
            try:
                crops = await loop.run_in_executor(det_pool, detect_and_crop, path)
            except Exception as exc:
                raise _ImageFailed(f"detection: {type(exc).__name__}: {exc}") from None
            try:
                reads = await _gather_or_cancel([read(data) for _, data in crops])
            except FatalLLMError:
                raise
            except LLMError as exc:
                raise _ImageFailed(f"read: {exc.reason}") from None
            crop_dir = out / "crops" / image_id
            crop_dir.mkdir(parents=True, exist_ok=True)
            gt_lines, dis_rows = [], []
            n_empty = 0
            for (n, data), (a, b) in zip(crops, reads, strict=True):
                rel = f"crops/{image_id}/{n:04d}.jpg"
                tmp = out / (rel + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, out / rel)
                if reads_agree(a, b):
                    gt_lines.append(f"{rel}\t{a}\n")
                elif not normalize_text(a) and not normalize_text(b):
                    n_empty += 1
                else:
                    dis_rows.append({"id": image_id, "crop": rel, "reads": [a, b]})
            if gt_lines:
                await asyncio.to_thread(append_text, out / REC_GT, "".join(gt_lines))
            if dis_rows:
                await asyncio.to_thread(
                    append_text, out / DISAGREE, "".join(dumps_line(r) for r in dis_rows)
                )
            row = {
                "id": image_id,
                "image": str(path),
                "lines": len(crops),
                "agreed": len(gt_lines),
                "disagreed": len(dis_rows),
                "empty": n_empty,
            }
            await asyncio.to_thread(append_text, out / DONE, dumps_line(row))
            s.lines += len(crops)
            s.agreed += len(gt_lines)
            s.disagreed += len(dis_rows)
            s.empty += n_empty

        async def worker() -> None:
            for image_id, path in queue:
                if fatal:
                    return
                try:
                    await one_image(image_id, path)
                    s.images_done += 1
                except FatalLLMError as exc:
                    fatal.append(exc)
                    return
                except _ImageFailed as exc:
                    s.images_failed += 1
                    row = {
                        "id": image_id,
                        "image": str(path),
                        "reason": str(exc),
                        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    }
                    await asyncio.to_thread(append_text, out / FAILURES, dumps_line(row))
                bar.update(1)
                bar.set_postfix(agreed=s.agreed, disagreed=s.disagreed, failed=s.images_failed)

        try:
            await run_workers(min(cfg.image_workers, len(todo)), worker, fatal)
        finally:
            bar.close()
            det_pool.shutdown(wait=True)
            if own_client:
                await client.aclose()
        s.elapsed_s = round(time.monotonic() - t0, 3)
        if fatal:
            s.fatal, s.exit_code = str(fatal[0]), 3
        elif s.images_failed:
            s.exit_code = 1
    return s


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_tools.label_lines",
        description="PP-OCR text-line crops read twice by a VLM → PaddleOCR rec labels.",
    )
    add_run_arguments(ap, "configs/label/text_lines.yaml")
    args = ap.parse_args(argv)
    try:
        cfg = LinesConfig.from_yaml(args.config, run_overrides(args))
        s = asyncio.run(label_lines(cfg))
    except BadInput as exc:
        log.error("error: %s", exc)
        return 2
    if s.fatal:
        log.error("stopped: %s", s.fatal)
    log.info("done: %s", asdict(s))
    return s.exit_code


if __name__ == "__main__":
    sys.exit(main())
