"""Image checks and folder scans; PaddleOCR-VL's resize rule (`smart_resize`,
`visual_tokens`) is re-exported from `data_tools.paddleocr_vl`, its one home."""

from __future__ import annotations

import warnings
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


# Pillow's own decompression-bomb threshold: an image declaring more pixels than this is
# refused from its header, before any pixel is decoded (a 30000x30000 PNG is 900 M pixels).
CHECK_MAX_PIXELS = 89_478_485


def check_image(path: str | Path, *, max_pixels: int = CHECK_MAX_PIXELS) -> ImageInfo:
    """The image exists, declares at most `max_pixels` pixels and fully decodes; returns its
    size. Every problem, whatever Pillow raises for it, is a `BadImageError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise BadImageError(
                        f"{path}: declares {width}x{height} = {width * height:,} pixels, over the "
                        f"limit of {max_pixels:,}; downscale it or leave it out (--skip-bad)"
                    )
                im.load()
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(
            f"{path}: declares too many pixels ({exc}); downscale it or leave it out (--skip-bad)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImageError(f"{path}: does not decode as an image ({exc})") from None
    except Exception as exc:  # malformed headers reach Pillow bugs (struct.error, IndexError, ...)
        raise BadImageError(
            f"{path}: does not decode as an image ({type(exc).__name__}: {exc})"
        ) from None
    if width < 1 or height < 1:
        raise BadImageError(f"{path}: empty image ({width}x{height})")
    return ImageInfo(path, width, height)
