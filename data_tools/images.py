"""Image checks and PaddleOCR-VL's resize rule (how many visual tokens an image costs).

PaddleOCR-VL's SigLIP processor resizes an image so both sides are multiples of
`patch_size * merge_size` (14 * 2 = 28) and the area lies in [min_pixels, max_pixels];
every 2x2 block of 14-px patches becomes one token for the language model.
The defaults are those of PaddleOCR-VL-0.9B's `preprocessor_config.json`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

PATCH_SIZE = 14
MERGE_SIZE = 2
MIN_PIXELS = 147384
MAX_PIXELS = 28 * 28 * 3600  # 2,822,400


def smart_resize(
    height: int,
    width: int,
    factor: int = PATCH_SIZE * MERGE_SIZE,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """The (height, width) PaddleOCR-VL resizes an image to (same rule as PaddleX's)."""
    if height < factor:
        width = round(width * factor / height)
        height = factor
    if width < factor:
        height = round(height * factor / width)
        width = factor
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {height}x{width} is over 200; PaddleOCR-VL refuses it")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def visual_tokens(
    height: int,
    width: int,
    *,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> int:
    """Number of image tokens the language model sees for an image of this size."""
    h, w = smart_resize(height, width, patch_size * merge_size, min_pixels, max_pixels)
    return (h // patch_size) * (w // patch_size) // (merge_size * merge_size)


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
