"""Images in, model-sized images out: safe decoding, min/max pixels, character-density downscale.

Every extractor backend gets the image this module prepares, so the visual-token budget is
decided in one place, whatever runs the model:

1. `load_image` decodes a path / bytes / PIL image / numpy array to RGB, refusing files whose
   *header* claims more than `max_image_pixels` (decompression bombs are caught before a
   single row is decoded);
2. `density_scale` (optional) estimates the ink pixels per character and returns the factor
   that brings them to about `target_ink` (the PaddleOCR-VL-KIE idea: ~50 ink pixels per
   character are enough to read it); it never upscales;
3. `fit_pixels` resizes to PaddleOCR-VL's own grid (`smart_resize`: sides multiples of 28,
   area within [min_pixels, max_pixels]); the model's processor then leaves it as it is.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from data_tools.images import MAX_PIXELS, MIN_PIXELS, smart_resize

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # a 600-dpi A3 scan is ~70 MP; phone photos ~12-50 MP
DEFAULT_TARGET_INK = 50.0
_ANALYSIS_PIXELS = 2_000_000  # density is estimated on a copy of at most this many pixels


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


class ImageTooLarge(ImageError):
    """The image (per its header) has more pixels than allowed."""


@dataclass(frozen=True)
class ImageOptions:
    """How images are prepared for the model.

    `char_density`: target ink pixels per character (None: off). `max_image_pixels`: refuse
    larger inputs (header check, before decoding).
    """

    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    char_density: float | None = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.min_pixels < 28 * 28 or self.max_pixels < self.min_pixels:
            raise ValueError(
                f"need 784 <= min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}"
            )
        if self.char_density is not None and self.char_density <= 0:
            raise ValueError(f"char_density must be > 0, got {self.char_density}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ImageOptions:
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"image options: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True)
class PreparedImage:
    image: Image.Image  # RGB, the size the model sees
    original_size: tuple[int, int]  # (width, height) as given
    density_scale: float  # 1.0 when the density downscale is off or did nothing

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _open_checked(data: bytes | Path, max_image_pixels: int, what: str) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"{what}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not an image (unrecognised format)") from None
    except OSError as e:
        raise ImageError(f"{what}: cannot be read as an image ({e})") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"{what}: empty image ({w}x{h})")
    if w * h > max_image_pixels:
        im.close()
        raise ImageTooLarge(
            f"{what}: {w}x{h} = {w * h} pixels is over the limit of {max_image_pixels}; "
            "scale the image down before sending it"
        )
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{what}: image data does not decode ({e})") from None
    return im


def load_image(
    src: str | Path | bytes | Image.Image | np.ndarray,
    *,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode `src` to an RGB image (EXIF orientation applied). Raises `ImageError`."""
    if isinstance(src, Image.Image):
        w, h = src.size
        if w * h > max_image_pixels:
            raise ImageTooLarge(f"image {w}x{h} is over the limit of {max_image_pixels} pixels")
        im = src
    elif isinstance(src, np.ndarray):
        if src.ndim not in (2, 3) or src.size == 0:
            raise ImageError(f"array of shape {src.shape} is not an image")
        if src.shape[0] * src.shape[1] > max_image_pixels:
            raise ImageTooLarge(f"array {src.shape} is over the limit of {max_image_pixels} pixels")
        im = Image.fromarray(src.astype(np.uint8) if src.dtype != np.uint8 else src)
    elif isinstance(src, bytes | bytearray | memoryview):
        im = _open_checked(bytes(src), max_image_pixels, "image bytes")
    else:
        path = Path(src)
        if not path.is_file():
            raise ImageError(f"{path}: file not found")
        im = _open_checked(path, max_image_pixels, str(path))
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not lose the image
        log.debug("EXIF orientation ignored", exc_info=True)
    return im.convert("RGB") if im.mode != "RGB" else im


# ---------------------------------------------------------------- character density


def _otsu_threshold(gray: np.ndarray) -> int:
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    omega = np.cumsum(hist) / total
    mu = np.cumsum(hist * np.arange(256)) / total
    mu_t = mu[-1]
    denom = omega * (1.0 - omega)
    denom[denom == 0] = np.nan
    sigma_b = (mu_t * omega - mu) ** 2 / denom
    return int(np.nanargmax(sigma_b)) if np.isfinite(sigma_b).any() else 128


@dataclass(frozen=True)
class InkStats:
    characters: int  # glyph-sized connected components
    ink_pixels: float  # their ink area, in pixels of the original image
    ink_per_char: float


def ink_stats(image: Image.Image) -> InkStats:
    """Estimate glyph count and ink per glyph: Otsu binarisation + connected components.

    Components that are specks (< 3 px) or not glyph-sized (longer than 1/8 of the page
    side: ruling lines, frames, stamps) are ignored. A CJK character made of several
    components counts several times, which underestimates the ink per character and so
    errs toward downscaling less.
    """
    from scipy import ndimage

    w, h = image.size
    r = min(1.0, math.sqrt(_ANALYSIS_PIXELS / (w * h)))
    gray_im = image.convert("L")
    if r < 1.0:
        gray_im = gray_im.resize((max(1, round(w * r)), max(1, round(h * r))), Image.BILINEAR)
    gray = np.asarray(gray_im, dtype=np.uint8)
    t = _otsu_threshold(gray)
    ink = gray <= t
    if ink.mean() > 0.5:  # light text on a dark background
        ink = ~ink
    labels, n = ndimage.label(ink, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return InkStats(0, 0.0, 0.0)
    objects = ndimage.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    gh, gw = gray.shape
    max_h, max_w = max(3, gh // 8), max(3, gw // 8)
    keep_area = 0
    count = 0
    for i, sl in enumerate(objects):
        if sl is None:
            continue
        bh, bw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if areas[i] < 3 or bh > max_h or bw > max_w:
            continue
        keep_area += int(areas[i])
        count += 1
    if count == 0:
        return InkStats(0, 0.0, 0.0)
    ink_orig = keep_area / (r * r)
    return InkStats(count, ink_orig, ink_orig / count)


def density_scale(
    image: Image.Image, target_ink: float = DEFAULT_TARGET_INK, min_characters: int = 20
) -> float:
    """Linear factor (<= 1) that brings the ink per character to about `target_ink`.

    Ink area scales with the square of the linear factor. Returns 1.0 (no change) when
    fewer than `min_characters` glyphs are found or the text is already small.
    """
    stats = ink_stats(image)
    if stats.characters < min_characters or stats.ink_per_char <= target_ink:
        return 1.0
    return math.sqrt(target_ink / stats.ink_per_char)


# ---------------------------------------------------------------- the model's grid


def fit_pixels(image: Image.Image, min_pixels: int, max_pixels: int) -> Image.Image:
    """Resize to PaddleOCR-VL's grid (sides multiple of 28, area in [min, max]), bicubic."""
    w, h = image.size
    try:
        th, tw = smart_resize(h, w, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as e:
        raise ImageError(str(e)) from None
    if (tw, th) == (w, h):
        return image
    return image.resize((tw, th), Image.BICUBIC)


def prepare_image(
    src: str | Path | bytes | Image.Image | np.ndarray, options: ImageOptions
) -> PreparedImage:
    """Decode, optionally downscale by character density, and fit to the model's grid."""
    image = load_image(src, max_image_pixels=options.max_image_pixels)
    original = image.size
    scale = 1.0
    if options.char_density is not None:
        scale = density_scale(image, options.char_density)
        if scale < 1.0:
            w, h = image.size
            image = image.resize(
                (max(28, round(w * scale)), max(28, round(h * scale))), Image.LANCZOS
            )
            log.debug("density downscale %.3f: %s -> %s", scale, original, image.size)
    return PreparedImage(fit_pixels(image, options.min_pixels, options.max_pixels), original, scale)


def encode_image(image: Image.Image, fmt: str = "PNG", quality: int = 92) -> tuple[bytes, str]:
    """Bytes and MIME type of `image` (PNG by default: lossless, as the model saw it)."""
    buf = io.BytesIO()
    fmt = fmt.upper()
    if fmt in ("JPG", "JPEG"):
        image.save(buf, format="JPEG", quality=quality)
        return buf.getvalue(), "image/jpeg"
    image.save(buf, format=fmt)
    return buf.getvalue(), f"image/{fmt.lower()}"
