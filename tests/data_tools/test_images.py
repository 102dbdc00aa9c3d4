import pytest
from PIL import Image

from data_tools.images import BadImageError, check_image, smart_resize, visual_tokens


def test_smart_resize_rules():
    h, w = smart_resize(1560, 2104)
    assert h % 28 == 0 and w % 28 == 0
    assert h * w <= 28 * 28 * 3600
    assert abs((w / h) - (2104 / 1560)) < 0.05
    # small images are scaled up to min_pixels
    h, w = smart_resize(100, 100)
    assert h * w >= 147384
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 5000)


def test_visual_tokens_known_values():
    # 2104x1560 photo: over max_pixels → 1428x1932 px → 102x138 patches → 3519 tokens
    assert smart_resize(1560, 2104) == (1428, 1932)
    assert visual_tokens(1560, 2104) == 3519
    assert visual_tokens(1560, 2104, max_pixels=28 * 28 * 1280) < 1300


def test_check_image(tmp_path):
    good = tmp_path / "a.png"
    Image.new("RGB", (30, 20)).save(good)
    info = check_image(good)
    assert (info.width, info.height) == (30, 20)
    with pytest.raises(BadImageError, match="file not found"):
        check_image(tmp_path / "missing.jpg")
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(BadImageError, match="does not decode"):
        check_image(bad)
    truncated = tmp_path / "c.jpg"
    Image.new("RGB", (300, 200), "red").save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(BadImageError):
        check_image(truncated)
