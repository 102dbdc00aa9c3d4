"""The OCR + LLM pipeline as a backend (``ocr-llm``): PP-OCR reads the page, an LLM fills the JSON.

The system PaddleOCR-VL is benchmarked against (PP-OCR + ERNIE-4.5-21B-A3B), runnable on
any image like every other backend: ``make predict ... --backend ocr-llm``, ``make serve``
with ``backend: ocr-llm``, and ``make baseline`` (the benchmark's convenient command).

Per image:

1. **OCR** — a PaddleOCR text pipeline (``data_tools.ppocr``; default the offline
   PP-OCRv6 small ONNX models from the rapidocr wheel, ``preset: server`` selects PP-OCRv6
   medium for GPU users) on the image the extractor prepared. Lines come in reading order
   and are cached on disk (``inference.ocr_cache``) keyed by the source file's sha256 (the
   pixels' hash for in-memory images), under the OCR configuration's identity (preset,
   options, model fingerprint); ``eval.ocr_ceiling`` reads that cache against gold.
2. **LLM** — any OpenAI-compatible endpoint (``data_tools.llm_client``; by default
   FastDeploy serving ERNIE-4.5-21B-A3B-Paddle) gets the OCR text and exactly the JSON
   skeleton the prompt requests (the prompt grammar the VLM gets; ``OCR:{}`` = the schema's
   whole skeleton) and answers JSON, which the extractor parses like any model output.

A page of a PDF or OFD with a text layer (``data_tools.documents``; the caller puts it in
``image.info["text_layer"]``) is not OCRed: its own text goes to the LLM, as invoice tools
that read native e-invoices do, and the row says so (``info.ocr.source: text_layer:pdf``).

The generation carries ``info`` for the prediction row: per-stage latency (``ocr``,
``llm``), the OCR line count, where the text came from and whether the OCR was cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_tools.llm_client import EndpointConfig
from data_tools.prompts import parse_prompt
from inference.backends.base import BackendError, BackendUnavailable, Generation
from inference.backends.endpoint import EndpointBackend

log = logging.getLogger(__name__)

DEFAULT_LLM = "ERNIE-4.5-21B-A3B-Paddle"
SYSTEM_PROMPT = (
    "你是发票信息抽取助手。输入是一张发票经 OCR 识别后的文字（按阅读顺序逐行排列，"
    "同一行的文字块用两个空格隔开）和一个 JSON 模板。请按模板填写：键名和顺序与模板完全一致，"
    '值照抄发票上印刷的内容（金额保留符号与小数，日期保持原格式）；发票上没有的值填空字符串 ""；'
    "列表中每一行明细写一个对象。只输出 JSON，不要任何解释。"
)
USER_TEMPLATE = "OCR 文本：\n{ocr_text}\n\nJSON 模板：\n{skeleton}"


@dataclass
class OcrSettings:
    """The OCR stage (``ocr:`` block of a predict / serve config)."""

    engine: str = "auto"  # auto | rapidocr | paddleocr (auto: rapidocr where it can run)
    preset: str = "small-onnx"  # small-onnx | server
    device: str = "cpu"
    cpu_threads: int | None = None
    limit_side_len: int | None = None  # detection size (data_tools.ppocr); None: full size
    limit_type: str | None = None  # "min" | "max"
    cache_dir: str | None = "outputs/ocr_cache"  # None or "": no cache
    model_cache_dir: str | None = None  # where the PaddleX model dirs are built
    options: dict[str, Any] = field(default_factory=dict)  # passed to PaddleOCR(...)

    def __post_init__(self) -> None:
        if self.preset not in ("small-onnx", "server"):
            raise ValueError(f"ocr.preset must be 'small-onnx' or 'server', got {self.preset!r}")
        if self.engine not in ("auto", "rapidocr", "paddleocr"):
            raise ValueError(
                f"ocr.engine must be 'auto', 'rapidocr' or 'paddleocr', got {self.engine!r}"
            )

    @property
    def resolved_engine(self) -> str:
        """RapidOCR (same ONNX models, same lines, loads in a fraction of the time) where it
        can run: the offline small models on CPU without PaddleOCR options."""
        if self.engine != "auto":
            return self.engine
        on_cpu = self.device.split(":")[0].lower() == "cpu"
        return (
            "rapidocr"
            if self.preset == "small-onnx" and on_cpu and not self.options
            else "paddleocr"
        )

    def identity(self) -> dict[str, Any]:
        """What determines the OCR output: the cache key's configuration part. The engine is
        not in it: both read the same lines from the same models (benchmarks/startup.py)."""
        from data_tools.ppocr import models_fingerprint

        return {
            "preset": self.preset,
            "options": self.options,
            "det": [self.limit_side_len, self.limit_type],
            "models": models_fingerprint() if self.preset == "small-onnx" else "hub",
            "version": 3,
        }


@dataclass
class LlmPrompting:
    """How the OCR text is put to the LLM (``llm:`` block)."""

    system_prompt: str = SYSTEM_PROMPT
    user_template: str = USER_TEMPLATE
    schema: str | None = "vat_invoice"  # the skeleton of OCR:{}

    def __post_init__(self) -> None:
        for key in ("{ocr_text}", "{skeleton}"):
            if key not in self.user_template:
                raise ValueError(f"llm.user_template must contain {key}")


def skeleton_for(prompt: str, schema: Any | None) -> dict[str, Any]:
    """The JSON template the LLM fills: the request itself, or the schema skeleton for ``OCR:{}``."""
    request = parse_prompt(prompt)
    if request:
        return request
    if schema is None:
        raise BackendError("a full prompt (OCR:{}) needs a schema to build the JSON template")
    return schema.skeleton()


def build_messages(ocr_text: str, skeleton: dict[str, Any], llm: LlmPrompting) -> list[dict]:
    user = llm.user_template.format(
        ocr_text=ocr_text, skeleton=json.dumps(skeleton, ensure_ascii=False)
    )
    return [{"role": "system", "content": llm.system_prompt}, {"role": "user", "content": user}]


def pixels_sha256(image: Image.Image) -> str:
    """A content key for an in-memory image: mode, size and pixels."""
    h = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


class PaddleOcrEngine:
    """The PP-OCR engine (RapidOCR or PaddleOCR), created on first use; one call at a time."""

    def __init__(self, settings: OcrSettings) -> None:
        self.settings = settings
        self._ocr: Any = None
        self._lock = threading.Lock()

    def __call__(self, image: Image.Image) -> list[Any]:
        from data_tools.ppocr import create_ocr, ocr_lines

        with self._lock:
            if self._ocr is None:
                s = self.settings
                self._ocr = create_ocr(
                    s.resolved_engine,
                    preset=s.preset,
                    device=s.device,
                    cpu_threads=s.cpu_threads,
                    cache_dir=s.model_cache_dir,
                    limit_side_len=s.limit_side_len,
                    limit_type=s.limit_type,
                    **s.options,
                )
            bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
            return ocr_lines(self._ocr, bgr)


def cached_ocr(
    key: str, image: Image.Image, engine: Any, cache: Any
) -> tuple[list[Any], float, bool]:
    """OCR ``image`` through ``cache`` (``key``: the source file's sha256, or the pixels')."""
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit.lines, hit.ocr_s, True
    t0 = time.perf_counter()
    try:
        lines = engine(image)
    except Exception as e:  # the OCR engine failed on this image
        raise BackendError(f"OCR failed: {type(e).__name__}: {e}") from e
    seconds = time.perf_counter() - t0
    if cache is not None:
        cache.put(key, lines, seconds)
    return lines, seconds, False


def ocr_files(
    paths: Sequence[Path], ocr: OcrSettings, image_options: Any = None, engine: Any = None
) -> list[tuple[Path, list[Any] | None, str]]:
    """OCR image files the way the ``ocr-llm`` backend does, filling its cache (OCR only, no
    LLM: what ``eval.ocr_ceiling --run-ocr`` needs). Returns ``(path, lines | None, status)``
    with status ``cached``, ``ocr`` or the error."""
    from inference.imaging import ImageError, ImageOptions, prepare_image
    from inference.ocr_cache import OcrCache, image_sha256

    cache = OcrCache(ocr.cache_dir, ocr.identity()) if ocr.cache_dir else None
    engine = engine or PaddleOcrEngine(ocr)
    options = image_options or ImageOptions()
    out: list[tuple[Path, list[Any] | None, str]] = []
    for path in paths:
        try:
            prepared = prepare_image(path, options)
            lines, _, hit = cached_ocr(image_sha256(path), prepared.image, engine, cache)
        except (ImageError, BackendError, OSError) as e:
            out.append((path, None, str(e)))
            continue
        out.append((path, lines, "cached" if hit else "ocr"))
    return out


class OcrLlmBackend(EndpointBackend):
    """PP-OCR text → an LLM behind an OpenAI-compatible endpoint → JSON text."""

    name = "ocr-llm"
    wants_source_sha256 = True  # the OCR cache is keyed by the source file (eval.ocr_ceiling)

    def __init__(
        self,
        endpoint: EndpointConfig,
        *,
        ocr: OcrSettings | None = None,
        llm: LlmPrompting | None = None,
        engine: Any = None,
        options: Any = None,
    ) -> None:
        super().__init__(endpoint, options)
        from data_tools.schema import load_schema

        self.ocr = ocr or OcrSettings()
        self.llm = llm or LlmPrompting()
        try:
            self.schema = load_schema(self.llm.schema) if self.llm.schema else None
        except (FileNotFoundError, ValueError) as e:
            raise BackendUnavailable(f"ocr-llm: llm.schema: {e}") from e
        self.engine = engine or PaddleOcrEngine(self.ocr)
        self.cache = None
        if self.ocr.cache_dir:
            from inference.ocr_cache import OcrCache

            self.cache = OcrCache(self.ocr.cache_dir, self.ocr.identity())
        self.max_parallel = endpoint.max_concurrency or 4
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocr")

    @property
    def model_name(self) -> str:
        return f"ppocr-{self.ocr.preset}+{self.config.model}"

    def run_ocr(self, image: Image.Image) -> tuple[list[Any], float, bool]:
        """(lines, OCR seconds, cache hit); on a hit the seconds are the original run's."""
        key = image.info.get("source_sha256") or pixels_sha256(image)
        return cached_ocr(key, image, self.engine, self.cache)

    async def agenerate(self, image: Image.Image, prompt: str) -> Generation:
        from data_tools.ppocr import lines_to_text

        skeleton = skeleton_for(prompt, self.schema)
        layer = image.info.get("text_layer")  # a PDF / OFD page's own text (predict, serve)
        if layer is not None and getattr(layer, "lines", None):
            lines, ocr_s, hit, source = list(layer.lines), 0.0, False, f"text_layer:{layer.source}"
        else:
            loop = asyncio.get_running_loop()
            lines, ocr_s, hit = await loop.run_in_executor(self._pool, self.run_ocr, image)
            source = "ocr"
        messages = build_messages(lines_to_text(lines), skeleton, self.llm)
        result = await self.chat(messages, "LLM")
        return self.generation(
            result,
            self.model_name,
            stage_latency_s={"ocr": round(ocr_s, 4), "llm": round(result.latency_s, 4)},
            ocr={"source": source, "cache_hit": hit, "n_lines": len(lines)},
        )

    def close(self) -> None:
        super().close()
        self._pool.shutdown(wait=False)

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_name,
            "llm_endpoints": len(self.config.base_urls),
            "ocr_preset": self.ocr.preset,
        }
