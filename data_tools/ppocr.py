"""Offline PP-OCRv6 for PaddleOCR: model dirs built from the ONNX files in the rapidocr wheel.

No model hub is reachable from our machines, but the ``rapidocr`` wheel ships the
PP-OCRv6 *small* detection and recognition networks as ONNX files. PaddleOCR (through
PaddleX) runs ONNX models with ``engine="onnxruntime"`` from a local model dir that holds

    inference.onnx   the network
    inference.yml    ``Global.model_name`` (must be a name PaddleX knows, here
                     ``PP-OCRv6_small_det`` / ``PP-OCRv6_small_rec``), the pre- and
                     post-processing; for recognition also ``PostProcess.character_dict``,
                     which we read from the ONNX metadata key ``character``.

Public API (stable; other modules build on it):

- :func:`build_model_dirs` -> :class:`PPOCRModelDirs`: writes (once, atomically) the two
  model dirs under a cache folder and returns their paths.
- :func:`create_paddleocr`: a ``paddleocr.PaddleOCR`` pipeline (detection + recognition)
  on those dirs, ``engine="onnxruntime"``; ``preset="server"`` selects the
  PP-OCRv6 medium models by name instead (downloaded by PaddleOCR; for GPU users).
- :func:`create_ocr`: the OCR engine by name. ``engine="rapidocr"`` (default for the
  offline models on CPU) runs the same ONNX files through RapidOCR's loader, set up like
  PaddleOCR's pipeline (same detection size, thresholds and normalisation): no Paddle
  import: import + model load 7.2 s vs 36.1 s for PaddleOCR on the loaded 2-core machine
  (x5; ``benchmarks/startup.py``), same lines, boxes and ceiling, scores within 1e-4.
  ``engine="paddleocr"`` is :func:`create_paddleocr`. Both return an object whose
  ``predict(image)`` yields ``rec_texts`` / ``rec_scores`` / ``rec_polys`` for :func:`ocr_lines`.
- :func:`models_fingerprint`: sha256 of the ONNX model files (content, not dates): part of
  the OCR cache key, so upgraded models never serve stale lines.
- :func:`create_text_detector` / :func:`create_text_recognizer`: the single models
  (``paddleocr.TextDetection`` / ``paddleocr.TextRecognition``) on the same dirs.
- :func:`ocr_lines` runs a pipeline on one image (path or BGR array) ->
  ``list[OcrLine]`` (text, score, axis-aligned box, polygon) in reading order;
  :func:`group_rows` groups lines into rows (vertical centres within half a median line
  height of the row's band), :func:`reading_order` flattens the rows top-to-bottom,
  left-to-right, :func:`lines_to_text` joins them (rows by newline, lines by two spaces).

Detection size (``limit_side_len``, ``limit_type``): the detector's input is scaled so
that its shorter side is at least ``limit_side_len`` (``limit_type="min"``) or its longer
side at most ``limit_side_len`` (``"max"``), then rounded to multiples of 32. PaddleOCR's
default (``64, "min"``; :data:`DET_LIMIT_SIDE_LEN`, :data:`DET_LIMIT_TYPE`) keeps a photo
at full resolution (PaddleX caps the longer side at 4,000 px). ``960, "max"`` is faster
and may miss small print. Measured with ``benchmarks/startup.py --det-sizes`` on the three
real invoices (2104x1560 photos), 2 shared cores under heavy load (load average ~9, so
read the ratios): default 238 lines, OCR ceiling 82/88 gold values; ``960, "max"`` 226
lines, ceiling 81/88, in 0.62x (RapidOCR) / 0.80x (PaddleOCR) of the time. Both engines
read the same lines at both sizes. (PaddleX's single-model ``TextDetection``, used by
:func:`create_text_detector`, defaults to ``960, "max"`` from ``inference.yml``.)

Example::

    from data_tools.ppocr import create_paddleocr, ocr_lines, lines_to_text
    ocr = create_paddleocr()
    lines = ocr_lines(ocr, "invoice.jpg")
    print(lines_to_text(lines))
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DET_MODEL_NAME = "PP-OCRv6_small_det"
REC_MODEL_NAME = "PP-OCRv6_small_rec"
SERVER_DET_MODEL_NAME = "PP-OCRv6_medium_det"
SERVER_REC_MODEL_NAME = "PP-OCRv6_medium_rec"
RAPIDOCR_DET_FILE = "PP-OCRv6_det_small.onnx"
RAPIDOCR_REC_FILE = "PP-OCRv6_rec_small.onnx"
REC_IMAGE_SHAPE = (3, 48, 320)
MODEL_FILE = "inference.onnx"
CONFIG_FILE = "inference.yml"
PRESETS = ("small-onnx", "server")
ENGINES = ("rapidocr", "paddleocr")
#: PaddleOCR's own detection size (its OCR pipeline config): full resolution for photos
DET_LIMIT_SIDE_LEN = 64
DET_LIMIT_TYPE = "min"
DET_LIMIT_TYPES = ("min", "max")
DET_MAX_SIDE_LIMIT = 4000  # PaddleX scales the detector input down to this longer side
# PaddleOCR's OCR pipeline post-processing (paddlex/configs/pipelines/OCR.yaml)
DET_THRESH, DET_BOX_THRESH, DET_UNCLIP_RATIO = 0.3, 0.6, 1.5
DET_MEAN = (0.485, 0.456, 0.406)  # the NormalizeImage of det_config()
DET_STD = (0.229, 0.224, 0.225)
REC_BATCH_SIZE = 6


class PPOCRSetupError(RuntimeError):
    """The offline PP-OCR model dirs cannot be built (rapidocr or onnxruntime missing...)."""


@dataclass(frozen=True)
class PPOCRModelDirs:
    """Two PaddleX model dirs (``inference.onnx`` + ``inference.yml`` each)."""

    det: Path
    rec: Path
    det_model_name: str = DET_MODEL_NAME
    rec_model_name: str = REC_MODEL_NAME


@dataclass
class OcrLine:
    """One recognised text line: text, confidence and its box in image pixels."""

    text: str
    score: float
    box: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max
    poly: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "score": round(float(self.score), 5),
            "box": [round(float(v), 1) for v in self.box],
            "poly": [[round(float(x), 1), round(float(y), 1)] for x, y in self.poly],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OcrLine:
        return cls(
            text=str(d["text"]),
            score=float(d.get("score", 1.0)),
            box=tuple(float(v) for v in d["box"]),  # type: ignore[arg-type]
            poly=[(float(x), float(y)) for x, y in d.get("poly", [])],
        )


# ---------------------------------------------------------------- model dirs
def rapidocr_onnx_files() -> tuple[Path, Path]:
    """The PP-OCRv6 small det/rec ONNX files shipped inside the installed rapidocr wheel."""
    try:
        import rapidocr
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise PPOCRSetupError(
            "rapidocr is not installed; `pip install rapidocr` (it ships the PP-OCRv6 ONNX "
            "weights) or pass your own model dirs"
        ) from e
    models = Path(rapidocr.__file__).parent / "models"
    det, rec = models / RAPIDOCR_DET_FILE, models / RAPIDOCR_REC_FILE
    for p in (det, rec):
        if not p.is_file():
            raise PPOCRSetupError(
                f"{p} not found: this rapidocr version does not ship PP-OCRv6 small ONNX "
                "files; install rapidocr 3.10 (see requirements/cpu.txt)"
            )
    return det, rec


def rec_character_dict(onnx_path: Path) -> list[str]:
    """The recognition dictionary stored in the ONNX metadata key ``character``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise PPOCRSetupError(f"{onnx_path}: no 'character' metadata key (not a PP-OCR rec model?)")
    chars = meta["character"].split("\n")
    n_out = sess.get_outputs()[0].shape[-1]
    # CTC output = blank + dictionary + space (PaddleX appends the space itself).
    if isinstance(n_out, int) and n_out != len(chars) + 2:
        raise PPOCRSetupError(
            f"{onnx_path}: dictionary has {len(chars)} entries but the model outputs "
            f"{n_out} classes (expected {len(chars) + 2})"
        )
    return chars


def det_config(model_name: str = DET_MODEL_NAME) -> dict[str, Any]:
    """``inference.yml`` of a DB text detector, in the layout PaddleX exports."""
    return {
        "Global": {"model_name": model_name},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"DetLabelEncode": None},
                {"DetResizeForTest": {"resize_long": 960}},
                {
                    "NormalizeImage": {
                        "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225],
                        "scale": 1.0 / 255.0,
                        "order": "hwc",
                    }
                },
                {"ToCHWImage": None},
                {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
            ]
        },
        "PostProcess": {
            "name": "DBPostProcess",
            "thresh": 0.3,
            "box_thresh": 0.6,
            "max_candidates": 1000,
            "unclip_ratio": 1.5,
        },
    }


def rec_config(characters: list[str], model_name: str = REC_MODEL_NAME) -> dict[str, Any]:
    """``inference.yml`` of a CTC text recogniser, in the layout PaddleX exports."""
    return {
        "Global": {"model_name": model_name},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": list(REC_IMAGE_SHAPE)}},
                {"KeepKeys": {"keep_keys": ["image", "label_ctc", "label_gtc", "length"]}},
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
    }


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/invoice-kie/ppocr`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "invoice-kie" / "ppocr"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def models_fingerprint(files: Sequence[Path] | None = None) -> str:
    """sha256 (first 16 hex digits) of the OCR model files' bytes, det then rec.

    Default: the PP-OCRv6 small ONNX files of the installed rapidocr wheel. Content, not
    dates: a reinstall of the same wheel keeps the key, new weights change it. Cached per
    process by (path, size, mtime), so it costs one read of ~20 MB per process.
    """
    paths = list(files) if files is not None else list(rapidocr_onnx_files())
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FINGERPRINTS:
            _FINGERPRINTS[key] = file_sha256(p)
        h.update(f"{p.name}:{_FINGERPRINTS[key]}\n".encode())
    return h.hexdigest()[:16]


def _fingerprint(*files: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def _write_model_dir(target: Path, onnx: Path, config: dict[str, Any]) -> None:
    """Write ``target`` as a whole: build in a temp dir beside it, then rename."""
    if (target / MODEL_FILE).is_file() and (target / CONFIG_FILE).is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            os.link(onnx, tmp / MODEL_FILE)
        except OSError:
            shutil.copyfile(onnx, tmp / MODEL_FILE)
        text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
        (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first (target exists and is not empty): keep theirs.
            if not (target / CONFIG_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_model_dirs(cache_dir: Path | str | None = None) -> PPOCRModelDirs:
    """Create (once) the PaddleX model dirs for PP-OCRv6 small det/rec; return their paths.

    Dirs live under ``cache_dir/<fingerprint of the ONNX files>/`` so a rapidocr upgrade
    gets fresh dirs. Safe to call from several processes at once.
    """
    det_onnx, rec_onnx = rapidocr_onnx_files()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = root / _fingerprint(det_onnx, rec_onnx)
    dirs = PPOCRModelDirs(det=root / DET_MODEL_NAME, rec=root / REC_MODEL_NAME)
    _write_model_dir(dirs.det, det_onnx, det_config())
    if not (dirs.rec / CONFIG_FILE).is_file():
        _write_model_dir(dirs.rec, rec_onnx, rec_config(rec_character_dict(rec_onnx)))
    log.debug("PP-OCR model dirs: %s, %s", dirs.det, dirs.rec)
    return dirs


# ---------------------------------------------------------------- factories
def _engine_kwargs(preset: str, device: str, cpu_threads: int | None) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ValueError(f"unknown PP-OCR preset {preset!r}; choose one of {PRESETS}")
    if preset == "server":
        return {"device": device}
    cfg: dict[str, Any] = {}
    if cpu_threads:
        cfg["intra_op_num_threads"] = int(cpu_threads)
    kw: dict[str, Any] = {"engine": "onnxruntime", "device": device}
    if cfg:
        kw["engine_config"] = cfg
    return kw


def create_paddleocr(
    model_dirs: PPOCRModelDirs | None = None,
    *,
    preset: str = "small-onnx",
    device: str = "cpu",
    cpu_threads: int | None = None,
    cache_dir: Path | str | None = None,
    **overrides: Any,
) -> Any:
    """A ``paddleocr.PaddleOCR`` text pipeline (detection + recognition, no doc preprocessing).

    ``preset="small-onnx"`` (default): PP-OCRv6 small from the rapidocr wheel, offline,
    ``engine="onnxruntime"``. ``preset="server"``: PP-OCRv6 medium by name (PaddleOCR fetches
    the weights; use with ``device="gpu:0"``). ``overrides`` go to ``PaddleOCR`` unchanged
    (e.g. ``text_det_limit_side_len=960, text_det_limit_type="max"`` for speed).
    """
    from paddleocr import PaddleOCR

    kw: dict[str, Any] = {
        "use_doc_orientation_classify": False,
        "use_doc_unwarping": False,
        "use_textline_orientation": False,
        **_engine_kwargs(preset, device, cpu_threads),
    }
    if preset == "server":
        kw["text_detection_model_name"] = SERVER_DET_MODEL_NAME
        kw["text_recognition_model_name"] = SERVER_REC_MODEL_NAME
    else:
        dirs = model_dirs or build_model_dirs(cache_dir)
        kw["text_detection_model_name"] = dirs.det_model_name
        kw["text_detection_model_dir"] = str(dirs.det)
        kw["text_recognition_model_name"] = dirs.rec_model_name
        kw["text_recognition_model_dir"] = str(dirs.rec)
    kw.update(overrides)
    return PaddleOCR(**kw)


def create_text_detector(
    model_dirs: PPOCRModelDirs | None = None,
    *,
    device: str = "cpu",
    cpu_threads: int | None = None,
    cache_dir: Path | str | None = None,
    **overrides: Any,
) -> Any:
    """``paddleocr.TextDetection`` on the offline PP-OCRv6 small det model.

    ``det.predict(path_or_bgr_array)`` -> results with ``res["dt_polys"]`` (N x 4 x 2 int)
    and ``res["dt_scores"]``.
    """
    from paddleocr import TextDetection

    dirs = model_dirs or build_model_dirs(cache_dir)
    kw = _engine_kwargs("small-onnx", device, cpu_threads)
    kw.update(overrides)
    return TextDetection(model_name=dirs.det_model_name, model_dir=str(dirs.det), **kw)


def create_text_recognizer(
    model_dirs: PPOCRModelDirs | None = None,
    *,
    device: str = "cpu",
    cpu_threads: int | None = None,
    cache_dir: Path | str | None = None,
    **overrides: Any,
) -> Any:
    """``paddleocr.TextRecognition`` on the offline PP-OCRv6 small rec model.

    ``rec.predict(line_crop_bgr)`` -> results with ``res["rec_text"]`` and ``res["rec_score"]``.
    """
    from paddleocr import TextRecognition

    dirs = model_dirs or build_model_dirs(cache_dir)
    kw = _engine_kwargs("small-onnx", device, cpu_threads)
    kw.update(overrides)
    return TextRecognition(model_name=dirs.rec_model_name, model_dir=str(dirs.rec), **kw)


# ---------------------------------------------------------------- RapidOCR engine
def _check_det_size(limit_side_len: int | None, limit_type: str | None) -> tuple[int, str]:
    side = DET_LIMIT_SIDE_LEN if limit_side_len is None else int(limit_side_len)
    kind = DET_LIMIT_TYPE if limit_type is None else str(limit_type)
    if side < 32:
        raise ValueError(f"OCR limit_side_len must be >= 32, got {side}")
    if kind not in DET_LIMIT_TYPES:
        raise ValueError(f"OCR limit_type must be one of {DET_LIMIT_TYPES}, got {kind!r}")
    return side, kind


class RapidOcrPipeline:
    """PP-OCR detection + recognition on the ONNX files through RapidOCR, set up like
    PaddleOCR's text pipeline (no orientation classifier, no image pre-scaling, the same
    detection size, DB thresholds and normalisation, batches of 6 line crops).

    ``predict(image)`` takes a path or a BGR array and returns one result dict with
    ``rec_texts``, ``rec_scores`` and ``rec_polys`` (N x 4 x 2), as PaddleOCR does.
    One difference: PaddleX caps the detector input at 4,000 px on the longer side
    (:data:`DET_MAX_SIDE_LIMIT`); here that is done before detection too, with the line
    crops still cut from the full-resolution image.
    """

    engine = "rapidocr"

    def __init__(
        self,
        det_onnx: Path,
        rec_onnx: Path,
        *,
        cpu_threads: int | None = None,
        limit_side_len: int | None = None,
        limit_type: str | None = None,
    ) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise PPOCRSetupError(
                f"rapidocr is not importable ({e}); install it (requirements/cpu.txt) or "
                "use engine='paddleocr'"
            ) from e
        self.limit_side_len, self.limit_type = _check_det_size(limit_side_len, limit_type)
        threads = int(cpu_threads) if cpu_threads else -1
        params: dict[str, Any] = {
            "Global.use_cls": False,
            "Global.use_preprocess_img": False,
            "Global.use_vertical_padding": False,
            "Global.text_score": 0.0,
            "Global.log_level": "warning",
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,  # as PaddleX (ORT default)
            "Det.model_path": str(det_onnx),
            "Det.limit_side_len": self.limit_side_len,
            "Det.limit_type": self.limit_type,
            "Det.mean": list(DET_MEAN),
            "Det.std": list(DET_STD),
            "Det.thresh": DET_THRESH,
            "Det.box_thresh": DET_BOX_THRESH,
            "Det.unclip_ratio": DET_UNCLIP_RATIO,
            "Det.use_dilation": False,
            "Det.score_mode": "fast",
            "Rec.model_path": str(rec_onnx),
            "Rec.rec_img_shape": list(REC_IMAGE_SHAPE),
            "Rec.rec_batch_num": REC_BATCH_SIZE,
        }
        self._ocr = RapidOCR(params=params)
        self._ocr._load_det_model()  # load now, not on the first image
        self._ocr._load_rec_model()
        self._det = self._ocr.text_det

    def _detect(self, bgr: Any) -> Any:
        """Detection with PaddleX's 4,000 px cap on the detector input."""
        import numpy as np

        h, w = bgr.shape[:2]
        side, kind = self.limit_side_len, self.limit_type
        scale = 1.0
        if kind == "min" and min(h, w) < side:
            scale = side / min(h, w)
        elif kind == "max" and max(h, w) > side:
            scale = side / max(h, w)
        if max(h, w) * scale <= DET_MAX_SIDE_LIMIT:
            return self._det(bgr)
        import cv2

        r = DET_MAX_SIDE_LIMIT / max(h, w)
        small = cv2.resize(bgr, (max(32, int(w * r)), max(32, int(h * r))))
        out = self._det(small)
        if out.boxes is not None:
            out.boxes = (np.asarray(out.boxes, dtype=np.float32) / r).astype(np.float32)
        return out

    def predict(self, image: str | Path | Any) -> list[dict[str, Any]]:
        import cv2
        import numpy as np
        from rapidocr.utils.process_img import get_rotate_crop_image

        if isinstance(image, (str, Path)):
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{image}: not a readable image")
        else:
            bgr = np.ascontiguousarray(image)
        det = self._detect(bgr)
        empty = {"rec_texts": [], "rec_scores": [], "rec_polys": []}
        if det.boxes is None or len(det.boxes) == 0:
            return [empty]
        boxes = [np.asarray(b, dtype=np.float32) for b in det.boxes]
        crops = [_minarea_rect_crop(bgr, b, get_rotate_crop_image) for b in boxes]
        texts, scores = self._recognize(crops)
        return [{"rec_texts": texts, "rec_scores": scores, "rec_polys": boxes}]

    def _recognize(self, crops: list[Any]) -> tuple[list[str], list[float]]:
        """Line crops -> (texts, scores), batched exactly as PaddleX does.

        The recogniser attends over the whole padded width, so the padding changes its
        output: like PaddleX, crops are sorted by aspect ratio (stable), each resized on its
        own to height 48 and width ``max(320, 48 * ratio)`` (at most 3,200), and zero-padded
        to the widest of its batch of :data:`REC_BATCH_SIZE`.
        """
        import numpy as np

        rec = self._ocr.text_rec
        ratios = [c.shape[1] / float(c.shape[0]) for c in crops]
        order = sorted(range(len(crops)), key=lambda i: ratios[i])
        texts: list[str] = [""] * len(crops)
        scores: list[float] = [0.0] * len(crops)
        for start in range(0, len(order), REC_BATCH_SIZE):
            idx = order[start : start + REC_BATCH_SIZE]
            imgs = [_rec_resize_norm(crops[i]) for i in idx]
            width = max(im.shape[2] for im in imgs)
            batch = np.stack(
                [np.pad(im, ((0, 0), (0, 0), (0, width - im.shape[2]))) for im in imgs]
            )
            preds = rec.session(batch.astype(np.float32))
            lines, _ = rec.postprocess_op(preds, False)
            for i, (text, score) in zip(idx, lines, strict=True):
                texts[i], scores[i] = str(text), float(score)
        return texts, scores


def _minarea_rect_crop(img: Any, box: Any, rotate_crop: Any) -> Any:
    """PaddleX's ``CropByPolys.get_minarea_rect_crop`` (quad boxes): the line crop."""
    import cv2
    import numpy as np

    rect = cv2.minAreaRect(np.asarray(box).astype(np.int32))
    pts = sorted(cv2.boxPoints(rect), key=lambda p: p[0])
    a, d = (0, 1) if pts[1][1] > pts[0][1] else (1, 0)
    b, c = (2, 3) if pts[3][1] > pts[2][1] else (3, 2)
    return rotate_crop(img, np.array([pts[a], pts[b], pts[c], pts[d]]))


def _rec_resize_norm(img: Any, max_width: int = 3200) -> Any:
    """PaddleX's ``OCRReisizeNormImg.resize`` (text_recognition/processors.py) for one crop."""
    import math

    import cv2
    import numpy as np

    c, h, w_min = REC_IMAGE_SHAPE
    ratio = img.shape[1] / float(img.shape[0])
    width = int(h * max(w_min / h, ratio))
    if width > max_width:
        resized, new_w, width = cv2.resize(img, (max_width, h)), max_width, max_width
    else:
        new_w = min(width, math.ceil(h * ratio))
        resized = cv2.resize(img, (new_w, h))
    arr = resized.astype("float32").transpose((2, 0, 1)) / 255
    arr -= 0.5
    arr /= 0.5
    out = np.zeros((c, h, width), dtype=np.float32)
    out[:, :, :new_w] = arr
    return out


def create_rapidocr(
    model_files: tuple[Path, Path] | None = None,
    *,
    cpu_threads: int | None = None,
    limit_side_len: int | None = None,
    limit_type: str | None = None,
) -> RapidOcrPipeline:
    """:class:`RapidOcrPipeline` on the PP-OCRv6 small ONNX files (default: the rapidocr wheel's)."""
    det, rec = model_files or rapidocr_onnx_files()
    return RapidOcrPipeline(
        det, rec, cpu_threads=cpu_threads, limit_side_len=limit_side_len, limit_type=limit_type
    )


def create_ocr(
    engine: str = "rapidocr",
    *,
    preset: str = "small-onnx",
    device: str = "cpu",
    cpu_threads: int | None = None,
    cache_dir: Path | str | None = None,
    limit_side_len: int | None = None,
    limit_type: str | None = None,
    **overrides: Any,
) -> Any:
    """The OCR engine ``engine`` (:data:`ENGINES`); ``ocr_lines(engine, image)`` runs it.

    ``rapidocr`` serves the offline small models on CPU only (``preset="small-onnx"``,
    ``device="cpu"``, no ``overrides``); ask for ``paddleocr`` for anything else.
    ``limit_side_len`` / ``limit_type``: the detection size (module docstring).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown OCR engine {engine!r}; choose one of {ENGINES}")
    side, kind = _check_det_size(limit_side_len, limit_type)
    if engine == "rapidocr":
        if preset != "small-onnx" or device.split(":")[0].lower() != "cpu" or overrides:
            raise ValueError(
                "OCR engine 'rapidocr' runs the offline small models on CPU only "
                f"(got preset={preset!r}, device={device!r}, options={sorted(overrides)}); "
                "use engine 'paddleocr'"
            )
        return create_rapidocr(cpu_threads=cpu_threads, limit_side_len=side, limit_type=kind)
    overrides.setdefault("text_det_limit_side_len", side)
    overrides.setdefault("text_det_limit_type", kind)
    return create_paddleocr(
        preset=preset, device=device, cpu_threads=cpu_threads, cache_dir=cache_dir, **overrides
    )


# ---------------------------------------------------------------- running
def _poly_box(poly: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    xs = [float(p[0]) for p in poly]
    ys = [float(p[1]) for p in poly]
    return min(xs), min(ys), max(xs), max(ys)


def ocr_lines(ocr: Any, image: str | Path | Any, *, min_score: float = 0.0) -> list[OcrLine]:
    """Run a PaddleOCR pipeline on one image (path or BGR array); lines in reading order."""
    src = str(image) if isinstance(image, (str, Path)) else image
    results = list(ocr.predict(src))
    lines: list[OcrLine] = []
    for res in results:
        texts = res["rec_texts"]
        scores = res["rec_scores"]
        polys = res["rec_polys"]
        for text, score, poly in zip(texts, scores, polys, strict=True):
            if not text or float(score) < min_score:
                continue
            pts = [(float(x), float(y)) for x, y in poly]
            lines.append(OcrLine(text=str(text), score=float(score), box=_poly_box(pts), poly=pts))
    return reading_order(lines)


def group_rows(lines: Sequence[OcrLine], *, row_overlap: float = 0.5) -> list[list[OcrLine]]:
    """Rows top-to-bottom, each sorted left-to-right.

    Lines are taken by vertical centre; a line joins the current row when its centre lies
    within the row's band of centres widened by ``row_overlap`` x the median line height.
    """
    if not lines:
        return []
    heights = sorted(max(1.0, ln.box[3] - ln.box[1]) for ln in lines)
    tol = heights[len(heights) // 2] * row_overlap
    rows: list[list[OcrLine]] = []
    band = (0.0, 0.0)
    for ln in sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2):
        cy = (ln.box[1] + ln.box[3]) / 2
        if rows and band[0] - tol <= cy <= band[1] + tol:
            rows[-1].append(ln)
            band = (min(band[0], cy), max(band[1], cy))
        else:
            rows.append([ln])
            band = (cy, cy)
    return [sorted(row, key=lambda ln: ln.box[0]) for row in rows]


def reading_order(lines: Sequence[OcrLine], *, row_overlap: float = 0.5) -> list[OcrLine]:
    """Lines top-to-bottom, left-to-right within a row (see :func:`group_rows`)."""
    return [ln for row in group_rows(lines, row_overlap=row_overlap) for ln in row]


def lines_to_text(lines: Sequence[OcrLine], *, row_sep: str = "\n", col_sep: str = "  ") -> str:
    """Plain text: one output line per row, the lines of a row joined by ``col_sep``."""
    return row_sep.join(col_sep.join(ln.text for ln in row) for row in group_rows(lines))
