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
