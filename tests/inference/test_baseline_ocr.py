"""The baseline's OCR stage with the real PP-OCRv6 small weights (rapidocr wheel, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from data_tools.ppocr import (
    DET_MODEL_NAME,
    REC_MODEL_NAME,
    OcrLine,
    build_model_dirs,
    group_rows,
    lines_to_text,
    reading_order,
)
from data_tools.records import read_labels, resolve_image


def _line(text: str, x: float, y: float, h: float = 20.0) -> OcrLine:
    return OcrLine(text, 1.0, (x, y, x + 50, y + h))


def test_reading_order_groups_rows() -> None:
    lines = [_line("b", 300, 102), _line("c", 10, 140), _line("a", 10, 100), _line("d", 200, 143)]
    assert [ln.text for ln in reading_order(lines)] == ["a", "b", "c", "d"]
    assert [[ln.text for ln in row] for row in group_rows(lines)] == [["a", "b"], ["c", "d"]]
    assert lines_to_text(lines) == "a  b\nc  d"
    assert lines_to_text([]) == ""


def test_model_dirs_for_paddlex(tmp_path: Path) -> None:
    dirs = build_model_dirs(tmp_path)
    det = yaml.safe_load((dirs.det / "inference.yml").read_text("utf-8"))
    rec = yaml.safe_load((dirs.rec / "inference.yml").read_text("utf-8"))
    assert det["Global"]["model_name"] == DET_MODEL_NAME
    assert rec["Global"]["model_name"] == REC_MODEL_NAME
    assert rec["PostProcess"]["name"] == "CTCLabelDecode"
    assert len(rec["PostProcess"]["character_dict"]) == 18708  # + blank + space = 18710 outputs
    assert (dirs.det / "inference.onnx").stat().st_size > 1_000_000
    assert build_model_dirs(tmp_path) == dirs  # idempotent


@pytest.mark.slow
def test_ocr_ceiling_on_real_invoices(vat_invoices: Path, tmp_path: Path) -> None:
    from eval.ocr_ceiling import run as ceiling
    from inference.backends.ocr_llm import OcrSettings, ocr_files

    gold = vat_invoices / "ground_truth.jsonl"
    settings = OcrSettings(cache_dir=str(tmp_path / "cache"), model_cache_dir=str(tmp_path / "m"))
    images = [resolve_image(r.image, gold) for r in read_labels(gold)]
    done = ocr_files(images, settings)
    assert [status for _, _, status in done] == ["ocr"] * 3
    assert [status for _, _, status in ocr_files(images, settings)] == ["cached"] * 3
    report = ceiling(gold, tmp_path / "cache", tmp_path / "ceiling")
    assert report["n_docs"] == 3
    per_field = report["per_field"]
    # what PP-OCRv6 small reads on these photos (measured): most values occur verbatim
    assert report["overall"]["share"] >= 0.85
    for name in ("发票代码", "发票号码", "开票日期", "价税合计（小写）", "价税合计（大写）",
                 "销售方.纳税人识别号", "货物或应税劳务、服务[].金额"):  # fmt: skip
        assert per_field[name]["share"] == 1.0, name
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 3
    saved = json.loads((tmp_path / "ceiling.json").read_text("utf-8"))
    assert saved["overall"] == report["overall"]


def test_models_fingerprint_hashes_content_not_dates(tmp_path: Path) -> None:
    import os

    from data_tools.ppocr import models_fingerprint, rapidocr_onnx_files

    det, rec = tmp_path / "det.onnx", tmp_path / "rec.onnx"
    det.write_bytes(b"det weights")
    rec.write_bytes(b"rec weights")
    first = models_fingerprint([det, rec])
    os.utime(det, (1_000_000, 1_000_000))  # touched, same bytes: same key
    assert models_fingerprint([det, rec]) == first
    rec.write_bytes(b"rec weights v2")  # new weights: new key
    assert models_fingerprint([det, rec]) != first
    assert models_fingerprint([rec, det]) != models_fingerprint([det, rec])
    real = models_fingerprint()
    assert len(real) == 16 and real == models_fingerprint(list(rapidocr_onnx_files()))


def test_ocr_engine_options_are_checked() -> None:
    from data_tools.ppocr import create_ocr

    with pytest.raises(ValueError, match="unknown OCR engine 'tesseract'"):
        create_ocr("tesseract")
    with pytest.raises(ValueError, match="limit_type must be one of"):
        create_ocr("rapidocr", limit_type="long")
    with pytest.raises(ValueError, match="limit_side_len must be >= 32"):
        create_ocr("rapidocr", limit_side_len=8)
    with pytest.raises(ValueError, match="use engine 'paddleocr'"):
        create_ocr("rapidocr", preset="server")


def test_rapidocr_detection_size_option(vat_invoices: Path) -> None:
    """limit_side_len / limit_type reach the detector: 'max 960' reads a downscaled page."""
    import cv2

    from data_tools.ppocr import DET_LIMIT_SIDE_LEN, DET_LIMIT_TYPE, create_ocr

    bgr = cv2.imread(str(vat_invoices / "b0.jpg"))
    bgr = cv2.resize(bgr, (bgr.shape[1] // 2, bgr.shape[0] // 2))  # keep the test short
    seen: list[tuple[int, int]] = []
    results = {}
    for side, kind in ((DET_LIMIT_SIDE_LEN, DET_LIMIT_TYPE), (480, "max")):
        ocr = create_ocr("rapidocr", limit_side_len=side, limit_type=kind)
        run = ocr._det.session

        def spy(x, _run=run):
            seen.append(tuple(x.shape[2:]))
            return _run(x)

        ocr._det.session = spy
        results[kind] = ocr.predict(bgr)[0]
    full, small = seen
    assert full == (round(bgr.shape[0] / 32) * 32, round(bgr.shape[1] / 32) * 32)
    assert max(small) == 480
    assert len(results["min"]["rec_texts"]) > 20 and len(results["max"]["rec_texts"]) > 0


@pytest.mark.slow
def test_rapidocr_reads_the_same_lines_as_paddleocr(vat_invoices: Path, tmp_path: Path) -> None:
    """The fast loader changes nothing: same texts and boxes as PaddleOCR on a real invoice."""
    import cv2

    from data_tools.ppocr import create_ocr, ocr_lines

    bgr = cv2.imread(str(vat_invoices / "b2.jpg"))
    fast = ocr_lines(create_ocr("rapidocr"), bgr)
    paddle = ocr_lines(create_ocr("paddleocr", cache_dir=tmp_path), bgr)
    assert len(fast) > 50
    assert [(ln.text, ln.box) for ln in fast] == [(ln.text, ln.box) for ln in paddle]
    assert max(abs(a.score - b.score) for a, b in zip(fast, paddle, strict=True)) < 1e-3
