"""Images in, model-sized images out: one preparation path for every caller.

Every extractor backend gets the image this module prepares, so the visual-token budget is
decided in one place, whatever runs the model:

1. `open_image` reads only the *header* of a path / bytes / PIL image / numpy array: the
   format must be on the allowlist (`ImageOptions.formats`; Pillow is never asked to
   guess among its ~40 plugins, so EPS never reaches Ghostscript), and an image whose
   header claims more than `max_image_pixels` is refused before a row is decoded
   (decompression bombs). A large JPEG is set to decode at a DCT-reduced size (draft
   mode: 1/2, 1/4, 1/8) that is still at least the model's input size, so a 48 MP photo
   decodes in a fraction of the memory and time. `OpenedImage.cost_pixels` is what the
   decode will hold in memory — the HTTP service reserves it from a budget shared by
   concurrent requests before decoding;
2. `prepare_opened` decodes (any decoder failure, including PNG text/ICC chunks that
   inflate past Pillow's limits, is an `ImageError`), applies the EXIF orientation only
   when the image is tagged with one, optionally downscales by character density
   (`density_scale`: ~50 ink pixels per character are enough to read it, PaddleOCR-VL-KIE's
   idea; never upscales), and fits PaddleOCR-VL's grid (`fit_pixels`: sides multiples of
   28, area within [min_pixels, max_pixels]; no resize when the size does not change);
   the model's processor then leaves it as it is. The prepared image is never the object
   Pillow opened over the file or bytes (`_detached`, a copy when nothing else made a new
   one): closing the `OpenedImage` or its file cannot invalidate what the model is given.

`prepare_image` does both. Several prompts on one image share one `PreparedImage`
(`Extractor.prepare` once, then `Extractor.extract(prepared, query)` per prompt).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from data_tools.images import MAX_PIXELS, MIN_PIXELS, smart_resize

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # a 600-dpi A3 scan is ~70 MP; phone photos ~12-50 MP
DEFAULT_TARGET_INK = 50.0
_ANALYSIS_PIXELS = 2_000_000  # density is estimated on a copy of at most this many pixels
_GRID = 28  # PaddleOCR-VL: patch 14 x merge 2

#: Pillow formats accepted by default: what scanners, phones and browsers produce
#: ("JPEG" also opens MPO, the multi-picture JPEG many phones write).
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
#: never allowed: Pillow hands EPS to Ghostscript where it is installed
_UNSAFE_FORMATS = frozenset({"EPS"})
_ORIENTATION_TAG = 0x0112


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


class ImageTooLarge(ImageError):
    """The image (per its header) has more pixels than allowed."""


def _known_formats() -> set[str]:
    Image.init()
    return set(Image.OPEN)


@dataclass(frozen=True)
class ImageOptions:
    """How images are prepared for the model.

    `char_density`: target ink pixels per character (None: off). `max_image_pixels`: refuse
    larger inputs (header check, before decoding). `formats`: the Pillow formats accepted.
    """

    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    char_density: float | None = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    formats: tuple[str, ...] = DEFAULT_FORMATS

    def __post_init__(self) -> None:
        if self.min_pixels < _GRID * _GRID or self.max_pixels < self.min_pixels:
            raise ValueError(
                f"need 784 <= min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}"
            )
        if self.char_density is not None and self.char_density <= 0:
            raise ValueError(f"char_density must be > 0, got {self.char_density}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if isinstance(self.formats, str) or not all(isinstance(f, str) for f in self.formats):
            raise ValueError(f"formats: a list of Pillow format names, got {self.formats!r}")
        formats = tuple(dict.fromkeys(f.upper() for f in self.formats))
        if not formats:
            raise ValueError("formats: at least one image format")
        unsafe = sorted(set(formats) & _UNSAFE_FORMATS)
        if unsafe:
            raise ValueError(f"formats: {unsafe} cannot be allowed (Pillow runs Ghostscript)")
        unknown = sorted(set(formats) - _known_formats())
        if unknown:
            raise ValueError(
                f"formats: {unknown} unknown to Pillow; known: {sorted(_known_formats())}"
            )
        object.__setattr__(self, "formats", formats)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ImageOptions:
        """Typed and checked by the one config loader (unknown keys name the nearest)."""
        from data_tools.config import build

        return build(cls, dict(d or {}), source="image options")


@dataclass(frozen=True)
class PreparedImage:
    image: Image.Image  # RGB, the size the model sees
    original_size: tuple[int, int]  # (width, height) as given
    density_scale: float  # 1.0 when the density downscale is off or did nothing

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass
class OpenedImage:
    """An image whose header was read and checked; nothing decoded yet (see `open_image`)."""

    image: Image.Image  # lazy for files and bytes; draft size already set for JPEGs
    original_size: tuple[int, int]  # (width, height) per the header
    format: str | None  # Pillow's name; None for in-memory images and arrays
    what: str  # names the input in errors

    @property
    def cost_pixels(self) -> int:
        """Pixels the decode holds (after the JPEG draft reduction)."""
        w, h = self.image.size
        return w * h

    def close(self) -> None:
        self.image.close()


def _too_large(what: str, w: int, h: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"{what}: {w}x{h} = {w * h} pixels is over the limit of {limit}; "
        "scale the image down before sending it"
    )


def _target_size(w: int, h: int, options: ImageOptions) -> tuple[int, int] | None:
    """(width, height) the model grid asks for, or None when it cannot be computed."""
    try:
        th, tw = smart_resize(h, w, min_pixels=options.min_pixels, max_pixels=options.max_pixels)
    except ValueError:
        return None
    return max(tw, _GRID), max(th, _GRID)


def _open_checked(data: bytes | Path, options: ImageOptions, what: str, draft: bool) -> OpenedImage:
    fp: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        im = Image.open(fp, formats=list(options.formats))
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"{what}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{what}: not an image of an accepted format ({', '.join(options.formats)})"
        ) from None
    except Exception as e:  # Pillow's header parsers raise a zoo of types on hostile bytes
        raise ImageError(f"{what}: image header cannot be read ({type(e).__name__}: {e})") from None
    try:
        w, h = im.size
        if w < 1 or h < 1:
            raise ImageError(f"{what}: empty image ({w}x{h})")
        if w * h > options.max_image_pixels:
            raise _too_large(what, w, h, options.max_image_pixels)
        fmt = im.format
        if draft and fmt in ("JPEG", "MPO"):
            target = _target_size(w, h, options)
            if target is not None and w * h >= 4 * target[0] * target[1]:
                im.draft("RGB", target)  # DCT scaling: still >= the model's size
    except BaseException:
        im.close()
        raise
    return OpenedImage(im, (w, h), fmt, what)


def open_image(
    src: str | Path | bytes | Image.Image | np.ndarray,
    options: ImageOptions | None = None,
    *,
    draft: bool = True,
) -> OpenedImage:
    """Read and check the header of `src` (see the module docstring). Raises `ImageError`.

    `draft=False` keeps a JPEG at full size (for callers that want every pixel).
    """
    options = options or ImageOptions()
    limit = options.max_image_pixels
    if isinstance(src, Image.Image):
        w, h = src.size
        if w < 1 or h < 1:
            raise ImageError(f"empty image ({w}x{h})")
        if w * h > limit:
            raise _too_large("image", w, h, limit)
        return OpenedImage(src, (w, h), None, "image")
    if isinstance(src, np.ndarray):
        if src.ndim not in (2, 3) or src.size == 0 or (src.ndim == 3 and src.shape[2] > 4):
            raise ImageError(f"array of shape {src.shape} is not an image")
        if src.shape[0] * src.shape[1] > limit:
            raise _too_large("array", src.shape[1], src.shape[0], limit)
        arr = src if src.dtype == np.uint8 else np.clip(src, 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        try:
            im = Image.fromarray(arr)
        except (TypeError, ValueError) as e:
            raise ImageError(f"array of shape {src.shape} is not an image ({e})") from None
        return OpenedImage(im, im.size, None, "array")
    if isinstance(src, bytes | bytearray | memoryview):
        return _open_checked(bytes(src), options, "image bytes", draft)
    path = Path(src)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    return _open_checked(path, options, str(path), draft)


def _decode(opened: OpenedImage) -> Image.Image:
    """Decode, orientation applied when tagged; RGB, L or RGBA (converted after resizing)."""
    im = opened.image
    try:
        im.load()
        orientation = im.getexif().get(_ORIENTATION_TAG, 1) if opened.format else 1
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"{opened.what}: {e}") from None
    except Exception as e:  # truncated data, inflating text/ICC chunks, broken codecs...
        raise ImageError(
            f"{opened.what}: image data does not decode ({type(e).__name__}: {e})"
        ) from None
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block must not lose the image
            log.debug("EXIF orientation ignored", exc_info=True)
    if im.mode not in ("RGB", "L"):
        try:
            im = im.convert("RGB")
        except Exception as e:
            raise ImageError(f"{opened.what}: mode {im.mode} cannot be converted ({e})") from None
    return im


def _detached(image: Image.Image) -> Image.Image:
    """`image`, or a new `Image` over its decoded pixels when it is still the object Pillow
    opened over a file or bytes.

    Without a resize, rotation or conversion the decoded image *is* that `ImageFile`: it
    holds the file (or the `BytesIO` over the request's bytes, kept alive with it) and
    `close()` on it (`OpenedImage.close`, a `with` block, a caller) drops its pixels, so a
    later read fails with "Operation on closed image". `close()` only replaces the
    `ImageFile`'s own reference to its pixel core, so a plain `Image` over the same core
    (Pillow's `_new`, what `copy()` does minus the copy) stays readable and owns no file.
    A copy was 10-14 ms of a 2104x1560 photo here (fresh pages fault slowly on this VM),
    a third of its decode. Pixels in a file mapping (`map`: raw formats such as grey BMP
    opened from a path) are still copied: Pillow unmaps the file on `close()` under PyPy
    on Windows.
    """
    if not isinstance(image, ImageFile.ImageFile):
        return image
    if getattr(image, "map", None) is None and hasattr(image, "_new"):
        return image._new(image.im)  # loaded already: the core outlives the ImageFile
    return image.copy()


def load_image(
    src: str | Path | bytes | Image.Image | np.ndarray,
    *,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
) -> Image.Image:
    """Decode `src` at full size to RGB (EXIF orientation applied). Raises `ImageError`."""
    options = ImageOptions(max_image_pixels=max_image_pixels, formats=formats)
    im = _decode(open_image(src, options, draft=False))
    return im.convert("RGB") if im.mode != "RGB" else _detached(im)


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
    """Resize to PaddleOCR-VL's grid (sides multiple of 28, area in [min, max]), bicubic.

    No resize when the size does not change. A side the grid rule would round to zero
    (a 28x2800 strip under a small `max_pixels`) is kept at 28 and the other side shrunk
    to fit. Large reductions first shrink by an integer factor (Pillow's `reducing_gap`),
    which is faster and indistinguishable from a plain bicubic resize at that ratio.
    """
    w, h = image.size
    try:
        th, tw = smart_resize(h, w, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as e:
        raise ImageError(str(e)) from None
    if tw < _GRID or th < _GRID:
        longest = max(_GRID, (max_pixels // _GRID) // _GRID * _GRID)
        tw, th = (_GRID, longest) if tw < _GRID else (longest, _GRID)
    if (tw, th) == (w, h):
        return image
    return image.resize((tw, th), Image.BICUBIC, reducing_gap=3.0)


def prepare_opened(
    opened: OpenedImage, options: ImageOptions, *, fit: bool = True
) -> PreparedImage:
    """Decode an `open_image` result, optionally downscale by density, fit the grid.

    `fit=False` (a backend that never looks at the pixels) decodes and checks only. The
    prepared image is never a file-backed `opened.image` (`_detached`): `opened` may be
    closed at once.
    """
    image = _decode(opened)
    if not fit:
        return PreparedImage(_detached(image), opened.original_size, 1.0)
    original = opened.original_size
    scale = 1.0
    if options.char_density is not None:
        scale = density_scale(image, options.char_density)
        if scale < 1.0:
            w, h = image.size
            image = image.resize(
                (max(_GRID, round(w * scale)), max(_GRID, round(h * scale))), Image.LANCZOS
            )
            log.debug("density downscale %.3f: %s -> %s", scale, original, image.size)
    image = fit_pixels(image, options.min_pixels, options.max_pixels)
    if image.mode != "RGB":  # L images are resized first: a third of the work
        image = image.convert("RGB")
    return PreparedImage(_detached(image), original, scale)


def prepare_image(
    src: str | Path | bytes | Image.Image | np.ndarray | PreparedImage,
    options: ImageOptions,
    *,
    fit: bool = True,
) -> PreparedImage:
    """Open, decode, optionally downscale by character density, and fit the model's grid."""
    if isinstance(src, PreparedImage):
        return src
    return prepare_opened(open_image(src, options, draft=fit), options, fit=fit)


def encode_image(image: Image.Image, fmt: str = "PNG", quality: int = 92) -> tuple[bytes, str]:
    """Bytes and MIME type of `image` (PNG by default: lossless, as the model saw it)."""
    buf = io.BytesIO()
    fmt = fmt.upper()
    if fmt in ("JPG", "JPEG"):
        image.save(buf, format="JPEG", quality=quality)
        return buf.getvalue(), "image/jpeg"
    image.save(buf, format=fmt)
    return buf.getvalue(), f"image/{fmt.lower()}"
