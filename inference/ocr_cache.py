"""OCR results cached on disk by image content hash.

    <cache_dir>/<config id>/<sha256[:2]>/<sha256>.json
    {"sha256", "config", "lines": [OcrLine.to_dict()...], "ocr_s", "created"}

``config id`` names the OCR setup (preset, options such as the detection size, and the
model files' content hash, ``data_tools.ppocr.models_fingerprint()``), so changing the OCR
or upgrading its weights never serves stale lines. The engine that read the image
(RapidOCR's loader or PaddleOCR) is not part of it: both read the same lines from the same
ONNX files (``tests/inference/test_baseline_ocr.py``). Entries are written atomically (temp file + rename);
a corrupt entry is ignored and recomputed. ``ocr_s`` is the time the OCR took when the
entry was made, so latency reports stay meaningful on cache hits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_tools.jsonl import atomic_write_text
from data_tools.ppocr import OcrLine

log = logging.getLogger(__name__)


def image_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_id(config: dict[str, Any]) -> str:
    """A readable, stable folder name for an OCR configuration."""
    text = json.dumps(config, sort_keys=True, ensure_ascii=False)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(config.get("preset", "ocr")))[:40]
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@dataclass
class CachedOcr:
    lines: list[OcrLine]
    ocr_s: float
    hit: bool


class OcrCache:
    def __init__(self, root: str | Path, config: dict[str, Any]) -> None:
        self.root = Path(root)
        self.config = config
        self.dir = self.root / config_id(config)

    def _path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.json"

    def get(self, sha: str) -> CachedOcr | None:
        path = self._path(sha)
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            lines = [OcrLine.from_dict(x) for x in d["lines"]]
            return CachedOcr(lines, float(d.get("ocr_s", 0.0)), True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable OCR cache entry (%s); recomputing", path, exc)
            return None

    def put(self, sha: str, lines: list[OcrLine], ocr_s: float) -> None:
        entry = {
            "sha256": sha,
            "config": self.config,
            "lines": [ln.to_dict() for ln in lines],
            "ocr_s": round(ocr_s, 4),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_text(self._path(sha), json.dumps(entry, ensure_ascii=False) + "\n")
