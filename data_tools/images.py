"""Image checks and folder scans; PaddleOCR-VL's resize rule (`smart_resize`,
`visual_tokens`) is re-exported from `data_tools.paddleocr_vl`, its one home."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from data_tools.paddleocr_vl import (
    MAX_PIXELS,
    MERGE_SIZE,
    MIN_PIXELS,
    PATCH_SIZE,
    smart_resize,
    visual_tokens,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# PaddleOCR-VL's resize rule lives with the model's other facts (data_tools.paddleocr_vl).
__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MERGE_SIZE",
    "MIN_PIXELS",
    "PATCH_SIZE",
    "BadImageError",
    "ImageInfo",
    "check_image",
    "find_images",
    "is_image_file",
    "smart_resize",
    "visual_tokens",
]


def is_image_file(path: Path) -> bool:
    """A file whose suffix (any case) is one of `IMAGE_SUFFIXES`."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: str | Path) -> list[Path]:
    """Every image file below `folder`, recursively, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if is_image_file(p))


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    width: int
    height: int


class BadImageError(ValueError):
    """An image that is missing or does not decode."""


def check_image(path: str | Path) -> ImageInfo:
    """The image exists and fully decodes; returns its size. Raises `BadImageError`."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            im.load()
            width, height = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"{path}: does not decode as an image ({exc})") from None
    if width < 1 or height < 1:
        raise BadImageError(f"{path}: empty image ({width}x{height})")
    return ImageInfo(path, width, height)
