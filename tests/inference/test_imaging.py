"""Image decoding limits, the model grid and the character-density downscale."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data_tools.images import smart_resize
from inference.imaging import (
    ImageError,
    ImageOptions,
    ImageTooLarge,
    density_scale,
    fit_pixels,
    ink_stats,
    load_image,
    prepare_image,
)
from inference.serving.loadgen import png_bomb


def glyph_page(glyph: int, n: int = 120, page: tuple[int, int] | None = None) -> Image.Image:
    """White page with `n` black "characters": a hollow square of side `glyph` and a bar."""
    cols = 12
    rows = -(-n // cols)
    step = int(glyph * 1.6)
    w, h = page or (cols * step + glyph, rows * step + glyph)
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    stroke = max(1, glyph // 8)
    for i in range(n):
        x, y = glyph // 2 + (i % cols) * step, glyph // 2 + (i // cols) * step
        d.rectangle([x, y, x + glyph, y + glyph], outline="black", width=stroke)
        d.rectangle(
            [x + glyph // 3, y + glyph // 3, x + glyph // 3 + stroke, y + 2 * glyph // 3],
            fill="black",
        )
    return im


def test_decompression_bomb_refused_from_the_header() -> None:
    data = png_bomb()
    assert len(data) < 200_000
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLarge, match="900000000 pixels"):
        load_image(data, max_image_pixels=50_000_000)
    assert time.perf_counter() - t0 < 1.0  # refused before decoding 900 M pixels
    smaller = png_bomb(9000, 9000)  # under PIL's own bomb limit: our header check refuses it
    with pytest.raises(ImageTooLarge, match="9000x9000 = 81000000 pixels"):
        load_image(smaller, max_image_pixels=50_000_000)


def test_not_an_image_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"%PDF-1.4 definitely not an image")
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    truncated = io.BytesIO()
    Image.new("RGB", (200, 200), "red").save(truncated, format="PNG")
    with pytest.raises(ImageError):
        load_image(truncated.getvalue()[:60])


def test_load_converts_to_rgb_from_any_source(tmp_path: Path) -> None:
    gray = Image.new("L", (50, 40), 128)
    path = tmp_path / "g.png"
    gray.save(path)
    for src in (path, str(path), path.read_bytes(), gray, np.zeros((40, 50), np.uint8)):
        im = load_image(src)
        assert im.mode == "RGB" and im.size == (50, 40)


@pytest.mark.parametrize("size", [(100, 60), (1200, 900), (4000, 3000), (300, 2000)])
def test_fit_pixels_lands_on_the_model_grid(size: tuple[int, int]) -> None:
    min_p, max_p = 28 * 28 * 16, 28 * 28 * 400
    out = fit_pixels(Image.new("RGB", size), min_p, max_p)
    w, h = out.size
    assert w % 28 == 0 and h % 28 == 0
    assert min_p <= w * h <= max_p
    assert (h, w) == smart_resize(size[1], size[0], min_pixels=min_p, max_pixels=max_p)
    # idempotent: the model's processor will keep it as it is
    assert fit_pixels(out, min_p, max_p).size == out.size


def test_ink_stats_counts_glyphs_and_ignores_rules() -> None:
    im = glyph_page(24, n=60)
    d = ImageDraw.Draw(im)
    d.line([0, 2, im.width, 2], fill="black", width=3)  # a ruling line: not a character
    stats = ink_stats(im)
    assert 100 <= stats.characters <= 130  # 2 components per glyph
    assert stats.ink_per_char > 20


def test_density_downscale_targets_about_50_ink_pixels_and_never_upscales() -> None:
    big = glyph_page(60)
    scale = density_scale(big, 50)
    assert 0.1 < scale < 0.9
    small = big.resize((round(big.width * scale), round(big.height * scale)), Image.LANCZOS)
    after = ink_stats(small).ink_per_char
    assert 25 <= after <= 100, after  # about the target (antialiasing blurs small glyphs)
    tiny_text = glyph_page(8)
    assert density_scale(tiny_text, 50) == 1.0
    assert density_scale(Image.new("RGB", (500, 500), "white"), 50) == 1.0  # no text: keep


def test_prepare_image_applies_density_then_the_grid() -> None:
    page = glyph_page(60)
    plain = prepare_image(page, ImageOptions(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 10000))
    dense = prepare_image(
        page, ImageOptions(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 10000, char_density=50)
    )
    assert plain.density_scale == 1.0 and dense.density_scale < 0.9
    assert dense.size[0] * dense.size[1] < plain.size[0] * plain.size[1] * 0.8
    assert dense.original_size == page.size
    assert dense.size[0] % 28 == 0 and dense.size[1] % 28 == 0


def test_image_options_validate() -> None:
    with pytest.raises(ValueError):
        ImageOptions(min_pixels=1000, max_pixels=500)
    with pytest.raises(ValueError, match="unknown key"):
        ImageOptions.from_dict({"max_pixel": 5})


# ---------------------------------------------------------------- one preparation path (issues 12, 14)

import struct  # noqa: E402
import zlib  # noqa: E402

from inference.imaging import DEFAULT_FORMATS, open_image, prepare_opened  # noqa: E402


def _png(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 200).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_only_allowed_formats_are_opened(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PPM")
    with pytest.raises(ImageError, match="not an image of an accepted format"):
        open_image(buf.getvalue())
    assert open_image(buf.getvalue(), ImageOptions(formats=("PPM",))).format == "PPM"
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    with pytest.raises(ImageError, match="accepted format"):
        open_image(eps)
    with pytest.raises(ValueError, match="Ghostscript"):
        ImageOptions(formats=("PNG", "eps"))
    with pytest.raises(ValueError, match="unknown to Pillow"):
        ImageOptions.from_dict({"formats": ["PNG", "HEIC"]})
    assert ImageOptions.from_dict({"formats": ["png", "jpeg"]}).formats == ("PNG", "JPEG")
    assert "EPS" not in DEFAULT_FORMATS


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP"])
def test_png_chunks_inflating_past_the_limit_are_an_image_error(kind: bytes) -> None:
    png = _png()
    bomb = png[:33] + _chunk(kind, b"key\x00\x00" + zlib.compress(b"a" * 3_000_000)) + png[33:]
    with pytest.raises(ImageError):
        prepare_image(bomb, ImageOptions())


def test_thin_strip_never_resizes_to_zero() -> None:
    for size in ((28, 2800), (2800, 28), (30, 5000)):
        out = prepare_image(
            Image.new("L", size, 255), ImageOptions(min_pixels=784, max_pixels=50176)
        )
        w, h = out.size
        assert w >= 28 and h >= 28 and w % 28 == 0 and h % 28 == 0 and w * h <= 50176
        assert out.image.mode == "RGB"


def test_no_resize_when_the_size_does_not_change() -> None:
    im = Image.new("RGB", (28 * 20, 28 * 10), "white")
    assert fit_pixels(im, 784, 28 * 28 * 400) is im  # the very same object: no copy


def test_large_jpeg_decodes_in_draft_mode_at_least_at_the_model_size() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 180, 160)).save(buf, format="JPEG", quality=80)
    options = ImageOptions(min_pixels=784, max_pixels=28 * 28 * 500)
    opened = open_image(buf.getvalue(), options)
    assert opened.original_size == (4000, 3000)
    assert opened.cost_pixels <= 4000 * 3000 / 4  # DCT-reduced by at least 2 per side
    prepared = prepare_opened(opened, options)
    full = prepare_image(load_image(buf.getvalue()), options)
    assert prepared.size == full.size and prepared.original_size == (4000, 3000)
    diff = np.abs(np.asarray(prepared.image, float) - np.asarray(full.image, float)).mean()
    assert diff < 2.0  # same picture
    full_open = open_image(buf.getvalue(), options, draft=False)
    assert full_open.cost_pixels == 4000 * 3000


def test_orientation_applied_only_when_tagged() -> None:
    im = Image.new("RGB", (60, 30), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    assert load_image(buf.getvalue()).size == (30, 60)
    plain = io.BytesIO()
    im.save(plain, format="JPEG")
    assert load_image(plain.getvalue()).size == (60, 30)


def test_header_over_the_pixel_limit_is_refused_before_decoding() -> None:
    data = png_bomb(9000, 9000)
    with pytest.raises(ImageTooLarge, match="81000000 pixels"):
        open_image(data, ImageOptions(max_image_pixels=64_000_000))


def _pattern(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(sum(size))
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("fmt", "size", "fit", "source"),
    [
        ("PNG", (168, 112), True, "bytes"),  # on the grid: no resize (the service's case)
        ("PNG", (168, 112), True, "path"),
        ("PNG", (168, 112), True, "opened"),  # the caller's own Image.open result
        ("JPEG", (301, 199), False, "bytes"),  # a backend that ignores pixels: no resize
        ("BMP-L", (168, 112), False, "path"),  # raw grey pixels: Pillow maps the file
        ("BMP-L", (168, 112), True, "path"),
    ],
    ids=[
        "png-bytes",
        "png-path",
        "png-caller-image",
        "jpeg-bytes-no-fit",
        "bmp-grey-path",
        "bmp-grey-path-fit",
    ],
)
def test_prepared_image_outlives_the_opened_source(
    tmp_path: Path, fmt: str, size: tuple[int, int], fit: bool, source: str
) -> None:
    """No resize must not mean the model gets the file-backed object Pillow opened: closing
    the OpenedImage (or the caller's image) and dropping the bytes leaves it readable."""
    import gc
    from concurrent.futures import ThreadPoolExecutor

    from PIL import ImageFile

    from inference.imaging import open_image, prepare_opened

    buf = io.BytesIO()
    pattern = _pattern(size)
    if fmt == "BMP-L":
        pattern, fmt = pattern.convert("L"), "BMP"
    pattern.save(buf, format=fmt)
    data = buf.getvalue()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    path = tmp_path / f"a.{fmt.lower()}"
    path.write_bytes(data)
    src: bytes | Path | Image.Image = {
        "bytes": data,
        "path": path,
        "opened": Image.open(path),
    }[source]
    options = ImageOptions(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    opened = open_image(src, options, draft=fit)
    prepared = prepare_opened(opened, options, fit=fit)
    assert prepared.size == size  # still no needless resize
    assert not isinstance(prepared.image, ImageFile.ImageFile)
    opened.close()  # what the service did until c7dded2; a caller's `with` block does it too
    del opened, src, data, buf
    gc.collect()
    with ThreadPoolExecutor(1) as pool:  # the model call runs in a worker thread
        got = pool.submit(lambda: np.asarray(prepared.image.convert("RGB"))).result()
    assert np.array_equal(got, expected)
    loaded = load_image(path)
    assert not isinstance(loaded, ImageFile.ImageFile) and loaded.size == size
